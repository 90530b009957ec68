"""The model card (tune/hub/card.py), the pyfunc's signature and requirements (tune/hub/pyfunc.py), and
what registration logs (tune/hub/publish.py).

The unit tests render a fabricated card. The slow ones register a model: once without Ray
(a smoke model trained in-process, registered by :func:`tune.hub.publish.register` with exports
off and no test metrics), and once through a whole smoke sweep (``python -m tune``), whose
registered version must carry the card as its description, ``card.json``, the ONNX export
within 1e-4 of PyTorch, a signature, an input example, and requirements naming the
project's wheel; ``mlflow.pyfunc.load_model`` + ``predict`` and the endpoint's model
identity are checked on it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tune.hub.card import CARD_FILE, INTENDED_USE, MAX_DESCRIPTION, card_markdown, region_metrics, summary_metrics

from .conftest import sweep_overrides, sweep_summary, tune_env

PY = sys.executable


def _fabricated_card() -> dict:
    return {
        "singr_card": 1,
        "data": {"root": "/data/brats", "layout": "brats2020", "label_convention": "brats2020", "cases": 369,
                 "split": {"train": 236, "val": 59, "test": 74}, "val_split_digest": "abc123def456"},
        "model": {"architecture": "unet3d", "settings": {"features": [32, 32, 64, 128, 256, 32], "dropout": 0.1},
                  "parameters": 5_749_667, "members": 1, "in_channels": 4,
                  "modalities": ["flair", "t1", "t1ce", "t2"], "regions": ["TC", "WT", "ET"], "loss": "focal_l1",
                  "lam": 0.5, "delta": 0.4321, "gamma": 1.75, "lr": 3e-4, "searched": ["lam", "delta", "gamma", "lr"]},
        "validation": {"n_cases": 59, "epoch": 240, "regions": {
            "TC": {"Dice": 0.8512, "HD95": 6.25, "IoU": 0.77}, "WT": {"Dice": 0.9071, "HD95": 4.5},
            "ET": {"Dice": 0.7933, "HD95": 12.75, "LesionDice": 0.7011}, "mean": {"Dice": 0.8505, "HD95": 7.83}}},
        "test": {"split": "test", "n_cases": 74, "regions": {
            "TC": {"Dice": 0.8401, "HD95": 7.0}, "WT": {"Dice": 0.9002, "HD95": 5.0},
            "ET": {"Dice": 0.7804, "HD95": 14.0}, "mean": {"Dice": 0.8402, "HD95": 8.667}},
            "se": {"TC": {"Dice": 0.0123}, "mean": {"Dice": 0.0101}}},
        "training": {"sweep": "brats-search", "trial_id": "a1b2c3", "epochs": 300, "epochs_run": 300,
                     "stopped_early": False, "trial_train_seconds": 7.5 * 3600, "sweep_seconds": 50 * 3600},
        "hardware": {"cluster": {"nodes": 2, "CPU": 64.0, "GPU": 8.0, "accelerators": ["A100"]},
                     "trial_workers": {"workers": 2, "cpus_per_worker": 8.0, "gpus_per_worker": 1.0},
                     "driver": {"cpu_model": "AMD EPYC 7763", "cpu_count": 32, "gpus": [],
                                "versions": {"torch": "2.13.0", "monai": "1.6.1", "ray": "2.60.0",
                                             "mlflow": "3.17.2"}}},
        "exports": [{"format": "onnx", "file": "artifacts/export/best.onnx", "bytes": 23_100_000,
                     "max_abs_diff": 8.5e-6, "ok": True, "checked_on": "a 128x128x128 crop of BraTS20_Training_007"}],
        "pyfunc": {"model_uri": "models:/singr/7", "input": "one un-normalised float32 image (4, D, H, W)",
                   "output": "its uint8 label map (D, H, W)", "requirements": ["artifacts/singr-0.2.0-py3-none-any.whl",
                                                                              "torch==2.13.0"]},
        "intended_use": INTENDED_USE,
        "limitations": ["Trained on one data set.", "Validation metrics are optimistic."],
        "config": {"model": {"name": "unet3d", "features": [32, 32, 64, 128, 256, 32]},
                   "train": {"epochs": 300, "lr": 3e-4, "patch_size": [128, 128, 128]},
                   "infer": {"roi_size": [128, 128, 128], "tta": False}},
    }


def test_card_markdown_says_what_the_model_is():
    md = card_markdown(_fabricated_card(), "singr", 7)
    assert md.startswith("# singr version 7: SiNGR brain-tumour segmentation")
    assert "Not for clinical decisions" in md and "## Limitations" in md
    assert "- Validation metrics are optimistic." in md
    assert "unet3d" in md and "5,749,667 parameters" in md
    assert "lambda 0.5, delta 0.4321, gamma 1.75, lr 0.0003" in md  # lr shown: the sweep searched it
    assert "`/data/brats` (brats2020): 369 cases, train 236 / val 59 / test 74" in md
    # one row per region and the mean: validation and test Dice / HD95, lesion-wise where a split has them
    assert "| region | val Dice | val HD95 (mm) | val LesionDice | test Dice | test HD95 (mm) |\n" in md
    assert "| TC | 0.8512 | 6.25 | n/a | 0.8401 ± 0.012 | 7 |" in md
    assert "| **mean** | 0.8505 | 7.83 | n/a | 0.8402 ± 0.01 | 8.667 |" in md
    assert "test: 74 cases" in md and "Validation: 59 cases, best epoch 240" in md
    assert "7.5 h" in md and "A100" in md and "2 worker(s) x 8 CPU + 1 GPU" in md and "AMD EPYC 7763" in md
    assert "| `artifacts/export/best.onnx` | onnx | 23.1 | 8.5e-06 | a 128x128x128 crop" in md
    assert 'mlflow.pyfunc.load_model("models:/singr/7")' in md and "`artifacts/singr-0.2.0-py3-none-any.whl`" in md
    assert '| train.patch_size | `[128, 128, 128]` |' in md
    assert len(md) <= MAX_DESCRIPTION


def test_card_markdown_fits_mlflow_and_says_what_it_left_out():
    card = _fabricated_card()
    card["limitations"] = [f"limitation number {i}: " + "x" * 150 for i in range(40)]  # ~6.5k characters
    md = card_markdown(card, "singr", 7)
    assert len(md) <= MAX_DESCRIPTION
    assert "Not shown (length limit): limitations, config" in md and "## Metrics per region" in md
    # a card without test metrics or exports says why, and has no empty sections
    card = _fabricated_card()
    card["test"], card["exports"] = {"split": "test", "skipped": "mlflow.card_test_metrics is false"}, []
    md = card_markdown(card)
    assert "test: not evaluated (mlflow.card_test_metrics is false)" in md and "test Dice" not in md
    assert "## Exports" not in md and md.startswith("# singr model")


def test_region_metrics_from_checkpoint_and_summary():
    got = region_metrics({"val_Dice_TC": 0.5, "val_HD95_TC": 3.0, "val_LesionDice_ET": 0.4, "val_Dice_mean": 0.6,
                          "val_IoU_WT": float("nan"), "train_loss": 0.1, "val_Dice_ET": True, "epoch": 3})
    assert got == {"TC": {"Dice": 0.5, "HD95": 3.0}, "ET": {"LesionDice": 0.4}, "mean": {"Dice": 0.6}}
    assert list(got)[-1] == "mean"
    means, ses = summary_metrics({"Dice_mean": {"mean": 0.7, "se": 0.02, "n": 3}, "Dice_WT": {"mean": 0.8, "se": 0.0},
                                  "LesionHD95_WT": {"mean": 12.0, "se": 1.5}})
    assert means == {"WT": {"Dice": 0.8, "LesionHD95": 12.0}, "mean": {"Dice": 0.7}}
    assert ses["mean"] == {"Dice": 0.02} and ses["WT"]["LesionHD95"] == 1.5


def test_pyfunc_signature_example_and_requirements():
    from tune.hub.pyfunc import input_example, pinned_requirements, pip_requirements, signature

    ex = input_example(4)
    assert ex.shape == (4, 8, 8, 8) and ex.dtype == np.float32
    assert ex[:, 0, 0, 0].tolist() == [0, 0, 0, 0] and (ex[:, 4, 4, 4] > 0).all()  # a "brain" in a zero background
    assert len(json.dumps(ex.tolist())) < 20_000  # stored as JSON with the model: small
    sig = signature(4)
    (spec_in,), (spec_out,) = sig.inputs.inputs, sig.outputs.inputs
    assert spec_in.type == np.dtype(np.float32) and tuple(spec_in.shape) == (4, -1, -1, -1)
    assert spec_out.type == np.dtype(np.uint8) and tuple(spec_out.shape) == (-1, -1, -1)
    pins = pinned_requirements()
    assert [p.split("==")[0] for p in pins] == ["torch", "monai", "safetensors", "numpy", "nibabel"]
    assert all("+" not in p for p in pins)  # torch 2.13.0+cpu is pinned as ==2.13.0 (any local build matches)
    reqs = pip_requirements(Path("/somewhere/singr-0.2.0-py3-none-any.whl"))
    assert reqs[0] == "artifacts/singr-0.2.0-py3-none-any.whl" and "singr" not in reqs


# --------------------------------------------------------------------------- registration without Ray

@pytest.fixture(scope="module")
def smoke_fit(tmp_path_factory, smoke_data) -> dict:
    """The smoke model trained in-process (no Ray) and its config, for registration."""
    from singr.engine.bundle import write_bundle
    from singr.engine.trainer import fit
    from tune.config import load_service_config
    from tune.plan import make_plan

    work = tmp_path_factory.mktemp("card_fit")
    cfg = load_service_config("smoke.yaml", [f"data.root={smoke_data}", f"data.cache_dir={work / 'cache'}",
                                             f"output_dir={work / 'run'}", f"tune.storage_path={work / 'ray'}",
                                             "tune.name=nofit", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                                             "mlflow.registered_model=singr-card", "mlflow.export=[]",
                                             "mlflow.card_test_metrics=false", "train.epochs=1"])
    plan = make_plan(cfg)
    res = fit(plan.cfg, progress=False)
    model_dir = write_bundle(work / "best_model", [res.best_checkpoint], names=["best.safetensors"])
    return {"work": work, "plan": plan, "model_dir": model_dir}


@pytest.mark.slow
def test_register_without_exports_writes_card_and_description(smoke_fit):
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    from tune.hub.card import build_card, machine_facts, read_card, split_digest
    from tune.hub.publish import register
    from tune.tracking import ensure_experiment

    plan = smoke_fit["plan"]
    uri = plan.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.create_run(ensure_experiment(uri, plan.cfg.mlflow.experiment)).info.run_id
    split = json.loads(plan.split_file.read_text())
    cfg = plan.cfg

    def card():
        return build_card(smoke_fit["model_dir"], cfg, split, sweep="nofit", trial={"trial_id": "t0"},
                          test={"split": "test", "skipped": "mlflow.card_test_metrics is false"},
                          hardware={"driver": machine_facts()})

    reg = register(plan, parent, smoke_fit["model_dir"], {"sweep": "nofit", "trial_id": "t0", "lam": cfg.sing.lam},
                   0.5, split_digest(split), card=card, exports=cfg.mlflow.export)
    assert reg["version"] == 1 and reg["promoted"] and reg["exports"] == []
    mv = client.get_model_version("singr-card", "1")
    assert mv.description.startswith("# singr-card version 1: SiNGR")
    assert "test: not evaluated (mlflow.card_test_metrics is false)" in mv.description
    assert "## Exports" not in mv.description and "export" not in mv.tags
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{reg['model_uri']}", dst_path=tempfile.mkdtemp(),
                                                     tracking_uri=uri))
    assert not (local / "artifacts" / "export").exists()
    card = read_card(local / "artifacts" / "best_model")
    assert card is not None and card == json.loads((smoke_fit["model_dir"] / CARD_FILE).read_text())
    assert card["exports"] == [] and card["test"]["skipped"] == "mlflow.card_test_metrics is false"
    assert card["data"]["split"] == {k: len(split[k]) for k in ("train", "val", "test")}
    assert card["model"]["parameters"] > 1000 and card["model"]["lam"] == cfg.sing.lam
    assert card["config"]["train"]["epochs"] == 1 and card["config"]["mlflow"]["export"] == []
    # validation metrics of the checkpoint, per region
    assert set(card["validation"]["regions"]) == {"TC", "WT", "ET", "mean"}
    assert 0.0 <= card["validation"]["regions"]["mean"]["Dice"] <= 1.0
    assert card["pyfunc"]["wheel"].startswith("singr-") and (local / "artifacts" / card["pyfunc"]["wheel"]).is_file()


# --------------------------------------------------------------------------- a whole smoke sweep

@pytest.fixture(scope="module")
def registered(tmp_path_factory, smoke_data) -> dict:
    """A 1-trial smoke sweep (ONNX export and test metrics on, the smoke defaults)."""
    work = tmp_path_factory.mktemp("card_sweep")
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q",
                        *sweep_overrides(work, smoke_data, "card", **{"tune.num_samples": 1})],
                       cwd=work, env=tune_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    s = sweep_summary(work, "card")
    uri = s["tracking_uri"]
    import mlflow
    import mlflow.artifacts

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    reg = s["registered"]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=reg["model_uri"], dst_path=tempfile.mkdtemp(),
                                                     tracking_uri=uri))
    return {"work": work, "summary": s, "uri": uri, "reg": reg, "local": local, "stdout": p.stdout}


@pytest.mark.slow
def test_sweep_registers_the_card(registered):
    from mlflow.tracking import MlflowClient

    reg, uri, local = registered["reg"], registered["uri"], registered["local"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(reg["name"], str(reg["version"]))
    card = json.loads((local / "artifacts" / "best_model" / CARD_FILE).read_text())
    best = registered["summary"]["best"]
    split = json.loads((registered["work"] / "ray" / "card" / "split.json").read_text())
    assert card["training"]["trial_id"] == best["trial_id"] and card["training"]["sweep"] == "card"
    assert card["training"]["trial_train_seconds"] > 0 and card["training"]["sweep_seconds"] > 0
    assert card["model"]["lam"] == best["lam"] and abs(card["model"]["delta"] - best["delta"]) < 1e-9
    assert card["data"]["split"] == {k: len(split[k]) for k in ("train", "val", "test")}
    assert card["data"]["layout"] == "brats2020"
    # test metrics: the registered model evaluated on the test split at registration
    assert card["test"]["n_cases"] == len(split["test"]) >= 1
    assert set(card["test"]["regions"]) == {"TC", "WT", "ET", "mean"}
    assert all(0.0 <= r["Dice"] <= 1.0 for r in card["test"]["regions"].values())
    assert card["hardware"]["cluster"]["CPU"] >= 1 and card["hardware"]["driver"]["versions"]["ray"]
    assert card["config"]["sing"]["lam"] == best["lam"]  # the trial's resolved config, not the sweep's
    # the description is the card in Markdown
    d = mv.description
    assert d.startswith(f"# {reg['name']} version {reg['version']}: SiNGR") and len(d) <= MAX_DESCRIPTION
    n_test = len(split["test"])
    assert "Not for clinical decisions" in d and f"test: {n_test} case{'s' if n_test != 1 else ''} (" in d
    assert f"train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])}" in d
    assert "best.onnx" in d and "## Limitations" in d
    assert reg["seconds"]["total"] > 0 and "card" in reg["seconds"]


@pytest.mark.slow
def test_sweep_logs_the_onnx_export_beside_the_checkpoint(registered):
    from singr.engine.export_check import check_export, random_sample, read_sidecar

    reg, local = registered["reg"], registered["local"]
    onnx = local / "artifacts" / "export" / "best.onnx"
    assert onnx.is_file() and (local / "artifacts" / "export" / "best.onnx.json").is_file()
    assert (local / "artifacts" / "best_model" / "best.safetensors").is_file()
    card = json.loads((local / "artifacts" / "best_model" / CARD_FILE).read_text())
    (ex,) = card["exports"]
    assert ex["format"] == "onnx" and ex["file"] == "artifacts/export/best.onnx" and ex["ok"]
    assert ex["max_abs_diff"] <= 1e-4 and "crop of BraTS20_Training_" in ex["checked_on"]
    assert reg["exports"][0]["max_abs_diff"] == ex["max_abs_diff"]
    # the downloaded file itself, against PyTorch, at another size than it was checked at
    side = read_sidecar(onnx)
    assert side["input"]["modalities"] == ["flair", "t1", "t1ce", "t2"]
    diff = check_export(onnx, "onnx", local / "artifacts" / "best_model" / "best.safetensors",
                        random_sample(4, (16, 32, 48), seed=3))
    assert diff <= 1e-4


@pytest.mark.slow
def test_sweep_pyfunc_loads_and_predicts_with_its_signature(registered):
    import mlflow.pyfunc

    from serve.model import load_model, scrub_paths

    reg, uri, local = registered["reg"], registered["uri"], registered["local"]
    model = mlflow.pyfunc.load_model(reg["model_uri"])
    (spec,) = model.metadata.signature.inputs.inputs
    assert spec.type == np.dtype(np.float32) and tuple(spec.shape) == (4, -1, -1, -1)
    assert model.metadata.get_input_schema() is not None and (local / "input_example.json").is_file()
    img = np.zeros((4, 20, 24, 16), np.float32)
    img[:, 4:16, 4:20, 2:14] = np.random.default_rng(0).normal(100, 20, (4, 12, 16, 12))
    labels = model.predict(img)
    assert labels.shape == (20, 24, 16) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 4}
    # requirements resolve outside this environment: the wheel is in the model, no bare singr line
    reqs = (local / "requirements.txt").read_text().split()
    wheel = [r for r in reqs if r.endswith(".whl")]
    assert wheel and wheel[0].startswith("artifacts/singr-") and (local / wheel[0]).is_file()
    assert not [r for r in reqs if r.split("==")[0].split(">")[0] == "singr"]
    assert {"torch", "monai", "safetensors", "numpy", "nibabel"} <= {r.split("==")[0] for r in reqs if "==" in r}
    # the endpoint's model identity (/v1/model) carries the same card, with no server path in it
    ident = load_model(reg["model_uri"], uri, "cpu").identity
    assert ident["card"] == scrub_paths(json.loads((local / "artifacts" / "best_model" / CARD_FILE).read_text()))
    assert str(local) not in json.dumps(ident) and str(registered["work"]) not in json.dumps(ident)
    assert ident["description"].startswith(f"# {reg['name']} version {reg['version']}")
