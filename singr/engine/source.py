"""Where a model is: the one rule for every command, the export and the endpoint.

A model source is one of

* a checkpoint file (``.safetensors``, or a singr 0.1 ``.pt``) or a model folder
  (``singr-model.json`` and its members): kind ``"file"``;
* ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<name>`` (its newest
  version) or ``<name>@<alias>`` (short for the first), in an MLflow registry: kind ``"registry"``;
* ``runs:/<run_id>/<artifact path>``, a model logged in an MLflow run: kind ``"run"``.

Registry and run sources are downloaded by a *model store*: a function
``fetch(source: str, tracking_uri: str | None) -> (local path, identity dict)`` published in
the entry-point group :data:`STORE_GROUP` (the ``tune`` package publishes MLflow's,
:func:`tune.hub.fetch.download_model`). This package names no store: it finds them by
entry point, so that ``singr`` never imports what lies above it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import SingrInputError
from ..plugins import missing, plugins

__all__ = ["STORE_GROUP", "CHECKPOINT_SUFFIXES", "parse_model_source", "is_remote", "parse_registry_uri",
           "fetch_model", "local_model"]

STORE_GROUP = "singr.model_stores"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
_REGISTRY = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?/?")
_SHORT = re.compile(r"[\w.\-]+@[\w.\-]+")


def parse_model_source(model: str) -> tuple[str, str]:
    """``("file", path)``, ``("registry", "models:/...")`` or ``("run", "runs:/...")``.

    A string that exists on disk, ends with a checkpoint suffix or holds a ``/`` is a path;
    ``name@alias`` (no ``/``, not on disk) is short for ``models:/name@alias``."""
    model = str(model).strip()
    if model.startswith("models:/"):
        return "registry", model
    if model.startswith("runs:/"):
        return "run", model
    if Path(model).expanduser().exists() or model.endswith(CHECKPOINT_SUFFIXES) or "/" in model:
        return "file", str(Path(model).expanduser())
    if _SHORT.fullmatch(model):
        return "registry", f"models:/{model}"
    return "file", str(Path(model).expanduser())


def is_remote(source: Sequence[str] | str) -> bool:
    """Whether ``source`` (one value, or a command line's ``--model`` values) names a model in a
    store rather than files: exactly one value of kind registry or run."""
    src = [source] if isinstance(source, (str, Path)) else list(source)
    return len(src) == 1 and parse_model_source(str(src[0]))[0] != "file"


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` / ``models:/<name>/<version>`` / ``models:/<name>`` as
    ``(name, alias, version)``."""
    m = _REGISTRY.fullmatch(uri)
    if not m:
        raise SingrInputError(f"cannot parse model URI {uri!r}; expected models:/<name>@<alias> or "
                              "models:/<name>/<version>")
    return m.group(1), m.group(2), m.group(3)


def _store() -> Callable[..., tuple[Path, dict[str, Any]]]:
    found = plugins(STORE_GROUP)
    if not found:
        raise SingrInputError(missing("a registry model's store (MLflow)", "tune", "tune"))
    try:
        return found[0].load()
    except ImportError as e:
        raise SingrInputError(f"a registry model needs MLflow (the tune extra: pip install 'singr[tune]'): "
                              f"{e}") from None


def fetch_model(source: str, tracking_uri: str | None = None) -> tuple[Path, dict[str, Any]]:
    """``(local path, identity)`` of one model source: a path as it is (identity ``{"source":
    "file"}``), a registry or run model downloaded by the installed model store."""
    kind, where = parse_model_source(source)
    if kind == "file":
        return Path(where), {"source": "file", "uri": where}
    return _store()(where, tracking_uri)


def local_model(source: Sequence[str | Path], tracking_uri: str | None = None) -> list[str]:
    """A command line's ``--model`` values as local paths: the files or folder given, or the one
    registry/run model downloaded."""
    src = [str(s) for s in source]
    if not src:
        raise SingrInputError("--model is required: a checkpoint file, a model folder or models:/<name>@<alias>")
    if is_remote(src):
        return [str(fetch_model(src[0], tracking_uri)[0])]
    return src
