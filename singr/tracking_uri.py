"""Where the MLflow store is: one rule for the tuning service, the report and the endpoint.

``resolve_tracking_uri(explicit)``: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else the
embedded store ``sqlite:///<cwd>/mlflow.db``; a relative sqlite path is made absolute (the
URI is handed to Ray workers and Serve replicas whose working folder differs).
"""
from __future__ import annotations

import os
from pathlib import Path

SQLITE = "sqlite:///"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}mlflow.db"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + os.path.abspath(os.path.expanduser(uri[len(SQLITE):]))
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None
