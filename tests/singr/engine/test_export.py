"""`singr export`: TorchScript and ONNX exports of a tiny unet3d reproduce PyTorch's logits
(max abs difference <= 1e-4) on a random normalised input and on a crop of the real BraTS
case ($SINGR_BRATS_CASE; skipped when it is missing, failed when it is missing under CI)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from singr.cli import main
from singr.engine import export_check
from singr.engine.export import export_model, file_sha256, output_paths
from singr.engine.export_check import CHECK_TOLERANCE, case_sample, check_export, random_sample, read_sidecar
from singr.errors import SingrInputError

MODS = ("t1n", "t1c", "t2w", "t2f")
REPO = Path(__file__).resolve().parents[3]
ROI = (32, 32, 32)


def _tiny_checkpoint(path: Path) -> Path:
    """smoke.yaml's unet3d (features 4..16), sliding window 32^3, untrained weights (as
    benchmarks/run.py's ``_bench_checkpoint``); norms' affine weights randomised so that they matter."""
    import torch

    from singr.config import load_config
    from singr.engine.checkpoint import Checkpoint, ModelMeta, save_checkpoint
    from singr.models import model_from_config

    cfg = load_config("smoke.yaml", [f"infer.roi_size={list(ROI)}"])
    torch.manual_seed(0)
    model = model_from_config(cfg, 4, 3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d) and m.affine]
    assert norms
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
    meta = {"in_channels": 4, "out_channels": 3, "region_names": ["TC", "WT", "ET"],
            "label_convention": "brats2023", "modalities": ["flair", "t1", "t1ce", "t2"], "model": cfg.model.name,
            "loss": "focal_l1", "regression": True, "lam": 0.5, "delta": 0.5, "gamma": 1.0, "spacing": [1.0] * 3}
    return save_checkpoint(path, Checkpoint(model_state=model.state_dict(), meta=ModelMeta.from_dict(meta),
                                            config=cfg.to_dict(core_only=True), epoch=0))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("export-ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module", params=["torchscript", "onnx"])
def exported(request, ckpt, tmp_path_factory) -> tuple[str, Path]:
    fmt = request.param
    files = export_model([ckpt], fmt, tmp_path_factory.mktemp(f"export-{fmt}"))
    assert len(files) == 1
    return fmt, files[0]


def _case_dir() -> Path | None:
    """The real case folder, None (skip) when it is missing outside CI; under CI a missing case fails."""
    root = Path(os.environ.get("SINGR_BRATS_CASE") or REPO.parent / "shared" / "data" / "brats-case")
    if all((root / f"{m}.nii.gz").is_file() for m in MODS):
        return root
    if os.environ.get("CI"):
        pytest.fail(f"real BraTS case not found at {root} (set SINGR_BRATS_CASE to a folder with "
                    f"{', '.join(m + '.nii.gz' for m in MODS)})")
    return None


# --------------------------------------------------------------------------- module API
def test_export_matches_pytorch_on_random_input(exported, ckpt):
    fmt, path = exported
    assert path.suffix == {"torchscript": ".torchscript", "onnx": ".onnx"}[fmt] and path.stat().st_size > 0
    diff = check_export(path, fmt, ckpt, random_sample(4, ROI))
    assert diff <= CHECK_TOLERANCE, diff
    # dynamic spatial size: another shape, not a cube, gives the same logits too
    diff2 = check_export(path, fmt, ckpt, random_sample(4, (16, 48, 32), seed=1))
    assert diff2 <= CHECK_TOLERANCE, diff2


def test_sidecar_says_what_the_raw_network_needs(exported, ckpt):
    fmt, path = exported
    side = read_sidecar(path)
    assert path.with_name(path.name + ".json").is_file()
    assert side["format"] == fmt and side["file"] == path.name and side["model"] == "unet3d"
    assert side["source"]["sha256"] == file_sha256(ckpt) and side["source"]["checkpoint"] == ckpt.name
    inp, out = side["input"], side["output"]
    assert inp["channels"] == 4 and inp["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert inp["modalities_brats2023"] == ["t2f", "t1n", "t1c", "t2w"]
    assert inp["spatial_size"] == "dynamic" and inp["batch"] == "dynamic" and inp["spatial_multiple"] == 16
    assert inp["shape"] == ["batch", 4, "x", "y", "z"] and inp["exported_at"] == [1, 4, *ROI]
    assert "non-zero" in side["normalization"]["method"] and side["normalization"]["per_channel"]
    assert out["regions"] == ["TC", "WT", "ET"] and out["activation"] == "tanh"
    assert out["foreground"].startswith("logit >= 0")
    assert side["sliding_window"]["roi_size"] == list(ROI) and side["sliding_window"]["overlap"] == 0.5
    assert (side["training"]["lam"], side["training"]["delta"], side["training"]["gamma"]) == (0.5, 0.5, 1.0)
    assert side["export"]["verified"]["done"] and side["export"]["verified"]["max_abs_diff"] <= CHECK_TOLERANCE
    assert side["ensemble"] is None


@pytest.fixture(scope="module")
def real_crop() -> np.ndarray:
    """A normalised 32^3 crop at the centre of the real case's brain (read once)."""
    case = _case_dir()
    if case is None:
        pytest.skip("real BraTS case not found (set SINGR_BRATS_CASE)")
    sample = case_sample(case, ROI, ["flair", "t1", "t1ce", "t2"], 4)
    assert sample.shape == (1, 4, *ROI) and np.count_nonzero(sample) > 0.5 * sample.size  # mostly brain
    return sample


