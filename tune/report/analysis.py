"""The report's numbers: mean ± SE over seeds per variant and the paired comparisons.

:func:`aggregate` (per variant and metric over seeds) and :func:`paired_difference` (over the
seeds two variants share) for a grid; for a grid with ``experiment.axis``, :func:`paired_matrix`
(``d[seed, case]``), :func:`compare` and :func:`axis_comparisons` (every variant against the
baseline per level, and the trend from the lowest to the highest level). The statistics
themselves are :mod:`tune.stats`'.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..config import ServiceConfig
from ..grid import Variant
from ..stats import bootstrap_ci, bootstrap_ci_2way, describe_difference, mean_se
from .data import METRICS, GridRun


def aggregate(runs: Sequence[GridRun], variants: Sequence[Variant], split: str,
              regions: Sequence[str], metrics: Sequence[str] = METRICS
              ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{variant: {"Dice_TC": (mean, se, n), ..., "HD95_mean": ...}} over the seeds' runs
    (``metrics``: e.g. :data:`LESION_METRICS` for the lesion-wise ones; a run without one is not counted)."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for v in variants:
        mine = [r for r in runs if r.variant == v.name and f"{split}_Dice_mean" in r.metrics]
        out[v.name] = {f"{m}_{reg}": mean_se([r.metrics.get(f"{split}_{m}_{reg}", float("nan")) for r in mine])
                       for m in metrics for reg in [*regions, "mean"]}
    return out


def paired_difference(runs: Sequence[GridRun], a: str, b: str, key: str) -> tuple[float, float, int]:
    """mean ± SE over seeds of ``key(a) - key(b)``, on the seeds both variants finished."""
    va = {r.seed: r.metrics[key] for r in runs if r.variant == a and key in r.metrics}
    vb = {r.seed: r.metrics[key] for r in runs if r.variant == b and key in r.metrics}
    return mean_se([va[s] - vb[s] for s in sorted(set(va) & set(vb))])


def short_label(label: str) -> str:
    """``"SiNGR (δ = 0.5 + Focal-L1)"`` -> ``"SiNGR"``: the name a sentence uses."""
    return label.split(" (")[0].strip() or label


def paired_matrix(runs: Sequence[GridRun], scores: dict[str, dict[str, dict[str, float]]], a: str, b: str,
                  key: str) -> tuple[np.ndarray, list[int], list[str]]:
    """``(d[seed, case], seeds, cases)``: ``key(a) - key(b)`` per seed both variants scored and
    per case both scored in every one of those seeds (non-finite scores take the case out)."""
    ra = {r.seed: r.run_id for r in runs if r.variant == a and r.run_id in scores}
    rb = {r.seed: r.run_id for r in runs if r.variant == b and r.run_id in scores}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return np.zeros((0, 0)), [], []
    common = set.intersection(*(set(scores[rid]) for s in seeds for rid in (ra[s], rb[s])))
    cases = sorted(c for c in common if all(math.isfinite(scores[rid][c].get(key, math.nan))
                                            for s in seeds for rid in (ra[s], rb[s])))
    d = np.asarray([[scores[ra[s]][c][key] - scores[rb[s]][c][key] for c in cases] for s in seeds], dtype=float)
    return d.reshape(len(seeds), len(cases)), seeds, cases


def compare(d: np.ndarray, higher_is_better: bool, names: tuple[str, str]) -> dict[str, Any]:
    """The statistics of :mod:`tune.report` (cases as the unit, two-way bootstrap) for one matrix ``d[seed, case]``."""
    n_s, n_c = d.shape if d.size else (0, 0)
    per_case = d.mean(axis=0) if d.size else np.zeros(0)
    ci2 = bootstrap_ci_2way(d) if d.size else (math.nan, math.nan)
    desc = describe_difference(per_case, higher_is_better, names=names, ci=ci2)
    seed_m, seed_se, _ = mean_se(d.mean(axis=1)) if d.size else (math.nan, math.nan, 0)
    return {**desc, "n_seeds": int(n_s), "n_cases": int(n_c), "ci_cases": list(bootstrap_ci(per_case)),
            "seed_mean": seed_m, "seed_se": seed_se}


def axis_comparisons(cfg: ServiceConfig, runs: Sequence[GridRun], scores: dict[str, dict[str, dict[str, float]]],
                     variants: Sequence[Variant]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, trend): every variant against the baseline at every level, for Dice_mean and
    HD95_mean; the trend is the highlight's difference at the highest level minus at the lowest."""
    e = cfg.experiment
    assert e is not None and e.axis is not None and e.baseline
    by = {(v.stem, v.level): v for v in variants}
    label = {v.stem: v.label for v in variants}
    levels = sorted(e.axis.levels, key=lambda lv: lv.value)
    rows: list[dict[str, Any]] = []
    mats: dict[tuple[str, str, str], tuple[np.ndarray, list[int], list[str]]] = {}
    for lv in levels:
        base = by.get((e.baseline, lv.name))
        if base is None:
            continue
        for v in [v for v in variants if v.level == lv.name and v.role != "baseline"]:
            for key, hib in (("Dice_mean", True), ("HD95_mean", False)):
                d, seeds, cases = paired_matrix(runs, scores, v.name, base.name, key)
                mats[(v.stem, lv.name, key)] = (d, seeds, cases)
                names = (short_label(v.label), short_label(base.label))
                rows.append({"level": lv.name, "value": lv.value, "variant": v.stem, "baseline": e.baseline,
                             "label": names[0], "baseline_label": names[1], "metric": key,
                             **compare(d, hib, names)})
    trend: list[dict[str, Any]] = []
    high = e.highlight
    if high and len(levels) >= 2:
        lo, hi = levels[0], levels[-1]
        for key, hib in (("Dice_mean", True), ("HD95_mean", False)):
            a, b = mats.get((high, hi.name, key)), mats.get((high, lo.name, key))
            if a is None or b is None or not a[0].size or not b[0].size:
                continue
            cases = sorted(set(a[2]) & set(b[2]))
            n_s = min(len(a[1]), len(b[1]))
            ia, ib = [a[2].index(c) for c in cases], [b[2].index(c) for c in cases]
            dd = a[0][:n_s][:, ia] - b[0][:n_s][:, ib]
            names = (f"{e.axis.name} {hi.value:g}", f"{e.axis.name} {lo.value:g}")
            trend.append({"metric": key, "variant": high, "baseline": e.baseline, "from": lo.name, "to": hi.name,
                          "from_value": lo.value, "to_value": hi.value, **compare(dd, hib, names)})
    for r in trend:
        r.update(label=short_label(label.get(r["variant"], r["variant"])),
                 baseline_label=short_label(label.get(e.baseline, e.baseline)))
    return rows, trend
