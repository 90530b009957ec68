"""A checkpoint's metadata is a typed ModelMeta in memory and the same JSON object on disk as
before: round trips are exact, old checkpoints load, broken ones are named."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from singr.config import load_config
from singr.engine.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint
from singr.engine.meta import META_KEYS, MemberInfo, ModelMeta
from singr.engine.trainer import training_meta
from singr.errors import SingrInputError
from singr.losses import is_regression_loss


def _first_case() -> SimpleNamespace:
    """The fields of a PreparedCase that the trainer's metadata reads."""
    return SimpleNamespace(image=np.zeros((4, 2, 2, 2), np.float32), region_names=("TC", "WT", "ET"),
                           label_convention="brats2023", modalities=("flair", "t1", "t1ce", "t2"),
                           spacing=(1.0, 1.0, 1.5))


SPLIT = {"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]}


def _trainer_dict(cfg, first, split, fold) -> dict:
    """The metadata dict exactly as Trainer.setup built it before ModelMeta."""
    return {"in_channels": int(first.image.shape[0]), "out_channels": len(first.region_names),
            "region_names": list(first.region_names), "label_convention": first.label_convention,
            "modalities": list(first.modalities), "model": cfg.model.name, "loss": cfg.loss.name,
            "regression": is_regression_loss(cfg.loss.name), "lam": float(cfg.sing.lam),
            "delta": float(cfg.sing.delta), "gamma": float(cfg.loss.gamma), "spacing": list(first.spacing),
            "fold": fold, "n_train": len(split["train"]), "n_val": len(split["val"]),
            "n_test": len(split["test"])}


OLD_01 = {"in_channels": 4, "out_channels": 3, "region_names": ["TC", "WT", "ET"], "label_convention": "brats2020",
          "modalities": ["flair", "t1", "t1ce", "t2"], "model": "unet3d", "loss": "focal_l1", "regression": True,
          "lam": 0.5, "delta": 0.5, "gamma": 1.0, "spacing": [1.0, 1.0, 1.0]}  # singr 0.1: no fold, no n_*


@pytest.mark.parametrize("fold", [None, 2])
def test_the_trainers_metadata_round_trips_exactly(fold):
    cfg, first = load_config("smoke.yaml"), _first_case()
    d = _trainer_dict(cfg, first, SPLIT, fold)
    meta = ModelMeta.from_dict(d)
    assert meta.to_dict() == d and json.dumps(meta.to_dict()) == json.dumps(d)  # same keys, order, values
    built = training_meta(cfg, first, SPLIT, fold)  # what the trainer writes now
    assert json.dumps(built.to_dict()) == json.dumps(d) and built == meta
    assert list(built.to_dict()) == list(META_KEYS)
    assert meta.region_names == ("TC", "WT", "ET") and meta.spacing == (1.0, 1.0, 1.5) and meta.fold == fold
    assert meta.n_train == 3 and meta.n_val == 1 and meta.n_test == 2 and meta.extra == {}


def test_checkpoint_files_are_as_before(tmp_path):
    """The safetensors header holds the same JSON text as a checkpoint written from the dict."""
    from safetensors import safe_open

    cfg, first = load_config("smoke.yaml"), _first_case()
    d = _trainer_dict(cfg, first, SPLIT, None)
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    ckpt = Checkpoint(state, training_meta(cfg, first, SPLIT, None), cfg.to_dict(core_only=True), epoch=2,
                      best_metric=0.25, metrics={"val_Dice_mean": 0.25})
    p = save_checkpoint(tmp_path / "best.safetensors", ckpt)
    old = {"format": FORMAT_VERSION, "meta": d, "config": ckpt.config, "epoch": 2, "best_metric": 0.25,
           "metrics": {"val_Dice_mean": 0.25}}
    with safe_open(str(p), framework="pt") as f:
        assert f.metadata()["singr"] == json.dumps(old, default=float)
    back = load_checkpoint(p)
    assert back.meta == ckpt.meta and back.meta.to_dict() == d
    again = save_checkpoint(tmp_path / "again.safetensors", back)  # load and save: the same bytes
    assert again.read_bytes() == p.read_bytes()


def test_old_metadata_without_optional_keys_loads_and_is_written_back_as_it_was(tmp_path):
    meta = ModelMeta.from_dict(OLD_01)
    assert meta.fold is None and meta.n_train is None and meta.n_val is None and meta.n_test is None
    assert meta.lam == 0.5 and meta.regression is True and meta.modalities == ("flair", "t1", "t1ce", "t2")
    assert meta.to_dict() == OLD_01 and list(meta.to_dict()) == list(OLD_01)  # no keys added
    minimal = {"in_channels": 1, "out_channels": 1, "region_names": ["WT"]}
    m = ModelMeta.from_dict(minimal)
    assert m.label_convention is None and m.modalities == () and m.model is None and m.spacing is None
    assert m.regression is None and m.lam is None and m.to_dict() == minimal
    # a field set since reading is written (after the stored keys)
    assert dataclasses.replace(m, fold=3).to_dict() == {**minimal, "fold": 3}
    # an old checkpoint file (a 0.1 torch pickle) loads when trusted, metadata as stored
    old = tmp_path / "best.pt"
    torch.save({"model_state": {}, "meta": OLD_01, "config": {}, "epoch": 1}, old)
    assert load_checkpoint(old, trust=True).meta.to_dict() == OLD_01


def test_metadata_without_in_channels_names_the_file(tmp_path):
    from safetensors.torch import save_file

    broken = {k: v for k, v in OLD_01.items() if k != "in_channels"}
    with pytest.raises(SingrInputError, match=r"x\.safetensors: .*lacks 'in_channels'") as e:
        ModelMeta.from_dict(broken, source="x.safetensors")
    assert e.value.path == "x.safetensors"
    p = tmp_path / "nochannels.safetensors"
    save_file({"model.w": torch.zeros(1)}, str(p), metadata={"singr": json.dumps({"format": 2, "meta": broken})})
    with pytest.raises(SingrInputError, match="lacks 'in_channels'") as e:
        load_checkpoint(p)
    assert e.value.path == str(p) and str(p) in str(e.value)
    pt = tmp_path / "nochannels.pt"
    torch.save({"model_state": {}, "meta": broken}, pt)
    with pytest.raises(SingrInputError, match="lacks 'in_channels'") as e:
        load_checkpoint(pt, trust=True)
    assert e.value.path == str(pt)
    with pytest.raises(SingrInputError, match="lacks 'region_names'"):
        ModelMeta.from_dict({"in_channels": 4, "out_channels": 3})
    with pytest.raises(SingrInputError, match="bad 'in_channels'"):
        ModelMeta.from_dict({**OLD_01, "in_channels": "four"})
    with pytest.raises(SingrInputError, match="not a JSON object"):
        ModelMeta.from_dict(["in_channels"])  # type: ignore[arg-type]


def test_unknown_keys_survive_a_round_trip(tmp_path):
    d = {"in_channels": 4, "version": 7, "out_channels": 3, "region_names": ["TC", "WT", "ET"],
         "notes": {"by": "someone", "tags": [1, 2]}, "lam": 0.5}
    meta = ModelMeta.from_dict(d)
    assert meta.extra == {"version": 7, "notes": {"by": "someone", "tags": [1, 2]}}
    assert meta.to_dict() == d and list(meta.to_dict()) == list(d)  # the stored order, unknown keys in place
    p = save_checkpoint(tmp_path / "x.safetensors", Checkpoint({"w": torch.zeros(2)}, meta, {}))
    back = load_checkpoint(p).meta
    assert back.extra == meta.extra and back.to_dict() == d
    built = ModelMeta(in_channels=1, out_channels=1, region_names=("WT",), extra={"bundle": "b1"})
    assert built.to_dict()["bundle"] == "b1" and list(built.to_dict())[-1] == "bundle"


def test_member_info_keeps_the_members_json():
    meta = ModelMeta.from_dict({**OLD_01, "fold": 1})
    info = MemberInfo.of("/runs/x/fold_1.safetensors", meta)
    assert info.to_dict() == {"file": "fold_1.safetensors", "lam": 0.5, "delta": 0.5, "gamma": 1.0,
                              "model": "unet3d", "fold": 1}
    assert list(info.to_dict()) == ["file", "lam", "delta", "gamma", "model", "fold"]
