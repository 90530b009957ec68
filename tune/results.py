"""The sweep's results: one row per trial (trials.csv), the picture (sweep.png), the table.

A row's ``score`` is the best value of the sweep's objective (``tune.metric``; the lowest for
HD95 metrics) over the trial's validation epochs, and rows come best first by it;
``val_Dice_best`` / ``val_Dice_last`` are the mean Dice's, whatever the objective. Every file
is written under a temporary name and renamed (``singr.io``).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from singr.io import atomic_path, write_text

from .grid import is_grid
from .plan import METRIC, TIME_ATTR, SweepPlan, metric_mode


def interrupted(grid: Any, num_samples: int) -> bool:
    """True when the sweep stopped (e.g. SIGINT) before all trials were created and ended."""
    return len(grid) < num_samples or grid.num_terminated + grid.num_errors < len(grid)


def trial_rows(grid: Any, plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per trial, best first: params, objective score, best/last Dice, epochs run,
    stopped early, checkpoint (the latest, holding the trial's best: the path a Ray Train run
    reported, or Tune's latest checkpoint of an inline trial)."""
    epochs = int(plan.cfg.train.epochs)
    metric = plan.metric
    split = plan.cfg.experiment.eval_split if is_grid(plan.cfg) and plan.cfg.experiment else None
    prefix = f"{split}_" if split else "\0"  # a grid's evaluation metrics
    from .plan import search_params

    params = search_params(plan.cfg)
    rows = []
    for res in grid:
        m = res.metrics or {}
        df = res.metrics_dataframe
        hist, ckpt = [], m.get("checkpoint_path")
        if df is not None and len(df) and METRIC in df:  # (a grid's final test report has no val metric)
            hist = sorted({int(e): float(v) for e, v in zip(df[TIME_ATTR], df[METRIC]) if v == v}.items())
        if df is not None and len(df) and "checkpoint_path" in df and df["checkpoint_path"].notna().any():
            ckpt = str(df["checkpoint_path"].dropna().iloc[-1])  # the final (test) report has none
        if not ckpt and getattr(res, "checkpoint", None) is not None:  # an inline trial: Tune's own latest
            ckpt = str(res.checkpoint.path)
        best = max((v for _, v in hist), default=float(m.get("best_val_Dice_mean", m.get(METRIC, float("nan")))))
        score = best_score(df, m, metric) if metric != METRIC else best
        ran = int(m.get(TIME_ATTR) or 0)
        cfg = res.config or {}
        row: dict[str, Any] = {"trial_id": m.get("trial_id") or Path(res.path).name, **{k: cfg.get(k) for k in params},
               "score": score, "val_Dice_best": best, "full_score": _full_score(m, metric),
               "val_Dice_last": hist[-1][1] if hist else float(m.get(METRIC, float("nan"))),
               "HD95_last": float(m.get("val_HD95_mean", float("nan"))), "epochs_run": ran,
               "stopped_early": bool(res.error is None and ran < epochs), "error": bool(res.error is not None),
               "checkpoint_path": ckpt, "history": hist, "worker_nodes": _last_str(df, m, "worker_nodes"),
               **trial_timing(df),
               **{k: float(v) for k, v in m.items() if k.startswith(prefix) and isinstance(v, (int, float))}}
        rows.append(row)
    sign = 1.0 if metric_mode(metric) == "max" else -1.0
    rows.sort(key=lambda r: -_score(sign * r["score"]))  # best first; never validated: last
    return rows


def _full_score(m: dict[str, Any], metric: str) -> float:
    """The objective on the whole validation split (``full_val_*``, reported after the last epoch
    when ``train.val_max_cases`` validated a subset per epoch); NaN where the trial has none."""
    v = m.get(f"full_{metric}")
    return float(v) if isinstance(v, (int, float)) and v == v else float("nan")


