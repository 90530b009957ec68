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
"""
from __future__ import annotations

import csv
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
from .grid import ARCHITECTURES, TABLE, Variant, expand_variants, variant_config
from .registry import resolve_tracking_uri, sqlite_path
from .stats import bootstrap_ci, bootstrap_ci_2way, describe_difference, mean_se

METRICS = ("Dice", "HD95")
LESION_METRICS = ("LesionDice", "LesionHD95")
REGION_ORDER = ("TC", "WT", "ET", "FG")


@dataclass
class GridRun:
    run_id: str
    variant: str
    seed: int
    status: str
    metrics: dict[str, float]


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


def case_scores(client: Any, runs: Sequence[GridRun], split: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{run_id: {case: {"Dice_mean": .., ...}}}`` from each run's ``eval/metrics_<split>.csv``
    artifact (runs without it are left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="singr-report-cases-") as d:
        for r in runs:
            try:
                local = client.download_artifacts(r.run_id, f"eval/metrics_{split}.csv", str(Path(d) / r.run_id))
            except Exception:  # noqa: BLE001 - a run without per-case scores: left out, said in the report
                continue
            with open(local, newline="") as f:
                rows = list(csv.DictReader(f))
            table: dict[str, dict[str, float]] = {}
            for row in rows:
                vals: dict[str, float] = {}
                for k, v in row.items():
                    if k == "case":
                        continue
                    try:
                        vals[k] = float(v)
                    except (TypeError, ValueError):
                        pass
                table[str(row["case"])] = vals
            out[r.run_id] = table
    return out


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
    """The statistics of the module docstring for one matrix ``d[seed, case]``."""
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


def _span(rows: Sequence[dict[str, Any]], key: str) -> str:
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
        out.append(f"**{what}, {hl} − {bl}** (paired per case, {_span(mine, 'n_cases')} test cases × "
                   f"{_span(mine, 'n_seeds')} "
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


def axis_plot(path: Path, axis: str, variants: Sequence[Variant], agg: dict[str, Any], title: str) -> Path:
    """Dice and HD95 (mean over regions) against the axis level, one line per variant, SE error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = list(dict.fromkeys(v.stem for v in variants))
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0))
    cmap = plt.get_cmap("tab10")
    xs_all = sorted({float(v.x) for v in variants if v.x is not None})
    span = (xs_all[-1] - xs_all[0]) if len(xs_all) > 1 else 1.0
    for ax, metric in zip(axes, METRICS):
        for i, stem in enumerate(stems):
            vs = sorted((v for v in variants if v.stem == stem and v.x is not None), key=lambda v: float(v.x or 0))
            xs = [float(v.x or 0) + (i - (len(stems) - 1) / 2) * 0.012 * span for v in vs]
            ms = [agg[v.name][f"{metric}_mean"][0] for v in vs]
            ses = [agg[v.name][f"{metric}_mean"][1] for v in vs]
            ses = [0.0 if not math.isfinite(s) else s for s in ses]
            hl = any(v.role == "highlight" for v in vs)
            ax.errorbar(xs, ms, yerr=ses, marker="o", capsize=3, color=cmap(i % 10), label=vs[0].label if vs else stem,
                        linewidth=2.0 if hl else 1.2)
        ax.set_xticks(xs_all)
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric} mean over regions{' (mm)' if metric == 'HD95' else ''}\n(mean ± SE over seeds)")
        ax.set_title(f"{metric} ({'higher' if metric == 'Dice' else 'lower'} is better)", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(stems)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.94))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def axis_picture(path: Path, cfg: ServiceConfig, variants: Sequence[Variant], split: str) -> tuple[Path, str]:
    """One case of ``split`` at every axis level (image, label, the highlight's signed map of
    WT from its lambda and delta): the case of the lowest level's split with the largest whole
    tumour among those with every region present at every level (the same case id, so the
    same anatomy). Returns (png, case id)."""
    from singr.engine.pipeline import discover, run_paths, split_cases
    from singr.preprocess import prepare_case
    from singr.sing import sing_map
    from singr.viz import ambiguity_png

    e = cfg.experiment
    assert e is not None and e.axis is not None
    levels = sorted(e.axis.levels, key=lambda lv: lv.value)
    pick = {lv.name: next((v for v in variants if v.level == lv.name and v.role == "highlight"),
                          next(v for v in variants if v.level == lv.name)) for lv in levels}
    cfgs = {name: variant_config(cfg, v.name) for name, v in pick.items()}
    found = {name: {c.case_id: c for c in discover(c)} for name, c in cfgs.items()}
    first = cfgs[levels[0].name]
    ids = [c for c in split_cases(first, list(found[levels[0].name].values()), run_paths(first))[split]
           if all(c in found[lv.name] for lv in levels)]
    preps: dict[str, dict[str, Any]] = {}
    best: tuple[int, str] | None = None
    spacing = {name: tuple(c.data.spacing) if c.data.spacing else None for name, c in cfgs.items()}
    for cid in ids:
        ps = {lv.name: prepare_case(found[lv.name][cid], run_paths(cfgs[lv.name]).cache_dir, spacing[lv.name])
              for lv in levels}
        if all(p.regions is not None and bool(np.all(p.regions.reshape(p.regions.shape[0], -1).any(axis=1)))
               for p in ps.values()):
            p0 = ps[levels[0].name]
            assert p0.regions is not None
            size = int(p0.regions[list(p0.region_names).index("WT") if "WT" in p0.region_names else 0].sum())
            if best is None or size > best[0]:
                best = (size, cid)
                preps = {"best": ps}
    if best is None:
        raise SingrInputError(f"no {split} case has every region at every {e.axis.name} level")
    cases = []
    for lv in levels:
        prep, c = preps["best"][lv.name], cfgs[lv.name]
        assert prep.regions is not None
        wt = list(prep.region_names).index("WT") if "WT" in prep.region_names else 0
        signed = sing_map(prep.regions[wt], prep.image, float(c.sing.lam), float(c.sing.delta), prep.spacing,
                          int(c.sing.iterations), str(c.sing.engine), "cpu", str(c.sing.boundary))
        title = f"{e.axis.name} {lv.value:g}" + (f" ({lv.label})" if lv.label else "")
        cases.append({"title": title, "image": prep.image, "regions": prep.regions, "signed": signed})
    png = ambiguity_png(path, cases, tuple(preps["best"][levels[0].name].region_names))
    return png, best[1]


