"""The service's subcommands of ``singr``: ``singr tune`` and ``singr report``, plugged in through
the entry-point group ``singr.commands`` (pyproject.toml). Nothing here imports Ray: the
commands import their work when they run, so ``singr --help`` stays fast."""
from __future__ import annotations

import argparse
from typing import Any

from singr.cli.options import add_config
from singr.errors import SingrInputError

__all__ = ["add_tune", "add_report"]


def add_tune(sub: Any) -> None:
    """``singr tune``: the sweep (same as ``python -m tune``)."""
    p = sub.add_parser("tune", help="hyperparameter sweep on Ray (maps -> Tune/Optuna/ASHA -> MLflow)",
                       description="Same as `python -m tune`: SiNG maps for tune.lam_grid with Ray Data, an "
                       "Optuna + ASHA sweep of training trials (Ray Train for DDP), MLflow tracking, best model "
                       "registered. "
                       "Uses RAY_ADDRESS when set, else a local Ray on 127.0.0.1; rerun to resume.")
    add_config(p)
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing sweep of the same name")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--verbose", "-v", action="store_true", help="Ray's own logs on the terminal too")
    p.set_defaults(func=cmd_tune)


def add_report(sub: Any) -> None:
    """``singr report``: the report of a comparison grid, from MLflow."""
    p = sub.add_parser("report", help="Markdown report + figures of a comparison grid, from its MLflow runs",
                       description="Read the newest grid sweep (tune.mode: grid) of an MLflow experiment and write "
                       "report.md (Dice and HD95 per region, mean ± SE over seeds, paired differences with "
                       "bootstrap intervals and Wilcoxon tests), charts and case overlays; also logged to MLflow.")
    p.add_argument("--experiment", "-e", required=True, help="MLflow experiment name (mlflow.experiment of the config)")
    p.add_argument("--sweep", help="sweep name (tune.name); default: the newest grid sweep of the experiment")
    p.add_argument("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--out", "-o", help="output folder (default reports/<sweep or experiment>)")
    p.add_argument("--overlay-cases", type=int, default=None, help="cases in the overlay figure "
                   "(default experiment.overlay_cases; 0: none)")
    p.add_argument("--device", default="cpu", help="device for the overlay predictions (cpu | cuda | auto)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's MLflow run")
    p.add_argument("--notes-from", metavar="CONFIG", help="take the Notes section (experiment.notes) from this "
                   "config instead of the one the sweep stored (notes written after the run: wall time, reading)")
    p.set_defaults(func=cmd_report)


def cmd_tune(args: argparse.Namespace) -> int:
    try:  # Ray lives in the optional tune package: imported here, never at module import time
        from .cli import run
    except ImportError as e:
        raise SingrInputError(f"`singr tune` needs the tune extra (pip install 'singr[tune]'): {e}") from None
    return run(args.config, args.overrides, resume=not args.no_resume, progress=not args.quiet,
               verbose=args.verbose)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .report import run_report
    except ImportError as e:
        raise SingrInputError(f"`singr report` reads MLflow and needs the tune extra "
                              f"(pip install 'singr[tune]'): {e}") from None
    return run_report(experiment=args.experiment, sweep=args.sweep, tracking_uri=args.tracking_uri, out=args.out,
                      overlay_cases=args.overlay_cases, device=args.device, log=not args.no_log,
                      notes_from=args.notes_from)
