"""Does the service find a better setting than the default at equal compute? (issue 21 item 6)

    .venv/bin/python benchmarks/search_equal.py --setting wide-fov   # the setting where the default is not the best
    .venv/bin/python benchmarks/search_equal.py --setting ordinary   # the data of reports/ambiguity/search.md

The whole pipeline as a user runs it (``python -m tune``: the search with the config's own setting
as its first trial, then the control arm and the confirmation stage, the winner registered as its
seed ensemble only when it beats the control beyond noise), per sweep seed s:

* **optuna+confirm** and **random+confirm**: ``tune.search`` optuna / random, ``tune.seed = s``,
  ``train.seed = 100 s`` (the stage's runs take seeds 100 s + 1, 100 s + 2). Compute = the search's
  trial-epochs (ASHA stops some early) + the stage's runs x their epochs.
* **default-best-of-n**: the config's own setting trained n times (train seeds 1000 s + i), n the
  two searches' mean compute of that seed divided by a run's epochs (equal compute); the run with
  the best validation Dice picked, as a user without the service would pick it.
* **default**: the first of those runs (one training of the default), for scale.
* Other registration rules, scored from the same sweeps (no extra compute): **+winner**, the
  confirmation's best mean as its seed ensemble whatever its evidence; **+bestrun**, the one run of
  the sweep with the best validation score (full-length search trials and the stage's runs).

The registered model of each sweep (``summary.json`` ``best_model``) and each picked run are scored
on the held-out test split; paired per test case (cases the unit, two-way bootstrap over seeds and
cases, Wilcoxon over cases; :func:`tune.report.analysis.compare`). Also counted: test cases whose
tumour core the model leaves empty (TC at the 373 mm empty-mask HD95), the lead of issue 21 item 5.
Writes ``<setting>.md``, ``.json``, ``.png`` to ``--out`` (reports/search); sweeps and evaluations go
to ``--work`` (runs/search-equal/<setting>). A finished sweep is read back, not run again.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from search_compare import (  # noqa: E402, I001
    _ms, _ov, _spec, case_csv, champion_scores, common, evaluate_model, grid_values, paired_table, run_tune,
    synth_data)

SETTINGS: dict[str, dict[str, Any]] = {
    "wide-fov": {"config": "wide-fov.yaml", "data": "data/wide-fov", "synth": "wide-fov.yaml", "ambiguity": None,
                 "words": "tumours of ambiguity 0.5 in a 96 x 96 x 64 field of view, 32^3 training crops "
                          "(configs/wide-fov.yaml); space lambda, delta, gamma and train.fg_oversample"},
    "ordinary": {"config": "synthetic.yaml", "data": "data/ambiguity/a0.5", "synth": "ambiguity.yaml",
                 "ambiguity": 0.5,
                 "words": "tumours of ambiguity 0.5 in 48^3 volumes (reports/ambiguity/search.md's data), the "
                          "search of configs/synthetic.yaml; space lambda, delta, gamma"}}
SEARCHES = ("optuna+confirm", "random+confirm")
WINNERS = {"optuna+confirm": "optuna+winner", "random+confirm": "random+winner"}  # the best mean, registered or not
BEST_RUNS = {"optuna+confirm": "optuna+bestrun", "random+confirm": "random+bestrun"}  # the sweep's best-validated run
BEST_OF_N = "default-best-of-n"
ONCE = "default"
PAIRS = (("optuna+confirm", BEST_OF_N), ("random+confirm", BEST_OF_N), ("optuna+confirm", "random+confirm"),
         ("optuna+winner", BEST_OF_N), ("optuna+winner", "optuna+confirm"),
         ("optuna+bestrun", BEST_OF_N), ("random+bestrun", BEST_OF_N), ("optuna+bestrun", "optuna+confirm"),
         ("optuna+confirm", ONCE), (BEST_OF_N, ONCE))
EMPTY_HD95 = 373.13  # singr.metrics.EMPTY_HD95_MM: a region empty in exactly one of the two masks


def sweep_compute(summary: dict[str, Any], epochs: int) -> dict[str, int]:
    """Trial-epochs a sweep spent: its search trials' epochs (ASHA stops some early) and the stage's
    runs (control + confirmation, ``confirm.n_runs`` runs of ``epochs``, none stopped early; failed
    runs counted too: they spent their slot)."""
    search = int(sum(int(r["epochs_run"]) for r in summary["trials"]))
    c = summary.get("confirm") or {}
    stage = int(c.get("n_runs") or 0) * int(epochs)
    return {"search": search, "stage": stage, "total": search + stage}


def runs_for_equal_compute(totals: list[int], epochs: int) -> int:
    """n such that n runs of ``epochs`` match the mean of ``totals`` (trial-epochs) most closely, >= 1."""
    if not totals or epochs < 1:
        raise ValueError(f"need sweeps' trial-epochs and epochs >= 1, got {totals!r}, {epochs}")
    return max(1, int(round(float(np.mean(totals)) / int(epochs))))


def empty_tc(cases: dict[str, dict[str, float]]) -> int:
    """Test cases whose tumour core is empty in exactly one of prediction and truth (HD95 at the penalty)."""
    return int(sum(1 for c in cases.values() if abs(float(c.get("HD95_TC", 0.0)) - EMPTY_HD95) < 1e-3))


# what the comparison does not need from a sweep: the card's test metrics (scored here) and the exports
LEAN = {"mlflow.card_test_metrics": False, "mlflow.export": []}


def search_row(args: argparse.Namespace, cfg: Any, method: str, s: int) -> tuple[dict[str, Any], dict, dict]:
    name = f"{method.split('+')[0]}-s{s}"
    summ = run_tune(args, name, {"tune.search": method.split("+")[0], "tune.seed": s, "train.seed": 100 * s, **LEAN})
    cases = evaluate_model(args, cfg, Path(summ["best_model"]), Path(args.work) / "eval" / name)
    comp = sweep_compute(summ, int(cfg.train.epochs))
    model = summ.get("model") or {}
    conf = summ.get("confirm") or {}
    row = {"seed": s, **champion_scores(cases), "empty_tc": empty_tc(cases), "trial_epochs": comp["total"],
           "search_epochs": comp["search"], "stage_epochs": comp["stage"], "trials": len(summ["trials"]),
           "registered": _registered(model, conf), "kind": model.get("kind"),
           "beats_control": conf.get("beats_control"), "answer": conf.get("answer"),
           "setting": {k: model.get(k) for k in ("lam", "delta", "gamma")},
           "wall_s": summ.get("wall_command_s") or summ.get("wall_seconds")}
    return row, cases, summ


def winner_row(args: argparse.Namespace, cfg: Any, row: dict[str, Any], summ: dict[str, Any]
               ) -> tuple[dict[str, Any], dict]:
    """The confirmation's winner (best mean validation score) as the seed ensemble of its stage runs,
    whether or not it beat the control beyond noise: what the sweep would have registered under a
    rule that always takes the best mean. Scored on the test split without post-processing (the
    registered model has rules fitted on validation; the default's runs have none)."""
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import evaluate

    conf = summ["confirm"]
    arm = conf["winner"]
    trial_ids = conf["arms"][arm]["trial_ids"]
    out = Path(args.work) / "eval" / f"{Path(summ['sweep_dir']).name}-winner"
    if not (out / "metrics_test.csv").exists():
        ckpts = [Path(conf["dir"]) / "singr_trials" / t / "checkpoints" / "best.safetensors" for t in trial_ids]
        evaluate(load_predictor(ckpts, "cpu"), cfg, split="test", out_dir=out, progress=False, overlays=0)
    cases = case_csv(out / "metrics_test.csv")
    return ({**row, **champion_scores(cases), "empty_tc": empty_tc(cases),
             "registered": _registered({"arm": arm}, conf) + ("" if conf.get("chosen") == arm else ", not confirmed")},
            cases)


def sweep_runs(summ: dict[str, Any], epochs: int) -> list[tuple[float, str, str, Path]]:
    """Every run of a sweep that trained all ``epochs``: ``(validation score, "search" or its arm,
    trial id, its folder)``; search trials ASHA stopped, failed or never scored are left out."""
    sweep = Path(summ["sweep_dir"])
    runs = [(float(t["score"]), "search", str(t["trial_id"]), sweep / "singr_trials" / str(t["trial_id"]))
            for t in summ["trials"]
            if not t.get("error") and int(t["epochs_run"]) == epochs and t["score"] == t["score"]]
    conf = summ.get("confirm") or {}
    for arm, rec in (conf.get("arms") or {}).items():
        for tid, sc in zip(rec.get("trial_ids") or [], rec.get("scores") or []):
            runs.append((float(sc), arm, str(tid), Path(conf["dir"]) / "singr_trials" / str(tid)))
    return runs


def bestrun_row(args: argparse.Namespace, cfg: Any, row: dict[str, Any], summ: dict[str, Any]
                ) -> tuple[dict[str, Any], dict]:
    """Another registration rule, scored from the same runs (no extra compute): the one run of the
    whole sweep with the best validation score, among its search trials that ran every epoch and
    the control and confirmation runs, whatever its setting; what default-best-of-n does with the
    default's runs. Scored on the test split like the others (no post-processing)."""
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import evaluate

    runs = sweep_runs(summ, int(cfg.train.epochs))
    score, where, tid, folder = max(runs, key=lambda r: r[0])
    out = Path(args.work) / "eval" / f"{Path(summ['sweep_dir']).name}-bestrun"
    mark = out / "run.txt"  # which run the evaluation is of
    if not (out / "metrics_test.csv").exists() or not mark.exists() or mark.read_text() != tid:
        evaluate(load_predictor([folder / "checkpoints" / "best.safetensors"], "cpu"), cfg, split="test", out_dir=out,
                 progress=False, overlays=0)
        mark.write_text(tid)
    cases = case_csv(out / "metrics_test.csv")
    return ({**row, **champion_scores(cases), "empty_tc": empty_tc(cases), "val_Dice_best": score,
             "registered": f"{where} run {tid} (val {score:.3f}, best of {len(runs)})"}, cases)


def _registered(model: dict[str, Any], conf: dict[str, Any]) -> str:
    """What a sweep registered, in words: the chosen arm and its setting (``top_1 (lam=0.5, ...)``)."""
    from tune.verdict import fmt_setting

    arm = model.get("arm")
    params = ((conf.get("arms") or {}).get(arm) or {}).get("params") if arm else None
    if not arm:
        return str(model.get("kind") or "the best trial")
    return f"{arm} ({fmt_setting(params)})" if params else str(arm)


def default_rows(args: argparse.Namespace, cfg: Any, s: int, n: int) -> tuple[dict, dict, dict, dict]:
    """The default trained ``n`` times (train seeds 1000 s + i): (best-of-n row, its cases, once row, its cases)."""
    name = f"default-s{s}"
    spec = _spec("default", {"loss.name": "focal_l1"})  # the config's own setting, as the search's first trial
    summ = run_tune(args, name, {**grid_values(name, [spec], [1000 * s + i for i in range(n)]), **LEAN})
    trials = summ["trials"]
    tdir = Path(summ["sweep_dir"]) / "singr_trials"
    best = max(trials, key=lambda r: float(r["val_Dice_best"]))
    first = min(trials, key=lambda r: int(r["seed"]))
    out = []
    for r, k in ((best, n), (first, 1)):
        cases = case_csv(tdir / r["trial_id"] / "eval" / "metrics_test.csv")
        out += [{"seed": s, **champion_scores(cases), "empty_tc": empty_tc(cases),
                 "trial_epochs": int(sum(int(t["epochs_run"]) for t in trials)) if k > 1 else int(r["epochs_run"]),
                 "trials": k, "registered": "best run" if k > 1 else "one run", "val_Dice_best": r["val_Dice_best"],
                 "wall_s": (summ.get("wall_command_s") or summ.get("wall_seconds")) if k > 1 else None}, cases]
    return out[0], out[1], out[2], out[3]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="wide-fov")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds")
    ap.add_argument("--work", default=None, help="sweeps, MLflow store, evaluations (runs/search-equal/<setting>)")
    ap.add_argument("--out", default="reports/search", help="<setting>.md, .json, .png")
    ap.add_argument("--fresh", action="store_true", help="run every sweep again")
    ap.add_argument("--concurrent", type=int, default=2, help="trials at once (tune.max_concurrent)")
    args = ap.parse_args(argv)
    setting = SETTINGS[args.setting]
    args.config, args.data, args.stage = setting["config"], setting["data"], True
    args.work = args.work or f"runs/search-equal/{args.setting}"
    os.chdir(REPO)
    t0 = time.time()
    from tune.config import load_service_config
    from tune.report.analysis import compare

    synth_data(Path(args.data), setting["synth"], setting["ambiguity"])
    base = load_service_config(args.config, _ov(common(args)))
    cfg = load_service_config(args.config, [*base.tune.train_overrides, *_ov(common(args))])
    epochs = int(cfg.train.epochs)
    methods: dict[str, dict[str, Any]] = {m: {"seeds": []} for m in (*SEARCHES, *WINNERS.values(), *BEST_RUNS.values(),
                                                                      BEST_OF_N, ONCE)}
    scores: dict[str, dict[int, dict[str, dict[str, float]]]] = {m: {} for m in methods}
    for s in args.seeds:
        totals = []
        for m in SEARCHES:
            row, cases, summ = search_row(args, cfg, m, s)
            methods[m]["seeds"].append(row)
            scores[m][s] = cases
            totals.append(row["trial_epochs"])
            if (summ.get("confirm") or {}).get("winner"):
                wrow, wcases = winner_row(args, cfg, row, summ)
                methods[WINNERS[m]]["seeds"].append(wrow)
                scores[WINNERS[m]][s] = wcases
            brow, bcases = bestrun_row(args, cfg, row, summ)
            methods[BEST_RUNS[m]]["seeds"].append(brow)
            scores[BEST_RUNS[m]][s] = bcases
        n = runs_for_equal_compute(totals, epochs)
        best, bcases, once, ocases = default_rows(args, cfg, s, n)
        methods[BEST_OF_N]["seeds"].append(best)
        methods[ONCE]["seeds"].append(once)
        scores[BEST_OF_N][s], scores[ONCE][s] = bcases, ocases
    methods = {k: v for k, v in methods.items() if v["seeds"]}
    for v in methods.values():
        v["test_Dice"] = list(_ms([r["test_Dice_mean"] for r in v["seeds"]]))
        v["test_HD95"] = list(_ms([r["test_HD95_mean"] for r in v["seeds"]]))
        v["trial_epochs_mean"] = float(np.mean([r["trial_epochs"] for r in v["seeds"]]))
        v["empty_tc"] = int(sum(r["empty_tc"] for r in v["seeds"]))
        walls = [r["wall_s"] for r in v["seeds"] if r.get("wall_s")]
        v["wall_s_mean"] = float(np.mean(walls)) if walls else None
    pairs = []
    for a, b in PAIRS:
        seeds = sorted(set(scores[a]) & set(scores[b]))
        if not seeds:
            continue
        ids = sorted(set.intersection(*(set(scores[x][s]) for s in seeds for x in (a, b))))
        for key, hib in (("Dice_mean", True), ("HD95_mean", False)):
            d = np.asarray([[scores[a][s][c][key] - scores[b][s][c][key] for c in ids] for s in seeds])
            pairs.append({"a": a, "b": b, "metric": key, **compare(d, hib, (a, b))})
    n_test = len(next(iter(scores[ONCE].values())))
    res = {"setting": args.setting, "words": setting["words"], "config": args.config, "data": args.data,
           "seeds": list(args.seeds), "num_samples": int(cfg.tune.num_samples), "epochs": epochs,
           "control": cfg.tune.control.model_dump(), "confirm": cfg.tune.confirm.model_dump(),
           "asha": cfg.tune.asha.model_dump(), "n_test": n_test, "methods": methods, "paired": pairs,
           "wall_seconds": round(time.time() - t0, 1)}
    write_report(Path(args.out), res)
    return 0


