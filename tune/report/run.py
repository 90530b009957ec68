"""Writing the report (:func:`write_report`) and the ``report`` command's entry point (:func:`run_report`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from singr.errors import SingrInputError
from singr.io import write_json, write_text

from ..grid import ARCHITECTURES, TABLE, expand_variants
from ..hub.store import resolve_tracking_uri, sqlite_path
from .analysis import aggregate, paired_difference
from .axis import axis_sections
from .data import _client, find_grid, regions_of
from .figures import bar_chart
from .markdown import _cell, _data_line, _show, checkpoint_note, lesion_section, level_title, table_markdown
from .overlays import overlay_rows


def _finite(x: Any) -> Any:
    """NaN (an SE over one seed, a variant without runs) as null, so summary.json is valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_report(uri: str, experiment: str, out_dir: str | Path, sweep: str | None = None,
                 overlay_cases: int | None = None, log_to_mlflow: bool = True, device: str = "cpu",
                 notes: str | None = None) -> dict[str, Any]:
    """Write the report of the newest grid sweep of ``experiment`` (see :mod:`tune.report`);
    ``notes`` replaces the stored config's ``experiment.notes`` (None: keep them)."""
    from singr.viz import comparison_png

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = _client(uri)
    parent, cfg, runs = find_grid(uri, experiment, sweep)
    e = cfg.experiment
    assert e is not None
    split = e.eval_split
    variants = expand_variants(cfg)
    done = [r for r in runs if f"{split}_Dice_mean" in r.metrics]
    if not done:
        raise SingrInputError(f"sweep {parent.data.tags.get('sweep')!r} has no run with {split}_Dice_mean yet "
                              f"({len(runs)} runs); wait for it to finish or resume it")
    regions = regions_of(done, split)
    agg = aggregate(done, variants, split, regions)
    base, high = e.baseline, e.highlight
    label = {v.name: v.label for v in variants}
    groups = [g for g in (TABLE, ARCHITECTURES) if any(g in v.groups for v in variants)]
    sweep_name = parent.data.tags.get("sweep", parent.info.run_id)
    seeds = sorted({r.seed for r in done})
    md = [f"# SiNGR comparison: {sweep_name}", "",
          f"MLflow experiment `{experiment}`, sweep run `{parent.info.run_id}` ({_show(uri)}). "
          f"{len(done)} of {len(variants) * len(e.seeds)} runs finished with {split} metrics; "
          f"seeds {seeds}. Model `{cfg.model.name}`, {cfg.train.epochs} epochs x "
          f"{cfg.train.iters_per_epoch} iterations, patch {cfg.train.patch_size}, {_data_line(cfg, variants)}.",
          "", f"Metrics are on the **{split}** split ({checkpoint_note(cfg, variants)}), averaged over its "
          f"cases, then mean ± standard error over seeds (SE = sd / sqrt(n)). HD95 in mm; BraTS convention for "
          "empty masks (one of the two empty: Dice 0, HD95 373.13 mm). **Bold**: the paper's setting."]
    headline: dict[str, Any] = {}
    figures: list[Path] = []
    axis_summary: dict[str, Any] = {}
    n_ov = int(e.overlay_cases if overlay_cases is None else overlay_cases)
    if e.axis is not None:
        more, figures, axis_summary = axis_sections(client, cfg, done, variants, agg, regions, split, out, device,
                                                    n_ov)
        md += more
        headline = {"text": axis_summary["text"]} if axis_summary["text"] else {}
    elif base and high:
        d_dice = paired_difference(done, high, base, f"{split}_Dice_mean")
        d_hd = paired_difference(done, high, base, f"{split}_HD95_mean")
        a, b = agg[high], agg[base]
        headline = {"highlight": high, "baseline": base, "Dice_mean": [a["Dice_mean"], b["Dice_mean"]],
                    "HD95_mean": [a["HD95_mean"], b["HD95_mean"]], "paired_Dice_difference": d_dice,
                    "paired_HD95_difference": d_hd}
        md += ["", "## Headline", "",
               f"- {label[high]}: mean Dice {_cell(a['Dice_mean'], 3)}, "
               f"HD95 {_cell(a['HD95_mean'], 2)} mm",
               f"- {label[base]}: mean Dice {_cell(b['Dice_mean'], 3)}, "
               f"HD95 {_cell(b['HD95_mean'], 2)} mm",
               f"- paired over {d_dice[2]} seeds, {high} − {base}: Dice {_cell(d_dice, 3)}, "
               f"HD95 {_cell(d_hd, 2)} mm"]
    for g in groups if e.axis is None else []:
        vs = [v for v in variants if g in v.groups]
        slug = "table" if g == TABLE else "architectures"
        title = (f"{g} on {cfg.model.name} (paper Table 3)" if g == TABLE
                 else f"{g}: with and without SiNGR (paper Figure 3)")
        png = bar_chart(out / f"bars_{slug}.png", vs, agg, regions, title, high)
        figures.append(png)
        md += ["", f"## {title}", "", table_markdown(vs, agg, regions, high), "", f"![{g}]({png.name})"]
    if n_ov > 0 and base and high and e.axis is None:
        try:
            rows, names, which = overlay_rows(client, cfg, done, base, high, n_ov, split, device)
            if rows:
                png = comparison_png(out / "overlays.png", rows, names, (label[base], label[high]))
                figures.append(png)
                md += ["", "## Cases", "", f"Axial slice with the most tumour, {split} split; models of the lowest "
                       f"seed ({which}). Contours: TC red, WT green, ET yellow. Signed map: SiNGR's tanh output for "
                       "WT, zero level in black.", "", f"![cases]({png.name})"]
        except (SingrInputError, OSError, KeyError) as err:
            md += ["", "## Cases", "", f"No overlay figure: {err}"]
            print(f"[report] no overlays: {err}", flush=True)
    by_level = None
    if e.axis is not None:
        by_level = [(level_title(e.axis.name, lv), [v for v in variants if v.level == lv.name])
                    for lv in sorted(e.axis.levels, key=lambda lv: lv.value)]
    lesion_md, lesion = lesion_section(done, variants, split, regions, high, by_level)
    md += lesion_md
    notes = str((e.notes if notes is None else notes) or "").strip()
    if notes:
        md += ["", "## Notes", "", notes]
    text = "\n".join(md) + "\n"
    md_path = out / "report.md"
    write_text(md_path, text)
    summary = {"experiment": experiment, "sweep": sweep_name, "parent_run_id": parent.info.run_id, "split": split,
               "regions": regions, "n_runs": len(done), "seeds": seeds,
               "variants": {v.name: {"label": v.label, "groups": list(v.groups),
                                     **({"stem": v.stem, "level": v.level, "x": v.x} if v.level else {}),
                                     **{k: list(s) for k, s in agg[v.name].items()}} for v in variants},
               "headline": headline, "figures": [p.name for p in figures], **axis_summary,
               **({"lesion_wise": lesion} if lesion else {})}
    write_json(out / "summary.json", _finite(summary))
    if log_to_mlflow:
        for p in [md_path, out / "summary.json", *figures]:
            client.log_artifact(parent.info.run_id, str(p), "report")
    print(f"[report] {md_path} ({len(done)} runs, {len(figures)} figures, {time.time() - t0:.1f} s)", flush=True)
    return {"markdown": str(md_path), "figures": [str(p) for p in figures], "summary": summary,
            "parent_run_id": parent.info.run_id}


