"""What the core commands share: the config options, the model source options, and loading a
model (a Predictor) from files, a model folder or a store (:mod:`singr.engine.source`)."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from ..engine.source import local_model
from ..errors import SingrInputError


def add_config(p: argparse.ArgumentParser, default: str | None = "synthetic.yaml") -> None:
    p.add_argument("--config", "-c", default=default,
                   help=f"YAML config: a path, or the name of a shipped config (default {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in dotted form, e.g. train.epochs=5 sing.lam=0.7")


def config_of(args: argparse.Namespace) -> Any:
    from ..config import load_config

    return load_config(args.config, args.overrides)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring over the 3 axes (default: the model's infer.tta)")
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the model's post-processing rules (default: infer.postprocess of --config where "
                   "the command takes one, else of the model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a singr 0.1 checkpoint (.pt, a torch pickle that can run code when loaded)")


def add_model_source(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model`` (alias ``--checkpoint``): checkpoint file(s), a model folder or a registry URI;
    ``default`` says what the command uses without it (None: the option is required)."""
    p.add_argument("--model", "--checkpoint", nargs="+", dest="model", required=default is None,
                   help="checkpoint file(s) (several: an ensemble), a model folder, or models:/<name>@<alias>"
                   + (f" (default: {default})" if default else ""))


def model_files(source: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Local paths of a model: the files or folder given, or a registry model downloaded."""
    return local_model(source, getattr(args, "tracking_uri", None))


def load_model(source: Sequence[str], args: argparse.Namespace, cfg: Any = None, **settings: Any) -> Any:
    """A Predictor from checkpoint files, a model folder, or an MLflow registry URI. Mirroring and
    post-processing: the command line's --tta/--postprocess, else ``cfg.infer`` (when the command
    was given a config), else the model's own config; ``settings`` override all of them."""
    from ..engine.bundle import load_predictor

    src = model_files(source, args)
    tta, post = args.tta, args.postprocess
    if cfg is not None:
        tta = cfg.infer.tta if tta is None else tta
        post = cfg.infer.postprocess if post is None else post
    chosen = {"tta": tta, "postprocess": post, **settings}
    return load_predictor(src[0] if len(src) == 1 else src, args.device, trust=args.trust_checkpoint, **chosen)


def default_model(cfg: Any, fold: int | None, command: str) -> list[str]:
    """``<output_dir>/checkpoints/best.safetensors`` of ``cfg`` (of fold ``fold``)."""
    from ..engine.pipeline import fold_config, run_paths
    from ..engine.trainer import BEST

    if cfg is None:
        raise SingrInputError(f"`singr {command}`: give --model (a checkpoint, model folder or registry URI) or "
                              f"--config (whose output_dir holds checkpoints/{BEST})")
    return [str(run_paths(fold_config(cfg, fold)).checkpoints / BEST)]
