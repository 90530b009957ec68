"""Stage 3: the search. Ray Tune + OptunaSearch (seeded TPE) + ASHA on val_Dice_mean.

A trial is :func:`tune.trainer.run_trial` with a tiny CPU share ({"cpu": 0.01}); its Train
workers hold the real CPUs/GPUs. The number of concurrent trials is ``tune.max_concurrent``
or what the cluster fits. The sweep lives in ``<storage_path>/<name>``; running the same
command again restores an interrupted sweep (``Tuner.restore``): finished trials are kept,
unfinished and errored ones resume from their latest Train checkpoint.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ray.tune import Callback

from singr.experiment import expand_variants, is_grid

from .plan import METRIC, MODE, TIME_ATTR, SweepPlan, search_params


def concurrency(cfg: dict[str, Any], resources: dict[str, float], scale: tuple[int, float, float],
                n_trials: int) -> int:
    """tune.max_concurrent, else as many trials as the cluster fits, at most ``n_trials``."""
    t = cfg["tune"]
    if t.get("max_concurrent"):
        return int(t["max_concurrent"])
    n, cpw, gpw = scale
    fit = int(float(resources.get("CPU", 1.0)) / max(n * cpw, 1e-9) + 1e-9)
    if gpw > 0:
        fit = min(fit, int(float(resources.get("GPU", 0.0)) / (n * gpw) + 1e-9))
    return max(1, min(fit, int(n_trials)))


def grid_space(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every variant x seed of ``cfg["experiment"]`` (Tune's grid search, one trial each)."""
    from ray import tune

    return {"variant": tune.grid_search([v.name for v in expand_variants(cfg)]),
            "seed": tune.grid_search([int(s) for s in cfg["experiment"]["seeds"]])}


def search_space(cfg: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    t = cfg["tune"]
    space: dict[str, Any] = {"lam": tune.choice([float(v) for v in t["lam_grid"]]),
                             "delta": tune.uniform(*map(float, t["delta"])),
                             "gamma": tune.uniform(*map(float, t["gamma"]))}
    if t.get("lr"):
        space["lr"] = tune.loguniform(*map(float, t["lr"]))
    if t.get("models"):
        space["model"] = tune.choice(list(t["models"]))
    return space


class Announcer(Callback):
    """Prints one line per finished trial (tests and users watch for it)."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        print(f"[tune] trial {trial.trial_id} finished: epochs {r.get('epoch')}, "
              f"{METRIC} {r.get(METRIC)}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[tune] trial {trial.trial_id} failed", flush=True)


def make_trainable(plan: SweepPlan, scale: tuple[int, float, float]):
    from ray import tune

    from .trainer import run_trial

    fn = tune.with_parameters(run_trial, base_cfg=plan.cfg, trials_dir=str(plan.trials_dir),
                              train_storage=str(plan.sweep_dir / "train_runs"), scale=scale)
    return tune.with_resources(fn, {"cpu": 0.01})


def run_search(plan: SweepPlan, scale: tuple[int, float, float], max_concurrent: int,
               callbacks: list[Any], resume: bool = True) -> tuple[Any, bool]:
    """Fit (or restore and finish) the sweep; returns (ResultGrid, restored)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = make_trainable(plan, scale)
    if resume and tune.Tuner.can_restore(str(plan.sweep_dir)):
        tuner = tune.Tuner.restore(str(plan.sweep_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        return tuner.fit(), True
    t = plan.cfg["tune"]
    run_config = tune.RunConfig(name=plan.name, storage_path=str(plan.storage_path),
                                callbacks=[*callbacks, Announcer()], verbose=1)
    if is_grid(plan.cfg):  # a comparison: every variant x seed runs to the end (no searcher, no ASHA)
        tuner = tune.Tuner(trainable, param_space=grid_space(plan.cfg),
                           tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=int(max_concurrent)),
                           run_config=run_config)
        return tuner.fit(), False
    searcher = OptunaSearch(metric=METRIC, mode=MODE,
                            sampler=optuna.samplers.TPESampler(seed=int(t["seed"])))
    epochs = int(plan.cfg["train"]["epochs"])
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=epochs,
                              grace_period=min(int(t["asha"]["grace_period"]), epochs),
                              reduction_factor=float(t["asha"]["reduction_factor"]))
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(plan.cfg),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=int(t["num_samples"]),
                                    max_concurrent_trials=int(max_concurrent)),
        run_config=run_config,
    )
    return tuner.fit(), False


def interrupted(grid: Any, num_samples: int) -> bool:
    """True when the sweep stopped (e.g. SIGINT) before all trials were created and ended."""
    return len(grid) < num_samples or grid.num_terminated + grid.num_errors < len(grid)


def trial_rows(grid: Any, plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per trial: params, best/last Dice, epochs run, stopped early, checkpoint."""
    epochs = int(plan.cfg["train"]["epochs"])
    prefix = f"{plan.cfg['experiment']['eval_split']}_" if is_grid(plan.cfg) else "\0"  # a grid's evaluation metrics
    rows = []
    for res in grid:
        m = res.metrics or {}
        df = res.metrics_dataframe
        hist, ckpt = [], m.get("checkpoint_path")
        if df is not None and len(df) and METRIC in df:  # (a grid's final test report has no val metric)
            hist = sorted({int(e): float(v) for e, v in zip(df[TIME_ATTR], df[METRIC]) if v == v}.items())
        if df is not None and len(df) and "checkpoint_path" in df and df["checkpoint_path"].notna().any():
            ckpt = str(df["checkpoint_path"].dropna().iloc[-1])  # the final (test) report has none
        best = max((v for _, v in hist), default=float(m.get("best_val_Dice_mean", m.get(METRIC, float("nan")))))
        ran = int(m.get(TIME_ATTR) or 0)
        cfg = res.config or {}
        row = {"trial_id": m.get("trial_id") or Path(res.path).name, **{k: cfg.get(k) for k in search_params(plan.cfg)},
               "val_Dice_best": best, "val_Dice_last": hist[-1][1] if hist else float(m.get(METRIC, float("nan"))),
               "HD95_last": float(m.get("val_HD95_mean", float("nan"))), "epochs_run": ran,
               "stopped_early": bool(res.error is None and ran < epochs), "error": bool(res.error is not None),
               "checkpoint_path": ckpt, "history": hist,
               **{k: float(v) for k, v in m.items() if k.startswith(prefix) and isinstance(v, (int, float))}}
        rows.append(row)
    rows.sort(key=lambda r: -(r["val_Dice_best"] if math.isfinite(r["val_Dice_best"]) else -1e9))
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "history")) or ["trial_id"]  # union: rows differ
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in keys})
    return path


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
        if p == "lr":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for r in rows:
        if r["history"]:
            e, v = zip(*r["history"])
            ax.plot(e, v, marker=".", ls="--" if r["stopped_early"] else "-",
                    label=(f"{r['variant']} s{r['seed']}" if "variant" in r else f"{r['trial_id'][-5:]} λ={r.get('lam')}"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val Dice (mean)")
    ax.set_title("per trial (dashed: stopped by ASHA)", fontsize=9)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("SiNGR sweep (red: stopped early)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: list[dict[str, Any]], params: list[str]) -> str:
    head = ["trial", *params, "Dice(best)", "epochs", "stopped early"]
    lines = []
    for r in rows:
        vals = [str(r["trial_id"])]
        for p in params:
            v = r.get(p)
            vals.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        vals += [f"{r['val_Dice_best']:.4f}", str(r["epochs_run"]),
                 "error" if r["error"] else ("yes" if r["stopped_early"] else "no")]
        lines.append(vals)
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*l) for l in lines])
