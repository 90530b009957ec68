"""Honest statistics for paired comparisons (numpy and scipy only; no Ray, no MLflow).

A comparison of two variants A and B on the same cases (or seeds) is a list of paired
differences ``d_i = a_i - b_i`` (:func:`paired`). :func:`describe_difference` summarises it:
the mean and its standard error (:func:`mean_se`), a percentile-bootstrap confidence interval
of the mean (:func:`bootstrap_ci`), the two-sided Wilcoxon signed-rank p-value
(:func:`wilcoxon_p`), and a one-line verdict that claims a difference only when the interval
excludes 0 *and* p < alpha. Non-finite values (nan, inf, None) are ignored everywhere.

When the differences come from several trained models (seeds) on the same cases, a matrix
``d[seed, case]``, :func:`bootstrap_ci_2way` resamples seeds and cases independently (both
are random: a new seed is a new model, a new case a new patient), so its interval carries
the training randomness that an interval over cases of seed-averaged differences ignores;
``describe_difference(..., ci=...)`` then words the verdict with that interval.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Mapping, TypeVar

import numpy as np

__all__ = ["mean_se", "bootstrap_ci", "bootstrap_ci_2way", "wilcoxon_p", "paired", "describe_difference"]

K = TypeVar("K", bound=Hashable)
_CHUNK = 2_000_000  # resampled values held at once by bootstrap_ci


def _finite(values: Iterable[Any], name: str) -> np.ndarray:
    """The finite entries of ``values`` as float64 (None, nan and inf dropped); ValueError names ``name``."""
    if isinstance(values, (str, bytes)) or isinstance(values, Mapping):
        raise ValueError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a sequence of numbers: {e}") from None
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    return x[np.isfinite(x)]


def mean_se(values: Iterable[float | None]) -> tuple[float, float, int]:
    """``(mean, se, n)`` of the finite values: ``se = sd / sqrt(n)`` with the sample standard
    deviation (ddof = 1). ``n`` counts finite values; mean is nan for n = 0, se nan for n < 2."""
    x = _finite(values, "values")
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(x.mean()), se, n


def bootstrap_ci(diffs: Iterable[float | None], n_boot: int = 10000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the mean of the finite ``diffs``.

    ``n_boot`` resamples of size n with replacement (``numpy.random.default_rng(seed)``, so
    deterministic given ``seed``); the interval is the ``alpha/2`` and ``1 - alpha/2``
    quantiles (linear interpolation) of the resample means, clipped to [min, max] of the data.
    ``(nan, nan)`` for no data; ``(c, c)`` when every value equals c (n = 1 included). The
    percentile interval is too narrow for small n (it ignores the t correction): read it with p.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    x = _finite(diffs, "diffs")
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan
    lo_data, hi_data = float(x.min()), float(x.max())
    if lo_data == hi_data:
        return lo_data, hi_data
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    step = max(1, _CHUNK // n)
    for start in range(0, int(n_boot), step):
        stop = min(start + step, int(n_boot))
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(np.clip(lo, lo_data, hi_data)), float(np.clip(hi, lo_data, hi_data))


def bootstrap_ci_2way(diffs: Any, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the grand mean of a matrix ``d[seed, case]``.

    Each resample draws S rows (seeds) and C columns (cases) with replacement, independently,
    and takes the mean of the S x C sub-matrix ``d[rows][:, cols]`` (computed as
    ``w_rows^T d w_cols / (S C)`` with the draw counts ``w``). A column (case) holding a
    non-finite value is dropped first (a pair missing for one seed takes its case out).
    One row: exactly :func:`bootstrap_ci` over the cases (same ``seed``, same draws).
    ``(nan, nan)`` for no data; ``(c, c)`` when every value equals c. Clipped to [min, max].
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    try:
        d = np.asarray(diffs, dtype=float)  # None -> nan
    except (TypeError, ValueError) as e:
        raise ValueError(f"diffs must be a matrix d[seed, case] of numbers: {e}") from None
    if d.ndim != 2:
        raise ValueError(f"diffs must be two-dimensional (seeds x cases), got shape {d.shape}")
    if d.size:
        d = d[:, np.isfinite(d).all(axis=0)]
    if d.size == 0:
        return math.nan, math.nan
    if d.shape[0] == 1:
        return bootstrap_ci(d[0], n_boot=n_boot, alpha=alpha, seed=seed)
    lo_data, hi_data = float(d.min()), float(d.max())
    if lo_data == hi_data:
        return lo_data, hi_data
    n_s, n_c = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    step = max(1, _CHUNK // (n_s + n_c))
    for start in range(0, int(n_boot), step):
        stop = min(start + step, int(n_boot))
        rows = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=stop - start)
        cols = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=stop - start)
        means[start:stop] = np.einsum("bs,sc,bc->b", rows, d, cols) / (n_s * n_c)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(np.clip(lo, lo_data, hi_data)), float(np.clip(hi, lo_data, hi_data))


def wilcoxon_p(diffs: Iterable[float | None]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the finite ``diffs`` (H0: symmetric about 0).

    ``scipy.stats.wilcoxon(d)`` with its defaults: zero differences dropped (``zero_method=
    "wilcox"``), ``method="auto"``: the exact null distribution for n <= 50 without ties, exact
    permutations of the signs for n <= 13 with ties, the normal approximation otherwise.
    Choices for the degenerate cases: nan when there are no finite differences (nothing to
    test); 1.0 when there are some but every one is zero (no evidence of any difference; scipy
    would give nan). A single non-zero difference gives 1.0 (both signs equally likely).
    """
    from scipy import stats

    x = _finite(diffs, "diffs")
    if x.size == 0:
        return math.nan
    if not np.any(x != 0):
        return 1.0
    return float(stats.wilcoxon(x).pvalue)


