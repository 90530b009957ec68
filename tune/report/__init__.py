"""``singr report``: a comparison grid's MLflow runs -> Markdown report, bar charts, overlays.

Reads the newest grid sweep (parent run tagged ``singr.mode = grid``; ``sweep=`` picks
one by name) of an MLflow experiment: its ``config.yaml`` (the variants, groups, baseline
and highlight) and its child runs (tags ``variant`` and ``seed``; metrics
``<eval_split>_Dice_<region>``, ``_HD95_<region>``; artifact ``checkpoint/best.safetensors``).

For every variant and metric over its seeds ``x_1..x_n``::

    mean = (1/n) sum_i x_i,    SE = sqrt( sum_i (x_i - mean)^2 / (n - 1) ) / sqrt(n)   (n >= 2)

The headline compares the highlight (the paper's SiNGR) with the baseline (hard labels)
per seed: ``d_i = x_i(highlight) - x_i(baseline)`` over the seeds both have, mean(d) ± SE(d).
Written into ``out_dir``: ``report.md``, ``summary.json``, ``bars_<group>.png`` (Dice and
HD95 per variant and region, SE error bars) and ``overlays.png`` (cases of the evaluation
split: image, truth, hard-label and SiNGR predictions, SiNGR's signed map); the same files
are logged to the parent run under ``report/``. Needs MLflow, not Ray.

With ``experiment.axis`` (e.g. annotation ambiguity, configs/ambiguity.yaml) the report is
per level instead. Each run's per-case scores (artifact ``eval/metrics_<split>.csv``) give,
for every variant V against the baseline B at a level, the matrix of paired differences
``d[s, c] = x_sc(V) - x_sc(B)`` over the seeds s both finished and the cases c both scored.
The case is the unit: ``dbar_c = mean_s d[s, c]`` (each case's difference averaged over the
seeds' models) gives the mean, its SE over cases and the Wilcoxon signed-rank p over cases
(:mod:`tune.stats`); the 95% interval is the two-way bootstrap over seeds and cases
(:func:`tune.stats.bootstrap_ci_2way`, so the training randomness of 5 seeds is in it), with
the bootstrap over cases alone and the per-seed mean ± SE beside it. The verdict claims a
difference only when that interval excludes 0 and p < 0.05 ("no detectable difference"
otherwise). The trend row compares the difference at the highest level with the lowest,
paired by case id (the same anatomy at every level). Figures: ``axis.png`` (Dice and HD95
against the level per variant, SE error bars), ``<axis>.png`` (one test case at every
level: image, label, the highlight's signed map of WT) and the overlays at the highest level.

Modules: :mod:`~tune.report.data` (the sweep's runs from MLflow), :mod:`~tune.report.analysis`
(means, SEs, paired comparisons, with :mod:`tune.stats`), :mod:`~tune.report.markdown` (the
text), :mod:`~tune.report.figures` (charts), :mod:`~tune.report.overlays` (model predictions and
the per-level case picture), :mod:`~tune.report.axis` (the sections of a grid with an axis) and
:mod:`~tune.report.run` (:func:`write_report`, :func:`run_report`).
"""
from __future__ import annotations

from .run import run_report, write_report

__all__ = ["run_report", "write_report"]
