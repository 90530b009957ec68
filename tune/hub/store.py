"""Where the MLflow store is, and a client for it. MLflow only, imported when called.

``resolve_tracking_uri(explicit)``: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else the
embedded store ``sqlite:///<cwd>/mlflow.db``; a relative sqlite path is made absolute (the
URI is handed to Ray workers and Serve replicas whose working folder differs). One rule
for the tuning service, ``singr report``, ``singr predict/evaluate --model models:/...``
and the endpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from singr.errors import SingrInputError

__all__ = ["SQLITE", "EXPERIMENT_KIND_TAG", "ML_EXPERIMENT", "resolve_tracking_uri", "sqlite_path", "check_store",
           "client_for", "ensure_experiment"]

SQLITE = "sqlite:///"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ML_EXPERIMENT = "custom_model_development"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}mlflow.db"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + os.path.abspath(os.path.expanduser(uri[len(SQLITE):]))
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def check_store(tracking_uri: str, *, must_exist: bool = True) -> None:
    """A clear error when the store cannot be there: a sqlite file that does not exist (never
    create an empty ``mlflow.db`` just to find a model missing)."""
    db = sqlite_path(tracking_uri)
    if db is not None and must_exist and not db.is_file():
        raise SingrInputError(f"no MLflow store at {db}: run a sweep first (`python -m tune`), or pass the "
                              "tracking URI of the store that holds the model (--tracking-uri or "
                              "$MLFLOW_TRACKING_URI)")


def client_for(uri: str) -> Any:
    """An ``MlflowClient`` whose tracking and registry URIs are both ``uri``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment id (created when missing: artifacts beside an sqlite store, or proxied
    by a tracking server); tagged as an ML experiment."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        loc = None
        db = sqlite_path(uri)
        if db is not None:
            loc = (db.parent / "mlartifacts").as_uri()
        exp_id = client.create_experiment(name, artifact_location=loc)
    else:
        exp_id = exp.experiment_id
    if exp is None or (exp.tags or {}).get(EXPERIMENT_KIND_TAG) != ML_EXPERIMENT:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT)
    return exp_id
