"""The sweep plan: resolved absolute paths, the trial config for a set of hyperparameters,
the data each run reads, and the MLflow URI. Nothing here imports Ray, so bad input is
reported before any cluster work starts.

The objective is ``tune.metric`` (a validation mean over regions; HD95 ones are minimised):
the searcher, ASHA, the ranking of trials and the registered score use it, and every run's
``train.select_metric`` is set to it, so a trial's best checkpoint is best by the same measure.
A refit run (params with ``fold``; :mod:`tune.ensemble`) trains fold ``fold`` of
``data.folds = folds`` and writes to ``<trials_dir>/fold_<fold>``.

A grid variant or axis level that sets ``data.root`` reads its own data folder: its paths
are made absolute here, and unless it names them itself it gets that folder's own
preprocessing cache (``<root>/.singr_cache``, or ``<data.cache_dir>/<folder>-<hash>`` when
the config names one cache for all) and split file (``<sweep>/split-<folder>-<hash>.json``,
unless ``data.split_file`` names one). Runs over the same folder share both: one
:class:`DataGroup` each, one map stage each (``SweepPlan.data_groups``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from singr.config import with_values
from singr.config.schema import SELECT_METRICS
from singr.engine.pipeline import fold_dir, run_paths
from singr.losses import is_regression_loss

from .config import ServiceConfig
from .grid import data_key, expand_variants, is_grid, variant_config
from .hub.store import resolve_tracking_uri

METRIC = "val_Dice_mean"   # the default objective (tune.metric); a sweep's own is SweepPlan.metric
MODE = "max"
TIME_ATTR = "epoch"
# the hyperparameters a trial config may carry, and where they go in the config
PARAM_KEYS = {"lam": "sing.lam", "delta": "sing.delta", "gamma": "loss.gamma", "lr": "train.lr",
              "weight_decay": "train.weight_decay", "fg_oversample": "train.fg_oversample",
              "model": "model.name", "seed": "train.seed"}


DATA_PATHS = ("data.root", "data.cache_dir", "data.split_file")


@dataclass(frozen=True)
class DataGroup:
    """Runs reading the same data (root, cache, split file): one map stage."""

    cfg: ServiceConfig             # the config of the group's first variant (the sweep's for a search)
    lams: tuple[float, ...]        # lambdas whose SiNG maps its runs need (none: hard labels only)
    variants: tuple[str, ...]      # the grid variants that read it (empty for a search)


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

    @property
    def metric(self) -> str:
        """The objective: ``tune.metric`` (e.g. ``val_Dice_mean``)."""
        return str(self.cfg.tune.metric)

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"`` (HD95 metrics), from the objective."""
        return metric_mode(self.metric)

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

    @cached_property
    def data_groups(self) -> list[DataGroup]:
        """The data the runs read, in the order the variants first use it (see the module docstring)."""
        if not is_grid(self.cfg):
            return [DataGroup(self.cfg, tuple(self.lam_grid), ())]
        groups: dict[tuple[str, str, str], tuple[ServiceConfig, set[float], list[str]]] = {}
        for v in expand_variants(self.cfg):
            c = variant_config(self.cfg, v.name)
            cfg, lams, names = groups.setdefault(data_key(c), (c, set(), []))
            names.append(v.name)
            if is_regression_loss(c.loss.name):
                lams.add(float(c.sing.lam))
        return [DataGroup(c, tuple(sorted(lams)), tuple(names)) for c, lams, names in groups.values()]

    @property
    def n_trials(self) -> int:
        if is_grid(self.cfg):
            assert self.cfg.experiment is not None
            return len(expand_variants(self.cfg)) * len(self.cfg.experiment.seeds)
        return int(self.cfg.tune.num_samples)


def metric_mode(metric: str) -> str:
    """``"max"`` or ``"min"``: the direction of a validation metric that may be an objective."""
    return SELECT_METRICS[metric]


def better(a: float, b: float, mode: str) -> bool:
    """Whether score ``a`` beats ``b`` under ``mode`` (a NaN never beats, and is beaten by, a number)."""
    if a != a:
        return False
    if b != b:
        return True
    return a > b if mode == "max" else a < b


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
    values: dict[str, Any] = {"output_dir": str(_abs(cfg.output_dir)), "data.root": str(_abs(cfg.data.root)),
                              "data.cache_dir": str(_abs(paths.cache_dir)), "data.split_file": str(split),
                              "tune.storage_path": str(storage), "tune.name": name, "mlflow.tracking_uri": uri,
                              "train.select_metric": cfg.tune.metric}
    if is_grid(cfg) and cfg.experiment is not None:
        values.update(_variant_data(cfg, values, sweep))
    cfg = with_values(cfg, values)
    return SweepPlan(cfg, name, storage, sweep, sweep / "results", sweep / "singr_trials",
                     Path(cfg.data.cache_dir or ""), split, uri)