def _cell(stat: list[float] | tuple[float, float, int], digits: int = 3) -> str:
    m, se, n = stat
    if not n:
        return "–"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if n > 1 and math.isfinite(se) else f"{m:.{digits}f}"


def headline(res: dict[str, Any]) -> str:
    """The answer in words, from the paired comparison of the service with the default-best-of-n."""
    by = {(p["a"], p["b"], p["metric"]): p for p in res["paired"]}
    p = by[("optuna+confirm", BEST_OF_N, "Dice_mean")]
    te = {k: v["trial_epochs_mean"] for k, v in res["methods"].items()}
    beat = sum(bool(r["beats_control"]) for r in res["methods"]["optuna+confirm"]["seeds"])
    n = len(res["seeds"])
    verdict = ("**the service's champion beats the default picked from as many runs**" if p["ci_lo"] > 0 else
               "**the service's champion loses to the default picked from as many runs**" if p["ci_hi"] < 0 else
               "**no detectable difference between the service's champion and the default picked from as many runs**")
    return (f"**Headline ({res['setting']})**: {verdict}: test Dice {p['mean']:+.3f}, 95% CI {p['ci_lo']:+.3f} to "
            f"{p['ci_hi']:+.3f} ({p['n_seeds']} sweep seeds x {p['n_cases']} test cases), at "
            f"{te['optuna+confirm']:.0f} against {te[BEST_OF_N]:.0f} trial-epochs per seed. The sweep's own "
            f"confirmation said its winner beat the control beyond noise in {beat} of {n} seeds."
            + _winner_words(by))


