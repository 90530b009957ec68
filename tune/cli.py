"""``python -m tune --config <config> [key=value ...]``: maps -> sweep -> register.

With ``tune.mode: grid`` (configs/ablation*.yaml) the same pipeline runs a comparison
instead: every ``experiment`` variant x seed to the end, each evaluated on the test split,
and it ends with the report (``results/report/``) instead of registering a model.

Runs on the Ray cluster named by ``RAY_ADDRESS`` (as inside ``ray job submit``), or on a
local Ray started in-process on 127.0.0.1 when none is set. Bad input (a config error, a
data folder without cases, a cluster address or MLflow store that does not answer) stops
the command with one line naming the problem before any Ray work starts (exit code 2).

``python -m tune --tidy [-c CONFIG | --experiment NAME] [--tracking-uri URI] [--dry-run] [--force]``
closes the MLflow runs of sweep drivers that were killed outright (SIGKILL, a lost shell) and
stops what their own local Ray left running (:mod:`tune.tidy`): one line per run or process,
then a count. Every sweep does the same for its experiment before it starts.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

from singr.errors import SingrInputError

from .nodes import driver_env
from .session import RaySession, check_address, check_tracking_store

DEFAULT_CONFIG = "synthetic.yaml"


def preflight(config: str, overrides: Sequence[str], resume: bool
              ) -> tuple[Any, list[tuple[Any, dict[str, list[str]]]]]:
    """Everything checkable without Ray: config, cases and split of every data folder the
    runs read, address, MLflow store, sweep folder."""
    from .config import load_service_config
    from .plan import data_splits, find_cases, make_plan

    cfg = load_service_config(config, overrides)
    sweep_only = [str(o) for o in cfg.tune.train_overrides]
    if sweep_only:  # config file < tune.train_overrides < command line
        cfg = load_service_config(config, [*sweep_only, *overrides])
    plan = make_plan(cfg)
    found = find_cases(plan)  # raises naming the data folder; writes nothing
    address = os.environ.get("RAY_ADDRESS", "")
    os.environ.update(driver_env(address))  # before check_address, the first to import ray
    check_address(address)
    check_tracking_store(plan.tracking_uri, cfg.mlflow.experiment)
    from .tidy import tidy_quietly

    tidy_quietly(plan.tracking_uri, cfg.mlflow.experiment)  # runs of killed drivers; never this one's
    if not resume and (plan.sweep_dir / "tuner.pkl").exists():
        raise SingrInputError("a sweep of this name exists; pick another tune.name or drop --no-resume",
                              path=plan.sweep_dir)
    return plan, data_splits(plan, found)  # the splits are written only once every check passed


def run(config: str, overrides: Sequence[str] = (), resume: bool = True, progress: bool = True,
        verbose: bool = False) -> int:
    """The whole sweep (see the module docstring); returns the exit code."""
    t0 = time.time()
    plan, splits = preflight(config, overrides, resume)
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    with RaySession(log_dir=plan.sweep_dir / "logs", verbose=verbose,
                    worker_niceness=plan.cfg.tune.worker_niceness) as session:
        from .sweep import run_sweep
        from .tidy import driver_tags

        return run_sweep(plan, splits, resume=resume, progress=progress, t0=t0,
                         driver=lambda: driver_tags(session.session_dir, session.node_processes()))


def tidy(config: str | None, overrides: Sequence[str], experiment: str | None, tracking_uri: str | None,
         dry_run: bool = False, force: bool = False) -> int:
    """``--tidy``: :func:`tune.tidy.tidy_command` on ``experiment``, or on the experiment and
    tracking URI of ``config`` (default synthetic.yaml); ``tracking_uri`` overrides either."""
    from .hub.store import resolve_tracking_uri
    from .tidy import tidy_command

    if experiment is not None:
        if config is not None or overrides:
            raise SingrInputError("--tidy takes either --experiment NAME or -c CONFIG [KEY=VALUE ...], not both")
        return tidy_command([experiment], resolve_tracking_uri(tracking_uri), dry_run=dry_run, force=force)
    from .config import load_service_config

    cfg = load_service_config(config or DEFAULT_CONFIG, overrides)
    uri = resolve_tracking_uri(tracking_uri or cfg.mlflow.tracking_uri)
    return tidy_command([cfg.mlflow.experiment], uri, dry_run=dry_run, force=force)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", default=None,
                    help=f"YAML config: a path, or the name of a shipped config (default {DEFAULT_CONFIG})")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. tune.num_samples=8")
    ap.add_argument("--no-resume", action="store_true",
                    help="refuse to continue an existing sweep of the same name (default: restore it)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="Ray's own logs on the terminal too (default: in <sweep>/logs/ray.log)")
    t = ap.add_argument_group("tidy", "close the MLflow runs of killed sweep drivers, stop their Ray's leftovers")
    t.add_argument("--tidy", action="store_true", help="tidy instead of sweeping: the experiment of --config, "
                   "or --experiment")
    t.add_argument("--experiment", "-e", help="MLflow experiment to tidy (instead of the config's)")
    t.add_argument("--tracking-uri", help="MLflow store (default: the config's mlflow.tracking_uri, else "
                   "$MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    t.add_argument("--dry-run", action="store_true", help="say what would be tidied, change nothing")
    t.add_argument("--force", action="store_true", help="also close RUNNING runs whose driver cannot be checked "
                   "(driven from another host, or recorded before drivers were)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.tidy:
            return tidy(args.config, args.overrides, args.experiment, args.tracking_uri, dry_run=args.dry_run,
                        force=args.force)
        if args.experiment or args.tracking_uri or args.dry_run or args.force:
            raise SingrInputError("--experiment, --tracking-uri, --dry-run and --force go with --tidy; a sweep "
                                  "takes mlflow.experiment=... and mlflow.tracking_uri=... overrides")
        return run(args.config or DEFAULT_CONFIG, args.overrides, resume=not args.no_resume, progress=not args.quiet,
                   verbose=args.verbose)
    except SingrInputError as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
