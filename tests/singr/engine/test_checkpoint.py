"""Checkpoints cannot carry code: safetensors with JSON metadata; a torch pickle is refused
unless the user says they trust it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from singr.cli import main
from singr.config import load_config
from singr.engine.checkpoint import Checkpoint, is_safetensors, load_checkpoint, model_from_checkpoint, save_checkpoint
from singr.engine.meta import ModelMeta
from singr.errors import SingrInputError
from singr.models import model_from_config

META = {"in_channels": 4, "out_channels": 3, "region_names": ["TC", "WT", "ET"], "label_convention": "brats2020",
        "modalities": ["flair", "t1", "t1ce", "t2"], "model": "unet3d", "loss": "focal_l1", "regression": True,
        "lam": 0.5, "delta": 0.5, "gamma": 1.0, "spacing": [1.0, 1.0, 1.0]}
MODEL_META = ModelMeta.from_dict(META)


class Evil:
    """Unpickling this writes a file: what a crafted checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def _small():
    cfg = load_config("smoke.yaml")
    torch.manual_seed(0)
    return cfg, model_from_config(cfg, 4, 3)


def test_round_trip_with_optimizer_and_rng(tmp_path):
    cfg, model = _small()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 4, 32, 32, 32)).mean().backward()
    opt.step()
    rng = torch.get_rng_state()
    ckpt = Checkpoint(model.state_dict(), MODEL_META, cfg.to_dict(core_only=True), epoch=3, best_metric=0.5,
                      metrics={"val_Dice_mean": 0.5}, optimizer_state=opt.state_dict(), rng_state=rng)
    p = save_checkpoint(tmp_path / "last.safetensors", ckpt)
    assert is_safetensors(p) and not list(tmp_path.glob(".tmp-*"))
    back = load_checkpoint(p)
    assert back.epoch == 3 and back.metrics["val_Dice_mean"] == 0.5 and back.meta.to_dict() == META
    assert all(torch.equal(back.model_state[k], v) for k, v in model.state_dict().items())
    opt2 = torch.optim.Adam(model_from_config(cfg, 4, 3).parameters(), lr=1e-3)
    opt2.load_state_dict(back.optimizer_state)  # the optimizer resumes
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and float(s1["step"]) == float(s2["step"])
    assert back.rng_state is not None and torch.equal(back.rng_state, rng)
    net = model_from_checkpoint(back)
    x = torch.randn(1, 4, 32, 32, 32)
    assert torch.allclose(net(x), model.eval()(x))


def test_a_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "best.pt"
    torch.save({"model_state": {}, "meta": META, "payload": Evil(str(marker))}, evil)
    with pytest.raises(SingrInputError, match="torch pickle.*can run arbitrary code.*--trust-checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()  # nothing ran
    out = tmp_path / "pred"
    case = tmp_path / "case"
    case.mkdir()
    assert main(["predict", "--model", str(evil), "--files", str(case / "x.nii.gz"), "--out", str(out)]) == 2
    assert main(["evaluate", "--model", str(evil), "-c", "smoke.yaml"]) == 2
    assert not marker.exists()
    assert main(["convert", str(evil), str(tmp_path / "x.safetensors")]) == 2  # convert needs the flag too
    assert not marker.exists()


def test_old_checkpoints_load_only_when_trusted_and_convert(tmp_path):
    cfg, model = _small()
    old = tmp_path / "best.pt"  # singr 0.1's format: a torch pickle of plain data
    torch.save({"model_state": model.state_dict(), "meta": META, "config": {**cfg.to_dict(), "_source": "x"},
                "epoch": 4, "best_metric": 0.3, "metrics": {}}, old)
    with pytest.raises(SingrInputError, match="--trust-checkpoint"):
        load_checkpoint(old)
    assert load_checkpoint(old, trust=True).epoch == 4
    new = tmp_path / "best.safetensors"
    assert main(["convert", str(old), str(new), "--trust-checkpoint"]) == 0
    back = load_checkpoint(new)
    assert back.meta.to_dict() == META  # the 0.1 metadata, as it was
    assert back.epoch == 4 and torch.equal(back.model_state["conv_0.conv_0.conv.weight"],
                                           model.state_dict()["conv_0.conv_0.conv.weight"])


@pytest.mark.parametrize("name,content,needle", [
    ("x.safetensors", b"", "empty checkpoint file"),
    ("x.safetensors", b"garbage" * 100, "broken safetensors checkpoint: its header"),
    ("x.safetensors", bytes(range(7, 256)) * 16, "broken safetensors checkpoint"),
    ("x.bin", b"garbage" * 100, "not a checkpoint: neither safetensors nor a torch file"),
])
def test_foreign_files_are_clear_errors(tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(SingrInputError, match=needle) as e:
        load_checkpoint(p)
    assert "trust-checkpoint" not in str(e.value)  # a broken file is no reason to load pickles
    with pytest.raises(SingrInputError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    cfg, model = _small()
    good = save_checkpoint(tmp_path / "good.safetensors", Checkpoint(model.state_dict(), MODEL_META, cfg.to_dict()))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SingrInputError, match="broken safetensors checkpoint: truncated or corrupt"):
        load_checkpoint(good)
    assert os.path.getsize(good) > 0
