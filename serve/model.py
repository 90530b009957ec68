"""Model loading and batched inference for the HTTP endpoint (no Ray here).

A model source is one of:

- a checkpoint path (``runs/x/checkpoints/best.pt``);
- an MLflow registry URI ``models:/<name>@<alias>`` or ``models:/<name>/<version>``;
- ``<name>@<alias>`` (short for ``models:/<name>@<alias>``).

Registry contract (the tuning service's): the registered model is an MLflow pyfunc whose
downloaded directory holds the singr checkpoint ``*.pt`` somewhere under it.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from singr.errors import SingrInputError

DEFAULT_MODEL = "models:/singr@champion"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else ``sqlite:///<cwd>/mlflow.db`` (MLflow 3's default store)."""
    from singr.tracking_uri import resolve_tracking_uri

    return resolve_tracking_uri()


def parse_model_source(model: str | None) -> tuple[str, str]:
    """``("checkpoint", path)`` or ``("registry", "models:/...")``."""
    model = (model or DEFAULT_MODEL).strip()
    if model.startswith("models:/"):
        return "registry", model
    if Path(model).expanduser().exists() or model.endswith((".pt", ".pth")) or "/" in model:
        return "checkpoint", str(Path(model).expanduser())
    if re.fullmatch(r"[\w.\-]+@[\w.\-]+", model):
        return "registry", f"models:/{model}"
    return "checkpoint", str(Path(model).expanduser())


@dataclass
class LoadedModel:
    predictor: Any                      # singr.engine.evaluate.Predictor
    identity: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_registry_model(uri: str, tracking_uri: str) -> tuple[Path, dict[str, Any]]:
    import mlflow
    from mlflow import MlflowClient

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?/?", uri)
    if not m:
        raise SingrInputError(f"cannot parse model URI {uri!r}; expected models:/<name>@<alias> or "
                              "models:/<name>/<version>")
    name, alias, version = m.group(1), m.group(2), m.group(3)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version:
            mv = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise SingrInputError(f"registered model {name!r} has no versions", path=tracking_uri)
            mv = max(versions, key=lambda v: int(v.version))
            uri = f"models:/{name}/{mv.version}"
    except SingrInputError:
        raise
    except Exception as e:
        raise SingrInputError(f"cannot find {uri} in the MLflow registry ({type(e).__name__}: {e})",
                              path=tracking_uri) from e
    dst = Path(tempfile.mkdtemp(prefix="singr-serve-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                     tracking_uri=tracking_uri))
    found = sorted(local.glob("**/*.pt")) if local.is_dir() else ([local] if local.suffix == ".pt" else [])
    if not found:
        raise SingrInputError(f"the model {uri} holds no singr checkpoint (*.pt) under its directory", path=local)
    if len(found) > 1:  # prefer best.pt, else the first in path order
        found.sort(key=lambda p: (p.name != "best.pt", len(p.parts), str(p)))
    ident = {"source": "mlflow", "uri": uri, "name": name, "alias": alias, "version": str(mv.version),
             "run_id": getattr(mv, "run_id", None), "tracking_uri": tracking_uri}
    return found[0], ident


def load_model(model: str | None = None, tracking_uri: str | None = None, device: str = "auto") -> LoadedModel:
    """Resolve the model source, download it if it is in the registry, build the Predictor."""
    from singr.engine.evaluate import Predictor

    kind, where = parse_model_source(model)
    if kind == "registry":
        ckpt, ident = _download_registry_model(where, tracking_uri or default_tracking_uri())
    else:
        ckpt = Path(where)
        if not ckpt.is_file():
            where_ = "" if ckpt.is_absolute() else f" (relative to {Path.cwd()})"
            raise SingrInputError(f"checkpoint file not found{where_}", path=ckpt)
        ident = {"source": "checkpoint", "uri": str(ckpt.resolve()), "name": ckpt.stem,
                 "version": _sha256(ckpt)[:12]}
    pred = Predictor(ckpt, device)
    meta = pred.meta
    ident.update({
        "architecture": meta.get("model"),
        "lambda": meta.get("lam"), "delta": meta.get("delta"), "gamma": meta.get("gamma"),
        "loss": meta.get("loss"), "regression": meta.get("regression"),
        "modalities": list(meta.get("modalities") or []),
        "in_channels": int(meta["in_channels"]),
        "region_names": list(meta["region_names"]),
        "label_convention": meta.get("label_convention"),
        "spacing": list(meta.get("spacing") or []),
        "device": str(pred.device),
    })
    return LoadedModel(predictor=pred, identity=ident, checkpoint_path=str(ckpt))


def forward_batch(predictor: Any, images: Sequence[np.ndarray], roi_size: Sequence[int] | None = None,
                  sw_batch_size: int | None = None) -> list[Any]:
    """Raw network outputs (R, D, H, W) for un-normalised images (C, D, H, W).

    Images of equal shape go through the network together (one sliding-window pass over a
    batch); different shapes run one group after another.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from singr.engine.infer import clip_roi
    from singr.engine.train import infer_kwargs
    from singr.preprocess import normalize_image

    kw = infer_kwargs(predictor.cfg)
    if roi_size is not None and not kw["fixed_roi"]:
        kw["roi_size"] = list(roi_size)
    if sw_batch_size is not None:
        kw["sw_batch_size"] = int(sw_batch_size)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    out: list[Any] = [None] * len(images)
    model = predictor.model
    for shape, idx in groups.items():
        x = torch.from_numpy(np.stack([normalize_image(images[i]) for i in idx])).to(predictor.device)
        if kw["fixed_roi"]:
            roi = tuple(int(r) for r in kw["roi_size"])
        else:  # at least two voxels at the deepest level, even for tiny volumes (padded by MONAI)
            floor = 2 * int(kw["multiple"])
            roi = tuple(max(r, min(floor, int(w))) for r, w in
                        zip(clip_roi(kw["roi_size"], shape[1:], kw["multiple"]), kw["roi_size"]))
        with torch.no_grad():
            y = sliding_window_inference(x, roi, kw["sw_batch_size"], model, overlap=kw["overlap"], mode=kw["mode"])
        y = torch.as_tensor(y).float().cpu()
        for j, i in enumerate(idx):
            out[i] = y[j]
    return out