@pytest.mark.realdata
def test_export_matches_pytorch_on_real_case_crop(real_crop, exported, ckpt):
    fmt, path = exported
    diff = check_export(path, fmt, ckpt, real_crop)
    assert diff <= CHECK_TOLERANCE, diff


def test_bad_arguments_are_clear(ckpt, tmp_path):
    with pytest.raises(SingrInputError, match="expected one of torchscript, onnx"):
        export_model([ckpt], "tflite", tmp_path)
    with pytest.raises(SingrInputError, match="multiple of 16"):
        export_model([ckpt], "torchscript", tmp_path, roi=(32, 30, 32))
    with pytest.raises(SingrInputError, match="--opset"):
        export_model([ckpt], "onnx", tmp_path, opset=99)
    with pytest.raises(SingrInputError, match="ending in .onnx"):
        output_paths([ckpt], "onnx", tmp_path / "model.pt")
    with pytest.raises(SingrInputError, match="give a folder"):
        output_paths([ckpt, ckpt], "onnx", tmp_path / "model.onnx")
    with pytest.raises(SingrInputError, match=r"expected \(batch, 4, x, y, z\)"):
        check_export(tmp_path / "x.onnx", "onnx", ckpt, np.zeros((1, 3, 32, 32, 32), np.float32))
    a, b = tmp_path / "f0" / "best.safetensors", tmp_path / "f1" / "best.safetensors"
    assert [p.name for p in output_paths([a, b], "onnx", tmp_path / "out")] == ["member_0_best.onnx",
                                                                                  "member_1_best.onnx"]
    assert output_paths([a], "torchscript", tmp_path / "m.pt") == [tmp_path / "m.pt"]


# --------------------------------------------------------------------------- the command
def test_cli_torchscript_of_an_ensemble_folder(ckpt, tmp_path, capsys):
    from singr.engine.bundle import write_bundle

    bundle = write_bundle(tmp_path / "model", [ckpt, ckpt])
    out = tmp_path / "ts"
    assert main(["export", "--model", str(bundle), "--format", "torchscript", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    files = sorted(out.glob("*.torchscript"))
    assert [f.name for f in files] == ["member_0.torchscript", "member_1.torchscript"]
    assert text.count("max abs difference from PyTorch on a random normalised 32x32x32 input") == 2
    side = json.loads((out / "member_1.torchscript.json").read_text())
    assert side["ensemble"]["member"] == 1 and side["ensemble"]["members"] == [f.name for f in files]


def test_cli_onnx(ckpt, tmp_path, capsys):
    case = _case_dir()
    out = tmp_path / "model.onnx"
    args = ["export", "--model", str(ckpt), "--format", "onnx", "--out", str(out), "--opset", "17"]
    if case is not None:
        args += ["--check-case", str(case)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "model.onnx.json").is_file()
    line = next(x for x in text.splitlines() if "max abs difference" in x)
    assert (f"crop of {case.name}" if case is not None else "random normalised") in line
    assert float(line.rsplit(":", 1)[1]) <= CHECK_TOLERANCE


def test_cli_errors_exit_2(ckpt, tmp_path, capsys, monkeypatch):
    assert main(["export", "--model", str(ckpt), "--format", "tflite", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "singr export: error:" in err and "'tflite' (--format)" in err and "torchscript, onnx" in err
    missing = tmp_path / "nope.safetensors"
    assert main(["export", "--model", str(missing), "--format", "onnx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "model not found" in err
    # an export that differs from PyTorch by more than the tolerance fails the command
    monkeypatch.setattr(export_check, "check_export", lambda *a, **k: 1e-3)
    assert main(["export", "--model", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "t")]) == 2
    assert "differs from PyTorch by 0.001 > 0.0001" in capsys.readouterr().err
