"""benchmarks/empty_core.py's arithmetic and report on made-up results (the sweeps it reads are
benchmarks' work): Dice with BraTS's empty rule, and a table that carries every variant's figures."""
from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.conftest import benchmark_module


@pytest.fixture(scope="module")
def ec():
    return benchmark_module("empty_core")


def test_dice_follows_the_brats_empty_rule(ec):
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    assert ec.dice(a, b) == 1.0  # both empty
    b[0, 0, 0] = True
    assert ec.dice(a, b) == 0.0  # one empty
    a[0, 0, :2] = True
    assert ec.dice(a, b) == pytest.approx(2 * 1 / 3)


def test_report_has_a_row_per_variant_with_its_comparison(ec, tmp_path):
    thr = {"0.0": {"tc_dice": 0.5, "empty_tc": 4}, "-0.2": {"tc_dice": 0.52, "empty_tc": 2}}
    base = {"runs": 3, "case_runs": 75, "empty_tc": 4, "dice_mean": 0.70, "dice_tc_mean": 0.5, "dice_wt_mean": 0.75,
            "threshold": thr, "max_shat_in_empty_core": {"n": 4, "median": -0.31, "max": -0.05}}
    vs = {"mean": 0.04, "ci_lo": 0.01, "ci_hi": 0.07, "verdict": "better"}
    res = {"sweeps": ["a"], "thresholds": [0.0, -0.2], "baseline": "singr",
           "variants": {"singr": base, "lr1e-2": {**base, "dice_mean": 0.74, "vs_baseline": vs}}}
    text = ec.write_report(tmp_path, "grid", res).read_text()
    assert "| singr | 3 | 0.700 | – | 0.750 | 4 of 75 |" in text
    assert "| lr1e-2 | 3 | 0.740 | +0.040 (+0.010 to +0.070): better | 0.750 |" in text
    assert "0.520 / 2" in text and "-0.31 / -0.05 (n=4)" in text
