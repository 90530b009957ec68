"""tune.stats: paired-comparison statistics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tune.stats import bootstrap_ci, bootstrap_ci_2way, describe_difference, mean_se, paired, wilcoxon_p


def test_mean_se_hand_values_and_nan_handling():
    # [1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3), se = sqrt(5/3) / 2
    m, se, n = mean_se([1.0, 2.0, 3.0, 4.0])
    assert (m, n) == (2.5, 4) and se == pytest.approx(math.sqrt(5 / 3) / 2)
    m2, se2, n2 = mean_se([1.0, None, 2.0, float("nan"), 3.0, float("inf"), 4.0])
    assert (m2, se2, n2) == (m, se, n)  # non-finite and None dropped
    m1, se1, n1 = mean_se([7.0])
    assert (m1, n1) == (7.0, 1) and math.isnan(se1)
    m0, se0, n0 = mean_se([])
    assert n0 == 0 and math.isnan(m0) and math.isnan(se0)
    assert mean_se(np.array([float("nan")]))[2] == 0


def test_wilcoxon_exact_hand_values():
    # all five positive: only 1 of the 2^5 sign patterns has rank sum of negatives 0; two-sided 2/32
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_p([-1, -2, -3, -4, -5]) == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_p(range(1, 11)) == pytest.approx(2 / 1024, abs=1e-12)
    # |d| ranks 1..6, negatives (-0.25, -0.75) hold ranks 1 + 3 = 4; subsets of {1..6} with sum <= 4:
    # {}, {1}, {2}, {3}, {4}, {1,2}, {1,3}: 7 of 64, two-sided 14/64
    assert wilcoxon_p([0.5, -0.25, 1.5, 2.0, 3.0, -0.75]) == pytest.approx(14 / 64, abs=1e-12)
    # n = 2 same sign: 2 of 4 sign patterns as extreme -> 0.5; a single difference -> 1.0
    assert wilcoxon_p([1.0, 2.0]) == pytest.approx(0.5)
    assert wilcoxon_p([3.0]) == 1.0


def test_wilcoxon_symmetric_ties_zeros_and_nan():
    # |d| = 1, 1, 2, 2 (ties: ranks 1.5, 1.5, 3.5, 3.5): positive rank sum 5 = its null mean
    # n(n+1)/4 = 5, so every one of the 16 sign patterns (scipy permutes them exactly for ties,
    # n <= 13) is at least as extreme: p = 1.0 exactly
    assert wilcoxon_p([1, -1, 2, -2]) == 1.0
    assert wilcoxon_p([1, -1, 2, -2, 0, 0]) == 1.0  # zeros dropped (zero_method="wilcox")
    assert wilcoxon_p([1, 2, 3, 4, 5, 0, None, float("nan")]) == pytest.approx(0.0625)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0  # every difference zero: no evidence of one
    assert math.isnan(wilcoxon_p([])) and math.isnan(wilcoxon_p([float("nan"), None]))


def test_bootstrap_ci_constant_known_sample_and_determinism():
    assert bootstrap_ci([0.1, 0.1, 0.1]) == (0.1, 0.1)  # zero width, exactly the value
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    x = [0.2, -0.1, 0.4, 0.3, 0.0, 0.5, 0.1, 0.25]
    lo, hi = bootstrap_ci(x, n_boot=5000, seed=3)
    assert min(x) <= lo < np.mean(x) < hi <= max(x)
    # close to the normal interval mean +- 1.96 se for this well-behaved sample
    m, se, _ = mean_se(x)
    assert lo == pytest.approx(m - 1.96 * se, abs=0.04) and hi == pytest.approx(m + 1.96 * se, abs=0.04)
    assert bootstrap_ci(x, n_boot=5000, seed=3) == (lo, hi)  # deterministic given the seed
    assert bootstrap_ci(x, n_boot=5000, seed=4) != (lo, hi)
    assert bootstrap_ci(x + [float("nan"), None], n_boot=5000, seed=3) == (lo, hi)
    wide = bootstrap_ci(x, n_boot=5000, alpha=0.01, seed=3)
    assert wide[0] <= lo and wide[1] >= hi
    # chunked resampling (n * n_boot beyond one chunk) stays within the data
    big = np.random.default_rng(0).normal(1.0, 1.0, 3000)
    blo, bhi = bootstrap_ci(big, n_boot=2000)
    assert blo < big.mean() < bhi and bhi - blo == pytest.approx(2 * 1.96 / math.sqrt(3000), rel=0.15)


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"n_boot": 2.5}, {"alpha": 0.0}, {"alpha": 1.0}, {"alpha": -1}])
def test_bootstrap_ci_rejects_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_paired_common_keys_sorted():
    a = {"c": 3.0, "a": 1.0, "b": 2.0, "only_a": 9.0}
    b = {"b": 0.5, "a": 1.5, "c": None, "only_b": 4.0}
    d = paired(a, b)
    assert d[:2] == [-0.5, 1.5] and math.isnan(d[2]) and len(d) == 3  # keys a, b, c
    assert paired({}, {"x": 1.0}) == []
    assert paired({1: 2.0, 0: 5.0}, {0: 1.0, 1: 1.0}) == [4.0, 1.0]
    with pytest.raises(ValueError, match="mappings"):
        paired([1.0], {"a": 1.0})  # type: ignore[arg-type]


def test_describe_clear_difference_wording():
    rng = np.random.default_rng(1)
    d = list(0.03 + 0.01 * rng.standard_normal(20))
    out = describe_difference(d)
    assert set(out) == {"n", "mean", "se", "ci_lo", "ci_hi", "p", "verdict"}
    assert out["n"] == 20 and 0 < out["ci_lo"] < out["mean"] < out["ci_hi"] and out["p"] < 0.001
    assert out["verdict"].startswith(f"A better by {out['mean']:.3f} (95% CI {out['ci_lo']:.3f} to ")
    assert out["verdict"].endswith(", p < 0.001)")
    # lower is better (an error such as HD95): the same differences favour B, by the same amount
    low = describe_difference(d, higher_is_better=False)
    assert low["verdict"].startswith(f"B better by {out['mean']:.3f} (95% CI {out['ci_lo']:.3f} to ")
    # negative differences with higher-is-better: B wins, interval shown as B's advantage
    neg = describe_difference([-x for x in d], names=("hard", "SiNGR"))
    assert neg["verdict"].startswith(f"SiNGR better by {out['mean']:.3f} (95% CI {out['ci_lo']:.3f} to ")
    assert neg["ci_hi"] == pytest.approx(-out["ci_lo"], abs=0.005)


def test_describe_no_difference_and_degenerate_wording():
    out = describe_difference([0.01, -0.02, 0.015, -0.01, 0.005, -0.012, 0.002, -0.004])
    assert out["ci_lo"] < 0 < out["ci_hi"] and out["p"] > 0.05
    assert out["verdict"].startswith("no detectable difference (95% CI ")
    assert out["verdict"].endswith(f"includes 0, p = {out['p']:.2f})")
    zeros = describe_difference([0.0, 0.0, 0.0])
    assert (zeros["ci_lo"], zeros["ci_hi"], zeros["p"]) == (0.0, 0.0, 1.0)
    assert zeros["verdict"] == "no detectable difference (95% CI 0.000 to 0.000 includes 0, p = 1.00)"
    # five positives: the bootstrap interval excludes 0 but the exact Wilcoxon p is 0.0625 > 0.05
    small = describe_difference([1, 2, 3, 4, 5])
    assert small["ci_lo"] > 0 and small["p"] == pytest.approx(0.0625)
    assert small["verdict"].startswith("inconclusive: A ahead by 3.000 (95% CI ")
    assert small["verdict"].endswith(", p = 0.06), but p >= 0.05")
    one = describe_difference([0.2, float("nan")])
    assert one["n"] == 1 and one["verdict"] == "too few pairs (n = 1) to compare"
    empty = describe_difference([None, float("nan")])
    assert empty["n"] == 0 and empty["verdict"] == "no data" and math.isnan(empty["mean"])
    assert describe_difference([0.1, 0.2, 0.3], alpha=0.1)["verdict"].count("90% CI") == 1
    with pytest.raises(ValueError, match="alpha"):
        describe_difference([1.0, 2.0], alpha=2.0)


def test_bootstrap_2way_hand_values():
    # one row: exactly the one-way bootstrap (same seed, same draws)
    x = [0.2, -0.1, 0.4, 0.3, 0.0]
    assert bootstrap_ci_2way([x], seed=5) == bootstrap_ci(x, seed=5)
    # rows that agree: only the case draws matter. (0, 0, 0, 0.04): a resample's mean is 0.01 x the
    # number of draws of the 4th case ~ Bin(4, 1/4); P(<= 2) = 0.949 < 0.975 <= P(<= 3) = 0.996,
    # P(0) = 0.316 > 0.025: the interval is (0, 0.03), inside the data range (0, 0.04)
    lo, hi = bootstrap_ci_2way([[0.0, 0.0, 0.0, 0.04]] * 3)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.03)
    # columns that agree: only the seed draws matter. Rows (0, 0) and (1, 1): the mean is the share of
    # draws of row 2 ~ Bin(2, 1/2) / 2: 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> (0, 1)
    assert bootstrap_ci_2way([[0.0, 0.0], [1.0, 1.0]]) == (0.0, 1.0)
    assert bootstrap_ci_2way([[0.3, 0.3], [0.3, 0.3]]) == (0.3, 0.3)
    # a case missing for one seed is dropped for all seeds
    assert bootstrap_ci_2way([[0.0, 0.0, 0.0, 0.04, float("nan")], [0.0, 0.0, 0.0, 0.04, 9.0]]) == \
        bootstrap_ci_2way([[0.0, 0.0, 0.0, 0.04], [0.0, 0.0, 0.0, 0.04]])
    assert all(math.isnan(v) for v in bootstrap_ci_2way([[float("nan")]]))


def test_bootstrap_2way_carries_the_seed_spread():
    """Seeds that disagree widen the interval beyond the one over seed-averaged cases."""
    rng = np.random.default_rng(2)
    cases = 0.02 + 0.01 * rng.standard_normal(30)
    seed_shift = np.array([-0.06, 0.0, 0.02, 0.06, -0.02])[:, None]
    d = cases[None, :] + seed_shift
    lo1, hi1 = bootstrap_ci(d.mean(axis=0))
    lo2, hi2 = bootstrap_ci_2way(d)
    assert lo2 < lo1 < d.mean() < hi1 < hi2 and lo2 < 0 < lo1
    assert bootstrap_ci_2way(d, seed=1) == bootstrap_ci_2way(d, seed=1) != (lo2, hi2)
    with pytest.raises(ValueError, match="two-dimensional"):
        bootstrap_ci_2way([1.0, 2.0])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci_2way([[1.0, 2.0]], n_boot=0)


def test_describe_uses_a_given_interval():
    d = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    out = describe_difference(d, names=("SiNGR", "hard"), ci=(-0.01, 0.08))
    assert (out["ci_lo"], out["ci_hi"]) == (-0.01, 0.08) and out["p"] == pytest.approx(2 / 64)
    assert out["verdict"] == "inconclusive: SiNGR ahead by 0.035 (95% CI -0.010 to 0.080, p = 0.03), but the CI " \
        "includes 0"
