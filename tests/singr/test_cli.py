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
    for sub in ["synth", "preprocess", "train", "evaluate", "predict"]:
        r = subprocess.run([sys.executable, "-m", "singr", sub, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: singr " + sub in r.stdout
