"""The sweep plan: resolved paths, the trial config for a set of hyperparameters, MLflow URI.

Nothing here imports Ray, so bad input is reported before any cluster work starts.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from singr.engine.data import run_paths
from singr.experiment import expand_variants, is_grid, variant_config
from singr.tracking_uri import resolve_tracking_uri

METRIC = "val_Dice_mean"
MODE = "max"
TIME_ATTR = "epoch"
# the hyperparameters a trial config may carry, and where they go in the singr config
PARAM_KEYS = {"lam": ("sing", "lam"), "delta": ("sing", "delta"), "gamma": ("loss", "gamma"),
              "lr": ("train", "lr"), "model": ("model", "name"), "seed": ("train", "seed")}


def is_regression_loss_cfg(cfg: dict[str, Any]) -> bool:
    from singr.losses import is_regression_loss

    return is_regression_loss(cfg["loss"]["name"])


@dataclass
class SweepPlan:
    cfg: dict[str, Any]            # the resolved config (absolute paths)
    name: str                      # sweep name = Ray experiment folder name
    storage_path: Path             # Ray storage root
    sweep_dir: Path                # <storage_path>/<name>: Ray's experiment folder
    results_dir: Path              # <sweep_dir>/results: trials.csv, sweep.png, summary.json
    trials_dir: Path               # <sweep_dir>/singr_trials/<trial_id>: singr output_dir of each trial
    cache_dir: Path                # SiNG distance cache
    split_file: Path               # the split every trial uses
    tracking_uri: str              # MLflow

    @cached_property
    def lam_grid(self) -> list[float]:
        """Lambda values whose maps the sweep needs: tune.lam_grid for a search; for a grid,
        the sing.lam of every variant that regresses SiNG maps (none if all are hard-label)."""
        if is_grid(self.cfg):
            cfgs = [variant_config(self.cfg, v.name) for v in expand_variants(self.cfg)]
            return sorted({float(c["sing"]["lam"]) for c in cfgs if is_regression_loss_cfg(c)})
        if not is_regression_loss_cfg(self.cfg):
            return []
        return [float(v) for v in self.cfg["tune"]["lam_grid"]]

    @property
    def n_trials(self) -> int:
        if is_grid(self.cfg):
            return len(expand_variants(self.cfg)) * len(self.cfg["experiment"]["seeds"])
        return int(self.cfg["tune"]["num_samples"])


def _abs(p: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def tracking_uri(cfg: dict[str, Any]) -> str:
    """mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else an embedded sqlite store in the cwd."""
    return resolve_tracking_uri(cfg["mlflow"].get("tracking_uri"))


def make_plan(cfg: dict[str, Any]) -> SweepPlan:
    cfg = copy.deepcopy(cfg)
    t = cfg["tune"]
    name = t.get("name") or f"tune-{Path(cfg.get('_source', 'config')).stem}"
    storage = _abs(t["storage_path"])
    sweep = storage / name
    cfg["output_dir"] = str(_abs(cfg["output_dir"]))
    cfg["data"]["root"] = str(_abs(cfg["data"]["root"]))
    paths = run_paths(cfg)
    cache = _abs(paths.cache_dir)
    cfg["data"]["cache_dir"] = str(cache)
    split = _abs(cfg["data"]["split_file"]) if cfg["data"].get("split_file") else sweep / "split.json"
    cfg["data"]["split_file"] = str(split)
    cfg["tune"]["storage_path"] = str(storage)
    cfg["tune"]["name"] = name
    cfg["train"]["progress"] = False
    uri = tracking_uri(cfg)
    cfg["mlflow"]["tracking_uri"] = uri
    return SweepPlan(cfg, name, storage, sweep, sweep / "results", sweep / "singr_trials", cache, split, uri)


def trial_config(cfg: dict[str, Any], params: dict[str, Any], trial_dir: str | Path) -> dict[str, Any]:
    """The singr config of one trial: ``cfg`` with the sampled hyperparameters (or, in a grid,
    the variant's settings and the seed) and its own output_dir."""
    out = variant_config(cfg, params["variant"]) if "variant" in params else copy.deepcopy(cfg)
    for k, v in params.items():
        if k in PARAM_KEYS:
            sec, key = PARAM_KEYS[k]
            out[sec][key] = v
    out["output_dir"] = str(trial_dir)
    return out


def search_params(cfg: dict[str, Any]) -> list[str]:
    if is_grid(cfg):
        return ["variant", "seed"]
    t = cfg["tune"]
    names = ["lam", "delta", "gamma"]
    if t.get("lr"):
        names.append("lr")
    if t.get("models"):
        names.append("model")
    return names
