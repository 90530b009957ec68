"""YAML configs: inheritance, ``key=value`` overrides, and one-line errors that name the key.

A config file may name another with ``base: other.yaml`` (relative to itself); the result
is the base deep-merged with the file. Every chain ends on the reference config
``brats.yaml``, which holds every key the code reads and the paper's defaults. A key
that the reference does not have is an error naming the key and the file; a value of the
wrong type, out of range or not among the choices is an error naming the key, from the
typed schema (:mod:`singr.config.schema`, or a subclass such as ``tune.config.ServiceConfig``).

Configs are found by path, or by name among the shipped configs (the repository's
``configs/`` folder, installed as the package data ``singr.configs``), so
``singr train -c synthetic.yaml`` works from any folder.

Overrides are ``dotted.key=value`` strings, the value parsed as YAML
(``train.epochs=3``, ``sing.lam=0.7``, ``train.patch_size=[64,64,64]``).
"""
from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SingrConfigError
from .schema import SingrConfig

__all__ = ["config_dir", "reference_path", "load_reference", "load_config", "validate_config", "apply_overrides",
           "parse_override", "deep_merge", "dump_config", "with_overrides", "with_values", "from_stored",
           "shipped_configs"]

C = TypeVar("C", bound=SingrConfig)
REFERENCE_NAME = "brats.yaml"


def config_dir() -> Path:
    """The folder of the shipped configs (``configs/`` in a checkout, ``singr/configs`` installed)."""
    return Path(str(importlib.resources.files("singr.configs")))


def reference_path() -> Path:
    return config_dir() / REFERENCE_NAME


def shipped_configs() -> list[str]:
    return sorted(p.name for p in config_dir().glob("*.yaml"))


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


def load_reference() -> dict[str, Any]:
    """The reference config as plain data: every key, with the paper's defaults."""
    return _read_yaml(reference_path())


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, mappings recursively; neither is modified."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
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
    base_path = path.parent / str(base)
    if not base_path.exists() and (config_dir() / str(base)).exists():
        base_path = config_dir() / str(base)
    merged, files = _load_chain(base_path, seen + (path,))
    return deep_merge(merged, data), files + [(path, data)]


def _check_keys(data: dict[str, Any], ref: dict[str, Any], path: Path | str, prefix: str = "") -> None:
    for k, v in data.items():
        dotted = f"{prefix}{k}"
        if k not in ref:
            known = ", ".join(sorted(ref))
            raise SingrConfigError(f"unknown key {dotted!r}; known keys here: {known}", path=path)
        if isinstance(v, dict) and isinstance(ref[k], dict):
            _check_keys(v, ref[k], path, dotted + ".")


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


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str], ref: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """``cfg`` (plain data) with ``key=value`` overrides applied; keys must exist in ``ref``."""
    ref = load_reference() if ref is None else ref
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node, rnode = cfg, ref
        for i, p in enumerate(parts[:-1]):
            if not isinstance(rnode, dict) or p not in rnode or not isinstance(rnode[p], dict):
                raise SingrConfigError(f"override {text!r}: unknown section {'.'.join(parts[:i + 1])!r}")
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
            rnode = rnode[p]
        if not isinstance(rnode, dict) or parts[-1] not in rnode:
            raise SingrConfigError(f"override {text!r}: unknown key {'.'.join(parts)!r}")
        node[parts[-1]] = value
    return cfg


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _describe(err: dict[str, Any], data: dict[str, Any]) -> str:
    """One line for a pydantic error: the dotted key, the value and what was expected."""
    loc = tuple(err.get("loc") or ())
    # a value inside a list (train.patch_size[1]) is reported on the list itself
    cut = next((i for i, p in enumerate(loc) if isinstance(p, int)), len(loc))
    key = ".".join(str(p) for p in loc[:cut]) or "<config>"
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    value = _lookup(data, loc[:cut])
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if not loc:  # a check across sections: its message names the keys
        return msg
    if kind == "extra_forbidden":
        return f"unknown key {key!r}"
    if kind == "missing":
        return f"{key} is missing"
    if kind == "literal_error":
        return f"{key} = {value!r}; expected one of {ctx.get('expected', '')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "")
        return f"{key} = {value!r} is out of range; expected a value {sym} {bound}"
    if kind in ("too_short", "too_long"):
        return f"{key} = {value!r}; {msg[0].lower() + msg[1:] if msg else 'wrong length'}"
    if kind.endswith("_parsing") or kind.endswith("_type") or kind == "finite_number":
        return f"{key} = {value!r} has the wrong type; {msg[0].lower() + msg[1:] if msg else ''}"
    if kind == "string_pattern_mismatch":
        return f"{key} = {value!r}; expected 'auto', 'cpu' or 'cuda[:N]'" if key.endswith("device") else \
            f"{key} = {value!r}; {msg}"
    return f"{key} = {value!r}; {msg}"


