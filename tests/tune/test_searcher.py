"""tune.search: optuna (seeded TPE whose random start-up is a third of the budget) or random
(Ray Tune's BasicVariantGenerator seeded by tune.seed), over the same space, limited to the
same number of concurrent trials."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")
pytest.importorskip("optuna")

from tune.config import load_service_config  # noqa: E402
from tune.search import make_searcher, n_startup, search_space  # noqa: E402


def _sample(searcher, space, n: int) -> list[dict]:
    """The first ``n`` configs a BasicVariantGenerator makes from ``space`` (no Ray cluster needed)."""
    from ray.tune.experiment import Experiment

    searcher.add_configurations([Experiment("x", lambda c: None, config=space, num_samples=n)])
    out = []
    for _ in range(n):
        t = searcher.next_trial()
        assert t is not None, "the searcher made no trial"
        out.append({k: t.config[k] for k in ("lam", "delta", "gamma")})
        searcher.on_trial_complete(t.trial_id)  # frees its place under max_concurrent
    assert searcher.next_trial() is None and searcher.is_finished()  # num_samples trials, no more
    return out


def test_random_search_is_seeded_basic_variant_generator():
    from ray.tune.search.basic_variant import BasicVariantGenerator

    cfg = load_service_config("synthetic.yaml", ["tune.search=random", "tune.seed=7"])
    s = make_searcher(cfg, 2, "val_Dice_mean", "max")
    assert type(s) is BasicVariantGenerator and s.max_concurrent == 2
    space = search_space(cfg)
    a = _sample(s, space, 4)
    b = _sample(make_searcher(cfg, 2, "val_Dice_mean", "max"), space, 4)
    c = _sample(make_searcher(load_service_config("synthetic.yaml", ["tune.search=random", "tune.seed=8"]), 2,
                              "val_Dice_mean", "max"), space, 4)
    assert a == b and a != c  # the same seed draws the same trials, another seed others
    t = cfg.tune
    for p in a:  # within the configured space
        assert p["lam"] in t.lam_grid and t.delta[0] <= p["delta"] <= t.delta[1]
        assert t.gamma[0] <= p["gamma"] <= t.gamma[1]
    assert len({p["delta"] for p in a}) == 4  # sampled, not a grid


def test_optuna_search_is_a_seeded_tpe_behind_a_concurrency_limit():
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    cfg = load_service_config("synthetic.yaml", ["tune.seed=3", "tune.num_samples=12"])
    assert cfg.tune.search == "optuna"  # the default
    s = make_searcher(cfg, 2, "val_HD95_mean", "min")
    assert isinstance(s, ConcurrencyLimiter) and s.max_concurrent == 2
    inner = s.searcher
    assert isinstance(inner, OptunaSearch) and (inner.metric, inner.mode) == ("val_HD95_mean", "min")
    sampler = inner._sampler
    assert sampler._n_startup_trials == 4 and sampler._rng.rng.randint(1 << 30) == \
        type(sampler)(seed=3)._rng.rng.randint(1 << 30)


@pytest.mark.parametrize("n, k", [(1, 2), (6, 2), (8, 2), (12, 4), (16, 5), (30, 10), (100, 10)])
def test_tpe_start_up_is_a_third_of_the_budget(n, k):
    assert n_startup(n) == k


def test_unknown_search_is_refused():
    from singr.errors import SingrConfigError

    with pytest.raises(SingrConfigError, match="tune.search"):
        load_service_config("synthetic.yaml", ["tune.search=grid"])


def test_optuna_search_skips_epochs_without_validation():
    """train.val_every = 2: odd epochs report no objective; Ray's OptunaSearch raised KeyError on them
    (a search sweep died at its first epoch). Validated epochs still reach the Optuna trial."""
    from ray.tune.result import TRAINING_ITERATION

    cfg = load_service_config("synthetic.yaml", ["tune.seed=0"])
    s = make_searcher(cfg, 2, "val_Dice_mean", "max")
    inner = s.searcher
    inner.set_search_properties("val_Dice_mean", "max", search_space(cfg))
    assert s.suggest("t1") is not None
    s.on_trial_result("t1", {"train_loss": 1.0, TRAINING_ITERATION: 1})  # no validation this epoch
    s.on_trial_result("t1", {"train_loss": 0.9, "val_Dice_mean": 0.4, TRAINING_ITERATION: 2})
    assert inner._ot_trials["t1"].storage.get_trial(inner._ot_trials["t1"]._trial_id).intermediate_values == {2: 0.4}
