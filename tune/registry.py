"""Where the MLflow store is, and how a registered model comes back to disk.

``resolve_tracking_uri(explicit)``: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else the
embedded store ``sqlite:///<cwd>/mlflow.db``; a relative sqlite path is made absolute (the
URI is handed to Ray workers and Serve replicas whose working folder differs). One rule
for the tuning service, ``singr report``, ``singr predict/evaluate --model models:/...``
and the endpoint. Nothing here imports MLflow at import time.

A model source is a checkpoint file or model folder, ``models:/<name>@<alias>``,
``models:/<name>/<version>`` or ``<name>@<alias>`` (short for the first registry form).
Registry contract (the tuning service's): a registered version is an MLflow pyfunc whose
artifacts hold a singr model folder (``singr-model.json`` and its ``*.safetensors``
members) or a single checkpoint.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from singr.errors import SingrInputError

__all__ = ["SQLITE", "resolve_tracking_uri", "sqlite_path", "parse_model_source", "download_model",
           "check_store"]

SQLITE = "sqlite:///"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}mlflow.db"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + os.path.abspath(os.path.expanduser(uri[len(SQLITE):]))
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def parse_model_source(model: str) -> tuple[str, str]:
    """``("file", path)`` or ``("registry", "models:/...")``."""
    model = model.strip()
    if model.startswith("models:/"):
        return "registry", model
    if Path(model).expanduser().exists() or model.endswith((".safetensors", ".pt", ".pth")) or "/" in model:
        return "file", str(Path(model).expanduser())
    if re.fullmatch(r"[\w.\-]+@[\w.\-]+", model):
        return "registry", f"models:/{model}"
    return "file", str(Path(model).expanduser())


def check_store(tracking_uri: str, *, must_exist: bool = True) -> None:
    """A clear error when the store cannot be there: a sqlite file that does not exist (never
    create an empty ``mlflow.db`` just to find a model missing)."""
    db = sqlite_path(tracking_uri)
    if db is not None and must_exist and not db.is_file():
        raise SingrInputError(f"no MLflow store at {db}: run a sweep first (`python -m tune`), or pass the "
                              "tracking URI of the store that holds the model (--tracking-uri or "
                              "$MLFLOW_TRACKING_URI)")


def download_model(source: str, tracking_uri: str | None = None, dst: str | Path | None = None
                   ) -> tuple[Path, dict[str, Any]]:
    """Download a registered model: (local folder or checkpoint, identity: name, version, alias,
    run id, tags, description)."""
    kind, uri = parse_model_source(source)
    if kind != "registry":
        raise SingrInputError(f"{source!r} is not a registry model; expected models:/<name>@<alias>")
    tracking_uri = resolve_tracking_uri(tracking_uri)
    check_store(tracking_uri)
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?/?", uri)
    if not m:
        raise SingrInputError(f"cannot parse model URI {uri!r}; expected models:/<name>@<alias> or "
                              "models:/<name>/<version>")
    name, alias, version = m.group(1), m.group(2), m.group(3)
    import mlflow
    from mlflow import MlflowClient

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
    except Exception as e:  # noqa: BLE001 - MLflow raises RestException, MlflowException, ...
        raise SingrInputError(f"cannot find {uri} in the MLflow registry at {tracking_uri} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="singr-model-"))
    # models:/ URIs resolve through MLflow's *global* tracking and registry URIs: set them for the call
    old = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                                         dst_path=str(dst), tracking_uri=tracking_uri))
    finally:
        mlflow.set_tracking_uri(old[0])
        mlflow.set_registry_uri(old[1])
    from singr.engine.bundle import BUNDLE_FILE

    bundles = sorted(local.glob(f"**/{BUNDLE_FILE}"))
    ckpts = sorted(local.glob("**/*.safetensors")) + sorted(local.glob("**/*.pt"))
    if bundles:
        found = bundles[0].parent
    elif ckpts:
        found = ckpts[0]
    else:
        raise SingrInputError(f"the model {uri} holds no singr model (no {BUNDLE_FILE}, no *.safetensors)",
                              path=local)
    ident = {"source": "mlflow", "uri": uri, "name": name, "alias": alias, "version": str(mv.version),
             "run_id": getattr(mv, "run_id", None), "tags": dict(getattr(mv, "tags", {}) or {}),
             "description": getattr(mv, "description", None) or ""}
    return found, ident
