"""Where the endpoint's model comes from: a checkpoint file, a model folder, or the MLflow
registry, turned into singr's one :class:`~singr.engine.infer.Predictor`. No Ray here.

A model source is a path (``best.safetensors``, a model folder with ``singr-model.json``),
``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``<name>@<alias>``. The
identity the endpoint shows names the model, never a path on the server (:func:`scrub_paths`
cuts every path in it, the card's included, to its last name). Its ``card`` is
the model card stored with the model (``card.json`` in the model folder, written when the
tuning service registered it: :mod:`tune.hub.card`); null for a model without one.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from singr.engine.meta import ModelMeta
from singr.errors import SingrInputError

from .settings import DEFAULT_MODEL


@dataclass
class LoadedModel:
    predictor: Any                      # singr.engine.infer.Predictor
    identity: dict[str, Any] = field(default_factory=dict)


_URI_PATH = re.compile(r"\b(sqlite|file):/{2,}[^\s'\"]*")
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"]+/)+[^\s/'\"]*")


def _short(path: str) -> str:
    name = PurePosixPath(path.rstrip("/")).name
    return f".../{name}" if name else "..."


def scrub_paths(obj: Any) -> Any:
    """``obj`` (JSON-like) with every server path cut to its last name: ``/srv/runs/x/best.safetensors``
    -> ``.../best.safetensors``, ``sqlite:////srv/mlflow.db`` -> ``sqlite:.../mlflow.db``, inside longer
    strings too. Names, digests, versions and ``models:/`` URIs are kept; what the endpoint shows must not
    map the server's disk (the card stored with a model names its data, cache and runs folders)."""
    if isinstance(obj, dict):
        return {k: scrub_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_paths(v) for v in obj]
    if isinstance(obj, str) and "/" in obj:
        out = _URI_PATH.sub(lambda m: f"{m.group(1)}:{_short(m.group(0).split(':', 1)[1])}", obj)
        return _ABS_PATH.sub(lambda m: _short(m.group(0)), out)
    return obj


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_source(model: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """(kind, where) of a model source, with a clear error for a file that is not there or a
    registry whose store does not exist (no empty ``mlflow.db`` is ever created)."""
    from singr.engine.source import parse_model_source
    from tune.hub.store import check_store, resolve_tracking_uri

    kind, where = parse_model_source(model)
    if kind == "file":
        p = Path(where)
        if not p.exists():
            rel = "" if p.is_absolute() else f" (relative to {Path.cwd()})"
            raise SingrInputError(f"model file not found{rel}; expected a checkpoint (.safetensors), a model folder, "
                                  "or models:/<name>@<alias>", path=p)
        return kind, str(p.resolve())
    check_store(resolve_tracking_uri(tracking_uri))
    return kind, where


def load_model(model: str | None = None, tracking_uri: str | None = None, device: str = "auto",
               trust_checkpoint: bool = False) -> LoadedModel:
    """Resolve the model source, download it if it is in the registry, build the Predictor."""
    from singr.engine.bundle import load_predictor
    from tune.hub.card import read_card
    from tune.hub.fetch import download_model

    kind, where = check_source(model or DEFAULT_MODEL, tracking_uri)
    if kind != "file":
        local, ident = download_model(where, tracking_uri)
        ident = {k: ident[k] for k in ("source", "uri", "name", "alias", "version", "tags", "description")}
    else:
        local = Path(where)
        ident = {"source": "file", "uri": local.name, "name": local.stem if local.is_file() else local.name,
                 "alias": None, "version": _sha256(local)[:12], "tags": {}, "description": ""}
    pred = load_predictor(local, device, trust=trust_checkpoint)
    meta: ModelMeta = pred.meta  # loaded from checkpoints: never None
    ident.update({
        "architecture": meta.model,
        "lambda": meta.lam, "delta": meta.delta, "gamma": meta.gamma,
        "loss": meta.loss, "regression": meta.regression,
        "modalities": list(meta.modalities),
        "in_channels": meta.in_channels,
        "region_names": list(meta.region_names),
        "label_convention": meta.label_convention,
        "spacing": list(meta.spacing or ()),
        "members": [m.to_dict() for m in pred.member_info],
        "postprocess": pred.postprocess.describe() if pred.postprocess is not None else None,
        "inference": {"roi_size": list(pred.settings.roi_size), "overlap": pred.settings.overlap,
                      "mode": pred.settings.mode, "tta": pred.settings.tta, "crop": pred.settings.crop,
                      "precision": pred.settings.precision},
        "device": str(pred.device),
        "card": read_card(local),
    })
    return LoadedModel(predictor=pred, identity=scrub_paths(ident))
