"""The report's sections for a grid with ``experiment.axis``: per-level tables, paired differences, figures.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from singr.errors import SingrInputError

from ..config import ServiceConfig
from ..grid import Variant, variant_config
from .analysis import axis_comparisons
from .data import GridRun, case_scores
from .figures import axis_plot
from .markdown import axis_headline, comparison_table, level_title, table_markdown
from .overlays import axis_picture, overlay_rows


def axis_sections(client: Any, cfg: ServiceConfig, runs: Sequence[GridRun], variants: Sequence[Variant],
                  agg: dict[str, Any], regions: Sequence[str], split: str, out: Path, device: str,
                  overlay_cases: int) -> tuple[list[str], list[Path], dict[str, Any]]:
    """The report's sections for a grid with ``experiment.axis`` (see :mod:`tune.report`)."""
    e = cfg.experiment
    assert e is not None and e.axis is not None
    axis = e.axis.name
    levels = sorted(e.axis.levels, key=lambda lv: lv.value)
    label = {v.stem: v.label for v in variants}
    md: list[str] = []
    figures: list[Path] = []
    scores = case_scores(client, runs, split)
    missing = [r for r in runs if r.run_id not in scores]
    rows, trend = axis_comparisons(cfg, runs, scores, variants) if e.baseline else ([], [])
    text = ""
    if e.baseline and e.highlight and rows:
        text = axis_headline(rows, trend, axis, e.highlight, label[e.baseline], label[e.highlight])
        md += ["", "## Headline", "", text]
    png = axis_plot(out / "axis.png", axis, variants, agg, f"Test metrics against {axis} (mean ± SE over seeds)")
    figures.append(png)
    md += ["", f"## Against {axis}", "", f"![{axis}]({png.name})"]
    if rows:
        md += ["", f"## Paired differences per case, against {label.get(e.baseline or '', e.baseline)}", "",
               f"Per {axis} level and variant V: d[s, c] = V − baseline for test case c and seed s (both runs "
               f"scored it). Mean difference ± SE over cases of the seed-averaged d; 95% CI by the two-way "
               f"bootstrap over seeds and cases (10,000 resamples; the verdict uses it), and over cases alone; "
               f"Wilcoxon signed-rank p over the cases' seed-averaged differences; per-seed mean ± SE over seeds. "
               f"Dice: positive = V better; HD95 (mm): negative = V better. A verdict claims a difference only "
               f"when the CI excludes 0 and p < 0.05.", "", comparison_table(rows, axis)]
    if trend:
        md += ["", f"Change of {label.get(e.highlight or '', e.highlight)}'s difference from {axis} "
               f"{levels[0].value:g} to {levels[-1].value:g} (paired by case id: the same anatomy at both levels):",
               "", comparison_table([{**t, "value": f"{levels[-1].value:g} − {levels[0].value:g}"} for t in trend],
                                    axis)]
    for lv in levels:
        vs = [v for v in variants if v.level == lv.name]
        md += ["", f"## {level_title(axis, lv)}", "", table_markdown(vs, agg, regions, e.highlight)]
    try:
        pic, case = axis_picture(out / f"{_slug(axis)}.png", cfg, variants, split)
        figures.append(pic)
        md += ["", f"## The data at each {axis} level", "",
               f"Test case {case} (the largest whole tumour with every region present) at every level: the same "
               f"anatomy (same seed), FLAIR, the drawn label (TC red, WT green, ET yellow) and the signed map of WT "
               f"that {label.get(e.highlight or '', 'SiNGR')} regresses (its lambda and delta).", "",
               f"![{axis}]({pic.name})"]
    except (SingrInputError, OSError, KeyError, StopIteration) as err:
        md += ["", f"## The data at each {axis} level", "", f"No picture: {err}"]
        print(f"[report] no {axis} picture: {err}", flush=True)
    if overlay_cases > 0 and e.baseline and e.highlight:
        top = levels[-1]
        names = {v.stem: v.name for v in variants if v.level == top.name}
        try:
            rows_ov, rnames, which = overlay_rows(client, variant_config(cfg, names[e.highlight]), runs,
                                                  names[e.baseline], names[e.highlight], overlay_cases, split, device)
            if rows_ov:
                from singr.viz import comparison_png

                ov = comparison_png(out / "overlays.png", rows_ov, rnames, (label[e.baseline], label[e.highlight]))
                figures.append(ov)
                md += ["", f"## Cases at {axis} {top.value:g}", "", f"Axial slice with the most tumour, {split} "
                       f"split; models of the lowest seed ({which}). Contours: TC red, WT green, ET yellow. Signed "
                       "map: SiNGR's tanh output for WT, zero level in black.", "", f"![cases]({ov.name})"]
        except (SingrInputError, OSError, KeyError) as err:
            md += ["", f"## Cases at {axis} {top.value:g}", "", f"No overlay figure: {err}"]
            print(f"[report] no overlays: {err}", flush=True)
    if missing:
        md += ["", f"{len(missing)} run(s) have no per-case scores (eval/metrics_{split}.csv) and are left out of "
               "the paired differences: " + ", ".join(f"{r.variant} seed {r.seed}" for r in missing) + "."]
    summary = {"axis": {"name": axis, "levels": [{"name": lv.name, "value": lv.value, "label": lv.label}
                                                 for lv in levels]},
               "comparisons": rows, "trend": trend, "text": text,
               "runs_without_case_scores": [r.run_id for r in missing]}
    return md, figures, summary


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "axis"