def validate_config(data: dict[str, Any], schema: type[C] = SingrConfig,  # type: ignore[assignment]
                    source: Path | str = "<config>") -> C:
    """``data`` as a typed config; a :class:`SingrConfigError` naming the first bad key."""
    try:
        return schema.model_validate({k: v for k, v in data.items() if k != "source"})
    except ValidationError as e:
        raise SingrConfigError(_describe(dict(e.errors()[0]), data), path=source) from None


def _resolve_path(path: str | Path | None) -> Path:
    if path is None:
        return reference_path()
    p = Path(path)
    if p.exists():
        return p
    alt = config_dir() / p
    if not p.is_absolute() and alt.exists():
        return alt
    raise SingrConfigError(f"config file not found (a path, or one of the shipped configs: "
                           f"{', '.join(shipped_configs())})", path=p)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                schema: type[C] = SingrConfig) -> C:  # type: ignore[assignment]
    """Load ``path`` (default: the reference), merge its bases, apply overrides, validate.

    A file whose chain does not reach the reference is merged over it, so every key has a
    value. ``schema`` is the model to validate with (:class:`SingrConfig`, or a service
    layer's extension of it). The result's ``source`` is the file it came from.
    """
    ref = load_reference()
    p = _resolve_path(path)
    merged, files = _load_chain(p)
    for fpath, fdata in files:
        _check_keys(fdata, ref, fpath)
    if files[0][0] != reference_path().resolve():
        merged = deep_merge(ref, merged)
    overrides = list(overrides)
    merged = apply_overrides(merged, overrides, ref)
    cfg = validate_config(merged, schema, f"{p} (with overrides {overrides})" if overrides else p)
    cfg.source = str(p)
    return cfg


def with_overrides(cfg: C, overrides: Iterable[str]) -> C:
    """A copy of ``cfg`` with ``key=value`` overrides (values parsed as YAML) applied and
    validated again."""
    out = validate_config(apply_overrides(cfg.to_dict(), overrides), type(cfg), cfg.source or "<config>")
    out.source = cfg.source
    return out


def with_values(cfg: C, values: dict[str, Any]) -> C:
    """A copy of ``cfg`` with ``{"dotted.key": value}`` set (values taken as they are, not
    parsed: paths with any characters) and validated again."""
    ref = load_reference()
    data = cfg.to_dict()
    for key, value in values.items():
        parts = key.split(".")
        node, rnode = data, ref
        for p in parts[:-1]:
            if not isinstance(rnode, dict) or p not in rnode:
                raise SingrConfigError(f"unknown key {key!r}")
            node = node.setdefault(p, {})
            rnode = rnode[p]
        if not isinstance(rnode, dict) or parts[-1] not in rnode:
            raise SingrConfigError(f"unknown key {key!r}")
        node[parts[-1]] = value
    out = validate_config(data, type(cfg), cfg.source or "<config>")
    out.source = cfg.source
    return out


def from_stored(data: dict[str, Any], schema: type[C] = SingrConfig) -> C:  # type: ignore[assignment]
    """A config stored by an earlier run (in a checkpoint, an MLflow run): keys this version
    no longer knows are dropped, keys it added since take the reference's values, then it is
    validated. With the plain :class:`SingrConfig` schema only the method's sections are kept."""
    ref = load_reference()

    def keep(d: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
        return {k: (keep(v, r[k]) if isinstance(v, dict) and isinstance(r.get(k), dict) else v)
                for k, v in d.items() if k in r}

    if schema is SingrConfig:
        ref = {k: v for k, v in ref.items() if k not in ("tune", "experiment", "mlflow")}
    merged = deep_merge(ref, keep(data, ref))
    return validate_config(merged, schema, "<stored config>")


def dump_config(cfg: SingrConfig | BaseModel | dict[str, Any]) -> str:
    """The config as YAML (what a file would hold)."""
    data = cfg.to_dict() if isinstance(cfg, SingrConfig) else (
        cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else {k: v for k, v in cfg.items()
                                                                         if not k.startswith("_")})
    return yaml.safe_dump(data, sort_keys=False)