def trial_timing(df: Any) -> dict[str, float]:
    """Where a trial's time went, from its reports (NaN where a column is missing):
    ``first_report_s`` (start to the first epoch's report: start-up plus one epoch; from the
    trial's process start where the report has ``startup/first_report_s``, else Tune's
    ``time_total_s``), ``startup_s`` (that minus the first epoch), ``epoch_share`` (the
    epochs' share of the trial's slot: total ``epoch_seconds`` over the time from the trial's
    start to its last report), ``epoch_s`` (median ``epoch_seconds``), ``patches_per_s``
    (median), ``data_wait_share`` (total ``data_wait_seconds`` / total ``train_seconds``: how
    long the network waited for data) and ``val_share`` (total ``val_seconds`` / total
    ``epoch_seconds``; the whole-split validation after the last epoch, ``full_val_seconds``,
    counted in both); ``train_s`` and ``val_s``: the totals of those two (seconds)."""
    nan = float("nan")
    out = {"first_report_s": nan, "startup_s": nan, "epoch_share": nan, "epoch_s": nan, "patches_per_s": nan,
           "data_wait_share": nan, "val_share": nan, "train_s": nan, "val_s": nan}
    if df is None or not len(df):
        return out

    def col(name: str) -> Any:
        return df[name].dropna().astype(float) if name in df else None

    total, ep, pps = col("time_total_s"), col("epoch_seconds"), col("patches_per_s")
    wait, train, val = col("data_wait_seconds"), col("train_seconds"), col("val_seconds")
    full = col("full_val_seconds")
    if full is not None and len(full):
        val = full if val is None else val.add(full, fill_value=0.0).dropna()
    if train is not None and len(train):
        out["train_s"] = round(float(train.sum()), 2)
    if val is not None and len(val):
        out["val_s"] = round(float(val.sum()), 2)
    first = col("startup/first_report_s")
    if first is None or not len(first):
        first = total
    if first is not None and len(first):
        out["first_report_s"] = round(float(first.iloc[0]), 2)
        if ep is not None and len(ep):
            out["startup_s"] = round(max(0.0, float(first.iloc[0]) - float(ep.iloc[0])), 2)
            slot = float(first.iloc[0])
            if total is not None and len(total) > 1:  # the reports after the first, by Tune's clock
                slot += float(total.iloc[-1]) - float(total.iloc[0])
            if slot > 0:
                out["epoch_share"] = round(min(1.0, float(ep.sum()) / slot), 4)
    if ep is not None and len(ep):
        out["epoch_s"] = round(float(ep.median()), 3)
        if val is not None and float(ep.sum()) > 0:
            out["val_share"] = round(float(val.sum()) / float(ep.sum()), 4)
    if pps is not None and len(pps):
        out["patches_per_s"] = round(float(pps.median()), 3)
    if wait is not None and train is not None and float(train.sum()) > 0:
        out["data_wait_share"] = round(float(wait.sum()) / float(train.sum()), 4)
    return out


def slot_use(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The sweep's medians over its trials of ``epoch_share`` and ``startup_s`` (:func:`trial_timing`);
    None where no trial has them."""
    import statistics

    out: dict[str, float | None] = {}
    for key in ("epoch_share", "startup_s"):
        vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
        out[f"{key}_median"] = round(statistics.median(vals), 4) if vals else None
    return out


def time_split(clock: dict[str, Any], rows: list[dict[str, Any]], end: float) -> dict[str, float | None]:
    """Where a sweep's wall time went (seconds): ``maps`` (the SiNG map stage), ``search`` (the
    trials, wall), within it the trials' summed ``train`` (optimisation, loading included) and
    ``validation`` (per-epoch and whole-split) and their ``val_share`` of the two, ``stage``
    (control and confirmation), ``model`` (the model folder: ensemble built and scored),
    ``register`` (MLflow model, card, exports, promotion), ``other`` (the rest: start, results
    files) and ``total``. ``clock`` holds ``start`` (a time.time()) and the stages' seconds."""
    def total(key: str) -> float | None:
        vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
        return round(sum(vals), 1) if vals else None

    out: dict[str, float | None] = {k: (round(float(clock[k]), 1) if clock.get(k) is not None else None)
                                    for k in ("maps", "search", "stage", "model", "register")}
    train, val = total("train_s"), total("val_s")
    out.update({"train": train, "validation": val,
                "val_share": round(val / (train + val), 4) if train is not None and val is not None and train + val > 0
                else None, "total": round(end - float(clock["start"]), 1)})
    out["other"] = round(float(out["total"] or 0.0) - sum(float(out[k] or 0.0) for k in
                                                            ("maps", "search", "stage", "model", "register")), 1)
    return out


