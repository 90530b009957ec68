"""YAML configs: inheritance, command-line overrides and validation.

A config file may name another with ``base: other.yaml`` (relative to itself); the result
is the base deep-merged with the file. Every chain ends on the reference config
``configs/brats.yaml``, which holds every key the code reads and the paper's defaults.
A key that the reference does not have is an error naming the key and the file, and so is
a value of the wrong type or out of range.

Overrides are ``dotted.key=value`` strings, the value parsed as YAML
(``train.epochs=3``, ``sing.lam=0.7``, ``train.patch_size=[64,64,64]``).
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import SingrConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
REFERENCE = CONFIG_DIR / "brats.yaml"

# (low, high, low_inclusive, high_inclusive) for numeric keys
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "sing.lam": (0.0, 1.0, True, True),
    "sing.delta": (0.0, 1.0, True, False),
    "sing.iterations": (1, math.inf, True, True),
    "loss.gamma": (0.0, math.inf, True, True),
    "loss.eps": (0.0, math.inf, True, True),
    "model.dropout": (0.0, 1.0, True, False),
    "train.epochs": (1, math.inf, True, True),
    "train.iters_per_epoch": (1, math.inf, True, True),
    "train.batch_size": (1, math.inf, True, True),
    "train.lr": (0.0, math.inf, False, True),
    "train.weight_decay": (0.0, math.inf, True, True),
    "train.val_every": (1, math.inf, True, True),
    "augment.flip_prob": (0.0, 1.0, True, True),
    "augment.intensity_prob": (0.0, 1.0, True, True),
    "augment.intensity_scale": (0.0, math.inf, True, True),
    "augment.intensity_shift": (0.0, math.inf, True, True),
    "infer.overlap": (0.0, 1.0, True, False),
    "infer.sw_batch_size": (1, math.inf, True, True),
    "synth.n_cases": (1, math.inf, True, True),
    "tune.num_samples": (1, math.inf, True, True),
    "tune.max_concurrent": (1, math.inf, True, True),
    "tune.num_workers": (1, math.inf, True, True),
    "tune.cpus_per_worker": (0.0, math.inf, False, True),
    "tune.gpus_per_worker": (0.0, math.inf, True, True),
    "tune.map_actors": (1, math.inf, True, True),
    "tune.map_cpus": (0.0, math.inf, False, True),
    "tune.map_gpus": (0.0, math.inf, True, True),
    "tune.max_failures": (-1, math.inf, True, True),
    "tune.asha.grace_period": (1, math.inf, True, True),
    "tune.asha.reduction_factor": (1.0, math.inf, False, True),
    "experiment.overlay_cases": (0, math.inf, True, True),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.layout": ("auto", "brats2020", "brats2023", "lgg", "nnunet"),
    "data.label_convention": ("auto", "brats2020", "brats2023", "binary"),
    "sing.boundary": ("3d", "canny2d"),
    "sing.engine": ("fast", "fastgeodis"),
    "model.name": ("unet3d", "segresnet", "swinunetr", "unetr", "unetpp"),
    "loss.name": ("focal_l1", "focal_l1_dagger", "l1", "l2", "product", "dice_bce"),
    "infer.mode": ("constant", "gaussian"),
    "loss.product_mode": ("image", "voxel"),
    "tune.mode": ("search", "grid"),
    "experiment.eval_split": ("test", "train"),  # not val: it picks each run's best.pt
}
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Keys whose value is free-form (a mapping the reference leaves open).
_OPEN: set[str] = set()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SingrConfigError(f"cannot read config: {e.strerror}", path=path) from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise SingrConfigError(f"not valid YAML: {e}", path=path) from e
    if not isinstance(data, dict):
        raise SingrConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path=path)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _OPEN:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[tuple[Path, dict]]]:
    path = path.resolve()
    if path in seen:
        raise SingrConfigError("config inherits from itself through 'base:'", path=path)
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data, [(path, data)]
    merged, files = _load_chain((path.parent / str(base)), seen + (path,))
    return deep_merge(merged, data), files + [(path, data)]


def _check_keys(data: dict[str, Any], ref: dict[str, Any], path: Path | str, prefix: str = "") -> None:
    for k, v in data.items():
        dotted = f"{prefix}{k}"
        if k not in ref:
            known = ", ".join(sorted(ref))
            raise SingrConfigError(f"unknown key {dotted!r}; known keys here: {known}", path=path)
        if isinstance(v, dict) and isinstance(ref[k], dict) and dotted not in _OPEN:
            _check_keys(v, ref[k], path, dotted + ".")


def _flat(d: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict) and f"{prefix}{k}" not in _OPEN:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _type_ok(value: Any, ref_value: Any) -> bool:
    if ref_value is None or value is None:
        return True
    if isinstance(ref_value, bool):
        return isinstance(value, bool)
    if isinstance(ref_value, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(ref_value, list):
        return isinstance(value, list)
    if isinstance(ref_value, str):
        return isinstance(value, str)
    if isinstance(ref_value, dict):
        return isinstance(value, dict)
    return True


def validate(cfg: dict[str, Any], ref: dict[str, Any], source: Path | str = "<config>") -> None:
    """Raise SingrConfigError for unknown keys, wrong types and out-of-range values."""
    _check_keys(cfg, ref, source)
    ref_flat = dict(_flat(ref))
    for key, value in _flat(cfg):
        if key in ref_flat and not _type_ok(value, ref_flat[key]):
            raise SingrConfigError(
                f"{key} = {value!r} has the wrong type; expected {type(ref_flat[key]).__name__} "
                f"like the reference value {ref_flat[key]!r}", path=source)
        if key in _RANGES and value is not None:
            lo, hi, lo_inc, hi_inc = _RANGES[key]
            ok = (value >= lo if lo_inc else value > lo) and (value <= hi if hi_inc else value < hi)
            if not ok:
                lb, rb = ("[" if lo_inc else "("), ("]" if hi_inc else ")")
                raise SingrConfigError(f"{key} = {value!r} is out of range; expected a value in {lb}{lo}, {hi}{rb}",
                                       path=source)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise SingrConfigError(f"{key} = {value!r}; expected one of {', '.join(_CHOICES[key])}", path=source)
    ratios = cfg.get("data", {}).get("split_ratios")
    if ratios is not None:
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise SingrConfigError(f"data.split_ratios = {ratios!r}; expected three non-negative numbers "
                                   "(train, val, test) that sum to 1", path=source)
    _check_tune(cfg.get("tune") or {}, source)
    if cfg.get("experiment") is not None:
        _check_experiment(cfg, ref, source)
    for key in ("train.patch_size", "infer.roi_size", "synth.shape"):
        sec, name = key.split(".")
        v = cfg.get(sec, {}).get(name)
        if v is not None and (len(v) != 3 or any((not isinstance(x, int)) or x < 1 for x in v)):
            raise SingrConfigError(f"{key} = {v!r}; expected three positive integers", path=source)


def _check_tune(t: dict[str, Any], source: Path | str) -> None:
    """Search bounds of the ``tune`` section: each must lie in its parameter's range, low <= high."""
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    grid = t.get("lam_grid")
    if grid is not None:
        if not isinstance(grid, list) or not grid or not all(num(v) and 0.0 <= v <= 1.0 for v in grid):
            raise SingrConfigError(f"tune.lam_grid = {grid!r}; expected a non-empty list of lambda values "
                                   "in [0, 1]", path=source)
    bounds = {"tune.delta": (0.0, 1.0, False, "[0, 1)"), "tune.gamma": (0.0, math.inf, True, "[0, inf)"),
              "tune.lr": (0.0, math.inf, True, "(0, inf)")}
    for key, (lo, hi, hi_inc, text) in bounds.items():
        v = t.get(key.split(".")[1])
        if v is None:
            continue
        if not isinstance(v, list) or len(v) != 2 or not all(num(x) for x in v):
            raise SingrConfigError(f"{key} = {v!r}; expected [low, high], two numbers in {text}", path=source)
        a, b = v
        low_ok = (a > lo) if key == "tune.lr" else (a >= lo)
        if not low_ok or not (b <= hi if hi_inc else b < hi) or not (b >= lo):
            raise SingrConfigError(f"{key} = {v!r} is out of range; both bounds must lie in {text}", path=source)
        if a > b:
            raise SingrConfigError(f"{key} = {v!r}; low {a} is greater than high {b}", path=source)
    models = t.get("models")
    if models is not None:
        if not isinstance(models, list) or not models or any(m not in _CHOICES["model.name"] for m in models):
            raise SingrConfigError(f"tune.models = {models!r}; expected a non-empty list of "
                                   f"{', '.join(_CHOICES['model.name'])}", path=source)


