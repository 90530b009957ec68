"""Promotion on evidence (`mlflow.promote: significant`, tune.hub.evidence): `@champion` moves only
when the new model beats it on the same validation cases with a paired 95 % CI above 0; an equal
model is refused, a clearly better one accepted, and the version says why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune.hub.evidence import MIN_CASES, paired_evidence
from tune.hub.publish import decide_promotion

CHAMP = {"objective": "val_Dice_mean", "val_split": "d", "val_Dice_mean": "0.5"}


def test_equal_scores_are_no_evidence_and_clear_gains_are():
    cases = {f"c{i}": 0.5 + 0.01 * i for i in range(8)}
    same = paired_evidence(cases, cases)
    assert same["gain"] == 0 and same["ci"] == [0.0, 0.0] and not same["significant"]
    better = paired_evidence({k: v + 0.05 + 0.001 * i for i, (k, v) in enumerate(cases.items())}, cases)
    assert better["significant"] and better["ci"][0] > 0 and better["gain"] == pytest.approx(0.0535)
    noisy = paired_evidence({k: v + (0.2 if i % 2 else -0.18) for i, (k, v) in enumerate(cases.items())}, cases)
    assert noisy["gain"] > 0 and noisy["ci"][0] < 0 and not noisy["significant"]  # higher mean, not beyond noise
    few = paired_evidence({"a": 0.9, "b": 0.9}, {"a": 0.1, "b": 0.1})
    assert few["n"] == 2 < MIN_CASES and not few["significant"]
    # HD95: lower is better, so the gain is the champion's minus the new model's
    hd = paired_evidence({k: 10.0 for k in cases}, {k: 20.0 + i for i, k in enumerate(cases)}, higher_is_better=False)
    assert hd["gain"] > 10 and hd["significant"]


def test_the_rule_reads_the_evidence_and_says_why():
    cases = {f"c{i}": 0.4 + 0.02 * i for i in range(6)}
    better = {**paired_evidence({k: v + 0.1 for k, v in cases.items()}, cases), "champion_version": 3,
              "metric": "val_Dice_mean"}
    ok, why = decide_promotion("significant", 0.6, "d", CHAMP, evidence=better)
    assert ok and "gain +0.1000" in why and "above 0: better beyond noise" in why and "v3" in why
    same = {**paired_evidence(cases, cases), "champion_version": 3, "metric": "val_Dice_mean"}
    ok, why = decide_promotion("significant", 0.6, "d", CHAMP, evidence=same)
    assert not ok and "includes 0: not better beyond noise; champion kept" in why
    assert decide_promotion("better", 0.6, "d", CHAMP)[0]  # what `better` did with the same numbers
    assert not decide_promotion("significant", 0.6, "d", CHAMP, evidence={"error": "boom"})[0]
    assert not decide_promotion("significant", 0.6, "other-split", CHAMP)[0]  # not comparable: never moves
    assert decide_promotion("significant", 0.6, "d", None) == (True, "no champion yet")


# --------------------------------------------------------------------------- through register()

@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> dict:
    """A smoke model trained on 10 cases (4 of them validation), and a broken copy that predicts no
    tumour (its output convolution zeroed, bias -20): clearly worse on every validation case."""
    import torch

    from singr.data.synth import synthesize_dataset
    from singr.engine.bundle import write_bundle
    from singr.engine.checkpoint import load_checkpoint, save_checkpoint
    from singr.engine.trainer import fit
    from tune.config import load_service_config
    from tune.plan import make_plan

    work = tmp_path_factory.mktemp("promotion")
    synthesize_dataset(work / "data", n_cases=10, shape=(32, 32, 32), seed=0, progress=False)
    cfg = load_service_config("smoke.yaml", [f"data.root={work / 'data'}", f"data.cache_dir={work / 'cache'}",
                                             f"output_dir={work / 'run'}", "data.split_ratios=[0.4,0.4,0.2]",
                                             f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                                             "mlflow.registered_model=singr-promo", "mlflow.export=[]",
                                             "train.epochs=3"])
    plan = make_plan(cfg)
    res = fit(plan.cfg, progress=False)
    good = write_bundle(work / "good", [res.best_checkpoint], names=["best.safetensors"])
    ckpt = load_checkpoint(res.best_checkpoint)
    out = ckpt.meta.out_channels  # the output convolution: the only bias of that size; its output is -20
    (bias,) = [k for k, v in ckpt.model_state.items() if k.endswith(".bias") and tuple(v.shape) == (out,)]
    ckpt.model_state[bias] = torch.full_like(ckpt.model_state[bias], -20.0)
    weight = bias[: -len("bias")] + "weight"
    ckpt.model_state[weight] = torch.zeros_like(ckpt.model_state[weight])
    save_checkpoint(work / "broken.safetensors", ckpt)
    bad = write_bundle(work / "bad", [work / "broken.safetensors"], names=["best.safetensors"])
    assert len(json.loads(plan.split_file.read_text())["val"]) == 4
    return {"plan": plan, "good": good, "bad": bad}


@pytest.mark.slow
def test_register_moves_the_champion_only_on_evidence(two_models):
    from mlflow.tracking import MlflowClient

    from tune.hub.card import split_digest
    from tune.hub.publish import register
    from tune.tracking import ensure_experiment

    plan = two_models["plan"]
    uri = plan.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.create_run(ensure_experiment(uri, plan.cfg.mlflow.experiment)).info.run_id
    digest = split_digest(json.loads(plan.split_file.read_text()))

    def reg(folder: Path, trial: str) -> dict:
        return register(plan, parent, folder, {"sweep": "promo", "trial_id": trial}, 0.5, digest,
                        rule="significant", exports=[])

    first = reg(two_models["bad"], "bad")
    assert first["promoted"] and first["why"] == "no champion yet" and first["evidence"] is None
    better = reg(two_models["good"], "good")
    ev = better["evidence"]
    print(f"\n[promotion] good vs broken: {better['why']}")
    assert better["promoted"] and ev["n"] == 4 and ev["ci"][0] > 0 and ev["champion_version"] == first["version"]
    assert str(client.get_model_version_by_alias("singr-promo", "champion").version) == str(better["version"])
    tags = client.get_model_version("singr-promo", str(better["version"])).tags
    assert "better beyond noise" in tags["promotion"] and float(tags["promotion_gain"]) == pytest.approx(ev["gain"],
                                                                                                          abs=1e-5)
    assert json.loads(tags["promotion_ci"])[0] > 0
    again = reg(two_models["good"], "good-again")  # the same model once more: equal, refused
    print(f"[promotion] the same model again: {again['why']}")
    assert not again["promoted"] and again["evidence"]["gain"] == 0 and "champion kept" in again["why"]
    assert str(client.get_model_version_by_alias("singr-promo", "champion").version) == str(better["version"])
    assert "not better beyond noise" in client.get_model_version("singr-promo", str(again["version"])).tags["promotion"]