def level_title(axis: str, level: Any) -> str:
    """A level's heading in the report: ``ambiguity = 0.5 (fuzzy)``."""
    return f"{axis} = {level.value:g}" + (f" ({level.label})" if level.label else "")


def axis_sections(client: Any, cfg: ServiceConfig, runs: Sequence[GridRun], variants: Sequence[Variant],
                  agg: dict[str, Any], regions: Sequence[str], split: str, out: Path, device: str,
                  overlay_cases: int) -> tuple[list[str], list[Path], dict[str, Any]]:
    """The report's sections for a grid with ``experiment.axis`` (see the module docstring)."""
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


def _data_line(cfg: ServiceConfig, variants: Sequence[Variant]) -> str:
    e = cfg.experiment
    if e is None or e.axis is None:
        return f"data `{_show(cfg.data.root)}`"
    roots: dict[str, str] = {}
    for v in variants:
        roots.setdefault(v.level, variant_config(cfg, v.name).data.root)
    return f"data per {e.axis.name} level: " + ", ".join(f"`{_show(r)}`" for r in roots.values())


def write_report(uri: str, experiment: str, out_dir: str | Path, sweep: str | None = None,
                 overlay_cases: int | None = None, log_to_mlflow: bool = True, device: str = "cpu",
                 notes: str | None = None) -> dict[str, Any]:
    """Write the report of the newest grid sweep of ``experiment`` (see the module docstring);
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
          "", f"Metrics are on the **{split}** split (each run's best.pt by validation Dice), averaged over its "
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


def run_report(args: Any) -> int:
    """``singr report`` (see :mod:`singr.cli`): the report of a grid sweep, from MLflow."""
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise SingrInputError(f"no MLflow store at {db}; pass --tracking-uri or run from the folder of the sweep's "
                              "mlflow.db")
    out = args.out or str(Path("reports") / (args.sweep or args.experiment))
    notes = None
    if getattr(args, "notes_from", None):
        from .config import load_service_config

        e = load_service_config(args.notes_from).experiment
        if e is None or not str(e.notes or "").strip():
            raise SingrInputError(f"--notes-from {args.notes_from}: the config has no experiment.notes")
        notes = str(e.notes)
    res = write_report(uri, args.experiment, out, sweep=args.sweep, overlay_cases=args.overlay_cases,
                       log_to_mlflow=not args.no_log, device=args.device, notes=notes)
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
