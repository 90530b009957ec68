"""How a trial trains (tune.trial_runner): the choice, what it changes in the Tuner, and the
up-front check that an inline trial fits a node. No Ray is started here; the runners run in
tests/tune/test_sweep.py (inline: a killed trial resumes; train: DDP, a killed worker resumes)."""
from __future__ import annotations

import pytest

from singr.errors import SingrConfigError
from tune.config import load_service_config
from tune.plan import make_plan
from tune.search import check_trial_fits, make_trainable, tuner_settings
from tune.trainer import TrialScale, how_trials_train, runner


@pytest.mark.parametrize("chosen,workers,expected", [("auto", 1, "inline"), ("auto", 2, "train"),
                                                     ("train", 1, "train"), ("inline", 1, "inline")])
def test_runner_choice(chosen, workers, expected):
    cfg = load_service_config("smoke.yaml", [f"tune.trial_runner={chosen}", f"tune.num_workers={workers}"])
    assert runner(cfg, TrialScale(workers, 0.5, 0.0)) == expected
    assert ("own process" in how_trials_train(cfg, TrialScale(workers, 0.5, 0.0))) == (expected == "inline")


def test_inline_with_several_workers_is_refused():
    with pytest.raises(SingrConfigError, match=r"tune\.trial_runner = 'inline'.*tune\.num_workers = 2"):
        load_service_config("smoke.yaml", ["tune.trial_runner=inline", "tune.num_workers=2"])


def test_tuner_settings_and_resources_follow_the_runner(tmp_path):
    over = [f"tune.storage_path={tmp_path}", "tune.cpus_per_worker=0.75"]
    inline = make_plan(load_service_config("smoke.yaml", over))
    train = make_plan(load_service_config("smoke.yaml", [*over, "tune.trial_runner=train"]))
    scale = TrialScale(1, 0.75, 0.0)
    s = tuner_settings(inline, scale)
    assert s["reuse_actors"] is True and s["janitor"] is False
    assert s["run"]["failure_config"].max_failures == int(inline.cfg.tune.max_failures)
    assert s["run"]["checkpoint_config"].num_to_keep == 2
    s = tuner_settings(train, scale)
    assert s["reuse_actors"] is False and s["run"] == {} and s["janitor"] is True
    # an inline trial holds the worker's resources itself; a Train run's trial holds a token share
    assert _cpus(make_trainable(inline, scale)) == pytest.approx(0.75)
    assert _cpus(make_trainable(train, scale)) == pytest.approx(0.01)


def _cpus(trainable) -> float:
    res = getattr(trainable, "_resources", None)
    bundle = res.required_resources if hasattr(res, "required_resources") else res
    return float(bundle.get("CPU", bundle.get("cpu", 0.0)))


def test_check_trial_fits_names_the_largest_node():
    cfg = load_service_config("smoke.yaml")
    check_trial_fits(cfg, TrialScale(1, 2.0, 0.0), [{"CPU": 2.0}])                    # fits exactly
    check_trial_fits(cfg, TrialScale(1, 1.0, 1.0), [{"CPU": 4.0}, {"CPU": 1.0, "GPU": 1.0}])  # the GPU node fits
    with pytest.raises(SingrConfigError, match=r"tune\.cpus_per_worker = 3 CPU\(s\) on one node, but the largest "
                                               r"node of this cluster has 2 CPU\(s\)"):
        check_trial_fits(cfg, TrialScale(1, 3.0, 0.0), [{"CPU": 2.0}, {"CPU": 1.0}])
    with pytest.raises(SingrConfigError, match=r"and 1 GPU\(s\).*has 8 CPU\(s\) and 0 GPU\(s\)"):
        check_trial_fits(cfg, TrialScale(1, 1.0, 1.0), [{"CPU": 8.0}])
    train = load_service_config("smoke.yaml", ["tune.trial_runner=train"])
    check_trial_fits(train, TrialScale(1, 3.0, 0.0), [{"CPU": 2.0}])  # a Train run retries its start-up instead
