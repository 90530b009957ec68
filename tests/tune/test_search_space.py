"""The search space's optional axes (tune.weight_decay log-uniform, tune.fg_oversample uniform)
and the config's own setting as the first trial (tune.start_from_defaults: points_to_evaluate).
Unit tests: the searchers and spaces are built, no Ray cluster is started."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")
pytest.importorskip("optuna")

from tune.config import load_service_config  # noqa: E402
from tune.plan import PARAM_KEYS, own_setting, search_params, trial_config  # noqa: E402
from tune.search import default_point, make_searcher, search_space  # noqa: E402
from tune.verdict import fmt_setting as describe_setting  # noqa: E402

WD = "tune.weight_decay=[1e-6,1e-3]"
FG = "tune.fg_oversample=[0.0,0.5]"


def test_weight_decay_and_fg_oversample_are_searched_only_when_set():
    from ray.tune.search.sample import Categorical, Float, LogUniform, Uniform

    plain = search_space(load_service_config("synthetic.yaml"))
    assert set(plain) == {"lam", "delta", "gamma"}
    cfg = load_service_config("synthetic.yaml", [WD, FG])
    space = search_space(cfg)
    assert set(space) == {"lam", "delta", "gamma", "weight_decay", "fg_oversample"}
    wd, fg = space["weight_decay"], space["fg_oversample"]
    assert isinstance(wd, Float) and isinstance(wd.get_sampler(), LogUniform)
    assert (wd.lower, wd.upper) == (1e-6, 1e-3)
    assert isinstance(fg, Float) and isinstance(fg.get_sampler(), Uniform) and (fg.lower, fg.upper) == (0.0, 0.5)
    assert isinstance(space["lam"], Categorical)
    assert search_params(cfg) == ["lam", "delta", "gamma", "weight_decay", "fg_oversample"]
    full = load_service_config("synthetic.yaml", ["tune.lr=[1e-4,1e-2]", WD, FG, "tune.models=[unet3d,segresnet]"])
    assert search_params(full) == ["lam", "delta", "gamma", "lr", "weight_decay", "fg_oversample", "model"]
    assert list(search_space(full)) == search_params(full)
    only_fg = load_service_config("synthetic.yaml", [FG])
    assert "weight_decay" not in search_space(only_fg) and "fg_oversample" in search_space(only_fg)


def test_sampled_values_reach_the_trial_config(tmp_path):
    assert PARAM_KEYS["weight_decay"] == "train.weight_decay"
    assert PARAM_KEYS["fg_oversample"] == "train.fg_oversample"
    cfg = load_service_config("synthetic.yaml", [WD, FG])
    out = trial_config(cfg, {"lam": 0.25, "delta": 0.4, "gamma": 1.5, "weight_decay": 3e-4,
                             "fg_oversample": 0.33}, tmp_path / "t1")
    assert out.train.weight_decay == 3e-4 and out.train.fg_oversample == 0.33
    assert out.sing.lam == 0.25 and out.sing.delta == 0.4 and out.loss.gamma == 1.5
    assert cfg.train.fg_oversample == 0.0  # the sweep's own config is left alone


def test_default_point_is_the_configs_own_setting_inside_the_space():
    cfg = load_service_config("synthetic.yaml", ["tune.lr=[1e-4,1e-2]", WD, FG, "tune.models=[segresnet,unet3d]"])
    point, why = default_point(cfg)
    assert why == ""
    assert point == {"lam": cfg.sing.lam, "delta": cfg.sing.delta, "gamma": cfg.loss.gamma, "lr": cfg.train.lr,
                     "weight_decay": cfg.train.weight_decay, "fg_oversample": cfg.train.fg_oversample,
                     "model": cfg.model.name}
    assert point["lam"] in cfg.tune.lam_grid and list(point) == search_params(cfg)
    assert describe_setting(default_point(load_service_config("synthetic.yaml"))[0]) == \
        "lam=0.5, delta=0.5, gamma=1"
    near = load_service_config("synthetic.yaml", ["sing.lam=0.5000000000001"])  # float noise: the grid's value
    assert default_point(near)[0]["lam"] == 0.5


@pytest.mark.parametrize("overrides, key", [
    (["sing.lam=0.3"], "sing.lam"),
    (["sing.delta=0.9"], "sing.delta"),
    (["loss.gamma=3.0"], "loss.gamma"),
    (["tune.lr=[1e-2,1e-1]"], "train.lr"),
    ([WD, "train.weight_decay=0.0"], "train.weight_decay"),
    (["tune.fg_oversample=[0.2,0.5]"], "train.fg_oversample"),
    (["tune.models=[segresnet]"], "model.name"),
])
def test_no_default_point_outside_the_space(overrides, key):
    cfg = load_service_config("synthetic.yaml", overrides)
    point, why = default_point(cfg)
    assert point is None and why.startswith(key)
    assert key.split(".")[-1] in describe_setting(own_setting(cfg)) or key == "model.name"
    for search in ("random", "optuna"):  # the search starts without it
        s = make_searcher(load_service_config("synthetic.yaml", [*overrides, f"tune.search={search}"]), 2,
                          "val_Dice_mean", "max")
        assert getattr(s, "searcher", s)._points_to_evaluate == []


def test_the_searchers_get_the_default_point():
    for search in ("random", "optuna"):
        cfg = load_service_config("synthetic.yaml", [WD, f"tune.search={search}"])
        s = make_searcher(cfg, 2, "val_Dice_mean", "max")
        inner = getattr(s, "searcher", s)  # optuna: inside the ConcurrencyLimiter
        assert inner._points_to_evaluate == [default_point(cfg)[0]]
        off = make_searcher(load_service_config("synthetic.yaml", [WD, f"tune.search={search}",
                                                                   "tune.start_from_defaults=false"]),
                            2, "val_Dice_mean", "max")
        assert getattr(off, "searcher", off)._points_to_evaluate == []


def test_the_first_trial_is_the_default_point():
    from ray.tune.experiment import Experiment

    cfg = load_service_config("synthetic.yaml", [WD, FG, "tune.search=random", "tune.seed=4"])
    point = default_point(cfg)[0]
    s = make_searcher(cfg, 2, "val_Dice_mean", "max")
    s.add_configurations([Experiment("x", lambda c: None, config=search_space(cfg), num_samples=3)])
    configs = []
    for _ in range(3):
        t = s.next_trial()
        configs.append({k: t.config[k] for k in point})
        s.on_trial_complete(t.trial_id)
    assert configs[0] == point and configs[1] != point
    assert s.next_trial() is None  # the point is one of the num_samples trials

    cfg = load_service_config("synthetic.yaml", [WD, FG, "tune.seed=4"])
    s = make_searcher(cfg, 2, "val_Dice_mean", "max")
    s.searcher.set_search_properties("val_Dice_mean", "max", search_space(cfg))
    first, second = s.suggest("t1"), s.suggest("t2")
    assert first == point and second != point