def paired(a: Mapping[K, float | None], b: Mapping[K, float | None]) -> list[float]:
    """Differences ``a[k] - b[k]`` over the keys both have, in sorted key order.

    Pairs with a missing (None) or non-finite value give nan, kept so that the list lines up
    with ``sorted(a.keys() & b.keys())``; the other functions here ignore them.
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise ValueError(f"a and b must be mappings key -> value, got {type(a).__name__} and {type(b).__name__}")
    try:
        keys = sorted(set(a) & set(b))  # type: ignore[type-var]
    except TypeError as e:
        raise ValueError(f"the keys of a and b must be mutually orderable: {e}") from None
    out = []
    for k in keys:
        va, vb = a[k], b[k]
        out.append(math.nan if va is None or vb is None else float(va) - float(vb))
    return out


def _fmt(x: float) -> str:
    """A difference for the verdict: 3 decimals, scientific notation for tiny values."""
    return f"{x:.3f}" if x == 0 or abs(x) >= 0.001 else f"{x:.1e}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def describe_difference(diffs: Iterable[float | None], higher_is_better: bool = True, *, alpha: float = 0.05,
                        n_boot: int = 10000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
                        ci: tuple[float, float] | None = None) -> dict[str, Any]:
    """Summary of paired differences ``d = a - b``: ``{"n", "mean", "se", "ci_lo", "ci_hi", "p", "verdict"}``.

    ``mean, se, n`` from :func:`mean_se`, ``ci_lo, ci_hi`` the ``1 - alpha`` bootstrap interval
    of the mean of d (:func:`bootstrap_ci`), ``p`` from :func:`wilcoxon_p`. The verdict claims a
    winner only when the interval excludes 0 and p < alpha, e.g. ``"A better by 0.031 (95% CI
    0.012 to 0.050, p = 0.004)"`` (the winner's advantage and its interval, in the metric's
    units; ``higher_is_better=False`` for errors such as HD95); ``"no detectable difference
    (95% CI -0.010 to 0.006 includes 0, p = 0.41)"`` when neither does; ``"inconclusive: A ahead
    by ... (...), but p >= 0.05"`` (or ``"but the CI includes 0"``) when they disagree; ``"no
    data"`` or ``"too few pairs (n = 1) to compare"`` below two pairs. ``ci`` replaces the
    bootstrap interval by one computed elsewhere (e.g. :func:`bootstrap_ci_2way` over seeds and cases).
    """
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if len(names) != 2:
        raise ValueError(f"names must be two labels (A, B), got {names!r}")
    x = _finite(diffs, "diffs")
    mean, se, n = mean_se(x)
    lo, hi = (float(ci[0]), float(ci[1])) if ci is not None else bootstrap_ci(x, n_boot=n_boot, alpha=alpha,
                                                                               seed=seed)
    p = wilcoxon_p(x)
    level = f"{100 * (1 - alpha):g}% CI"
    if n == 0:
        verdict = "no data"
    elif n < 2:
        verdict = f"too few pairs (n = {n}) to compare"
    else:
        excludes = lo > 0 or hi < 0
        significant = math.isfinite(p) and p < alpha
        a_ahead = (mean > 0) == bool(higher_is_better)
        winner = names[0] if a_ahead else names[1]
        # the winner's advantage: d itself when A is ahead with higher-is-better, else its negation
        sign = 1.0 if (mean > 0) else -1.0
        adv, adv_lo, adv_hi = sign * mean, min(sign * lo, sign * hi), max(sign * lo, sign * hi)
        interval = f"{level} {_fmt(adv_lo)} to {_fmt(adv_hi)}"
        if excludes and significant:
            verdict = f"{winner} better by {_fmt(adv)} ({interval}, {_fmt_p(p)})"
        elif not excludes and not significant:
            verdict = f"no detectable difference ({level} {_fmt(lo)} to {_fmt(hi)} includes 0, {_fmt_p(p)})"
        else:
            why = f"p >= {alpha:g}" if excludes else "the CI includes 0"
            verdict = f"inconclusive: {winner} ahead by {_fmt(adv)} ({interval}, {_fmt_p(p)}), but {why}"
    return {"n": n, "mean": mean, "se": se, "ci_lo": lo, "ci_hi": hi, "p": p, "verdict": verdict}
