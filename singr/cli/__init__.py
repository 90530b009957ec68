"""The ``singr`` command: one subcommand per stage of the pipeline (nnU-Net style).

    singr synth       write a synthetic BraTS-like data set (BraTS 2020 layout)
    singr prepare     raw scans into BraTS-space input (brainles-preprocessing: registration, skull stripping)
    singr preprocess  read, check and normalise cases; fill the SiNG distance cache
    singr config      print the resolved config (--show) or its JSON Schema (--schema)
    singr train       train a model from a config (resumes from last.safetensors; --fold k)
    singr evaluate    segment a split and write per-case metrics (voxel and lesion-wise) and a summary
    singr postprocess fit a model's post-processing rules on validation cases; write them with the model
    singr predict     segment one case (folder or modality files) into a label-map NIfTI
    singr export      the networks as TorchScript or ONNX, checked against PyTorch
    singr convert     rewrite a singr 0.1 checkpoint (.pt pickle) in the safe format
    singr tune        hyperparameter sweep on Ray (the tune extra; same as python -m tune)
    singr report      comparison report of a grid sweep, from MLflow (the tune extra)
    singr serve       HTTP inference endpoint on Ray Serve (the serve extra)

Every subcommand has --help; those that read a config take --config (a path, or the name
of a shipped config such as synthetic.yaml) and trailing key=value overrides. Bad input
ends with one line naming the case, file or key, and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from ..errors import SingrInputError
from ..plugins import missing, plugins
from . import data, inference, training

__all__ = ["COMMAND_GROUP", "build_parser", "main"]

COMMAND_GROUP = "singr.commands"
"""Entry-point group of the service commands: each entry is a function ``add(sub)`` that adds its
subcommand to ``sub`` (``tune``, ``report``: :mod:`tune.commands`; ``serve``: :mod:`serve.commands`)."""
EXTRAS = {"tune": "tune", "report": "tune", "serve": "serve"}
"""The service commands and the extra that brings each: without it, the command says so."""


def _plugins(sub: Any) -> None:
    """Add the installed service commands; a command that is not there says what to install."""
    order = list(EXTRAS)
    for ep in sorted(plugins(COMMAND_GROUP), key=lambda e: (order.index(e.name) if e.name in order else len(order),
                                                           e.name)):
        try:
            ep.load()(sub)
        except ImportError:
            continue
    for name, extra in EXTRAS.items():
        if name not in sub.choices:
            p = sub.add_parser(name, help=f"(not installed: needs the {extra} extra)")
            p.set_defaults(func=_missing(name, extra))


def _missing(name: str, extra: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise SingrInputError(missing(f"`singr {name}`", extra, extra))  # the extra names its package
    return run


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    ap = argparse.ArgumentParser(prog="singr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"singr {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data.register(sub)
    training.register(sub)
    inference.register(sub)
    _plugins(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SingrInputError as e:
        print(f"singr {args.command}: error: {e}", file=sys.stderr)
        return 2
