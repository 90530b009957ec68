"""The service sections (tune, experiment, mlflow): typed, and checked across sections."""
from __future__ import annotations

import pytest

from singr.errors import SingrConfigError
from tune.config import ServiceConfig, load_service_config
from tune.grid import ARCHITECTURES, TABLE, expand_variants, variant_config


@pytest.mark.parametrize("name", ["brats.yaml", "synthetic.yaml", "smoke.yaml", "ablation-synthetic.yaml",
                                  "ablation.yaml", "ablation-lgg.yaml", "tune-cluster.yaml"])
def test_shipped_configs_load_as_service_configs(name):
    cfg = load_service_config(name)
    assert isinstance(cfg, ServiceConfig)
    assert cfg.tune.mode == "grid" or cfg.tune.asha.grace_period % cfg.sweep_val_every() == 0


@pytest.mark.parametrize("override,match", [
    ("tune.bogus=1", r"unknown key 'tune\.bogus'"),
    ("tune.delta=[0.2,1.0]", r"tune\.delta = \[0\.2, 1\.0\]; both bounds must lie in \[0, 1\)"),
    ("tune.lam_grid=[0.5,1.5]", r"tune\.lam_grid = \[0\.5, 1\.5\] is out of range"),
    ("tune.gamma=[2.0,1.0]", r"tune\.gamma.*low 2\.0 is greater than high 1\.0"),
    ("tune.max_failures=-1", r"tune\.max_failures = -1 is out of range; expected a value >= 0"),
    ("tune.models=[vnet]", r"tune\.models"),
    ("tune.name='a b'", r"tune\.name"),
    ("mlflow.promote=sometimes", r"mlflow\.promote"),
    ("tune.asha.grace_period=3", r"tune\.asha\.grace_period = 3 is not a multiple of train\.val_every = 2"),
    ("tune.train_overrides=[train.val_every=4]", r"grace_period = 2 is not a multiple of train\.val_every = 4"),
    ("tune.asha.reduction_factor=2.5", r"reduction_factor = 2\.5; expected a whole number"),
])
def test_bad_service_values_name_the_key(override, match):
    with pytest.raises(SingrConfigError, match=match):
        load_service_config("smoke.yaml", ["train.val_every=2", "tune.asha.grace_period=2", override])


def test_ablation_configs_expand_to_the_paper_variants():
    cfg = load_service_config("ablation-synthetic.yaml")
    vs = expand_variants(cfg)
    assert [v.name for v in vs] == ["hard", "l2", "l1", "product", "dagger", "nomargin", "singr",
                                    "segresnet-hard", "segresnet-singr"]
    assert [v.name for v in vs if ARCHITECTURES in v.groups] == ["hard", "singr", "segresnet-hard",
                                                                  "segresnet-singr"]
    assert all(TABLE in v.groups for v in vs[:7])
    c = variant_config(cfg, "nomargin", seed=2)
    assert (c.sing.delta, c.loss.name, c.train.seed) == (0.0, "focal_l1", 2)
    c = variant_config(cfg, "segresnet-singr")
    assert (c.model.name, c.loss.name, c.sing.delta) == ("segresnet", "focal_l1", 0.5)
    assert variant_config(cfg, "hard").loss.name == "dice_bce"
    for name in ("ablation.yaml", "ablation-lgg.yaml"):
        assert len(expand_variants(load_service_config(name))) == 7 + 2 * 3


@pytest.mark.parametrize("override,needle", [
    ("experiment.variants=[{name: a, set: [loss.name=l3]}]", "variant 'a'.*loss.name"),
    ("experiment.variants=[{name: a}, {name: a}]", "used twice"),
    ("experiment.variants=[{name: 'a b'}]", "short name"),
    ("experiment.variants=[{name: a, sets: []}]", r"experiment.variants"),
    ("experiment.variants=[{name: a, set: [tune.mode=search]}]", "may not change"),
    ("experiment.variants=[{name: a, set: [sing.bogus=1]}]", "sing.bogus"),
    ("experiment.baseline=nope", "experiment.baseline = 'nope' is not a variant"),
    ("experiment.architectures=[resnet]", "experiment.architectures"),
    ("experiment.seeds=[]", "experiment.seeds"),
    ("experiment.seeds=[1, 1]", "experiment.seeds"),
    ("experiment.variants=[]", "needs experiment.variants"),
    ("experiment.architectures=[segresnet, segresnet]", "twice"),
    ("experiment.variants=[{name: hard}, {name: singr}, {name: segresnet-hard}]", "'segresnet-hard' is also"),
    ("experiment.eval_split=val", "experiment.eval_split"),
])
def test_bad_experiment_names_the_field(override, needle):
    with pytest.raises(SingrConfigError, match=needle):
        load_service_config("ablation-synthetic.yaml", [override])
