"""The sweep from start to end, on the Ray the session started or joined.

1. SiNG maps for every lambda (Ray Data, :mod:`tune.maps`), once per data folder the runs
   read (``SweepPlan.data_groups``); a case that fails its checks stops the sweep here with
   one line naming it;
2. the MLflow parent run (:mod:`tune.tracking`);
3. the search or the grid (:mod:`tune.search`), one MLflow child run per trial;
4. the results (:mod:`tune.results`): ``trials.csv``, ``sweep.png``, ``summary.json``;
4b. a search's control arm and confirmation runs (:mod:`tune.confirm`: the reference setting and the
   best settings trained again with new seeds; ``summary.json``'s ``confirm`` / ``control``, the answer);
5. a search builds its model folder (:mod:`tune.ensemble`: the confirmed arm's seed runs, the best
   trial, or the fold refit of ``tune.refit_folds`` as parallel runs, or the ``tune.ensemble_top_k``
   best trials), fits its post-processing rules on validation data (``tune.postprocess``) and
   registers it (:mod:`tune.hub.publish`); a grid writes its report.

The objective throughout is ``tune.metric`` (:attr:`SweepPlan.metric`); ``summary.json`` says
what was registered under ``model`` (kind, members, folds, score, post-processing kept).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from singr.errors import SingrInputError
from singr.io import write_json

from .grid import is_grid
from .plan import METRIC, SweepPlan, search_params

PLAN_FILE = "sweep.json"


def check_budget(plan: SweepPlan, resume: bool) -> None:
    """A sweep keeps the number of trials it was started with: restoring it with another
    budget would leave it unfinishable. Say so before any work (pick another tune.name)."""
    f = plan.sweep_dir / PLAN_FILE
    if f.exists() and resume:
        saved = json.loads(f.read_text())
        if int(saved.get("n_trials", plan.n_trials)) != plan.n_trials:
            raise SingrInputError(
                f"the sweep {plan.name!r} was started with {saved['n_trials']} trials; this command asks for "
                f"{plan.n_trials}. A sweep's budget cannot change: pick a new tune.name (e.g. "
                f"tune.name={plan.name}-{plan.n_trials}) for a new sweep, or rerun with the old budget to resume "
                "or reprint it", path=plan.sweep_dir)
    else:
        write_json(f, {"n_trials": plan.n_trials, "name": plan.name, "mode": plan.cfg.tune.mode})


def run_sweep(plan: SweepPlan, splits: list[tuple[Any, dict[str, list[str]]]], *, resume: bool, progress: bool,
              t0: float, driver: Callable[[], dict[str, str]] | None = None) -> int:
    """Stages 1-5 (see the module docstring); returns the exit code. ``driver``: the tags that name
    the driver on the parent run, asked for when it is opened (default: this process, no Ray)."""
    import ray

    from .maps import compute_maps
    from .search import check_trial_fits, concurrency, run_search
    from .tracking import TrialRuns, parent_run
    from .trainer import how_trials_train, scaling

    check_budget(plan, resume)
    if resume:
        from .confirm import check_stage

        check_stage(plan)  # a changed tune.control / tune.confirm is refused before any work
    cfg = plan.cfg
    if cfg.tune.refit_folds:  # the folds exist (and fit the cases) before hours of search
        from .ensemble import prepare_folds

        prepare_folds(plan, int(cfg.tune.refit_folds))
    resources = ray.cluster_resources()
    scale = scaling(cfg, resources)
    check_trial_fits(cfg, scale, [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])
    shown = {k: resources[k] for k in ("CPU", "GPU") if k in resources}
    print(f"[tune] sweep {plan.name!r} in {plan.sweep_dir}; cluster {json.dumps(shown)}", flush=True)
    maps: dict[str, Any] = {"cases": 0, "maps_computed": 0, "maps_cached": 0, "actors": 0, "nodes": {}}
    for group, split in splits:
        tm = time.time()
        ids = list(split["train"]) + list(split["val"])
        got = compute_maps(plan, ids, progress=progress, group=group)
        where = f" of {group.cfg.data.root}" if len(splits) > 1 else ""
        print(f"[tune] SiNG maps for lambda in {list(group.lams)} over {got['cases']} cases{where} ({got['actors']} "
              f"actors on {len(got['nodes'])} node(s), {time.time() - tm:.1f} s): computed {got['maps_computed']}, "
              f"from cache {got['maps_cached']}", flush=True)
        for k in ("cases", "maps_computed", "maps_cached"):
            maps[k] += got[k]
        maps["map_seconds"] = round(maps.get("map_seconds", 0.0) + time.time() - tm, 1)
        maps["actors"] = max(maps["actors"], got["actors"])
        for node, cids in got["nodes"].items():
            maps["nodes"].setdefault(node, []).extend(cids)
    parent = parent_run(plan, driver() if driver is not None else None)
    conc = concurrency(cfg, resources, scale, plan.n_trials)
    kind = "grid runs (variants x seeds)" if is_grid(cfg) else "trials"
    print(f"[tune] {plan.n_trials} {kind}, up to {conc} at once; each {how_trials_train(cfg, scale)} x "
          f"{{CPU: {scale.cpus:g}, GPU: {scale.gpus:g}}}; MLflow {plan.tracking_uri} (parent run {parent})", flush=True)
    runs = TrialRuns(plan, parent)
    ts = time.time()
    run = run_search(plan, scale, conc, [runs], resume=resume)
    maps["search_seconds"] = round(time.time() - ts, 1)
    maps["resources"] = run.resources
    return finish(plan, run.grid, run.restored, maps, parent, runs, t0, stalled=run.stalled)


def finish(plan: SweepPlan, grid: Any, restored: bool, maps: dict[str, Any], parent: str, runs: Any,
           t0: float, stalled: bool = False) -> int:
    """Results files, then registration (search) or the report (grid). Exit codes: 0 done,
    130 interrupted (run the command again to resume), 3 ended by the watchdog."""
    from .results import (
        format_table,
        format_time_split,
        interrupted,
        slot_use,
        time_split,
        trial_rows,
        write_csv,
        write_plot,
    )

    cfg = plan.cfg
    params = search_params(cfg)
    rows = trial_rows(grid, plan)
    summary: dict[str, Any] = {"sweep": plan.name, "sweep_dir": str(plan.sweep_dir), "restored": restored,
                               "maps_computed": maps["maps_computed"], "maps_cached": maps["maps_cached"],
                               "map_seconds": maps.get("map_seconds"),
                               "map_nodes": {k: len(v) for k, v in maps["nodes"].items()},
                               **maps.get("resources", {}),
                               "n_trials": len(rows), "n_stopped_early": sum(r["stopped_early"] for r in rows),
                               "n_errors": sum(r["error"] for r in rows), "tracking_uri": plan.tracking_uri,
                               "parent_run_id": parent, "mlflow_not_logged": runs.failures,
                               "trials": [{k: v for k, v in r.items() if k != "history"} for r in rows],
                               **slot_use(rows)}
    summary_p = plan.results_dir / "summary.json"
    if summary.get("epoch_share_median") is not None:
        print(f"[tune] trials spent {summary['epoch_share_median']:.0%} of their slots in epochs (median; start-up "
              f"{summary['startup_s_median']:.1f} s before the first epoch)", flush=True)
    if stalled:
        summary["stalled"] = True
        write_json(summary_p, summary, indent=1, default=str)
        doing = [f"{r['trial_id']}: {r['epochs_run']} epoch(s)" for r in rows if not r["error"]]
        _close(plan, parent, "FAILED", summary, [], runs)
        print(f"[tune] the watchdog ended the sweep: no trial reported for {plan.cfg.tune.stall_timeout_s:g} s "
              f"(tune.stall_timeout_s). Trials: {'; '.join(doing) or 'none started'}. Ray's logs: "
              f"{plan.sweep_dir / 'logs'}. Run the same command again to resume it.", flush=True)
        return 3
    if interrupted(grid, plan.n_trials):
        summary["interrupted"] = True
        write_json(summary_p, summary, indent=1, default=str)
        print(f"[tune] sweep interrupted; run the same command again to resume it from {plan.sweep_dir}",
              flush=True)
        return 130
    csv_p = write_csv(rows, plan.results_dir / "trials.csv")
    png_p = write_plot(rows, params, plan.results_dir / "sweep.png")
    ok = [r for r in rows if not r["error"] and r["checkpoint_path"]]
    if not ok:
        _close(plan, parent, "FAILED", summary, [csv_p], runs)
        raise SingrInputError("no trial finished with a checkpoint; see the trial errors above", path=plan.sweep_dir)
    if is_grid(cfg):
        return _finish_grid(plan, parent, rows, summary, [csv_p, png_p], maps, runs, t0)
    best = ok[0]
    summary.update({"metric": plan.metric, "mode": plan.mode, "best": {k: v for k, v in best.items() if k != "history"},
                    "best_score": best["score"], "best_val_Dice_mean": best["val_Dice_best"], "csv": str(csv_p),
                    "plot": str(png_p)})
    from .ensemble import RefitIncomplete

    top = best  # the search's best trial (``best`` becomes the registered run's row after a confirmation)
    clock = {"start": t0, "maps": maps.get("map_seconds"), "search": maps.get("search_seconds")}
    try:
        tc = time.time()
        stage = _confirm_stage(plan, rows, best, parent, runs, summary)
        if stage is not None and stage.registered_row is not None:
            best = stage.registered_row
        tm = time.time()
        model = _build_model(plan, rows, parent, runs, stage)
    except RefitIncomplete as e:
        return _refit_incomplete(plan, parent, summary, [csv_p, png_p], runs, e)
    tr = time.time()
    clock.update({"stage": tm - tc, "model": tr - tm})
    model_dir = model.path
    reg = _register(plan, parent, best, model_dir, runs, model=model,
                    answer=summary.get("confirm", {}).get("answer"))
    clock["register"] = time.time() - tr
    summary.update({"best_model": str(model_dir), "model": model.summary(), "registered": reg,
                    "wall_seconds": round(time.time() - t0, 1), "mlflow_not_logged": runs.failures,
                    "time_split": time_split(clock, rows, time.time())})
    write_json(summary_p, summary, indent=1, default=str)
    _close(plan, parent, "FINISHED", summary, [csv_p, png_p, summary_p], runs)

    bp = ", ".join(f"{p}={top[p]:.4g}" if isinstance(top[p], float) else f"{p}={top[p]}" for p in params)
    print("\n[tune] trials (best first):\n" + format_table(rows, params, plan.metric))
    obj = "" if plan.metric == METRIC else f"{plan.metric} {top['score']:.4f}, "
    print(f"\n[tune] best: {bp}; {obj}val Dice {top['val_Dice_best']:.4f} (the search's best trial "
          f"{top['trial_id']}, {top['epochs_run']} epochs)")
    print(f"[tune] SiNG maps: computed {maps['maps_computed']}, from cache {maps['maps_cached']}")
    if stage is not None:
        print(stage.table)
        print(f"[tune] answer: {stage.answer}")
    if reg:
        moved = "now @" + reg["alias"] if reg["promoted"] else f"@{reg['alias']} not moved"
        print(f"[tune] registered {reg['name']} version {reg['version']} ({moved}: {reg['why']})")
    print(f"[tune] best model: {model_dir}")
    print(f"[tune] results: {csv_p}, {png_p}; Ray experiment: {plan.sweep_dir}")
    if runs.failures:
        print(f"[tune] MLflow: {len(runs.failures)} item(s) not logged (listed in {summary_p}); the sweep's own "
              "results above are complete", flush=True)
    print_ui_link(plan, parent, runs)
    print(f"[tune] {format_time_split(summary['time_split'])}", flush=True)
    print(f"[tune] done in {time.time() - t0:.0f} s", flush=True)
    return 0


def print_ui_link(plan: SweepPlan, parent: str, runs: Any = None) -> None:
    """Where to see the sweep in the MLflow UI: the link to its trials in the runs view
    (:func:`tune.hub.ui_link.ui_lines`), or the ``mlflow ui`` command alone where the store does
    not answer (``runs``, the sweep's :class:`~tune.tracking.TrialRuns`, saw it fail just now)."""
    from .hub.store import client_for
    from .hub.ui_link import ui_lines

    lines = [f"MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1"]
    if runs is None or time.time() >= getattr(runs, "_down_until", 0.0):
        try:
            lines = ui_lines(client_for(plan.tracking_uri), plan.tracking_uri, parent, plan.name)
        except Exception:  # noqa: BLE001 - a store that went away: the command alone
            pass
    for line in lines:
        print(f"[tune] {line}", flush=True)


def _close(plan: SweepPlan, parent: str, status: str, summary: dict[str, Any], files: list[Path], runs: Any) -> None:
    from .tracking import close_parent

    runs._safe("the sweep's parent run", lambda: close_parent(plan, parent, status, summary, files))


def _refit_incomplete(plan: SweepPlan, parent: str, summary: dict[str, Any], files: list[Path], runs: Any,
                      e: Any) -> int:
    """A fold refit did not finish: summary.json says why, the parent run is closed as FAILED (an
    interrupted refit, exit 130, leaves it open for the rerun that resumes it); the exit code."""
    summary.update({"refit_incomplete": e.message, "refit_runs": e.runs, "mlflow_not_logged": runs.failures})
    if e.code == 130:
        summary["interrupted"] = True
    summary_p = write_json(plan.results_dir / "summary.json", summary, indent=1, default=str)
    if e.code != 130:
        _close(plan, parent, "FAILED", summary, [*files, summary_p], runs)
    print(f"[tune] {e.message}", flush=True)
    return int(e.code)


def _confirm_stage(plan: SweepPlan, rows: list[dict[str, Any]], best: dict[str, Any], parent: str, runs: Any,
                   summary: dict[str, Any]) -> Any:
    """The control and confirmation runs (:mod:`tune.confirm`) when ``tune.control.seeds`` or
    ``tune.confirm.top_k`` is set: ``summary["confirm"]`` gets the arms, the winner and the
    answer; None when both are off."""
    from .confirm import run_stage

    t = plan.cfg.tune
    if not (t.control.seeds or t.confirm.top_k):
        return None
    stage = run_stage(plan, rows, best, parent, runs)
    if t.refit_folds:
        stage.registered = f"the {stage.chosen} setting refitted on {t.refit_folds} folds (tune.refit_folds)"
    elif t.ensemble_top_k:
        stage.registered = f"the search's {t.ensemble_top_k} best trials together (tune.ensemble_top_k)"
    summary["confirm"] = stage.summary()
    summary["control"] = stage.summary()["arms"].get("control")
    summary["stage_trial_ids"] = [r.trial_id for r in stage.runs]
    return stage


def _build_model(plan: SweepPlan, rows: list[dict[str, Any]], parent: str, runs: Any, stage: Any = None) -> Any:
    """The model folder to register (:mod:`tune.ensemble`: the best trial's, the confirmed arm's
    seed runs, or a refit ensemble), post-processing rules fitted, one ``[tune]`` line per stage.
    Raises ``RefitIncomplete`` when a fold refit did not finish."""
    from .ensemble import build_model, fit_rules

    split = json.loads(plan.split_file.read_text())
    tm = time.time()
    model = build_model(plan, rows, split, parent, runs, stage)
    print(f"[tune] model: {model.describe()}; {time.time() - tm:.0f} s, in {model.path}", flush=True)
    if plan.cfg.tune.postprocess:
        tm = time.time()
        fit_rules(plan, model)
        pp = model.postprocess or {}
        if "error" not in pp:
            kept = "; ".join(pp["kept"]) if pp["kept"] else "no rule raised the validation Dice, none kept"
            print(f"[tune] post-processing fitted on {pp['n_cases']} validation cases ({time.time() - tm:.0f} s): "
                  f"{kept}; val Dice {pp['dice_before']:.4f} -> {pp['dice_after']:.4f}", flush=True)
    else:
        print("[tune] post-processing: not fitted (tune.postprocess is false); the model has no rules", flush=True)
    return model


def _register(plan: SweepPlan, parent: str, best: dict[str, Any], model_dir: Path, runs: Any,
              model: Any = None, answer: str | None = None) -> dict[str, Any] | None:
    """Register the best model with its card (:func:`tune.champion.sweep_card`) and exports (``mlflow.export``)."""
    from .champion import sweep_card
    from .hub.card import split_digest
    from .hub.publish import register

    cfg = plan.cfg
    split = json.loads(plan.split_file.read_text())
    tags = {"lam": best.get("lam"), "delta": best.get("delta"), "gamma": best.get("gamma"),
            "model": best.get("model") or cfg.model.name, METRIC: round(best["val_Dice_best"], 6),
            "trial_id": best["trial_id"], "sweep": plan.name}
    for p in search_params(cfg):  # every searched value (lr, weight_decay, fg_oversample, ...)
        if best.get(p) is not None:
            tags[p] = best[p]
    score, digest = float(best["val_Dice_best"]), split_digest(split)
    if model is not None:  # tune.ensemble's folder: kind, members, its score in tune.metric and on what
        tags.update(model.tags())
        score, digest = float(model.score), str(model.digest)
    return runs._safe("the model registration", lambda: register(
        plan, parent, model_dir, tags, score, digest, metric=plan.metric, mode=plan.mode,
        rule=cfg.mlflow.promote, card=lambda: sweep_card(plan, best, model_dir, split, parent, answer=answer),
        exports=cfg.mlflow.export))


def _finish_grid(plan: SweepPlan, parent: str, rows: list[dict[str, Any]], summary: dict[str, Any],
                 files: list[Path], maps: dict[str, Any], runs: Any, t0: float) -> int:
    """A comparison grid ends with its report (``singr report``), not a registered model."""
    from .report import write_report
    from .results import format_time_split, time_split

    assert plan.cfg.experiment is not None
    split = plan.cfg.experiment.eval_split
    summary.update({"mode": "grid", "wall_seconds": round(time.time() - t0, 1),
                    "time_split": time_split({"start": t0, "maps": maps.get("map_seconds"),
                                              "search": maps.get("search_seconds")}, rows, time.time())})
    summary_p = write_json(plan.results_dir / "summary.json", summary, indent=1, default=str)
    _close(plan, parent, "FINISHED", summary, [*files, summary_p], runs)
    print("\n[tune] grid runs:\n" + format_rows(rows, split))
    print(f"[tune] SiNG maps: computed {maps['maps_computed']}, from cache {maps['maps_cached']}")
    again = (f"singr report --experiment {plan.cfg.mlflow.experiment} --sweep {plan.name} "
             f"--tracking-uri {plan.tracking_uri}")
    try:
        rep = write_report(plan.tracking_uri, plan.cfg.mlflow.experiment, plan.results_dir / "report",
                           sweep=plan.name)
        print(f"[tune] report: {rep['markdown']} (also in MLflow run {parent}, artifacts report/); "
              f"again, elsewhere: {again} --out DIR")
    except Exception as e:  # noqa: BLE001 - the grid itself finished; the report can be rerun
        print(f"[tune] the grid finished but its report failed ({type(e).__name__}: {e}); rerun: {again}",
              flush=True)
    print_ui_link(plan, parent, runs)
    print(f"[tune] {format_time_split(summary['time_split'])}", flush=True)
    print(f"[tune] done in {time.time() - t0:.0f} s", flush=True)
    return 0


def format_rows(rows: list[dict[str, Any]], split: str) -> str:
    lines = [f"{'variant':<22} {'seed':>4} {'val Dice':>9} {split + ' Dice':>10} {split + ' HD95':>10}"]
    for r in sorted(rows, key=lambda r: (str(r.get("variant")), r.get("seed") or 0)):
        lines.append(f"{str(r.get('variant')):<22} {r.get('seed')!s:>4} {r['val_Dice_best']:>9.4f} "
                     f"{r.get(f'{split}_Dice_mean', float('nan')):>10.4f} "
                     f"{r.get(f'{split}_HD95_mean', float('nan')):>10.2f}")
    return "\n".join(lines)
