"""``singr report``: a comparison grid's MLflow runs -> Markdown report, bar charts, overlays.

Reads the newest grid sweep (parent run tagged ``singr.mode = grid``; ``sweep=`` picks
one by name) of an MLflow experiment: its ``config.yaml`` (the variants, groups, baseline
and highlight) and its child runs (tags ``variant`` and ``seed``; metrics
``<eval_split>_Dice_<region>``, ``_HD95_<region>``; artifact ``checkpoint/best.pt``).

For every variant and metric over its seeds ``x_1..x_n``::

    mean = (1/n) sum_i x_i,    SE = sqrt( sum_i (x_i - mean)^2 / (n - 1) ) / sqrt(n)   (n >= 2)

The headline compares the highlight (the paper's SiNGR) with the baseline (hard labels)
per seed: ``d_i = x_i(highlight) - x_i(baseline)`` over the seeds both have, mean(d) ± SE(d).
Written into ``out_dir``: ``report.md``, ``summary.json``, ``bars_<group>.png`` (Dice and
HD95 per variant and region, SE error bars) and ``overlays.png`` (cases of the evaluation
split: image, truth, hard-label and SiNGR predictions, SiNGR's signed map); the same files
are logged to the parent run under ``report/``. Needs MLflow, not Ray.
"""
from __future__ import annotations

import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from singr.config import from_stored
from singr.errors import SingrInputError
from singr.io import atomic_path, write_json, write_text

from .config import ServiceConfig
from .grid import ARCHITECTURES, TABLE, Variant, expand_variants
from .registry import resolve_tracking_uri, sqlite_path

METRICS = ("Dice", "HD95")
REGION_ORDER = ("TC", "WT", "ET", "FG")


@dataclass
class GridRun:
    run_id: str
    variant: str
    seed: int
    status: str
    metrics: dict[str, float]


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of the finite values; SE is nan for n < 2."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(x.mean()), se, n


def _show(text: str) -> str:
    """Paths under the current folder shown relative to it (reports are committed and shared)."""
    cwd = str(Path.cwd().resolve())
    return text.replace(cwd + "/", "").replace(cwd, ".")


def _finite(x: Any) -> Any:
    """NaN (an SE over one seed, a variant without runs) as null, so summary.json is valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def find_grid(uri: str, experiment: str, sweep: str | None = None) -> tuple[Any, ServiceConfig, list[GridRun]]:
    """(parent run, its config, child runs) of the newest grid sweep of ``experiment``."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise SingrInputError(f"no MLflow experiment named {experiment!r} at {uri}; experiments: {names}")
    parents = client.search_runs([exp.experiment_id], "tags.`singr.mode` = 'grid'",
                                 order_by=["attributes.start_time DESC"], max_results=500)
    if sweep:  # compared here, not in the filter string: a name may hold quotes
        parents = [p for p in parents if p.data.tags.get("sweep") == sweep]
    if not parents:
        what = f"sweep {sweep!r}" if sweep else "grid sweep (tune.mode: grid)"
        raise SingrInputError(f"MLflow experiment {experiment!r} at {uri} has no {what}; run "
                              "`python -m tune -c configs/ablation-synthetic.yaml` (or another ablation config) first")
    parent = parents[0]
    with tempfile.TemporaryDirectory(prefix="singr-report-") as d:
        try:
            local = client.download_artifacts(parent.info.run_id, "config.yaml", d)
        except Exception as e:  # noqa: BLE001 - any store error means the same thing here
            raise SingrInputError(f"the sweep run {parent.info.run_id} has no config.yaml artifact ({e})") from e
        cfg = from_stored(yaml.safe_load(Path(local).read_text()), ServiceConfig)
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=5000)
    assert cfg.experiment is not None
    split = cfg.experiment.eval_split
    newest: dict[tuple[str, int], Any] = {}
    for r in children:
        tags = r.data.tags
        if "variant" not in tags or "seed" not in tags:
            continue
        key = (tags["variant"], int(tags["seed"]))
        # a trial restarted after Tuner.restore opens a new child run: keep one run per variant
        # and seed, the newest of those with evaluation metrics (else the newest)
        rank = (f"{split}_Dice_mean" in r.data.metrics, r.info.start_time or 0)
        if key not in newest or rank > newest[key][0]:
            newest[key] = (rank, r)
    runs = [GridRun(r.info.run_id, v, s, r.info.status, {k: float(x) for k, x in r.data.metrics.items()})
            for (v, s), (_, r) in sorted(newest.items())]
    return parent, cfg, runs


def regions_of(runs: Sequence[GridRun], split: str) -> list[str]:
    pat = re.compile(rf"^{re.escape(split)}_Dice_(.+)$")
    found = {m.group(1) for r in runs for k in r.metrics if (m := pat.match(k)) and m.group(1) != "mean"}
    return [r for r in REGION_ORDER if r in found] + sorted(found - set(REGION_ORDER))


