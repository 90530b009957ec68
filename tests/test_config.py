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


# --------------------------------------------------------------------------- experiment grid

def test_ablation_configs_expand_to_the_paper_variants():
    from singr.experiment import ARCHITECTURES, TABLE, expand_variants, variant_config

    cfg = load_config("ablation-synthetic.yaml")
    vs = expand_variants(cfg)
    assert [v.name for v in vs] == ["hard", "l2", "l1", "product", "dagger", "nomargin", "singr",
                                    "segresnet-hard", "segresnet-singr"]
    assert [v.name for v in vs if ARCHITECTURES in v.groups] == ["hard", "singr", "segresnet-hard",
                                                                  "segresnet-singr"]
    assert all(TABLE in v.groups for v in vs[:7])
    c = variant_config(cfg, "nomargin", seed=2)
    assert (c["sing"]["delta"], c["loss"]["name"], c["train"]["seed"]) == (0.0, "focal_l1", 2)
    c = variant_config(cfg, "segresnet-singr")
    assert (c["model"]["name"], c["loss"]["name"], c["sing"]["delta"]) == ("segresnet", "focal_l1", 0.5)
    assert variant_config(cfg, "hard")["loss"]["name"] == "dice_bce"
    for name in ("ablation.yaml", "ablation-lgg.yaml"):
        assert len(expand_variants(load_config(name))) == 7 + 2 * 3


def test_product_loss_mode_from_config():
    from singr.engine.train import loss_from_config

    cfg = load_config("smoke.yaml", ["loss.name=product"])
    assert loss_from_config(cfg).mode == "image"
    assert loss_from_config(load_config("smoke.yaml", ["loss.name=product", "loss.product_mode=voxel"])).mode == "voxel"
    with pytest.raises(SingrConfigError, match="loss.product_mode"):
        load_config("smoke.yaml", ["loss.product_mode=sum"])


@pytest.mark.parametrize("override,needle", [
    ("experiment.variants=[{name: a, set: [loss.name=l3]}]", "variant 'a'.*loss.name"),
    ("experiment.variants=[{name: a}, {name: a}]", "used twice"),
    ("experiment.variants=[{name: 'a b'}]", "short name"),
    ("experiment.variants=[{name: a, sets: []}]", r"experiment.variants\[0\]"),
    ("experiment.variants=[{name: a, set: [tune.mode=search]}]", "may not change"),
    ("experiment.variants=[{name: a, set: [sing.bogus=1]}]", "sing.bogus"),
    ("experiment.baseline=nope", "experiment.baseline = 'nope' is not a variant"),
    ("experiment.architectures=[resnet]", "'resnet' is not one of"),
    ("experiment.seeds=[]", "experiment.seeds"),
    ("experiment.seeds=[1, 1]", "experiment.seeds"),
    ("experiment.variants=[]", "needs experiment.variants"),
    ("experiment.architectures=[segresnet, segresnet]", "twice"),
    ("experiment.variants=[{name: hard}, {name: singr}, {name: segresnet-hard}]", "'segresnet-hard' is also"),
    ("experiment.eval_split=val", "experiment.eval_split"),
])
def test_bad_experiment_names_the_field(override, needle):
    with pytest.raises(SingrConfigError, match=needle):
        load_config("ablation-synthetic.yaml", [override])