def _winner_words(by: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """What registering the best mean whatever its evidence would have given (empty without that row)."""
    w, c = by.get(("optuna+winner", BEST_OF_N, "Dice_mean")), by.get(("optuna+winner", "optuna+confirm", "Dice_mean"))
    r = by.get(("optuna+bestrun", BEST_OF_N, "Dice_mean"))
    out = ""
    if w and c:
        out += (f" Registering the confirmation's best mean whatever its evidence (optuna+winner) would have given "
                f"{w['mean']:+.3f} (CI {w['ci_lo']:+.3f} to {w['ci_hi']:+.3f}) against the default-best-of-n and "
                f"{c['mean']:+.3f} (CI {c['ci_lo']:+.3f} to {c['ci_hi']:+.3f}) against what the rule registered.")
    if r:
        out += (f" Registering the sweep's best-validated run of any setting (optuna+bestrun, what best-of-n does "
                f"with the default's runs): {r['mean']:+.3f} (CI {r['ci_lo']:+.3f} to {r['ci_hi']:+.3f}) against the "
                f"default-best-of-n.")
    return out


def write_report(out: Path, res: dict[str, Any]) -> None:
    from singr.io import write_json, write_text
    from tune.report.run import _finite  # noqa: PLC2701 - the report's JSON rule (NaN -> null)

    out.mkdir(parents=True, exist_ok=True)
    png = plot(out / f"{res['setting']}.png", res)
    m = res["methods"]
    c, f = res["control"], res["confirm"]
    lines = [f"# Search + confirmation vs the default at equal compute: {res['setting']}", "",
             f"Setting: {res['words']}. Each sweep: {res['num_samples']} trials (the config's own setting first, "
             f"ASHA grace {res['asha']['grace_period']}, factor {res['asha']['reduction_factor']:g}, "
             f"{res['epochs']} epochs), then the control ({c['seeds']} seeds) and the top {f['top_k']} settings x "
             f"{f['seeds']} seeds; the winner's seed ensemble is registered only when it beats the control beyond "
             f"noise, else the control's. default-best-of-n: the default trained as many times as the two searches "
             f"spent trial-epochs on average (per seed), the best on validation picked. Scored from the same runs, "
             f"no extra compute: +winner, the confirmation's best mean registered whatever its evidence; +bestrun, "
             f"the sweep's one best-validated run that trained every epoch, of any setting. Sweep seeds "
             f"{res['seeds']}; {res['n_test']} test cases.", "",
             "| method | test Dice (mean ± SE over seeds) | test HD95 mm | trial-epochs per seed | TC left empty "
             "(case-runs) | registered (per seed) | wall per seed (s) |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for name, v in m.items():
        reg = "; ".join(f"s{r['seed']}: {r['registered']}" for r in v["seeds"])
        wall = f"{v['wall_s_mean']:.0f}" if v.get("wall_s_mean") else "–"
        lines.append(f"| {name} | {_cell(v['test_Dice'])} | {_cell(v['test_HD95'], 1)} | {v['trial_epochs_mean']:.0f} "
                     f"| {v['empty_tc']} of {len(v['seeds']) * res['n_test']} | {reg} | {wall} |")
    lines += ["", *paired_table(res["paired"])]
    lines += ["", "What each sweep concluded (its own confirmation, on the validation split):", ""]
    for r in m["optuna+confirm"]["seeds"] + m["random+confirm"]["seeds"]:
        lines.append(f"- {'optuna' if r in m['optuna+confirm']['seeds'] else 'random'} s{r['seed']}: {r['answer']}")
    lines += ["", headline(res), "", f"![{res['setting']}]({png.name})", "",
              f"Reproduce: `.venv/bin/python benchmarks/search_equal.py --setting {res['setting']}` (a finished sweep "
              "is read back, not run again)."]
    write_text(out / f"{res['setting']}.md", "\n".join(lines) + "\n")
    write_json(out / f"{res['setting']}.json", _finite(res))
    print("\n".join(lines), flush=True)


def plot(path: Path, res: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from singr.io import atomic_path

    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    names = list(res["methods"])
    for i, name in enumerate(names):
        v = res["methods"][name]
        vals = [r["test_Dice_mean"] for r in v["seeds"]]
        ax.scatter([i] * len(vals), vals, color="grey", s=14, zorder=3)
        mean, se, _ = v["test_Dice"]
        ax.errorbar([i], [mean], yerr=[se if se is not None and math.isfinite(se) else 0], fmt="o",
                    color=f"C{i}", capsize=4, markersize=8)
    ax.set_xticks(range(len(names)), [f"{n}\n{res['methods'][n]['trial_epochs_mean']:.0f} trial-epochs" for n in names],
                  fontsize=7)
    ax.set_ylabel("test Dice (mean over regions)\nper seed (grey), mean ± SE")
    ax.set_title(f"{res['setting']}: the service vs the default at equal compute", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
