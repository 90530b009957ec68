"""`singr synth` -> `train` (smoke) -> `evaluate` -> `predict`, through the real CLI."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from singr.cli import main

pytestmark = pytest.mark.slow


def run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return main(args)
    finally:
        os.chdir(old)


def test_synth_train_evaluate_predict(tmp_path, capsys):
    t0 = time.time()
    assert run(["synth", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    assert run(["train", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    out = tmp_path / "runs" / "smoke"
    best = out / "checkpoints" / "best.safetensors"
    assert best.exists() and (out / "checkpoints" / "last.safetensors").exists()
    log = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in log] == [1, 2]
    assert all(np.isfinite(float(r["train_loss"])) for r in log)
    for r in log:  # where each epoch's time went (trainer.last_timing; validation every epoch in smoke.yaml)
        train_s, wait_s = float(r["train_seconds"]), float(r["data_wait_seconds"])
        assert 0 <= wait_s <= train_s <= float(r["epoch_seconds"])
        # log.csv keeps seconds to 3 decimals and the share to 4: the share recomputed from the
        # rounded seconds may differ by what that rounding propagates (|d(w/t)| <= dw/t + w*dt/t^2)
        rounding = 5e-4 / train_s + 5e-4 * wait_s / train_s ** 2 + 5e-5
        assert float(r["data_wait_share"]) == pytest.approx(wait_s / train_s, abs=rounding + 1e-9)
        assert float(r["patches_per_s"]) == pytest.approx(2 * 2 / train_s, rel=0.05)  # 2 iterations of batch 2
        assert 0 < float(r["val_seconds"]) <= float(r["epoch_seconds"])
    split = json.loads((out / "split.json").read_text())
    assert sorted(sum((split[k] for k in ("train", "val", "test")), [])) == sorted(
        p.name for p in (tmp_path / "data" / "smoke").glob("BraTS20_*"))

    # resume: two more epochs continue from last.safetensors instead of starting over
    assert run(["train", "-c", "smoke.yaml", "-q", "train.epochs=3"], tmp_path) == 0
    log = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in log] == [1, 2, 3]

    assert run(["evaluate", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    summ = json.loads((out / "eval" / "summary_test.json").read_text())
    rows = list(csv.DictReader(open(out / "eval" / "metrics_test.csv")))
    assert summ["n_cases"] == len(split["test"]) == len(rows)
    for r in rows:
        assert 0.0 <= float(r["Dice_mean"]) <= 1.0 and float(r["HD95_mean"]) >= 0.0
    assert np.isclose(summ["summary"]["Dice_mean"]["mean"], np.mean([float(r["Dice_mean"]) for r in rows]))
    png = out / "eval" / "overlays" / f"{rows[0]['case']}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    case = tmp_path / "data" / "smoke" / split["test"][0]
    pred = tmp_path / "pred" / "seg.nii.gz"
    assert run(["predict", "--checkpoint", str(best), "--case", str(case), "--out", str(pred), "--signed", "--png"],
               tmp_path) == 0
    ref = nib.load(str(next(case.glob("*_flair.nii.gz"))))
    seg = nib.load(str(pred))
    assert seg.shape == ref.shape
    np.testing.assert_allclose(seg.affine, ref.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}
    assert (tmp_path / "pred" / "seg.png").stat().st_size > 1000
    signed = nib.load(str(tmp_path / "pred" / "seg_signed.nii.gz"))
    assert signed.shape == ref.shape + (3,)
    sv = np.asarray(signed.dataobj)
    assert sv.min() >= -1.0 and sv.max() <= 1.0
    # the label map is the thresholded signed map: WT = (labels > 0) = (S_WT >= 0)
    np.testing.assert_array_equal(np.asarray(seg.dataobj) > 0, (sv >= 0).any(-1))

    # a raw, unstripped scan (noise over the whole field of view) is refused, named; --force segments it
    raw = tmp_path / "raw"
    raw.mkdir()
    noise = np.random.default_rng(0).random(ref.shape).astype(np.float32) + 1
    for m in ("flair", "t1", "t1ce", "t2"):
        nib.save(nib.Nifti1Image(noise, ref.affine), str(raw / f"raw_{m}.nii.gz"))
    capsys.readouterr()
    assert run(["predict", "--checkpoint", str(best), "--case", str(raw), "--out", str(tmp_path / "r.nii.gz")],
               tmp_path) == 2
    err = capsys.readouterr().err
    assert "does not look like BraTS-space input" in err and "not skull-stripped" in err and "--force" in err
    assert not (tmp_path / "r.nii.gz").exists()
    assert run(["predict", "--checkpoint", str(best), "--case", str(raw), "--out", str(tmp_path / "r.nii.gz"),
                "--force", "-q"], tmp_path) == 0
    assert "warning (raw): 100% of the field of view is non-zero" in capsys.readouterr().err
    assert (tmp_path / "r.nii.gz").exists()
    print(f"end-to-end smoke: {time.time() - t0:.1f} s")


def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    assert run(["synth", "-c", "smoke.yaml", "-q", "--n-cases", "3"], tmp_path) == 0
    case = tmp_path / "data" / "smoke" / "BraTS20_Training_002"
    (case / "BraTS20_Training_002_t1ce.nii.gz").unlink()
    assert run(["preprocess", "-c", "smoke.yaml", "-q"], tmp_path) == 2  # checks every case
    err = capsys.readouterr().err
    assert "BraTS20_Training_002" in err and "t1ce" in err
    assert run(["train", "-c", "smoke.yaml", "-q", "train.epochz=1"], tmp_path) == 2
    assert "unknown key 'train.epochz'" in capsys.readouterr().err
    assert run(["train", "-c", "smoke.yaml", "-q", "data.root=nowhere"], tmp_path) == 2
    assert "nowhere" in capsys.readouterr().err


def test_every_subcommand_has_help():
    for sub in ["synth", "preprocess", "train", "evaluate", "postprocess", "predict"]:
        r = subprocess.run([sys.executable, "-m", "singr", sub, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: singr " + sub in r.stdout


def test_postprocess_fits_rules_on_a_folds_validation_cases_and_evaluate_applies_them(tmp_path, capsys):
    folds = ["data.folds=2"]
    assert run(["synth", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    assert run(["train", "-c", "smoke.yaml", "-q", "--fold", "0", "train.epochs=1", *folds], tmp_path) == 0
    capsys.readouterr()
    bundle = tmp_path / "bundle"
    assert run(["postprocess", "-c", "smoke.yaml", "--fold", "0", "--out", str(bundle), "-q", *folds], tmp_path) == 0
    out = capsys.readouterr().out
    rec = json.loads((bundle / "singr-model.json").read_text())
    split = json.loads((tmp_path / "runs" / "smoke" / "split.json").read_text())
    fit = rec["info"]["postprocess_fit"]
    assert rec["members"] == ["best.safetensors"] and (bundle / "best.safetensors").is_file()
    assert set(rec["postprocess"]) == {"min_component_voxels", "et_min_voxels"}
    assert fit["split"] == "val" and fit["fold"] == 0 and fit["n_cases"] == len(split["folds"]["2"][0])
    for name in ("TC", "WT", "ET", "mean"):  # Dice before -> after, as printed, per region
        assert f"{name}: {fit['dice_before'][name]:.4f} -> {fit['dice_after'][name]:.4f}" in out
    assert "rules kept: " in out and fit["dice_after"]["mean"] >= fit["dice_before"]["mean"]

    # evaluate applies the bundle's rules (infer.postprocess: true) and writes lesion-wise columns
    assert run(["evaluate", "--model", str(bundle), "-c", "smoke.yaml", "-q", "--out", "ev", "--overlays", "0"],
               tmp_path) == 0
    assert "lesion-wise Dice" in capsys.readouterr().out
    summ = json.loads((tmp_path / "ev" / "summary_test.json").read_text())
    assert summ["postprocess"] == rec["postprocess"]
    header = (tmp_path / "ev" / "metrics_test.csv").read_text().splitlines()[0].split(",")
    assert {"LesionDice_TC", "LesionHD95_ET", "LesionDice_mean", "LesionHD95_mean"} <= set(header)
    # ... unless told not to, on the command line or in the config
    for flags in (["--no-postprocess"], ["infer.postprocess=false"]):
        assert run(["evaluate", "--model", str(bundle), "-c", "smoke.yaml", "-q", "--out", "raw", "--overlays", "0",
                    "--no-lesion", *flags], tmp_path) == 0
        assert json.loads((tmp_path / "raw" / "summary_test.json").read_text())["postprocess"] is None
        header = (tmp_path / "raw" / "metrics_test.csv").read_text().splitlines()[0].split(",")
        assert "Dice_WT" in header and not any(h.startswith("Lesion") for h in header)

    # without --out the rules of a model folder are replaced in place; a checkpoint file needs --out
    (bundle / "singr-model.json").write_text(json.dumps({**rec, "postprocess": None}))
    assert run(["postprocess", "--model", str(bundle), "-c", "smoke.yaml", "--fold", "0", "-q", *folds],
               tmp_path) == 0
    assert json.loads((bundle / "singr-model.json").read_text()) == rec
    ckpt = tmp_path / "runs" / "smoke" / "fold_0" / "checkpoints" / "best.safetensors"
    capsys.readouterr()
    assert run(["postprocess", "--model", str(ckpt), "-c", "smoke.yaml", "-q"], tmp_path) == 2
    assert "give --out FOLDER" in capsys.readouterr().err
