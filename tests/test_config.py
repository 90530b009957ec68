"""Configs: inheritance, overrides, and clear errors for unknown keys and bad values."""
from __future__ import annotations

import pytest

from singr.config import CONFIG_DIR, load_config
from singr.errors import SingrConfigError


@pytest.mark.parametrize("name", ["brats.yaml", "lgg.yaml", "synthetic.yaml", "smoke.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIG_DIR / name)
    assert cfg["sing"]["lam"] == 0.5 and cfg["sing"]["delta"] == 0.5 and cfg["loss"]["gamma"] == 1.0


def test_paper_defaults_live_in_brats_yaml():
    cfg = load_config("brats.yaml")
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["weight_decay"] == 1e-5 and cfg["train"]["batch_size"] == 2
    assert cfg["train"]["patch_size"] == [128, 128, 128] and cfg["infer"]["overlap"] == 0.5
    assert cfg["model"]["name"] == "unet3d" and cfg["model"]["dropout"] == 0.1
    assert load_config("lgg.yaml")["train"]["patch_size"] == [128, 128, 32]


def test_inheritance_and_overrides():
    cfg = load_config("smoke.yaml", ["train.epochs=7", "sing.lam=0.25", "train.patch_size=[16,16,16]"])
    assert cfg["train"]["epochs"] == 7 and cfg["sing"]["lam"] == 0.25 and cfg["train"]["patch_size"] == [16, 16, 16]
    assert cfg["data"]["layout"] == "brats2020"      # from synthetic.yaml
    assert cfg["train"]["weight_decay"] == 1e-5      # from brats.yaml


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("base: " + str(CONFIG_DIR / "smoke.yaml") + "\ntrain:\n  epoch: 3\n")
    with pytest.raises(SingrConfigError, match=r"bad\.yaml.*unknown key 'train\.epoch'"):
        load_config(p)


def test_file_without_base_gets_reference_defaults(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("sing:\n  lam: 0.9\n")
    cfg = load_config(p)
    assert cfg["sing"]["lam"] == 0.9 and cfg["train"]["lr"] == 1e-4


@pytest.mark.parametrize("override,match", [
    ("sing.lam=1.5", r"sing\.lam = 1\.5 is out of range"),
    ("sing.delta=1.0", r"sing\.delta"),
    ("loss.gamma=-1", r"loss\.gamma"),
    ("loss.name=dice", r"loss\.name = 'dice'; expected one of"),
    ("model.name=vnet", r"model\.name"),
    ("train.lr=abc", r"train\.lr = 'abc' has the wrong type"),
    ("train.patch_size=[64,64]", r"train\.patch_size"),
    ("data.split_ratios=[0.5,0.5,0.5]", r"split_ratios"),
    ("train.nonsense=1", r"unknown key 'train\.nonsense'"),
    ("nokey", r"not of the form"),
])
def test_bad_values(override, match):
    with pytest.raises(SingrConfigError, match=match):
        load_config("smoke.yaml", [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SingrConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(SingrConfigError, match="not valid YAML"):
        load_config(p)
