"""The report's text: Markdown tables, the lesion-wise section, the axis headline, number formats.

Pure string building from the numbers of :mod:`tune.report.analysis` (and, for the lesion-wise
section, :func:`~tune.report.analysis.aggregate` of the lesion metrics); no MLflow, no figures.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..config import ServiceConfig
from ..grid import Variant, variant_config
from .analysis import aggregate, short_label
from .data import LESION_METRICS, METRICS, GridRun


def _show(text: str) -> str:
    """Paths under the current folder shown relative to it (reports are committed and shared)."""
    cwd = str(Path.cwd().resolve())
    return text.replace(cwd + "/", "").replace(cwd, ".")


def _cell(stat: tuple[float, float, int], digits: int) -> str:
    m, se, n = stat
    if n == 0:
        return "–"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def table_markdown(variants: Sequence[Variant], agg: dict[str, Any], regions: Sequence[str],
                   highlight: str | None, metrics: Sequence[str] = METRICS,
                   names: Sequence[str] = METRICS) -> str:
    """One row per variant: seeds, then each of ``metrics`` (a Dice-like one, 3 digits, then an
    HD95-like one in mm, 2 digits) per region and their mean; the paper's setting in bold."""
    dice, hd = metrics
    cols = [f"{names[0]} {r}" for r in regions] + [f"{names[0]} mean"] + \
        [f"{names[1]} {r} (mm)" for r in regions] + [f"{names[1]} mean (mm)"]
    lines = ["| variant | seeds | " + " | ".join(cols) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for v in variants:
        a = agg[v.name]
        cells = [_cell(a[f"{dice}_{r}"], 3) for r in [*regions, "mean"]] + \
                [_cell(a[f"{hd}_{r}"], 2) for r in [*regions, "mean"]]
        paper = highlight is not None and v.role == "highlight"
        row = [v.label + (" (paper)" if paper else ""), str(a[f"{dice}_mean"][2]), *cells]
        if paper:
            row = [f"**{c}**" for c in row]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def lesion_section(runs: Sequence[GridRun], variants: Sequence[Variant], split: str, regions: Sequence[str],
                   highlight: str | None, groups: Sequence[tuple[str, Sequence[Variant]]] | None = None
                   ) -> tuple[list[str], dict[str, Any]]:
    """The report's lesion-wise section (BraTS 2023 ``LesionDice_<region>``, ``LesionHD95_<region>``
    that ``singr evaluate`` logs) and its numbers; nothing when no run has them. ``groups``:
    (title, variants) per table, e.g. one per level of an axis; default one table of ``variants``."""
    if not any(f"{split}_LesionDice_mean" in r.metrics for r in runs):
        return [], {}
    agg = aggregate(runs, variants, split, regions, LESION_METRICS)
    lines: list[str] = []
    for title, vs in groups or [("", variants)]:
        lines += ([f"### {title}", ""] if title else []) + [
            table_markdown(vs, agg, regions, highlight, LESION_METRICS, ("lesion-wise Dice", "lesion-wise HD95")), ""]
    md = ["", "## Lesion-wise (BraTS 2023)", "",
          "Per ground-truth lesion (26-connected after 3 dilations, over 50 voxels), a missed or false-positive "
          "lesion scores Dice 0 and HD95 374 mm; mean ± standard error over seeds.", "", *lines[:-1]]
    return md, {v: {k: list(x) for k, x in a.items()} for v, a in agg.items()}


def _num(x: float, digits: int, sign: bool = True) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_eq(p: float) -> str:
    text = _p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def comparison_table(rows: Sequence[dict[str, Any]], axis: str) -> str:
    lines = [f"| {axis} | comparison | metric | seeds × cases | mean difference ± SE (cases) | 95% CI (seeds × cases) "
             "| 95% CI (cases) | Wilcoxon p (cases) | per-seed mean ± SE | verdict |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        dg = 3 if r["metric"].startswith("Dice") else 2
        unit = "" if dg == 3 else " mm"
        metric = r["metric"].replace("_mean", " mean") + unit
        value = r.get("value", "")
        lines.append(
            f"| {value if isinstance(value, str) else format(value, 'g')} | {r['label']} − {r['baseline_label']} | "
            f"{metric} | {r['n_seeds']} × {r['n_cases']} | "
            f"{_num(r['mean'], dg)} ± {_num(r['se'], dg, False)} | {_num(r['ci_lo'], dg)} to {_num(r['ci_hi'], dg)} | "
            f"{_num(r['ci_cases'][0], dg)} to {_num(r['ci_cases'][1], dg)} | {_p(r['p'])} | "
            f"{_num(r['seed_mean'], dg)} ± {_num(r['seed_se'], dg, False)} | {r['verdict']} |")
    return "\n".join(lines)


def _kind(verdict: str, first: str) -> str:
    if verdict.startswith(f"{first} better"):
        return "better"
    if " better by " in verdict:
        return "worse"
    if verdict.startswith("no detectable"):
        return "same"
    if verdict.startswith(("no data", "too few")):
        return "none"
    return "unclear"


def _range_text(rows: Sequence[dict[str, Any]], key: str) -> str:
    """``"n"`` when every row has the same integer ``key``, else ``"lo-hi"``."""
    lo, hi = min(int(r[key]) for r in rows), max(int(r[key]) for r in rows)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def axis_headline(rows: Sequence[dict[str, Any]], trend: Sequence[dict[str, Any]], axis: str, high: str,
                  base_label: str, high_label: str) -> str:
    """The headline, from the numbers only: per level the highlight's Dice difference and
    verdict, a summary of where it is better, worse or not detectably different, the same for
    HD95, and whether the difference changes from the lowest to the highest level."""
    hl, bl = short_label(high_label), short_label(base_label)
    out = []
    for key, what, dg in (("Dice_mean", "mean Dice", 3), ("HD95_mean", "mean HD95", 2)):
        mine = [r for r in rows if r["variant"] == high and r["metric"] == key]
        if not mine:
            continue
        unit = "" if dg == 3 else " mm"
        parts = [f"{axis} {r['value']:g}: {_num(r['mean'], dg)}{unit} (95% CI {_num(r['ci_lo'], dg)} to "
                 f"{_num(r['ci_hi'], dg)}, {_p_eq(r['p'])})" for r in mine]
        kinds: dict[str, list[str]] = {}
        for r in mine:
            kinds.setdefault(_kind(r["verdict"], short_label(r["label"])), []).append(f"{r['value']:g}")
        said = []
        words = {"better": f"{hl} is better", "worse": f"{hl} is worse",
                 "same": "there is no detectable difference", "unclear": "the evidence is inconclusive",
                 "none": "there are too few paired runs to compare"}
        for k in ("better", "worse", "same", "unclear", "none"):
            if k in kinds:
                said.append(f"{words[k]} at {axis} {', '.join(kinds[k])}")
        out.append(f"**{what}, {hl} − {bl}** (paired per case, {_range_text(mine, 'n_cases')} test cases × "
                   f"{_range_text(mine, 'n_seeds')} "
                   f"seeds per level): " + "; ".join(parts) + ". So " + "; ".join(said) + ".")
    for t in trend:
        dg = 3 if t["metric"].startswith("Dice") else 2
        v = str(t["verdict"])
        if v.startswith("no detectable"):
            how = "does not change detectably"
        elif v.startswith("inconclusive"):
            how = "changes, but not conclusively"
        elif " better by " in v:
            how = f"grows in {hl}'s favour" if (t["mean"] > 0) == t["metric"].startswith("Dice") else \
                f"shrinks (moves towards {bl})"
        else:
            how = f"cannot be judged ({v})"
        out.append(f"From {axis} {t['from_value']:g} to {t['to_value']:g}, the {t['metric'].replace('_mean', '')} "
                   f"difference {hl} − {bl} {how}: difference of the differences {_num(t['mean'], dg)} (95% CI "
                   f"{_num(t['ci_lo'], dg)} to {_num(t['ci_hi'], dg)}, {_p_eq(t['p'])}).")
    return "\n\n".join(out)


def level_title(axis: str, level: Any) -> str:
    """A level's heading in the report: ``ambiguity = 0.5 (fuzzy)``."""
    return f"{axis} = {level.value:g}" + (f" ({level.label})" if level.label else "")


def _data_line(cfg: ServiceConfig, variants: Sequence[Variant]) -> str:
    e = cfg.experiment
    if e is None or e.axis is None:
        return f"data `{_show(cfg.data.root)}`"
    roots: dict[str, str] = {}
    for v in variants:
        roots.setdefault(v.level, variant_config(cfg, v.name).data.root)
    return f"data per {e.axis.name} level: " + ", ".join(f"`{_show(r)}`" for r in roots.values())


def checkpoint_note(cfg: ServiceConfig, variants: Sequence[Variant]) -> str:
    """Which checkpoint a run's evaluation metrics come from: its ``best.safetensors``, the one with the
    best ``train.select_metric`` in validation (each variant's own setting; HD95 metrics: the lowest wins)."""
    from singr.config.schema import SELECT_METRICS
    from singr.engine.trainer import BEST

    chosen = list(dict.fromkeys(str(variant_config(cfg, v.name).train.select_metric) for v in variants))
    if not chosen:
        chosen = [str(cfg.train.select_metric)]
    words = ", or ".join(f"{m}, {'lowest' if SELECT_METRICS.get(m) == 'min' else 'highest'} wins" for m in chosen)
    return f"each run's {BEST}: train.select_metric = {words}" + (", by variant" if len(chosen) > 1 else "")
