"""Configs: inheritance, overrides, typed sections, and one-line errors that name the key."""
from __future__ import annotations

import json

import pytest

from singr.config import SingrConfig, config_dir, dump_config, from_stored, load_config, with_overrides, with_values
from singr.errors import SingrConfigError


@pytest.mark.parametrize("name", ["brats.yaml", "lgg.yaml", "synthetic.yaml", "smoke.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(config_dir() / name)
    assert isinstance(cfg, SingrConfig)
    assert (cfg.sing.lam, cfg.sing.delta, cfg.loss.gamma) == (0.5, 0.5, 1.0)


def test_paper_defaults_live_in_brats_yaml():
    cfg = load_config("brats.yaml")
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size) == (1e-4, 1e-5, 2)
    assert cfg.train.patch_size == [128, 128, 128] and cfg.infer.overlap == 0.5
    assert cfg.model.name == "unet3d" and cfg.model.dropout == 0.1
    assert load_config("lgg.yaml").train.patch_size == [128, 128, 32]


def test_schema_has_no_defaults_of_its_own():
    """Every value comes from the YAML: the typed sections declare types and ranges only."""
    for section in ("data", "sing", "model", "loss", "train", "augment", "infer", "synth"):
        model = SingrConfig.model_fields[section].annotation
        assert all(f.is_required() for f in model.model_fields.values()), section


def test_inheritance_and_overrides():
    cfg = load_config("smoke.yaml", ["train.epochs=7", "sing.lam=0.25", "train.patch_size=[16,16,16]"])
    assert cfg.train.epochs == 7 and cfg.sing.lam == 0.25 and cfg.train.patch_size == [16, 16, 16]
    assert cfg.data.layout == "brats2020"      # from synthetic.yaml
    assert cfg.train.weight_decay == 1e-5      # from brats.yaml
    assert cfg.source.endswith("smoke.yaml")


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("base: " + str(config_dir() / "smoke.yaml") + "\ntrain:\n  epoch: 3\n")
    with pytest.raises(SingrConfigError, match=r"bad\.yaml.*unknown key 'train\.epoch'"):
        load_config(p)


def test_base_by_shipped_name_and_file_without_base(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: synthetic.yaml\nsing:\n  lam: 0.9\n")
    cfg = load_config(p)
    assert cfg.sing.lam == 0.9 and cfg.data.root == "data/synthetic"
    q = tmp_path / "plain.yaml"
    q.write_text("sing:\n  lam: 0.8\n")
    assert load_config(q).train.lr == 1e-4


@pytest.mark.parametrize("override,match", [
    ("sing.lam=1.5", r"sing\.lam = 1\.5 is out of range; expected a value <= 1"),
    ("sing.delta=1.0", r"sing\.delta = 1\.0 is out of range"),
    ("loss.gamma=-1", r"loss\.gamma = -1 is out of range"),
    ("loss.name=dice", r"loss\.name = 'dice'; expected one of .*'focal_l1'"),
    ("model.name=vnet", r"model\.name = 'vnet'; expected one of"),
    ("train.lr=abc", r"train\.lr = 'abc' has the wrong type"),
    ("train.patch_size=[64,64]", r"train\.patch_size = \[64, 64\]"),
    ("train.patch_size=[64,0,64]", r"train\.patch_size = \[64, 0, 64\] is out of range"),
    ("data.split_ratios=[0.5,0.5,0.5]", r"data\.split_ratios.*sum to 1"),
    ("train.nonsense=1", r"unknown key 'train\.nonsense'"),
    ("sing.device=gpu", r"sing\.device = 'gpu'; expected 'auto', 'cpu' or 'cuda\[:N\]'"),
    ("infer.precision=half", r"infer\.precision"),
    ("nokey", r"not of the form"),
])
def test_bad_values(override, match):
    with pytest.raises(SingrConfigError, match=match):
        load_config("smoke.yaml", [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SingrConfigError, match="not found.*synthetic.yaml"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(SingrConfigError, match="not valid YAML"):
        load_config(p)


def test_copies_with_values_and_stored_configs():
    cfg = load_config("smoke.yaml")
    odd = "/tmp/a: b #c/out"  # set as it is, never parsed as YAML
    c2 = with_values(cfg, {"output_dir": odd, "train.epochs": 5})
    assert c2.output_dir == odd and c2.train.epochs == 5 and cfg.train.epochs == 2
    assert with_overrides(cfg, ["loss.name=l1"]).loss.name == "l1"
    with pytest.raises(SingrConfigError, match="train.epochs"):
        with_values(cfg, {"train.epochs": 0})
    # a config stored by an older version: unknown keys dropped, new keys from the reference
    old = cfg.to_dict(core_only=True)
    old["train"]["progress"] = True
    del old["infer"]["tta"]
    back = from_stored(old)
    assert back.infer.tta is False and back.train.epochs == 2 and back.tune is None
    assert "tune:" not in dump_config(back)


def test_json_schema_of_the_core():
    schema = SingrConfig.model_json_schema()
    assert set(schema["required"]) >= {"data", "sing", "train"}
    text = json.dumps(schema)
    assert "focal_l1" in text and "unet3d" in text and "fastgeodis" in text  # choices from the code


def test_product_loss_mode_from_config():
    from singr.engine.trainer import loss_from_config

    assert loss_from_config(load_config("smoke.yaml", ["loss.name=product"])).mode == "image"
    assert loss_from_config(load_config("smoke.yaml", ["loss.name=product", "loss.product_mode=voxel"])).mode == "voxel"
    with pytest.raises(SingrConfigError, match="loss.product_mode"):
        load_config("smoke.yaml", ["loss.product_mode=sum"])
