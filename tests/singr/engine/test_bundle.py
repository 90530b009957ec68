"""Model folders (singr.engine.bundle): post-processing rules stored with the members, applied
or not as infer.postprocess (or the caller) says, and replaced in place."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from singr.config import load_config
from singr.engine.bundle import BUNDLE_FILE, load_predictor, read_bundle, write_bundle, write_rules
from singr.engine.checkpoint import Checkpoint, save_checkpoint
from singr.engine.meta import ModelMeta
from singr.engine.postprocess import PostprocessRules
from singr.errors import SingrInputError
from singr.models import model_from_config

META = {"in_channels": 4, "out_channels": 3, "region_names": ["TC", "WT", "ET"], "label_convention": "brats2020",
        "modalities": ["flair", "t1", "t1ce", "t2"], "model": "unet3d", "loss": "focal_l1", "regression": True,
        "lam": 0.5, "delta": 0.5, "gamma": 1.0, "spacing": [1.0, 1.0, 1.0]}
WIPE = PostprocessRules({"WT": 10**6})  # removes every WT component (and what nests in it)


def _checkpoint(path: Path, *overrides: str) -> Path:
    cfg = load_config("smoke.yaml", list(overrides))
    torch.manual_seed(0)
    model = model_from_config(cfg, 4, 3)
    return save_checkpoint(path, Checkpoint(model.state_dict(), ModelMeta.from_dict(META), cfg.to_dict(core_only=True)))


def _signed() -> np.ndarray:
    s = np.full((3, 8, 8, 8), -0.5, dtype=np.float32)
    s[:2, 2:5, 2:5, 2:5] = 0.5
    return s


def test_rules_are_applied_unless_the_config_or_the_caller_turns_them_off(tmp_path):
    on = _checkpoint(tmp_path / "on.safetensors")
    off = _checkpoint(tmp_path / "off.safetensors", "infer.postprocess=false")
    write_bundle(tmp_path / "a", [on], postprocess=WIPE.to_dict())
    write_bundle(tmp_path / "b", [off], postprocess=WIPE.to_dict())
    signed = _signed()
    default = load_predictor(tmp_path / "a", "cpu")          # the model's config: infer.postprocess true
    assert default.postprocess == WIPE and default.applies_postprocess
    assert not default.from_signed(signed).regions.any()
    trained_off = load_predictor(tmp_path / "b", "cpu")      # trained with infer.postprocess false
    assert trained_off.postprocess == WIPE and not trained_off.applies_postprocess
    assert int(trained_off.from_signed(signed).regions[1].sum()) == 27
    assert not load_predictor(tmp_path / "a", "cpu", postprocess=False).applies_postprocess
    assert load_predictor(tmp_path / "b", "cpu", postprocess=True).applies_postprocess
    # a plain checkpoint has no rules: nothing to apply whatever the setting
    assert not load_predictor(on, "cpu", postprocess=True).applies_postprocess


def test_write_rules_replaces_the_rules_in_place(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    folder = write_bundle(tmp_path / "bundle", [ckpt], info={"sweep": "s1"}, names=["fold_0.safetensors"])
    before = (folder / "fold_0.safetensors").read_bytes()
    write_rules(folder, WIPE.to_dict(), {"postprocess_fit": {"n_cases": 3}})
    rec = json.loads((folder / BUNDLE_FILE).read_text())
    assert rec == {"members": ["fold_0.safetensors"], "postprocess": WIPE.to_dict(),
                   "info": {"sweep": "s1", "postprocess_fit": {"n_cases": 3}}}
    assert (folder / "fold_0.safetensors").read_bytes() == before
    assert load_predictor(folder, "cpu").postprocess == WIPE
    # a folder of checkpoints without singr-model.json becomes a bundle of the same members
    plain = tmp_path / "plain"
    (plain / "fold_1" / "checkpoints").mkdir(parents=True)
    (plain / "fold_1" / "checkpoints" / "best.safetensors").write_bytes(ckpt.read_bytes())
    write_rules(plain, WIPE.to_dict())
    members, rec = read_bundle(plain)
    assert rec["members"] == ["fold_1/checkpoints/best.safetensors"] and members[0].is_file()
    assert rec["postprocess"] == WIPE.to_dict()
    with pytest.raises(SingrInputError, match="model folder"):
        write_rules(ckpt, WIPE.to_dict())


def test_bad_rules_in_a_bundle_are_an_error_naming_it(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    folder = write_bundle(tmp_path / "bundle", [ckpt], postprocess={"min_component_voxels": {"WT": -3}})
    with pytest.raises(SingrInputError, match="bad post-processing rules") as e:
        load_predictor(folder, "cpu")
    assert str(folder) in str(e.value)
