"""A model in MLflow back on disk: the model store that ``singr`` finds by entry point
(``singr.model_stores``, see :mod:`singr.engine.source`), and the endpoint's downloader.

Registry contract (the tuning service's): a registered version is an MLflow pyfunc whose
artifacts hold a singr model folder (``singr-model.json`` and its ``*.safetensors``
members) or a single checkpoint. ``runs:/<run_id>/<path>`` sources are downloaded the same
way. MLflow is imported when called.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from singr.engine.bundle import BUNDLE_FILE
from singr.engine.source import parse_model_source, parse_registry_uri
from singr.errors import SingrInputError

from .store import check_store, resolve_tracking_uri

__all__ = ["download_model", "find_version"]


def download_model(source: str, tracking_uri: str | None = None, dst: str | Path | None = None
                   ) -> tuple[Path, dict[str, Any]]:
    """Download a registered model: (local folder or checkpoint, identity: name, version, alias,
    run id, tags, description)."""
    kind, uri = parse_model_source(source)
    if kind == "file":
        raise SingrInputError(f"{source!r} is not a registry model; expected models:/<name>@<alias>")
    tracking_uri = resolve_tracking_uri(tracking_uri)
    check_store(tracking_uri)
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="singr-model-"))
    if kind == "run":
        return _found(_download(uri, dst, tracking_uri), uri), {
            "source": "mlflow", "uri": uri, "name": uri.rstrip("/").split("/")[-1], "alias": None,
            "version": None, "run_id": uri[len("runs:/"):].split("/")[0], "tags": {}, "description": ""}
    mv = find_version(uri, tracking_uri)
    name, alias, version = parse_registry_uri(uri)
    if not alias and not version:  # models:/<name>: say which version it was
        uri = f"models:/{name}/{mv.version}"
    found = _found(_download(f"models:/{name}/{mv.version}", dst, tracking_uri), uri)
    ident = {"source": "mlflow", "uri": uri, "name": name, "alias": alias, "version": str(mv.version),
             "run_id": getattr(mv, "run_id", None), "tags": dict(getattr(mv, "tags", {}) or {}),
             "description": getattr(mv, "description", None) or ""}
    return found, ident


def find_version(uri: str, tracking_uri: str) -> Any:
    """The MLflow model version that ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or
    ``models:/<name>`` (its newest version) names in the store at ``tracking_uri``; a
    :class:`SingrInputError` naming the registered models when there is none."""
    from mlflow import MlflowClient

    name, alias, version = parse_registry_uri(uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version:
            return client.get_model_version(name, version)
        versions = client.search_model_versions(f"name='{name}'")
        if versions:
            return max(versions, key=lambda v: int(v.version))
        why = f"registered model {name!r} has no versions"
    except Exception as e:  # noqa: BLE001 - MLflow raises RestException, MlflowException, ...
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    try:
        names = sorted(rm.name for rm in client.search_registered_models(max_results=50))
    except Exception:  # noqa: BLE001 - the store refuses: say what we know
        names = []
    raise SingrInputError(f"{uri} is not in the MLflow registry at {tracking_uri} ({why}); registered models: "
                          f"{', '.join(names) or 'none'}")


def _download(artifact_uri: str, dst: Path, tracking_uri: str) -> Path:
    import mlflow

    # models:/ URIs resolve through MLflow's *global* tracking and registry URIs: set them for the call
    old = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst),
                                                        tracking_uri=tracking_uri))
    finally:
        mlflow.set_tracking_uri(old[0])
        mlflow.set_registry_uri(old[1])


def _found(local: Path, uri: str) -> Path:
    """The singr model inside a downloaded artifact: its model folder, else its first checkpoint."""
    bundles = sorted(local.glob(f"**/{BUNDLE_FILE}"))
    ckpts = sorted(local.glob("**/*.safetensors")) + sorted(local.glob("**/*.pt"))
    if bundles:
        found = bundles[0].parent
    elif ckpts:
        found = ckpts[0]
    else:
        raise SingrInputError(f"the model {uri} holds no singr model (no {BUNDLE_FILE}, no *.safetensors)",
                              path=local)
    return found
