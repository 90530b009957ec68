"""Where a trial's time went (tune.results.trial_timing), from its Ray reports."""
from __future__ import annotations

import math

import pandas as pd

from tune.results import trial_timing


def test_timing_from_reports():
    df = pd.DataFrame({"time_total_s": [30.0, 33.0, 40.0],
                       "epoch_seconds": [4.0, 3.0, 10.0],
                       "train_seconds": [3.5, 3.0, 3.0],
                       "data_wait_seconds": [1.5, 0.0, 1.0],
                       "patches_per_s": [10.0, 12.0, 11.0],
                       "val_seconds": [0.5, None, 7.0]})
    t = trial_timing(df)
    assert t["first_report_s"] == 30.0
    assert t["epoch_s"] == 4.0                                  # median of 4, 3, 10
    assert t["patches_per_s"] == 11.0
    assert t["data_wait_share"] == round(2.5 / 9.5, 4)          # totals, not a mean of shares
    assert t["val_share"] == round(7.5 / 17.0, 4)               # epochs without validation count as 0
    assert t["startup_s"] == 26.0                               # first report minus its epoch
    assert t["epoch_share"] == round(17.0 / 40.0, 4)            # epochs over the slot (start to last report)


def test_whole_split_validation_counts_as_validation():
    """The last epoch's whole-split validation (full_val_seconds, inside that epoch's epoch_seconds)
    is validation time; train_s and val_s are the totals."""
    df = pd.DataFrame({"time_total_s": [10.0, 30.0], "epoch_seconds": [4.0, 20.0], "train_seconds": [3.0, 3.0],
                       "val_seconds": [1.0, 2.0], "full_val_seconds": [None, 15.0]})
    t = trial_timing(df)
    assert t["train_s"] == 6.0 and t["val_s"] == 18.0
    assert t["val_share"] == round(18.0 / 24.0, 4)


def test_time_split_of_a_sweep():
    from tune.results import format_time_split, time_split

    rows = [{"train_s": 30.0, "val_s": 10.0}, {"train_s": 20.0, "val_s": float("nan")}, {"train_s": None}]
    got = time_split({"start": 1000.0, "maps": 12.0, "search": 60.0, "stage": 40.0, "model": 5.0,
                      "register": 8.0}, rows, end=1130.0)
    assert got["total"] == 130.0 and got["other"] == 5.0                # what no stage accounts for
    assert got["train"] == 50.0 and got["validation"] == 10.0 and got["val_share"] == round(10 / 60, 4)
    line = format_time_split(got)
    assert line.startswith("wall time 130 s: maps 12 s, search 60 s (trials: training 50 s, validation 10 s = 17%")
    assert "registration 8 s" in line
    none = time_split({"start": 0.0, "maps": None}, [], end=3.0)     # a sweep without those figures
    assert none["train"] is None and none["val_share"] is None and "maps -" in format_time_split(none)


def test_full_score_is_the_whole_split_objective():
    from tune.confirm import run_score
    from tune.results import _full_score

    assert _full_score({"full_val_Dice_mean": 0.71}, "val_Dice_mean") == 0.71
    assert math.isnan(_full_score({"val_Dice_mean": 0.7}, "val_Dice_mean"))
    assert run_score({"score": 0.8, "full_score": 0.71}) == 0.71      # the stage compares whole-split scores
    assert run_score({"score": 0.8, "full_score": float("nan")}) == 0.8


def test_timing_counts_from_the_trial_process_when_reported():
    """`startup/first_report_s` (the worker's clock since the trial's process started) replaces Tune's
    time_total_s, which starts later; the slot adds Tune's time between the first and last reports."""
    df = pd.DataFrame({"time_total_s": [20.0, 24.0], "epoch_seconds": [3.0, 4.0],
                       "startup/first_report_s": [26.0, None]})
    t = trial_timing(df)
    assert t["first_report_s"] == 26.0 and t["startup_s"] == 23.0
    assert t["epoch_share"] == round(7.0 / 30.0, 4)


def test_startup_split_from_the_clock_marks():
    from tune.trainer import startup_split

    got = startup_split({"trial_process": 100.0, "trial_function": 104.0}, worker_process=109.5, entry=113.0,
                        trainer_start=113.25)
    assert got == {"startup/trial_process_s": 4.0, "startup/worker_group_s": 5.5, "startup/worker_process_s": 3.5,
                   "startup/loop_s": 0.25}
    # a refit or an old caller passes no marks: only the worker's own spans; clock skew never gives negatives
    assert startup_split({}, worker_process=10.0, entry=9.0, trainer_start=9.5) == {
        "startup/worker_process_s": 0.0, "startup/loop_s": 0.5}


def test_timing_without_the_columns_is_nan():
    assert all(math.isnan(v) for v in trial_timing(None).values())
    t = trial_timing(pd.DataFrame({"time_total_s": [12.5], "epoch_seconds": [2.0]}))
    assert t["first_report_s"] == 12.5 and t["epoch_s"] == 2.0
    assert math.isnan(t["data_wait_share"]) and math.isnan(t["val_share"]) and math.isnan(t["patches_per_s"])


def test_system_sampler_reports_mlflows_system_metric_names():
    import time

    from tune.trainer import SystemSampler

    s = SystemSampler(every=0.05)
    try:
        time.sleep(0.3)
        got = s.take()
        assert 0.0 <= got["system/cpu_utilization_percentage"] <= 100.0
        assert got["system/system_memory_usage_megabytes"] > 0
        assert 0.0 < got["system/system_memory_usage_percentage"] <= 100.0
        s.stop()
        time.sleep(0.1)
        assert s.take() == {}  # taken means are cleared; a stopped sampler adds nothing
    finally:
        s.stop()
