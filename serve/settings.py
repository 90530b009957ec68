"""The endpoint's settings: their one list, types and defaults.

The Serve config's ``applications[0].args`` (serve/config.yaml, ``serve run``), ``singr serve``'s
options and :func:`serve.app.make_app` all end here: a key that is not a field, or a value of
the wrong type, is refused with the key named. ``None`` in an override means "the default".
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["EndpointSettings", "DEFAULT_MODEL", "endpoint_settings"]

DEFAULT_MODEL = "models:/singr-synthetic@champion"
"""What the demo (configs/synthetic.yaml) registers."""


class EndpointSettings(BaseModel):
    """One replica's settings (the Serve application's ``args``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(DEFAULT_MODEL, description="checkpoint (.safetensors), model folder, models:/<name>@<alias>, "
                       "models:/<name>/<version>, <name>@<alias> or runs:/<run_id>/<path>")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else "
                                        "sqlite:///mlflow.db in the working folder")
    device: str = Field("auto", description="auto: the replica's GPU when it has one")
    trust_checkpoint: bool = Field(False, description="allow a singr 0.1 .pt checkpoint (a pickle: it can run code)")
    api_key: Optional[str] = Field(None, description="require X-API-Key: <key> on /v1/segment and /v1/model")
    max_upload_mb: float = Field(256.0, gt=0, description="request body limit (413 above)")
    max_file_mb: float = Field(1024.0, gt=0, description="each file's decompressed size limit (413 above)")
    max_voxels: int = Field(256 ** 3, gt=0, description="each volume's voxels, checked from its header (413 above)")
    upload_timeout_s: float = Field(120.0, gt=0, description="a whole upload must arrive within this (408 above)")
    upload_idle_s: float = Field(15.0, gt=0, description="... with no gap between chunks longer than this")
    upload_min_rate_kbps: float = Field(64.0, ge=0, description="... and at this mean rate once "
                                        "upload_rate_grace_s has passed (0: no minimum)")
    upload_rate_grace_s: float = Field(5.0, ge=0)
    max_concurrent_uploads: int = Field(8, gt=0, description="uploads a replica reads at once (503 above; keep "
                                        "below max_ongoing_requests)")
    max_uploads_per_client: int = Field(4, gt=0, description="... of which from one client address (429 above)")
    max_concurrent_decodes: int = Field(2, gt=0, description="uploads decoded and checked at once")
    max_batch_size: int = Field(4, gt=0, description="@serve.batch: requests per forward pass")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="@serve.batch: how long a batch waits to fill")
    roi_size: Optional[list[int]] = Field(None, description="sliding-window override; None: the model's")
    sw_batch_size: Optional[int] = Field(None, description="windows per network call; None: the model's")
    tta: Optional[bool] = Field(None, description="test-time mirroring by default; None: the model's infer.tta")
    num_threads: Optional[int] = Field(None, description="torch CPU threads per replica; None: Ray's default")


def endpoint_settings(args: dict[str, Any] | None) -> dict[str, Any]:
    """``args`` checked and completed with the defaults (a ``None`` value takes the default), as a
    plain dict; ``ValueError`` naming every bad key otherwise."""
    given = {k: v for k, v in (args or {}).items() if v is not None}
    try:
        return EndpointSettings(**given).model_dump()
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"endpoint settings: {bad}; the settings are {', '.join(EndpointSettings.model_fields)}"
                         ) from None