def aggregate(runs: Sequence[GridRun], variants: Sequence[Variant], split: str,
              regions: Sequence[str]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{variant: {"Dice_TC": (mean, se, n), ..., "HD95_mean": ...}} over the seeds' runs."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for v in variants:
        mine = [r for r in runs if r.variant == v.name and f"{split}_Dice_mean" in r.metrics]
        out[v.name] = {f"{m}_{reg}": mean_se([r.metrics.get(f"{split}_{m}_{reg}", float("nan")) for r in mine])
                       for m in METRICS for reg in [*regions, "mean"]}
    return out


def paired_difference(runs: Sequence[GridRun], a: str, b: str, key: str) -> tuple[float, float, int]:
    """mean ± SE over seeds of ``key(a) - key(b)``, on the seeds both variants finished."""
    va = {r.seed: r.metrics[key] for r in runs if r.variant == a and key in r.metrics}
    vb = {r.seed: r.metrics[key] for r in runs if r.variant == b and key in r.metrics}
    return mean_se([va[s] - vb[s] for s in sorted(set(va) & set(vb))])


def _cell(stat: tuple[float, float, int], digits: int) -> str:
    m, se, n = stat
    if n == 0:
        return "–"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def table_markdown(variants: Sequence[Variant], agg: dict[str, Any], regions: Sequence[str],
                   highlight: str | None) -> str:
    cols = [f"Dice {r}" for r in regions] + ["Dice mean"] + [f"HD95 {r} (mm)" for r in regions] + ["HD95 mean (mm)"]
    lines = ["| variant | seeds | " + " | ".join(cols) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in cols) + " |"]
    for v in variants:
        a = agg[v.name]
        cells = [_cell(a[f"Dice_{r}"], 3) for r in [*regions, "mean"]] + \
                [_cell(a[f"HD95_{r}"], 2) for r in [*regions, "mean"]]
        paper = highlight is not None and (v.name == highlight or v.name.endswith(f"-{highlight}"))
        row = [v.label + (" (paper)" if paper else ""), str(a["Dice_mean"][2]), *cells]
        if paper:
            row = [f"**{c}**" for c in row]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def bar_chart(path: Path, variants: Sequence[Variant], agg: dict[str, Any], regions: Sequence[str],
              title: str, highlight: str | None) -> Path:
    """Dice (left) and HD95 (right) per variant, grouped by region (and mean), SE error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*regions, "mean"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(variants) * 2), 4.2))
    width = 0.8 / max(1, len(variants))
    cmap = plt.get_cmap("tab10")
    for ax, metric in zip(axes, METRICS):
        for i, v in enumerate(variants):
            ms = [agg[v.name][f"{metric}_{k}"][0] for k in keys]
            ses = [agg[v.name][f"{metric}_{k}"][1] for k in keys]
            ses = [0.0 if not math.isfinite(s) else s for s in ses]
            xs = np.arange(len(keys)) + (i - (len(variants) - 1) / 2) * width
            ax.bar(xs, ms, width, yerr=ses, capsize=2, label=v.label, color=cmap(i % 10),
                   edgecolor="k" if v.name == highlight else None, linewidth=1.5 if v.name == highlight else 0)
        ax.set_xticks(np.arange(len(keys)), keys)
        ax.set_ylabel(f"{metric}{' (mm)' if metric == 'HD95' else ''}  (mean ± SE over seeds)")
        ax.set_title(f"{metric} ({'higher' if metric == 'Dice' else 'lower'} is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(variants)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(variants) - 1) // 4), 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _checkpoint(client: Any, runs: Sequence[GridRun], variant: str, d: Path) -> tuple[Path, int] | None:
    from singr.engine.trainer import BEST

    for r in sorted((r for r in runs if r.variant == variant), key=lambda r: r.seed):
        try:
            return Path(client.download_artifacts(r.run_id, f"checkpoint/{BEST}", str(d / variant))), r.seed
        except Exception:  # noqa: BLE001 - a run without the artifact: try the next seed
            continue
    return None


def overlay_rows(client: Any, cfg: ServiceConfig, runs: Sequence[GridRun], baseline: str, highlight: str,
                 n_cases: int, split: str, device: str = "cpu") -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    """Predictions of the baseline's and the highlight's lowest-seed best checkpoint on the
    first ``n_cases`` of ``split`` (from the sweep config's data folder and split file)."""
    from singr.engine.bundle import load_predictor
    from singr.engine.pipeline import discover, run_paths, split_cases
    from singr.metrics import case_metrics
    from singr.preprocess import prepare_case

    with tempfile.TemporaryDirectory(prefix="singr-report-ckpt-") as d:
        found = [_checkpoint(client, runs, v, Path(d)) for v in (baseline, highlight)]
        if any(f is None for f in found):
            raise SingrInputError(f"no run of {baseline!r} or {highlight!r} has a checkpoint artifact")
        preds = [load_predictor(f[0], device) for f in found if f is not None]
        paths = run_paths(cfg)
        cases = {c.case_id: c for c in discover(cfg)}
        ids = split_cases(cfg, list(cases.values()), paths)[split][:n_cases]
        spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
        rows = []
        for cid in ids:
            prep = prepare_case(cases[cid], paths.cache_dir, spacing)
            assert prep.regions is not None, cid
            row: dict[str, Any] = {"case": cid, "image": prep.image, "gt": prep.regions, "dice": []}
            for key, p in zip(("hard", "singr"), preds):
                pr = p.predict_prepared(prep.image)
                row[key] = pr.regions
                row["dice"].append(case_metrics(pr.regions, prep.regions, prep.spacing, prep.region_names)["Dice_mean"])
                if key == "singr":
                    row["signed"] = pr.signed
            rows.append(row)
        names = tuple(prep.region_names) if ids else ()
    seeds = [f[1] for f in found if f is not None]
    return rows, names, f"seed {seeds[0]} / seed {seeds[1]}"


def write_report(uri: str, experiment: str, out_dir: str | Path, sweep: str | None = None,
                 overlay_cases: int | None = None, log_to_mlflow: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Write the report of the newest grid sweep of ``experiment`` (see the module docstring)."""
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
          f"{cfg.train.iters_per_epoch} iterations, patch {cfg.train.patch_size}, data `{_show(cfg.data.root)}`.",
          "", f"Metrics are on the **{split}** split (each run's best.pt by validation Dice), averaged over its "
          f"cases, then mean ± standard error over seeds (SE = sd / sqrt(n)). HD95 in mm; BraTS convention for "
          "empty masks (one of the two empty: Dice 0, HD95 373.13 mm). **Bold**: the paper's setting."]
    headline: dict[str, Any] = {}
    if base and high:
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
    figures: list[Path] = []
    for g in groups:
        vs = [v for v in variants if g in v.groups]
        slug = "table" if g == TABLE else "architectures"
        title = (f"{g} on {cfg.model.name} (paper Table 3)" if g == TABLE
                 else f"{g}: with and without SiNGR (paper Figure 3)")
        png = bar_chart(out / f"bars_{slug}.png", vs, agg, regions, title, high)
        figures.append(png)
        md += ["", f"## {title}", "", table_markdown(vs, agg, regions, high), "", f"![{g}]({png.name})"]
    n_ov = int(e.overlay_cases if overlay_cases is None else overlay_cases)
    if n_ov > 0 and base and high:
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
    notes = str(e.notes or "").strip()
    if notes:
        md += ["", "## Notes", "", notes]
    text = "\n".join(md) + "\n"
    md_path = out / "report.md"
    write_text(md_path, text)
    summary = {"experiment": experiment, "sweep": sweep_name, "parent_run_id": parent.info.run_id, "split": split,
               "regions": regions, "n_runs": len(done), "seeds": seeds,
               "variants": {v.name: {"label": v.label, "groups": list(v.groups),
                                     **{k: list(s) for k, s in agg[v.name].items()}} for v in variants},
               "headline": headline, "figures": [p.name for p in figures]}
    write_json(out / "summary.json", _finite(summary))
    if log_to_mlflow:
        for p in [md_path, out / "summary.json", *figures]:
            client.log_artifact(parent.info.run_id, str(p), "report")
    print(f"[report] {md_path} ({len(done)} runs, {len(figures)} figures, {time.time() - t0:.1f} s)", flush=True)
    return {"markdown": str(md_path), "figures": [str(p) for p in figures], "summary": summary,
            "parent_run_id": parent.info.run_id}


def run_report(args: Any) -> int:
    """``singr report`` (see :mod:`singr.cli`): the report of a grid sweep, from MLflow."""
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise SingrInputError(f"no MLflow store at {db}; pass --tracking-uri or run from the folder of the sweep's "
                              "mlflow.db")
    out = args.out or str(Path("reports") / (args.sweep or args.experiment))
    res = write_report(uri, args.experiment, out, sweep=args.sweep, overlay_cases=args.overlay_cases,
                       log_to_mlflow=not args.no_log, device=args.device)
    h = res["summary"].get("headline") or {}
    if h:
        d, hd = h["paired_Dice_difference"], h["paired_HD95_difference"]

        def pm(v: Sequence[float], digits: int) -> str:
            return f"{v[0]:+.{digits}f}" + (f" ± {v[1]:.{digits}f}" if v[2] > 1 else "")

        print(f"[report] {h['highlight']} - {h['baseline']} over {d[2]} seeds: Dice {pm(d, 4)}, "
              f"HD95 {pm(hd, 2)} mm")
    for f in res["figures"]:
        print(f"[report] figure: {f}")
    return 0
