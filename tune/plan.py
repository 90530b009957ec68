"""The sweep plan: resolved absolute paths, the trial config for a set of hyperparameters,
and the MLflow URI. Nothing here imports Ray, so bad input is reported before any cluster
work starts."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from singr.config import with_values
from singr.engine.pipeline import run_paths
from singr.losses import is_regression_loss

from .config import ServiceConfig
from .grid import expand_variants, is_grid, variant_config
from .registry import resolve_tracking_uri

METRIC = "val_Dice_mean"
MODE = "max"
TIME_ATTR = "epoch"
# the hyperparameters a trial config may carry, and where they go in the config
PARAM_KEYS = {"lam": "sing.lam", "delta": "sing.delta", "gamma": "loss.gamma", "lr": "train.lr",
              "model": "model.name", "seed": "train.seed"}


@dataclass
class SweepPlan:
    cfg: ServiceConfig             # the resolved config (absolute paths)
    name: str                      # sweep name = Ray experiment folder name
    storage_path: Path             # Ray storage root
    sweep_dir: Path                # <storage_path>/<name>: Ray's experiment folder
    results_dir: Path              # <sweep_dir>/results: trials.csv, sweep.png, summary.json
    trials_dir: Path               # <sweep_dir>/singr_trials/<trial_id>: each trial's output_dir
    cache_dir: Path                # SiNG distance cache
    split_file: Path               # the split every trial uses
    tracking_uri: str              # MLflow

    @cached_property
    def lam_grid(self) -> list[float]:
        """Lambda values whose maps the sweep needs: tune.lam_grid for a search; for a grid,
        the sing.lam of every variant that regresses SiNG maps (none if all are hard-label)."""
        if is_grid(self.cfg):
            cfgs = [variant_config(self.cfg, v.name) for v in expand_variants(self.cfg)]
            return sorted({float(c.sing.lam) for c in cfgs if is_regression_loss(c.loss.name)})
        if not is_regression_loss(self.cfg.loss.name):
            return []
        return [float(v) for v in self.cfg.tune.lam_grid]

    @property
    def n_trials(self) -> int:
        if is_grid(self.cfg):
            assert self.cfg.experiment is not None
            return len(expand_variants(self.cfg)) * len(self.cfg.experiment.seeds)
        return int(self.cfg.tune.num_samples)


def _abs(p: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def make_plan(cfg: ServiceConfig) -> SweepPlan:
    """The plan of ``cfg``'s sweep: every path made absolute (trials run in other folders,
    on other nodes), the split file inside the sweep unless data.split_file names one."""
    t = cfg.tune
    name = t.name or f"tune-{Path(cfg.source or 'config').stem}"
    storage = _abs(t.storage_path)
    sweep = storage / name
    paths = run_paths(cfg)
    split = _abs(cfg.data.split_file) if cfg.data.split_file else sweep / "split.json"
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    cfg = with_values(cfg, {"output_dir": str(_abs(cfg.output_dir)), "data.root": str(_abs(cfg.data.root)),
                            "data.cache_dir": str(_abs(paths.cache_dir)), "data.split_file": str(split),
                            "tune.storage_path": str(storage), "tune.name": name, "mlflow.tracking_uri": uri})
    return SweepPlan(cfg, name, storage, sweep, sweep / "results", sweep / "singr_trials",
                     Path(cfg.data.cache_dir or ""), split, uri)


def trial_config(cfg: ServiceConfig, params: dict[str, Any], trial_dir: str | Path) -> ServiceConfig:
    """The config of one trial: ``cfg`` with the sampled hyperparameters (or, in a grid, the
    variant's settings and the seed) and its own output_dir."""
    out = variant_config(cfg, params["variant"]) if "variant" in params else cfg
    values: dict[str, Any] = {PARAM_KEYS[k]: v for k, v in params.items() if k in PARAM_KEYS}
    return with_values(out, {**values, "output_dir": str(trial_dir)})


def search_params(cfg: ServiceConfig) -> list[str]:
    if is_grid(cfg):
        return ["variant", "seed"]
    names = ["lam", "delta", "gamma"]
    if cfg.tune.lr:
        names.append("lr")
    if cfg.tune.models:
        names.append("model")
    return names
