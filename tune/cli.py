"""``python -m tune --config configs/<name>.yaml [key=value ...]``: maps -> sweep -> register.

With ``tune.mode: grid`` (configs/ablation*.yaml) the same pipeline runs a comparison
instead: every ``experiment`` variant x seed to the end, each evaluated on the test split,
and it ends with ``singr report`` (results/report/) instead of registering a model.

Runs on the Ray cluster named by ``RAY_ADDRESS`` (as inside ``ray job submit``), or on a
local Ray started in-process on 127.0.0.1 when none is set. Bad input (a config error, a
data folder without cases, a cluster address that does not answer) stops the command with
one line naming the problem before any Ray work starts (exit code 2).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

from singr.errors import SingrInputError


def check_address(address: str, timeout: float = 3.0) -> None:
    """Raise SingrInputError unless ``address`` (host:port, ray://host:port, http://...) accepts TCP."""
    if address in ("auto", "local", ""):
        return
    u = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = u.hostname, u.port
    if not host or not port:
        raise SingrInputError(f"RAY_ADDRESS={address!r} is not of the form host:port (or ray://host:port)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise SingrInputError(f"the Ray cluster at RAY_ADDRESS={address!r} does not answer "
                              f"({e.strerror or type(e).__name__} after {timeout:g} s); start it "
                              "(`ray start --head ...`) or unset RAY_ADDRESS to run on a local Ray") from e


def preflight(config: str, overrides: Sequence[str], resume: bool) -> tuple[Any, dict[str, list[str]]]:
    """Everything checkable without Ray: config, cases, split, address, sweep folder."""
    from singr.config import load_config
    from singr.engine.data import discover, run_paths, split_cases

    from .plan import make_plan

    cfg = load_config(config, overrides)
    sweep_only = [str(o) for o in (cfg["tune"].get("train_overrides") or [])]
    if sweep_only:  # config file < tune.train_overrides < command line
        cfg = load_config(config, [*sweep_only, *overrides])
    plan = make_plan(cfg)
    cases = discover(plan.cfg)  # raises naming data.root when there are no cases
    addr = os.environ.get("RAY_ADDRESS", "")
    check_address(addr)
    if not resume and (plan.sweep_dir / "tuner.pkl").exists():
        raise SingrInputError("a sweep of this name exists; pick another tune.name or drop --no-resume",
                              path=plan.sweep_dir)
    split = split_cases(plan.cfg, cases, run_paths(plan.cfg))
    for part in ("train", "val"):
        if not split.get(part):
            raise SingrInputError(f"the split has no {part} cases ({len(cases)} cases, data.split_ratios "
                                  f"{plan.cfg['data']['split_ratios']}); a sweep needs both", path=plan.split_file)
    return plan, split


def start_ray() -> bool:
    """Connect to RAY_ADDRESS, or start a local Ray on loopback. Returns True when started here."""
    addr = os.environ.get("RAY_ADDRESS")
    if not addr:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node address 127.0.0.1
    import ray

    try:
        if addr:
            ray.init(address=addr, log_to_driver=True)
        else:
            # the dashboard (127.0.0.1) serves the state API that Ray Train's PlacementGroupCleaner
            # polls: without it, the worker placement groups of trials stopped by ASHA are never
            # freed and later trials wait forever for CPUs
            ray.init(address="local", include_dashboard=True, log_to_driver=True)
    except ConnectionError as e:
        raise SingrInputError(f"cannot connect to the Ray cluster at RAY_ADDRESS={addr!r}: {e}") from e
    return not addr


def run(config: str, overrides: Sequence[str] = (), resume: bool = True, progress: bool = True) -> int:
    t0 = time.time()
    plan, split = preflight(config, overrides, resume)
    import ray

    started = start_ray()
    try:
        return _run(plan, split, resume, progress, t0)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def _run(plan: Any, split: dict[str, list[str]], resume: bool, progress: bool, t0: float) -> int:
    import ray

    from .maps import compute_maps
    from .plan import METRIC, search_params
    from .sweep import concurrency, format_table, interrupted, run_search, trial_rows, write_csv, write_plot
    from .tracking import ChildRunCallback, close_parent, parent_run, register_best
    from .trainer import scaling
    from singr.experiment import is_grid

    cfg = plan.cfg
    resources = ray.cluster_resources()
    print(f"[tune] sweep {plan.name!r} in {plan.sweep_dir}; cluster {json.dumps({k: resources[k] for k in ('CPU', 'GPU') if k in resources})}",
          flush=True)
    ids = list(split["train"]) + list(split["val"])
    tm = time.time()
    maps = compute_maps(plan, ids, progress=progress)
    print(f"[tune] SiNG maps for lambda in {plan.lam_grid} over {maps['cases']} cases ({maps['actors']} actors, "
          f"{time.time() - tm:.1f} s): computed {maps['maps_computed']}, from cache {maps['maps_cached']}", flush=True)
    parent = parent_run(plan)
    scale = scaling(cfg, resources)
    conc = concurrency(cfg, resources, scale, plan.n_trials)
    kind = "grid runs (variants x seeds)" if is_grid(cfg) else "trials"
    print(f"[tune] {plan.n_trials} {kind}, up to {conc} at once; each {scale[0]} Train worker(s) x "
          f"{{CPU: {scale[1]:g}, GPU: {scale[2]:g}}}; MLflow {plan.tracking_uri} (parent run {parent})", flush=True)
    grid, restored = run_search(plan, scale, conc, [ChildRunCallback(plan, parent)], resume=resume)
    params = search_params(cfg)
    rows = trial_rows(grid, plan)
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"sweep": plan.name, "sweep_dir": str(plan.sweep_dir), "restored": restored,
                               "maps_computed": maps["maps_computed"], "maps_cached": maps["maps_cached"],
                               "n_trials": len(rows), "n_stopped_early": sum(r["stopped_early"] for r in rows),
                               "n_errors": sum(r["error"] for r in rows), "tracking_uri": plan.tracking_uri,
                               "parent_run_id": parent,
                               "trials": [{k: v for k, v in r.items() if k != "history"} for r in rows]}
    if interrupted(grid, plan.n_trials):
        summary["interrupted"] = True
        (plan.results_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        print(f"[tune] sweep interrupted; run the same command again to resume it from {plan.sweep_dir}",
              flush=True)
        return 130
    csv_p = write_csv(rows, plan.results_dir / "trials.csv")
    png_p = write_plot(rows, params, plan.results_dir / "sweep.png")
    ok = [r for r in rows if not r["error"] and r["checkpoint_path"]]
    if not ok:
        close_parent(plan, parent, "FAILED", summary, [csv_p])
        raise SingrInputError("no trial finished with a checkpoint; see the trial errors above", path=plan.sweep_dir)
    if is_grid(cfg):
        return _finish_grid(plan, parent, rows, summary, [csv_p, png_p], maps, t0)
    best = ok[0]
    best_pt = plan.results_dir / "best.pt"
    with ray.train.Checkpoint(best["checkpoint_path"]).as_directory() as d:
        src = Path(d) / "best.pt"
        if not src.exists():
            src = Path(d) / "last.pt"
        shutil.copy2(src, best_pt)
    model_name = best.get("model") or cfg["model"]["name"]
    tags = {"lam": best["lam"], "delta": best["delta"], "gamma": best["gamma"], "model": model_name,
            METRIC: round(best["val_Dice_best"], 6), "trial_id": best["trial_id"], "sweep": plan.name}
    if "lr" in best:
        tags["lr"] = best["lr"]
    reg = register_best(plan, parent, best_pt, tags)
    summary.update({"best": {k: v for k, v in best.items() if k != "history"}, "best_checkpoint": str(best_pt),
                    "best_val_Dice_mean": best["val_Dice_best"], "registered": reg,
                    "csv": str(csv_p), "plot": str(png_p), "wall_seconds": round(time.time() - t0, 1)})
    (plan.results_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    close_parent(plan, parent, "FINISHED", summary, [csv_p, png_p, plan.results_dir / "summary.json"])

    bp = ", ".join(f"{p}={best[p]:.4g}" if isinstance(best[p], float) else f"{p}={best[p]}" for p in params)
    print("\n[tune] trials (best first):\n" + format_table(rows, params))
    print(f"\n[tune] best: {bp}; val Dice {best['val_Dice_best']:.4f} (trial {best['trial_id']}, "
          f"{best['epochs_run']} epochs)")
    print(f"[tune] SiNG maps: computed {maps['maps_computed']}, from cache {maps['maps_cached']}")
    print(f"[tune] registered {reg['name']} version {reg['version']} as @{reg['alias']} ({reg['model_uri']})")
    print(f"[tune] best checkpoint: {best_pt}")
    print(f"[tune] results: {csv_p}, {png_p}; Ray experiment: {plan.sweep_dir}")
    print(f"[tune] MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1")
    print(f"[tune] done in {time.time() - t0:.0f} s", flush=True)
    return 0


def _finish_grid(plan: Any, parent: str, rows: list[dict[str, Any]], summary: dict[str, Any],
                 files: list[Path], maps: dict[str, int], t0: float) -> int:
    """A comparison grid ends with its report (``singr report``), not a registered model."""
    from singr.report import write_report

    from .tracking import close_parent

    split = plan.cfg["experiment"]["eval_split"]
    summary.update({"mode": "grid", "wall_seconds": round(time.time() - t0, 1)})
    (plan.results_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    close_parent(plan, parent, "FINISHED", summary, [*files, plan.results_dir / "summary.json"])
    print("\n[tune] grid runs:\n" + format_rows(rows, split))
    print(f"[tune] SiNG maps: computed {maps['maps_computed']}, from cache {maps['maps_cached']}")
    again = (f"singr report --experiment {plan.cfg['mlflow']['experiment']} --sweep {plan.name} "
             f"--tracking-uri {plan.tracking_uri}")
    try:
        rep = write_report(plan.tracking_uri, plan.cfg["mlflow"]["experiment"], plan.results_dir / "report",
                           sweep=plan.name)
        print(f"[tune] report: {rep['markdown']} (also in MLflow run {parent}, artifacts report/); "
              f"again, elsewhere: {again} --out DIR")
    except Exception as e:  # noqa: BLE001 - the grid itself finished; the report can be rerun
        print(f"[tune] the grid finished but its report failed ({type(e).__name__}: {e}); rerun: {again}",
              file=sys.stderr, flush=True)
    print(f"[tune] MLflow UI: mlflow ui --backend-store-uri {plan.tracking_uri} --host 127.0.0.1")
    print(f"[tune] done in {time.time() - t0:.0f} s", flush=True)
    return 0


def format_rows(rows: list[dict[str, Any]], split: str) -> str:
    lines = [f"{'variant':<22} {'seed':>4} {'val Dice':>9} {split + ' Dice':>10} {split + ' HD95':>10}"]
    for r in sorted(rows, key=lambda r: (str(r.get("variant")), r.get("seed") or 0)):
        lines.append(f"{str(r.get('variant')):<22} {r.get('seed')!s:>4} {r['val_Dice_best']:>9.4f} "
                     f"{r.get(f'{split}_Dice_mean', float('nan')):>10.4f} "
                     f"{r.get(f'{split}_HD95_mean', float('nan')):>10.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", default="synthetic.yaml",
                    help="YAML config (a path, or a name under configs/; default synthetic.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. tune.num_samples=8")
    ap.add_argument("--no-resume", action="store_true",
                    help="refuse to continue an existing sweep of the same name (default: restore it)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no Ray Data progress bars")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args.config, args.overrides, resume=not args.no_resume, progress=not args.quiet)
    except SingrInputError as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