def run_report(*, experiment: str, sweep: str | None = None, tracking_uri: str | None = None,
               out: str | None = None, overlay_cases: int | None = None, device: str = "cpu", log: bool = True,
               notes_from: str | None = None) -> int:
    """The ``report`` command: the report of a grid sweep of ``experiment``, from MLflow, into
    ``out`` (default ``reports/<sweep or experiment>``); ``log``: also log it to the sweep's run;
    ``notes_from``: a config whose ``experiment.notes`` replace the stored ones. First closes the
    runs of the experiment's killed sweep drivers (:func:`tune.tidy.tidy_quietly`). Prints the
    headline and the figures; returns the exit status (0)."""
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise SingrInputError(f"no MLflow store at {db}; pass --tracking-uri or run from the folder of the sweep's "
                              "mlflow.db")
    from ..tidy import tidy_quietly

    tidy_quietly(uri, experiment)  # a sweep whose driver was killed: its runs KILLED, not RUNNING for ever
    out = out or str(Path("reports") / (sweep or experiment))
    notes = None
    if notes_from:
        from ..config import load_service_config

        e = load_service_config(notes_from).experiment
        if e is None or not str(e.notes or "").strip():
            raise SingrInputError(f"--notes-from {notes_from}: the config has no experiment.notes")
        notes = str(e.notes)
    res = write_report(uri, experiment, out, sweep=sweep, overlay_cases=overlay_cases,
                       log_to_mlflow=log, device=device, notes=notes)
    h = res["summary"].get("headline") or {}
    if h.get("text"):
        print("[report] " + h["text"].replace("**", "").replace("\n\n", "\n[report] "))
    elif h:
        d, hd = h["paired_Dice_difference"], h["paired_HD95_difference"]

        def pm(v: Sequence[float], digits: int) -> str:
            return f"{v[0]:+.{digits}f}" + (f" ± {v[1]:.{digits}f}" if v[2] > 1 else "")

        print(f"[report] {h['highlight']} - {h['baseline']} over {d[2]} seeds: Dice {pm(d, 4)}, "
              f"HD95 {pm(hd, 2)} mm")
    for f in res["figures"]:
        print(f"[report] figure: {f}")
    return 0