def _check_experiment(cfg: dict[str, Any], ref: dict[str, Any], source: Path | str) -> None:
    """The comparison grid: seeds, variant names/labels/settings, baseline/highlight, architectures.

    Each variant's ``set`` is applied to the config and the result validated, so a typo in
    a variant is reported (naming the variant) before any run starts.
    """
    e = cfg["experiment"]
    seeds = e.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool)
                                                          for x in seeds) or len(set(seeds)) != len(seeds):
        raise SingrConfigError(f"experiment.seeds = {seeds!r}; expected a non-empty list of distinct integers",
                               path=source)
    variants = e.get("variants") or []
    if (cfg.get("tune") or {}).get("mode") == "grid" and not variants:
        raise SingrConfigError("tune.mode = 'grid' needs experiment.variants (a non-empty list)", path=source)
    names: list[str] = []
    for i, v in enumerate(variants):
        where = f"experiment.variants[{i}]"
        if not isinstance(v, dict) or set(v) - {"name", "label", "set"} or "name" not in v:
            raise SingrConfigError(f"{where} = {v!r}; expected a mapping with name, optional label and "
                                   "set (a list of key=value)", path=source)
        name = v["name"]
        if not isinstance(name, str) or not _SLUG.match(name):
            raise SingrConfigError(f"{where}.name = {name!r}; expected a short name of letters, digits, "
                                   "'_', '.' or '-' (it names folders and MLflow params)", path=source)
        if name in names:
            raise SingrConfigError(f"{where}.name = {name!r} is used twice; variant names must be unique",
                                   path=source)
        names.append(name)
        sets = v.get("set") or []
        if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
            raise SingrConfigError(f"{where}.set = {sets!r}; expected a list of 'key=value' strings", path=source)
        for text in sets:
            if text.split("=", 1)[0].strip().split(".")[0] in ("experiment", "tune", "mlflow"):
                raise SingrConfigError(f"{where}.set: {text!r}; a variant may not change the experiment, tune "
                                       "or mlflow sections", path=source)
        try:
            vcfg = apply_overrides({k: x for k, x in cfg.items() if k != "experiment"}, sets, ref)
            validate(vcfg, ref, source)
        except SingrConfigError as err:
            raise SingrConfigError(f"{where}.set (variant {name!r}): {err.reason}", path=source) from None
    for key in ("baseline", "highlight"):
        if e.get(key) is not None and e[key] not in names:
            raise SingrConfigError(f"experiment.{key} = {e[key]!r} is not a variant name; variants: "
                                   f"{', '.join(names) or 'none'}", path=source)
    archs = e.get("architectures") or []
    if archs:
        bad = [a for a in archs if a not in _CHOICES["model.name"]]
        if bad:
            raise SingrConfigError(f"experiment.architectures = {archs!r}; {bad[0]!r} is not one of "
                                   f"{', '.join(_CHOICES['model.name'])}", path=source)
        if not (e.get("baseline") and e.get("highlight")):
            raise SingrConfigError("experiment.architectures needs experiment.baseline and experiment.highlight "
                                   "(each architecture runs both)", path=source)
        if len(set(archs)) != len(archs):
            raise SingrConfigError(f"experiment.architectures = {archs!r} names an architecture twice", path=source)
        made = {f"{a}-{e[k]}" for a in archs for k in ("baseline", "highlight")}
        clash = sorted(made & set(names))
        if clash:
            raise SingrConfigError(f"variant name {clash[0]!r} is also the name experiment.architectures gives "
                                   "an architecture's run; rename the variant", path=source)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SingrConfigError(f"override {text!r} is not of the form dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise SingrConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise SingrConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    return key.split("."), value


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str], ref: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node, rnode = cfg, ref
        for i, p in enumerate(parts[:-1]):
            if not isinstance(rnode, dict) or p not in rnode or not isinstance(rnode[p], dict):
                raise SingrConfigError(f"override {text!r}: unknown section {'.'.join(parts[:i + 1])!r}")
            node = node.setdefault(p, {})
            rnode = rnode[p]
        if not isinstance(rnode, dict) or parts[-1] not in rnode:
            raise SingrConfigError(f"override {text!r}: unknown key {'.'.join(parts)!r}")
        node[parts[-1]] = value
    return cfg


def load_reference() -> dict[str, Any]:
    return _read_yaml(REFERENCE)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load ``path`` (default: the reference), merge its bases, apply overrides, validate.

    A file whose chain does not reach the reference is merged over it, so every key has a
    value. The returned dict carries ``_source`` (the file it came from).
    """
    ref = load_reference()
    if path is None:
        path = REFERENCE
    path = Path(path)
    if not path.exists():
        alt = CONFIG_DIR / path
        if not path.is_absolute() and alt.exists():
            path = alt
        else:
            raise SingrConfigError("config file not found", path=path)
    merged, files = _load_chain(path)
    for fpath, fdata in files:
        _check_keys(fdata, ref, fpath)
    if files[0][0] != REFERENCE.resolve():
        merged = deep_merge(ref, merged)
    overrides = list(overrides)
    merged = apply_overrides(merged, overrides, ref)
    validate(merged, ref, f"{path} (with overrides {overrides})" if overrides else path)
    merged["_source"] = str(path)
    return merged


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}, sort_keys=False)
