"""What a search registers, end to end on the smoke config (CPU, a local Ray started by the
command under test): the fold refit (``tune.refit_folds``) as parallel Ray Train runs, the
top-k ensemble (``tune.ensemble_top_k``), post-processing rules fitted on validation data
(``tune.postprocess``), and a lesion-wise / HD95 objective (``tune.metric``)."""
from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.tune.conftest import PY, sweep_overrides, sweep_summary, tune_env

pytestmark = pytest.mark.slow

QUICK = {"tune.max_concurrent": 2, "mlflow.export": [], "mlflow.card_test_metrics": False}


def _sweep(work: Path, data: Path, name: str, **more: object) -> dict:
    t0 = time.time()
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q",
                        *sweep_overrides(work, data, name, **{**QUICK, **more})],
                       cwd=work, env=tune_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    return {"work": work, "name": name, "out": p.stdout, "summary": sweep_summary(work, name),
            "seconds": time.time() - t0}


def _version(s: dict) -> object:
    from mlflow.tracking import MlflowClient

    uri = s["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.get_model_version(s["registered"]["name"], str(s["registered"]["version"]))


def _case(data: Path, case_id: str) -> np.ndarray:
    from singr.data.readers import find_case_folder_files, load_case

    return load_case(find_case_folder_files(data / case_id)).image


@pytest.fixture(scope="module")
def refit(tmp_path_factory, smoke_data):
    """One trial chosen by lesion-wise Dice, then refitted on 2 folds, two runs at once."""
    work = tmp_path_factory.mktemp("refit")
    return _sweep(work, smoke_data, "refit", **{"tune.num_samples": 1, "tune.refit_folds": 2,
                                                "tune.metric": "val_LesionDice_mean"})


@pytest.fixture(scope="module")
def top_k(tmp_path_factory, smoke_data):
    """Two trials ranked by HD95 (lowest first), both registered as one ensemble, no post-processing."""
    work = tmp_path_factory.mktemp("topk")
    return _sweep(work, smoke_data, "topk", **{"tune.num_samples": 2, "tune.ensemble_top_k": 2,
                                              "tune.metric": "val_HD95_mean", "tune.postprocess": False})


def test_refit_trains_each_fold_in_parallel_and_bundles_them(refit):
    from singr.engine.checkpoint import load_checkpoint

    s, out = refit["summary"], refit["out"]
    m = s["model"]
    assert m["kind"] == "folds" and m["folds"] == 2
    assert [x["file"] for x in m["members"]] == ["fold_0.safetensors", "fold_1.safetensors"]
    assert [x["fold"] for x in m["members"]] == [0, 1]
    best = s["best"]
    assert all(x["lam"] == best["lam"] and x["delta"] == best["delta"] and x["gamma"] == best["gamma"]
               for x in m["members"])  # the best trial's hyperparameters, refitted
    split = json.loads((refit["work"] / "ray" / "refit" / "split.json").read_text())
    folds = split["folds"]["2"]
    folder = Path(m["path"])
    for k in (0, 1):
        ck = load_checkpoint(folder / f"fold_{k}.safetensors")
        assert ck.meta.fold == k and ck.meta.n_val == len(folds[k])  # validated on its own fold
        assert ck.meta.n_train == sum(len(f) for f in folds) - len(folds[k]) and ck.meta.lam == best["lam"]
    assert m["score"] == pytest.approx(np.mean([x["score"] for x in m["members"]]))  # cross-validation
    assert m["val_split"].startswith("cv2-")
    runs = m["fold_runs"]
    assert [r["error"] for r in runs] == [False, False] and m["max_concurrent"] == 2
    assert m["all_folds_running_s"] > 0, runs  # the two Ray Train runs overlapped in time
    assert "[tune] refit: " in out and "on 2 folds of 5 train+val cases, 2 runs (" in out and "up to 2 at once" in out
    assert "[tune] model: fold ensemble of 2 members (fold_0.safetensors, fold_1.safetensors)" in out
    mv = _version(s)
    assert mv.tags["kind"] == "folds" and mv.tags["members"] == "2" and mv.tags["folds"] == "2"
    assert mv.tags["objective"] == "val_LesionDice_mean" and mv.tags["val_split"] == m["val_split"]
    assert float(mv.tags["val_LesionDice_mean"]) == pytest.approx(m["score"], abs=1e-6)


def test_refit_post_processing_is_fitted_out_of_fold_and_stored(refit):
    from singr.engine.bundle import read_bundle

    m = refit["summary"]["model"]
    pp = m["postprocess"]
    assert "error" not in pp and pp["n_cases"] == 5 and "out of fold" in pp["split"]
    assert pp["dice_after"] >= pp["dice_before"] - 1e-12  # a rule is kept only if it raises the Dice
    assert isinstance(pp["kept"], list) and set(pp["rules"]) == {"min_component_voxels", "et_min_voxels"}
    members, rec = read_bundle(Path(m["path"]))
    assert [p.name for p in members] == ["fold_0.safetensors", "fold_1.safetensors"]
    assert rec["postprocess"] == pp["rules"]
    fit = rec["info"]["postprocess_fit"]
    split = json.loads((refit["work"] / "ray" / "refit" / "split.json").read_text())
    assert sorted(fit["cases"]) == sorted(split["train"] + split["val"])  # every case once, by the other fold
    assert rec["info"]["kind"] == "folds" and rec["info"]["folds"] == 2
    assert "[tune] post-processing fitted on 5 validation cases" in refit["out"]


def test_registered_fold_ensemble_loads_its_members(refit, smoke_data):
    import mlflow.pyfunc

    from singr.engine.bundle import load_predictor
    from tune.hub.fetch import download_model

    s = refit["summary"]
    uri = s["registered"]["model_uri"]
    folder, ident = download_model(uri, s["tracking_uri"])
    pred = load_predictor(folder, device="cpu")
    assert len(pred.members) == 2 and [x.fold for x in pred.member_info] == [0, 1]
    assert [x.file for x in pred.member_info] == ["fold_0.safetensors", "fold_1.safetensors"]
    assert pred.postprocess is not None and pred.postprocess.to_dict() == s["model"]["postprocess"]["rules"]
    assert ident["tags"]["kind"] == "folds"
    case = json.loads((refit["work"] / "ray" / "refit" / "split.json").read_text())["test"][0]
    image = _case(smoke_data, case)
    labels = pred.predict(image).labels
    assert labels.shape == image.shape[1:]
    mlflow.set_tracking_uri(s["tracking_uri"])
    mlflow.set_registry_uri(s["tracking_uri"])
    served = mlflow.pyfunc.load_model(uri)
    assert np.array_equal(np.asarray(served.predict(image)), labels)  # the pyfunc is the same 2-member model


def test_lesion_objective_reaches_the_trials_and_the_runs(refit):
    from mlflow.tracking import MlflowClient

    from singr.engine.checkpoint import load_checkpoint

    s = refit["summary"]
    assert s["metric"] == "val_LesionDice_mean" and s["mode"] == "max"
    assert len(s["trials"]) == 1
    t = s["trials"][0]
    assert 0.0 <= t["score"] <= 1.0 and s["best_score"] == t["score"]
    assert "val LesionDice_mean " in refit["out"] and "LesionDice_mean(best)" in refit["out"]
    client = MlflowClient(tracking_uri=s["tracking_uri"])
    kids = client.search_runs([client.get_run(s["parent_run_id"]).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{s['parent_run_id']}'")
    trial_run = [r for r in kids if r.data.tags.get("trial_id") == t["trial_id"]]
    assert len(trial_run) == 1
    hist = client.get_metric_history(trial_run[0].info.run_id, "val_LesionDice_mean")
    assert max(h.value for h in hist) == pytest.approx(t["score"])  # the score is the best lesion-wise Dice
    fold_runs = [r for r in kids if r.data.tags.get("refit_fold") in ("0", "1")]
    assert sorted(r.data.tags["refit_fold"] for r in fold_runs) == ["0", "1"]  # folds as child runs
    for r in fold_runs:
        assert r.data.params["data.folds"] == "2" and r.info.status == "FINISHED"
        assert client.get_metric_history(r.info.run_id, "val_LesionDice_mean")
    member = load_checkpoint(Path(s["model"]["path"]) / "fold_0.safetensors")
    assert member.config["train"]["select_metric"] == "val_LesionDice_mean"  # best checkpoint by the objective


def test_top_k_registers_the_best_trials_by_the_lowest_hd95(top_k, smoke_data):
    from singr.engine.bundle import load_predictor, read_bundle
    from singr.engine.checkpoint import load_checkpoint

    s, out = top_k["summary"], top_k["out"]
    assert s["metric"] == "val_HD95_mean" and s["mode"] == "min"
    trials = s["trials"]
    assert len(trials) == 2 and trials[0]["score"] <= trials[1]["score"]  # lowest HD95 first
    m = s["model"]
    assert m["kind"] == "top_k" and m["folds"] is None
    assert [x["file"] for x in m["members"]] == ["top_0.safetensors", "top_1.safetensors"]
    assert [x["trial_id"] for x in m["members"]] == [t["trial_id"] for t in trials]
    assert math.isfinite(m["score"]) and m["score"] >= 0 and m["best_member_score"] == trials[0]["score"]
    for x, t in zip(m["members"], trials):
        ck = load_checkpoint(Path(m["path"]) / x["file"])
        assert ck.meta.lam == t["lam"] and ck.meta.delta == pytest.approx(t["delta"])
        assert ck.config["train"]["select_metric"] == "val_HD95_mean"
    assert m["postprocess"] is None  # tune.postprocess: false
    members, rec = read_bundle(Path(m["path"]))
    assert rec["postprocess"] is None and len(members) == 2
    assert "[tune] post-processing: not fitted (tune.postprocess is false)" in out
    assert "[tune] model: ensemble of the 2 best trials" in out and "HD95_mean(best)" in out
    mv = _version(s)
    assert mv.tags["kind"] == "top_k" and mv.tags["members"] == "2" and mv.tags["objective"] == "val_HD95_mean"
    assert mv.tags["member_trials"] == ",".join(t["trial_id"] for t in trials)
    pred = load_predictor(Path(m["path"]), device="cpu")
    assert len(pred.members) == 2 and pred.postprocess is None
    case = json.loads((top_k["work"] / "ray" / "topk" / "split.json").read_text())["val"][0]
    assert pred.predict(_case(smoke_data, case)).labels.shape == (32, 32, 32)