def _folder_tag(root: Path) -> str:
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def _resolve_sets(sets: list[str], cfg: ServiceConfig, base: dict[str, Any], sweep: Path) -> list[str]:
    """``sets`` with data paths absolute and, when they change data.root, that folder's own
    cache and split file (see the module docstring)."""
    from singr.config.loader import parse_override

    out: list[str] = []
    given: dict[str, Any] = {}
    for text in sets:
        parts, value = parse_override(text)
        key = ".".join(parts)
        if key in DATA_PATHS:
            value = None if value is None else str(_abs(str(value)))
            given[key] = value
            text = f"{key}={json.dumps(value)}"  # a JSON string is YAML: any path survives the round trip
        out.append(text)
    root = given.get("data.root")
    if root is None or root == base["data.root"]:
        return out
    if "data.cache_dir" not in given:
        cache = Path(root) / ".singr_cache" if cfg.data.cache_dir is None else \
            Path(base["data.cache_dir"]) / _folder_tag(Path(root))
        out.append(f"data.cache_dir={json.dumps(str(cache))}")
    if "data.split_file" not in given and cfg.data.split_file is None:
        out.append(f"data.split_file={json.dumps(str(sweep / f'split-{_folder_tag(Path(root))}.json'))}")
    return out


def _variant_data(cfg: ServiceConfig, base: dict[str, Any], sweep: Path) -> dict[str, Any]:
    """experiment.variants and experiment.axis with their data paths resolved."""
    e = cfg.experiment
    assert e is not None
    out: dict[str, Any] = {"experiment.variants": [
        {**v.model_dump(), "set": _resolve_sets(list(v.set), cfg, base, sweep)} for v in e.variants]}
    if e.axis is not None:
        out["experiment.axis"] = {"name": e.axis.name, "levels": [
            {**lv.model_dump(), "set": _resolve_sets(list(lv.set), cfg, base, sweep)} for lv in e.axis.levels]}
    return out


def find_cases(plan: SweepPlan) -> list[tuple[DataGroup, list[Any]]]:
    """Each data group with its cases; a folder without cases is an error naming it. Writes nothing."""
    from singr.engine.pipeline import discover

    return [(g, discover(g.cfg)) for g in plan.data_groups]


def data_splits(plan: SweepPlan, found: list[tuple[DataGroup, list[Any]]] | None = None
                ) -> list[tuple[DataGroup, dict[str, list[str]]]]:
    """Each data group's split (made and saved here, once, by the driver), checked: a folder
    without cases, or a split without train or val cases, is an error naming it. ``found``:
    :func:`find_cases`'s answer when the caller already has it."""
    from singr.engine.pipeline import split_cases
    from singr.errors import SingrInputError

    out = []
    for g, cases in find_cases(plan) if found is None else found:
        split = split_cases(g.cfg, cases, run_paths(g.cfg))
        for part in ("train", "val"):
            if not split.get(part):
                raise SingrInputError(f"the split has no {part} cases ({len(cases)} cases in {g.cfg.data.root}, "
                                      f"data.split_ratios {g.cfg.data.split_ratios}); a sweep needs both",
                                      path=run_paths(g.cfg).split_file)
        out.append((g, split))
    return out


def trial_config(cfg: ServiceConfig, params: dict[str, Any], trial_dir: str | Path) -> ServiceConfig:
    """The config of one trial: ``cfg`` with the sampled hyperparameters (or, in a grid, the
    variant's settings and the seed) and its own output_dir ``trial_dir``; a refit run (params
    ``fold`` and ``folds``) has ``data.folds = folds`` and writes to ``<trial_dir's parent>/fold_<fold>``."""
    out = variant_config(cfg, params["variant"]) if "variant" in params else cfg
    values: dict[str, Any] = {PARAM_KEYS[k]: v for k, v in params.items() if k in PARAM_KEYS}
    if params.get("fold") is not None:
        values["data.folds"] = int(params["folds"])
        trial_dir = fold_dir(Path(trial_dir).parent, int(params["fold"]))
    return with_values(out, {**values, "output_dir": str(trial_dir)})


def search_params(cfg: ServiceConfig) -> list[str]:
    if is_grid(cfg):
        return ["variant", "seed"]
    names = ["lam", "delta", "gamma"]
    if cfg.tune.lr:
        names.append("lr")
    if cfg.tune.weight_decay:
        names.append("weight_decay")
    if cfg.tune.fg_oversample:
        names.append("fg_oversample")
    if cfg.tune.models:
        names.append("model")
    return names


def own_setting(cfg: ServiceConfig) -> dict[str, Any]:
    """The config's own value of each searched hyperparameter (:func:`~tune.plan.search_params`
    order): sing.lam, sing.delta, loss.gamma, then train.lr, train.weight_decay,
    train.fg_oversample and model.name where the search varies them."""
    def value(key: str) -> Any:
        out: Any = cfg
        for part in key.split("."):
            out = getattr(out, part)
        return out

    return {p: value(PARAM_KEYS[p]) for p in search_params(cfg)}
