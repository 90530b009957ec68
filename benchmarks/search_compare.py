"""Is the search worth it? Optuna + ASHA vs random search + ASHA vs the paper's default.

    .venv/bin/python benchmarks/search_compare.py                # the comparison (~1 h on 2 shared cores)
    .venv/bin/python benchmarks/search_compare.py --curves-only  # the validation curves behind the ASHA schedule

On the synthetic data at ambiguity 0.5 of configs/ambiguity.yaml (``data/ambiguity/a0.5``,
written with ``singr synth`` when missing), with the search of configs/synthetic.yaml
(its ``tune`` section: space, budget ``tune.num_samples``, ASHA schedule, epochs), every
run through the same ``python -m tune`` service:

1. **Curves** (``--curves-only`` stops here): three settings spread over the search space
   (lambda, delta, gamma low / the paper's / high) trained for ``--curve-epochs`` (20, more
   than the search's) with validation every epoch and no early stopping (a grid), so that
   the ASHA rungs of synthetic.yaml can be checked against where the validation curves
   separate.
2. **Searches**: for every sweep seed s, ``tune.search=optuna`` and ``tune.search=random``
   with ``tune.seed=s`` and ``train.seed=s``: the same space, the same ASHA schedule, the
   same number of trials (the same compute budget; the trial-epochs each actually spent
   are counted). Each champion (the sweep's registered best checkpoint, picked on the
   validation split) is evaluated on the held-out test split.
3. **Default**: the paper's setting (lambda 0.5, delta 0.5, gamma 1, Focal-L1), one run per
   seed s with ``train.seed=s``, the search's epochs, evaluated on the same test split.
4. **Control** (``--no-control`` skips it): the default trained ``tune.num_samples`` times per
   sweep seed (train seeds 1000 s + i), the run with the best validation Dice picked as a sweep
   picks its champion: is a search's gain over the default the setting, or the pick among runs?

Test Dice of each champion: mean ± SE over the sweep seeds, and the paired per-case
differences between the methods (as ``singr report`` computes them for a grid: cases as the
unit, two-way bootstrap over seeds and cases, Wilcoxon over cases; :mod:`tune.report.analysis`).
Writes ``search.md``, ``search.json`` and ``search.png`` to ``--out`` (reports/ambiguity);
everything else (sweeps, MLflow store, evaluations) goes to ``--work`` (runs/search-compare).
A finished sweep is not run again: its summary is read back (``--fresh`` starts over).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = "synthetic.yaml"
DEFAULT = {"sing.lam": 0.5, "sing.delta": 0.5, "loss.gamma": 1.0, "loss.name": "focal_l1"}
# three corners of the search space for the curves: low, the paper's, high
CURVES = [("low", {"sing.lam": 0.25, "sing.delta": 0.3, "loss.gamma": 0.5}),
          ("paper", {"sing.lam": 0.5, "sing.delta": 0.5, "loss.gamma": 1.0}),
          ("high", {"sing.lam": 0.75, "sing.delta": 0.7, "loss.gamma": 2.0})]
METHODS = ("optuna", "random")
CONTROL = "default-best-of-n"  # the default trained num_samples times (other train seeds), picked on validation
PAIRS = (("optuna", "random"), ("optuna", "default"), ("random", "default"), ("optuna", CONTROL),
         ("random", CONTROL), (CONTROL, "default"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    return env


def _ov(values: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]


def common(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides every run of the comparison shares: data, split, where things go."""
    work = Path(args.work).resolve()
    return {"data.root": str(Path(args.data).resolve()), "data.split_file": str(work / "split.json"),
            "data.split_ratios": [0.4, 0.2, 0.4], "output_dir": str(work / "out"),
            "tune.storage_path": str(work / "ray"), "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "mlflow.experiment": "singr-search-compare", "mlflow.registered_model": "singr-search-compare",
            "mlflow.promote": "never", "tune.max_concurrent": int(args.concurrent),
            # the searches as first measured (reports/ambiguity/search.md): no control arm, no confirmation, no
            # default first trial (the pipeline with them, at equal compute: benchmarks/search_equal.py)
            **({} if getattr(args, "stage", False) else
               {"tune.control.seeds": 0, "tune.confirm.top_k": 0, "tune.start_from_defaults": False})}


