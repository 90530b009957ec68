"""Evidence for moving ``@champion``: the new model and the champion segment the same validation
cases, and the champion moves only when the new model is better beyond noise
(``mlflow.promote: significant``, the default).

Per validation case ``i`` the objective's value of both models (``val_Dice_mean`` -> the case's
``Dice_mean``; HD95 objectives: lower is better, so the difference is taken the other way)::

    d_i = new_i - champion_i          (champion_i - new_i for lower-is-better objectives)
    gain = mean(d),  95 % CI = percentile bootstrap of the mean over cases  (tune.stats)

and the alias moves only when the interval's lower end is above 0 (at least ``MIN_CASES``
cases). The same setting trained twice differs by more than a single validation score's
difference suggests (issue 21: best-of-8 seeds beat a typical run by 0.15 Dice), so a higher
mean alone (``better``) moves the champion on noise; the paired interval does not.

MLflow and the singr engine only (no Ray): the registry's champion is downloaded
(:func:`tune.hub.fetch.download_model`) and both are run by the engine's one inference path.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["case_scores", "paired_evidence", "compare_with_champion", "MIN_CASES"]

MIN_CASES = 3


def _column(metric: str) -> str:
    """``val_Dice_mean`` -> ``Dice_mean``: the per-case column of a validation objective."""
    return metric[4:] if metric.startswith("val_") else metric


def case_scores(model: str | Path, cfg: Any, metric: str, device: str = "auto") -> dict[str, float]:
    """``{case id: the objective's value}`` of the model folder or checkpoint ``model`` on the
    validation split of ``cfg`` (cases read from its preprocessing cache)."""
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import segment_split
    from singr.metrics import case_metrics

    pred = load_predictor(model, device=device)
    col = _column(metric)
    out: dict[str, float] = {}
    for prep, p, _ in segment_split(pred, cfg, "val"):
        row = case_metrics(p.regions, prep.regions, prep.spacing, prep.region_names, lesion=False)
        if col not in row:
            raise KeyError(f"the objective {metric!r} has no per-case column {col!r} (columns: {', '.join(row)})")
        out[prep.case_id] = float(row[col])
    return out


def paired_evidence(new: dict[str, float], champion: dict[str, float], higher_is_better: bool = True,
                    seed: int = 0) -> dict[str, Any]:
    """The paired comparison above: ``n``, the two means, ``gain`` (mean of d, positive = the new
    model is better), its ``se`` and 95 % bootstrap ``ci``, and ``significant`` (ci low > 0 with
    at least ``MIN_CASES`` cases)."""
    from ..stats import bootstrap_ci, mean_se, paired

    d = paired(new, champion)
    if not higher_is_better:
        d = [-x for x in d]
    gain, se, n = mean_se(d)
    lo, hi = bootstrap_ci(d, seed=seed) if n else (math.nan, math.nan)
    common = [k for k in new if k in champion]
    mean = (lambda s: sum(s[k] for k in common) / len(common) if common else math.nan)
    return {"n": n, "new_mean": mean(new), "champion_mean": mean(champion), "gain": gain, "se": se,
            "ci": [lo, hi], "significant": bool(n >= MIN_CASES and lo > 0)}


def compare_with_champion(model_dir: Path, champion_version: Any, cfg: Any, tracking_uri: str, metric: str,
                          higher_is_better: bool) -> dict[str, Any]:
    """:func:`paired_evidence` of ``model_dir`` against the registered ``champion_version`` (an
    MLflow ModelVersion) on the validation split of ``cfg``."""
    from .fetch import download_model

    with tempfile.TemporaryDirectory(prefix="singr-champion-") as tmp:
        local, _ = download_model(f"models:/{champion_version.name}/{champion_version.version}", tracking_uri,
                                  dst=Path(tmp))
        old = case_scores(local, cfg, metric)
    new = case_scores(model_dir, cfg, metric)
    return {**paired_evidence(new, old, higher_is_better), "champion_version": int(champion_version.version),
            "metric": metric}


def describe(ev: dict[str, Any]) -> str:
    """One line: the gain, its interval, the cases, and what it means."""
    lo, hi = ev["ci"]
    what = "above 0: better beyond noise" if ev["significant"] else (
        f"fewer than {MIN_CASES} cases: no evidence" if ev["n"] < MIN_CASES else "includes 0: not better beyond noise")
    return (f"{ev['metric']} {ev['new_mean']:.4f} vs the champion's (v{ev['champion_version']}) "
            f"{ev['champion_mean']:.4f} on the same {ev['n']} validation cases: gain {ev['gain']:+.4f}, "
            f"95% CI [{lo:+.4f}, {hi:+.4f}] {what}")
