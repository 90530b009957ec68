"""benchmarks/search_equal.py's accounting and report (issue 21 item 6), on made-up sweeps: the
compute a sweep spent (search trials + the stage's runs), the default's run count at equal compute,
the empty-core count, and a report whose headline follows the paired CI."""
from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.conftest import benchmark_module


@pytest.fixture(scope="module")
def se():
    return benchmark_module("search_equal")


def test_compute_counts_the_stage_and_the_default_gets_as_many_epochs(se):
    summ = {"trials": [{"epochs_run": 12}, {"epochs_run": 6}, {"epochs_run": 6}], "confirm": {"n_runs": 6}}
    assert se.sweep_compute(summ, 12) == {"search": 24, "stage": 72, "total": 96}
    assert se.sweep_compute({"trials": [{"epochs_run": 12}]}, 12)["stage"] == 0  # stage off
    assert se.runs_for_equal_compute([96, 120], 12) == 9  # mean 108 trial-epochs = 9 runs of 12
    assert se.runs_for_equal_compute([5], 12) == 1
    with pytest.raises(ValueError, match="epochs"):
        se.runs_for_equal_compute([], 12)


def test_sweep_runs_are_the_full_length_search_trials_and_the_stage_runs(se, tmp_path):
    nan = float("nan")
    trials = [{"trial_id": "a", "epochs_run": 12, "score": 0.61},
              {"trial_id": "b", "epochs_run": 6, "score": 0.70},  # stopped by ASHA
              {"trial_id": "c", "epochs_run": 12, "score": nan},
              {"trial_id": "d", "epochs_run": 12, "score": 0.5, "error": True}]
    arms = {"control": {"trial_ids": ["x0", "x1"], "scores": [0.55, 0.66]},
            "top_1": {"trial_ids": ["y0"], "scores": [0.64]}}
    summ = {"sweep_dir": str(tmp_path / "sw"), "trials": trials, "confirm": {"dir": str(tmp_path / "st"), "arms": arms}}
    runs = se.sweep_runs(summ, 12)
    assert [(r[1], r[2], r[0]) for r in runs] == [("search", "a", 0.61), ("control", "x0", 0.55),
                                                  ("control", "x1", 0.66), ("top_1", "y0", 0.64)]
    assert runs[2][3] == tmp_path / "st" / "singr_trials" / "x1"
    assert runs[0][3] == tmp_path / "sw" / "singr_trials" / "a"
    assert max(runs, key=lambda r: r[0])[2] == "x1"  # the rule's pick: the best-validated run, whatever its arm
    assert [r[2] for r in se.sweep_runs({**summ, "confirm": {}}, 12)] == ["a"]


def test_empty_core_is_the_penalty_hd95(se):
    cases = {"a": {"HD95_TC": 373.13}, "b": {"HD95_TC": 4.2}, "c": {"HD95_TC": 373.13}, "d": {}}
    assert se.empty_tc(cases) == 2


def _res(gain: float, seeds=(0, 1, 2), n=20):
    from tune.report.analysis import compare

    rng = np.random.default_rng(0)
    methods, pairs = {}, []
    for name in (*se_names(), ):
        rows = [{"seed": s, "test_Dice_mean": 0.6 + (gain if name == "optuna+confirm" else 0), "test_HD95_mean": 9.0,
                 "trial_epochs": 100, "empty_tc": 1, "registered": "control", "wall_s": 10.0,
                 "beats_control": name == "optuna+confirm", "answer": "an answer"} for s in seeds]
        methods[name] = {"seeds": rows, "test_Dice": [0.6 + gain, 0.01, len(seeds)], "test_HD95": [9.0, 0.1, 3],
                         "trial_epochs_mean": 100.0, "empty_tc": 3, "wall_s_mean": 10.0}
    for a, b in (("optuna+confirm", "default-best-of-n"), ("random+confirm", "default-best-of-n"),
                 ("optuna+confirm", "random+confirm"), ("optuna+confirm", "default"),
                 ("default-best-of-n", "default"), ("optuna+winner", "default-best-of-n"),
                 ("optuna+winner", "optuna+confirm")):
        for key, hib in (("Dice_mean", True), ("HD95_mean", False)):
            g = gain if a == "optuna+confirm" and key == "Dice_mean" else 0.0
            d = g + rng.normal(0, 0.01, (len(seeds), n))
            pairs.append({"a": a, "b": b, "metric": key, **compare(d, hib, (a, b))})
    return {"setting": "wide-fov", "words": "made up", "config": "wide-fov.yaml", "data": "d", "seeds": list(seeds),
            "num_samples": 6, "epochs": 12, "control": {"seeds": 2, "reference": "defaults"},
            "confirm": {"top_k": 2, "seeds": 2, "ensemble": True}, "asha": {"grace_period": 6, "reduction_factor": 2},
            "n_test": n, "methods": methods, "paired": pairs, "wall_seconds": 1.0}


def se_names():
    return ("optuna+confirm", "random+confirm", "default-best-of-n", "default")


@pytest.mark.parametrize("gain,words", [(0.1, "beats the default picked"), (0.0, "no detectable difference")])
def test_report_headline_follows_the_paired_ci(se, tmp_path, gain, words):
    se.write_report(tmp_path, _res(gain))
    text = (tmp_path / "wide-fov.md").read_text()
    assert words in text and "3 of 3 seeds" in text
    assert "Registering the confirmation's best mean whatever its evidence (optuna+winner) would have given" in text
    assert (tmp_path / "wide-fov.png").stat().st_size > 1000 and (tmp_path / "wide-fov.json").exists()
    assert text.count("| optuna+confirm − default-best-of-n |") == 2  # Dice and HD95 rows