def format_time_split(split: dict[str, float | None]) -> str:
    """One line: ``wall time N s: maps a s, search b s (trials: training c s, validation d s = e%), ...``."""
    def s(key: str) -> str:
        v = split.get(key)
        return "-" if v is None else f"{float(v):.0f} s"

    inner = ""
    if split.get("train") is not None:
        share = split.get("val_share")
        inner = (f" (trials: training {s('train')}, validation {s('validation')}"
                 + (f" = {float(share):.0%} of the two" if share is not None else "") + ")")
    return (f"wall time {s('total')}: maps {s('maps')}, search {s('search')}{inner}, control and confirmation "
            f"{s('stage')}, model {s('model')}, registration {s('register')}, other {s('other')}")


def best_score(df: Any, m: dict[str, Any], metric: str) -> float:
    """The best value of ``metric`` (highest, or lowest for HD95) over a trial's reports; NaN when
    it never validated."""
    vals: list[float] = []
    if df is not None and len(df) and metric in df:
        vals = [float(v) for v in df[metric] if v == v]
    if not vals:
        last = m.get(f"best_{metric}", m.get(metric))
        vals = [float(last)] if isinstance(last, (int, float)) and last == last else []
    if not vals:
        return float("nan")
    return max(vals) if metric_mode(metric) == "max" else min(vals)


def _score(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else -1e9


def _last_str(df: Any, m: dict[str, Any], key: str) -> str:
    """The last non-empty value of a text column of a trial's results ('' when none)."""
    if df is not None and len(df) and key in df:
        vals = [str(v) for v in df[key].dropna() if str(v)]
        if vals:
            return vals[-1]
    return str(m.get(key) or "")


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row per trial (columns: the union of the rows' keys; not the epoch history), atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "history")) or ["trial_id"]  # union: rows differ
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in keys})
    return write_text(path, buf.getvalue())


def write_plot(rows: list[dict[str, Any]], params: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [p for p in params if p not in ("model", "variant", "seed")]
    fig, axes = plt.subplots(1, len(numeric) + 1, figsize=(4.2 * (len(numeric) + 1), 3.6), squeeze=False)
    axes = axes[0]
    for ax, p in zip(axes, numeric):
        xs = [r[p] for r in rows if r[p] is not None]
        ys = [r["val_Dice_best"] for r in rows if r[p] is not None]
        cs = ["tab:red" if r["stopped_early"] else "tab:blue" for r in rows if r[p] is not None]
        ax.scatter(xs, ys, c=cs)
        ax.set_xlabel(p)
        ax.set_ylabel("best val Dice (mean)")
        if p in ("lr", "weight_decay"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for r in rows:
        if r["history"]:
            e, v = zip(*r["history"])
            ax.plot(e, v, marker=".", ls="--" if r["stopped_early"] else "-",
                    label=(f"{r['variant']} s{r['seed']}" if "variant" in r
                           else f"{r['trial_id'][-5:]} λ={r.get('lam')}"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val Dice (mean)")
    ax.set_title("per trial (dashed: stopped by ASHA)", fontsize=9)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("SiNGR sweep (red: stopped early)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def format_table(rows: list[dict[str, Any]], params: list[str], metric: str = METRIC) -> str:
    """The trials, one line each; with an objective other than the mean Dice, its best value too."""
    extra = metric != METRIC
    head = ["trial", *params, *([f"{metric[4:]}(best)"] if extra else []), "Dice(best)", "epochs", "stopped early"]
    lines = []
    for r in rows:
        vals = [str(r["trial_id"])]
        for p in params:
            v = r.get(p)
            vals.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        if extra:
            vals.append(f"{r['score']:.4f}")
        vals += [f"{r['val_Dice_best']:.4f}", str(r["epochs_run"]),
                 "error" if r["error"] else ("yes" if r["stopped_early"] else "no")]
        lines.append(vals)
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*row) for row in lines])