def ensure_data(args: argparse.Namespace) -> None:
    synth_data(Path(args.data), "ambiguity.yaml", 0.5)


def synth_data(root: Path, config: str, ambiguity: float | None = None) -> None:
    """Write the synthetic data set of ``configs/<config>``'s ``synth`` section to ``root`` (at
    ``ambiguity``, else the config's) unless ``root`` already holds it."""
    if root.is_dir() and any(root.iterdir()):
        return
    from singr.config import load_config
    from singr.data.synth import synthesize_dataset

    s = load_config(str(REPO / "configs" / config)).synth
    amb = float(s.ambiguity if ambiguity is None else ambiguity)
    print(f"[compare] writing the synthetic data set ({config}, ambiguity {amb:g}) to {root}", flush=True)
    synthesize_dataset(root, n_cases=s.n_cases, shape=tuple(s.shape), seed=s.seed, progress=False, ambiguity=amb)


def run_tune(args: argparse.Namespace, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """``python -m tune -c synthetic.yaml`` with ``values``; returns its summary.json (+ wall).
    A sweep that finished before is read back, not run again."""
    work = Path(args.work).resolve()
    summary_p = work / "ray" / name / "results" / "summary.json"
    if summary_p.exists() and not args.fresh:
        s = json.loads(summary_p.read_text())
        if not s.get("interrupted") and not s.get("stalled"):
            print(f"[compare] {name}: done before ({s.get('wall_seconds')} s), read back", flush=True)
            return s
    config = getattr(args, "config", CONFIG)
    cmd = [sys.executable, "-m", "tune", "-c", config, "-q", *_ov({**common(args), **values, "tune.name": name})]
    print(f"[compare] {name}: {' '.join(cmd[3:])}", flush=True)
    t0 = time.time()
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise SystemExit(f"[compare] {name} failed (exit {p.returncode}); see {log}")
    s = json.loads(summary_p.read_text())
    s["wall_command_s"] = round(time.time() - t0, 1)
    summary_p.write_text(json.dumps(s, indent=1, default=str))
    print(f"[compare] {name}: {s['wall_command_s']} s", flush=True)
    return s


def grid_values(name: str, variants: list[dict[str, Any]], seeds: list[int], val_every: int | None = None
                ) -> dict[str, Any]:
    out: dict[str, Any] = {"tune.mode": "grid", "experiment.variants": variants, "experiment.seeds": seeds,
                           "experiment.baseline": None, "experiment.highlight": None,
                           "experiment.architectures": [], "experiment.overlay_cases": 0,
                           "experiment.axis": None, "experiment.notes": None}
    if val_every:
        out["train.val_every"] = val_every
    return out


def _spec(name: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "label": name, "set": [f"{k}={v}" for k, v in values.items()]}


def curves(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """The validation curves of three settings over the search's epochs (no early stopping)."""
    specs = [_spec(n, {**v, "loss.name": "focal_l1"}) for n, v in CURVES]
    s = run_tune(args, "curves", {**grid_values("curves", specs, [0], val_every=1),
                                  "train.epochs": int(args.curve_epochs)})
    trials = Path(s["sweep_dir"]) / "singr_trials"
    out: dict[str, Any] = {"settings": dict(CURVES), "wall_seconds": s.get("wall_seconds"), "curves": {}}
    for t in s["trials"]:
        with open(trials / t["trial_id"] / "log.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_Dice_mean")]
        out["curves"][str(t["variant"])] = [(int(r["epoch"]), float(r["val_Dice_mean"])) for r in rows]
    return out


def case_csv(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as f:
        return {r["case"]: {k: float(v) for k, v in r.items() if k != "case" and v not in ("", None)}
                for r in csv.DictReader(f)}


def evaluate_model(args: argparse.Namespace, cfg: Any, model_dir: Path, out: Path) -> dict[str, dict[str, float]]:
    """Per-case test scores of a sweep's registered best model (written once to ``out``)."""
    if not (out / "metrics_test.csv").exists():
        from singr.engine.bundle import load_predictor
        from singr.engine.evaluate import evaluate

        evaluate(load_predictor(model_dir, "cpu"), cfg, split="test", out_dir=out, progress=False, overlays=0)
    return case_csv(out / "metrics_test.csv")


def champion_scores(cases: dict[str, dict[str, float]]) -> dict[str, float]:
    """A model's test Dice and HD95, each the mean over the regions' mean and the test cases."""
    return {f"test_{k}": float(np.mean([c[k] for c in cases.values()])) for k in ("Dice_mean", "HD95_mean")}


def control(args: argparse.Namespace, spec: dict[str, Any], n: int,
            scores: dict[str, dict[int, dict[str, dict[str, float]]]]) -> list[dict[str, Any]]:
    """The control for "is it the settings or the pick?": per sweep seed s, the paper's default trained
    ``n`` times (train seeds 1000 s + i, the same compute as a sweep without early stopping), the run
    with the best validation Dice picked as a sweep picks its champion, scored on the test split."""
    rows = []
    for s in args.seeds:
        name = f"control-s{s}"
        summ = run_tune(args, name, grid_values(name, [spec], [1000 * int(s) + i for i in range(n)]))
        trials = summ["trials"]
        best = max(trials, key=lambda r: float(r["val_Dice_best"]))
        cases = case_csv(Path(summ["sweep_dir"]) / "singr_trials" / best["trial_id"] / "eval" / "metrics_test.csv")
        scores.setdefault(CONTROL, {})[int(s)] = cases
        rows.append({"seed": int(s), **champion_scores(cases),
                     "val_Dice_best": best["val_Dice_best"], "lam": 0.5, "delta": 0.5, "gamma": 1.0,
                     "champion_epochs": best["epochs_run"], "trials": len(trials), "stopped_early": 0,
                     "trial_epochs": int(sum(int(r["epochs_run"]) for r in trials)),
                     "wall_s": summ.get("wall_command_s") or summ.get("wall_seconds")})
    return rows


def _ms(values: list[float]) -> tuple[float, float, int]:
    from tune.stats import mean_se

    return mean_se(values)


def _cell(stat: tuple[float, float, int], digits: int = 3) -> str:
    m, se, n = stat
    if n == 0:
        return "–"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def plot(path: Path, res: dict[str, Any], curve: dict[str, Any] | None, cfg: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from singr.io import atomic_path

    n = 2 if curve else 1
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
    ax = axes[0, 0]
    names = list(res["methods"])
    for i, m in enumerate(names):
        vals = [r["test_Dice_mean"] for r in res["methods"][m]["seeds"]]
        ax.scatter([i] * len(vals), vals, color="grey", s=14, zorder=3)
        mean, se, _ = _ms(vals)
        ax.errorbar([i], [mean], yerr=[0 if not math.isfinite(se) else se], fmt="o", color="C%d" % i, capsize=4,
                    markersize=8)
    ax.set_xticks(range(len(names)), [f"{m}\n{res['methods'][m]['trial_epochs_mean']:.0f} trial-epochs" for m in names],
                  fontsize=8)
    ax.set_ylabel("test Dice (mean over regions)\nchampion per seed (grey), mean ± SE")
    ax.set_title("Champions on the test split", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if curve:
        ax = axes[0, 1]
        for name, pts in curve["curves"].items():
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker=".", label=name)
        t = cfg.tune
        rung = int(t.asha.grace_period)
        while rung < int(cfg.train.epochs):
            ax.axvline(rung, color="k", linestyle=":", linewidth=1)
            rung = int(rung * float(t.asha.reduction_factor))
        ax.set_xlabel("epoch (dotted: ASHA rungs)")
        ax.set_ylabel("validation Dice (mean over regions)")
        ax.set_title("Validation curves, three settings", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds (tune.seed = train.seed)")
    ap.add_argument("--data", default="data/ambiguity/a0.5", help="the data set (ambiguity 0.5)")
    ap.add_argument("--work", default="runs/search-compare", help="sweeps, MLflow store, evaluations")
    ap.add_argument("--out", default="reports/ambiguity", help="search.md, search.json, search.png")
    ap.add_argument("--curves-only", action="store_true", help="only the validation curves (step 1)")
    ap.add_argument("--no-curves", action="store_true", help="skip step 1")
    ap.add_argument("--fresh", action="store_true", help="run every sweep again")
    ap.add_argument("--no-control", action="store_true", help="skip the control: the default trained as many "
                    "times as a sweep has trials, the best on validation picked")
    ap.add_argument("--curve-epochs", type=int, default=20, help="epochs of the curves (beyond the search's)")
    ap.add_argument("--concurrent", type=int, default=2, help="trials at once (tune.max_concurrent)")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    t0 = time.time()
    from tune.config import load_service_config
    from tune.report.analysis import compare, short_label  # noqa: F401 - short_label kept for symmetry with the report
    from tune.stats import mean_se

    ensure_data(args)
    base = load_service_config(CONFIG, _ov(common(args)))
    cfg = load_service_config(CONFIG, [*base.tune.train_overrides, *_ov(common(args))])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = None if args.no_curves else curves(args, cfg)
    if curve:
        (Path(args.work) / "curves.json").write_text(json.dumps(curve, indent=1))
        for name, pts in curve["curves"].items():
            print(f"[compare] curve {name}: " + " ".join(f"{e}:{v:.3f}" for e, v in pts), flush=True)
    if args.curves_only:
        return 0
    t = cfg.tune
    methods: dict[str, Any] = {}
    scores: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for m in METHODS:
        rows = []
        for s in args.seeds:
            summ = run_tune(args, f"{m}-s{s}", {"tune.search": m, "tune.seed": s, "train.seed": s})
            trials = summ["trials"]
            cases = evaluate_model(args, cfg, Path(summ["best_model"]), Path(args.work) / "eval" / f"{m}-s{s}")
            scores.setdefault(m, {})[s] = cases
            best = summ["best"]
            rows.append({"seed": s, **champion_scores(cases),
                         "val_Dice_best": best["val_Dice_best"], "lam": best.get("lam"), "delta": best.get("delta"),
                         "gamma": best.get("gamma"), "champion_epochs": best["epochs_run"],
                         "trial_epochs": int(sum(int(r["epochs_run"]) for r in trials)), "trials": len(trials),
                         "stopped_early": int(sum(bool(r["stopped_early"]) for r in trials)),
                         "wall_s": summ.get("wall_command_s") or summ.get("wall_seconds")})
        methods[m] = {"seeds": rows}
    spec = _spec("default", DEFAULT)
    summ = run_tune(args, "default", grid_values("default", [spec], list(args.seeds)))
    rows = []
    trials_dir = Path(summ["sweep_dir"]) / "singr_trials"
    for r in sorted(summ["trials"], key=lambda r: int(r["seed"])):
        cases = case_csv(trials_dir / r["trial_id"] / "eval" / "metrics_test.csv")
        scores.setdefault("default", {})[int(r["seed"])] = cases
        rows.append({"seed": int(r["seed"]), **champion_scores(cases),
                     "val_Dice_best": r["val_Dice_best"], "lam": 0.5, "delta": 0.5, "gamma": 1.0,
                     "champion_epochs": r["epochs_run"], "trial_epochs": int(r["epochs_run"]), "trials": 1,
                     "stopped_early": 0, "wall_s": None})
    wall_default = summ.get("wall_command_s") or summ.get("wall_seconds")
    methods["default"] = {"seeds": rows, "wall_s_all_seeds": wall_default}
    if not args.no_control:
        methods[CONTROL] = {"seeds": control(args, spec, int(t.num_samples), scores)}
    for v in methods.values():
        v["test_Dice"] = list(mean_se([r["test_Dice_mean"] for r in v["seeds"]]))
        v["test_HD95"] = list(mean_se([r["test_HD95_mean"] for r in v["seeds"]]))
        v["trial_epochs_mean"] = float(np.mean([r["trial_epochs"] for r in v["seeds"]]))
        walls = [r["wall_s"] for r in v["seeds"] if r["wall_s"]]
        per_seed = wall_default / len(v["seeds"]) if wall_default else None
        v["wall_s_mean"] = float(np.mean(walls)) if walls else per_seed
    pairs = []
    for a, b in PAIRS:
        if a not in scores or b not in scores:
            continue
        seeds = sorted(set(scores[a]) & set(scores[b]))
        ids = sorted(set.intersection(*(set(scores[x][s]) for s in seeds for x in (a, b))))
        for key, hib in (("Dice_mean", True), ("HD95_mean", False)):
            d = np.asarray([[scores[a][s][c][key] - scores[b][s][c][key] for c in ids] for s in seeds])
            pairs.append({"a": a, "b": b, "metric": key, **compare(d, hib, (a, b))})
    res = {"config": CONFIG, "data": args.data, "seeds": list(args.seeds), "num_samples": int(t.num_samples),
           "asha": t.asha.model_dump(), "epochs": int(cfg.train.epochs),
           "iters_per_epoch": int(cfg.train.iters_per_epoch),
           "patch_size": list(cfg.train.patch_size), "lr": float(cfg.train.lr), "val_every": cfg.sweep_val_every(),
           "search_space": {"lam": list(t.lam_grid), "delta": list(t.delta), "gamma": list(t.gamma)},
           "methods": methods, "paired": pairs, "curves": curve, "wall_seconds": round(time.time() - t0, 1)}
    # the sweeps' own wall times (recorded when they ran; a re-run that reads them back takes seconds)
    sweeps = [r["wall_s"] or 0.0 for m in (*METHODS, CONTROL) if m in methods for r in methods[m]["seeds"]]
    res["sweeps_wall_seconds"] = round(sum(sweeps) + float(wall_default or 0.0)
                                       + float((curve or {}).get("wall_seconds") or 0.0), 1)
    write_report(out, res, cfg)
    return 0


def write_report(out: Path, res: dict[str, Any], cfg: Any) -> None:
    from singr.io import write_json, write_text
    from tune.report.run import _finite  # noqa: PLC2701 - the report's JSON rule (NaN -> null)

    png = plot(out / "search.png", res, res.get("curves"), cfg)
    m = res["methods"]
    lines = ["# Is the search worth it? Optuna + ASHA vs random search vs the paper's default", "",
             f"Synthetic data at ambiguity 0.5 (`{res['data']}`, split 40/20/40 % train/val/test), the search of "
             f"`configs/{res['config']}`: {res['num_samples']} trials per sweep over lambda in "
             f"{res['search_space']['lam']}, delta in {res['search_space']['delta']}, gamma in "
             f"{res['search_space']['gamma']}; {res['epochs']} epochs x {res['iters_per_epoch']} iterations, patch "
             f"{res['patch_size']}, lr {res['lr']:g}, validation every {res['val_every']} epoch(s); ASHA grace "
             f"period {res['asha']['grace_period']}, reduction factor {res['asha']['reduction_factor']:g}. "
             f"Sweep seeds {res['seeds']} (tune.seed = train.seed = s). The champion of a sweep is its best trial by "
             "validation Dice; the default is lambda 0.5, delta 0.5, gamma 1 (Focal-L1) trained once per seed for "
             "the same epochs" + (f"; {CONTROL} is the default trained {res['num_samples']} times per seed (train "
                                  "seeds 1000 s + i) with the best run on validation picked, as a sweep picks its "
                                  "champion" if CONTROL in m else "") +
             ". Test Dice and HD95 are means over the regions and the test cases.", "",
             "| method | seeds | test Dice (mean ± SE over seeds) | test HD95 mm | trial-epochs per sweep | trials "
             "stopped early | wall per sweep (s) | champions (lambda, delta, gamma) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, v in m.items():
        champs = "; ".join(f"s{r['seed']}: {r['lam']:g}, {r['delta']:.2f}, {r['gamma']:.2f}" for r in v["seeds"]
                           if r["lam"] is not None)
        stopped = sum(r["stopped_early"] for r in v["seeds"]) / max(1, len(v["seeds"]))
        wall = f"{v['wall_s_mean']:.0f}" if v.get("wall_s_mean") else "–"
        lines.append(f"| {name} | {len(v['seeds'])} | {_cell(tuple(v['test_Dice']))} | "
                     f"{_cell(tuple(v['test_HD95']), 2)} | {v['trial_epochs_mean']:.0f} | {stopped:.1f} | {wall} | "
                     f"{champs} |")
    lines += ["", *paired_table(res["paired"]), "", headline(res), "", f"![search]({png.name})", "",
              f"Reproduce: `.venv/bin/python benchmarks/search_compare.py` (its sweeps took "
              f"{res.get('sweeps_wall_seconds', res['wall_seconds']) / 60:.0f} min here, on 2 CPU cores; a finished "
              "sweep is read back, not run again)."]
    write_text(out / "search.md", "\n".join(lines) + "\n")
    write_json(out / "search.json", _finite(res))
    print("\n".join(lines), flush=True)


def paired_table(pairs: list[dict[str, Any]], per_seed: bool = True) -> list[str]:
    """Markdown lines of the paired comparisons (:func:`tune.report.analysis.compare` rows with ``a``,
    ``b`` and ``metric``): the caption, the header and one row per pair; ``per_seed`` adds the
    per-seed mean ± SE column."""
    seed_h, seed_a = (" per-seed mean ± SE |", " ---: |") if per_seed else ("", "")
    lines = ["Paired per test case (d = A − B for each case and seed; mean ± SE over cases of the seed-averaged d, "
             "95% CI by the two-way bootstrap over seeds and cases, Wilcoxon p over cases):", "",
             f"| A − B | metric | seeds × cases | mean ± SE | 95% CI | Wilcoxon p |{seed_h} verdict |",
             f"| --- | --- | ---: | ---: | ---: | ---: |{seed_a} --- |"]
    for p in pairs:
        dg = 3 if p["metric"].startswith("Dice") else 2
        seed = f" {p['seed_mean']:+.{dg}f} ± {p['seed_se']:.{dg}f} |" if per_seed else ""
        lines.append(f"| {p['a']} − {p['b']} | {p['metric']} | {p['n_seeds']} × {p['n_cases']} | {p['mean']:+.{dg}f} ± "
                     f"{p['se']:.{dg}f} | {p['ci_lo']:+.{dg}f} to {p['ci_hi']:+.{dg}f} | {p['p']:.3g} |{seed} "
                     f"{p['verdict']} |")
    return lines


def headline(res: dict[str, Any]) -> str:
    """What the numbers say, in words (no claim without the interval and p behind it)."""
    m = res["methods"]
    by = {(p["a"], p["b"], p["metric"]): p for p in res["paired"]}
    parts = []
    for a, b in PAIRS:
        p = by.get((a, b, "Dice_mean"))
        if p:
            parts.append(f"{a} vs {b}: {p['verdict']}")
    te = {k: v["trial_epochs_mean"] for k, v in m.items()}
    champs = {(r["lam"], round(r["delta"], 2), round(r["gamma"], 2)) for k in METHODS if k in m
              for r in m[k]["seeds"] if r["lam"] is not None}
    return ("**Headline** (test Dice, paired per case): " + "; ".join(parts) + ". Compute per seed: Optuna "
            f"{te.get('optuna', 0):.0f}, random {te.get('random', 0):.0f} trial-epochs per sweep, the default "
            f"{te.get('default', 0):.0f}" + (f", the control {te[CONTROL]:.0f}" if CONTROL in te else "") +
            f". A champion is the best of {res['num_samples']} trained runs picked on validation, the default one "
            f"run; the searches' champions are {len(champs)} different settings. "
            + ("The control (the default trained as often and picked the same way) separates the pick from the "
               "setting: a search that does not beat it has found no better setting, only a better run."
               if CONTROL in m else "Without the control (--no-control was given) part of a search's gain over "
               "the default may be the pick among runs rather than the setting."))


if __name__ == "__main__":
    sys.exit(main())
