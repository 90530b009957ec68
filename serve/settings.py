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
    max_voxels: int = Field(256 * 256 * 192, gt=0, description="each volume's voxels, checked from its header (413 "
                            "above); the default holds a 1-mm head (BraTS: 240 x 240 x 155 = 8.9 M)")
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
    compute_budget_mvox: float = Field(160.0, gt=0, description="million voxel-passes (voxels x members x 8 with "
                                       "TTA) a replica runs at once; more waits (a BraTS case: 8.9, with TTA 71)")
    max_queued_mvox: float = Field(320.0, ge=0, description="... and queues at most; more is refused, 503 with "
                                   "Retry-After")
    heavy_mvox: float = Field(30.0, gt=0, description="requests costlier than this run one at a time, outside the "
                              "batches of the others, so plain cases never wait behind them (TTA on BraTS: 71)")
    compute_deadline_s: float = Field(600.0, gt=0, description="a synchronous request's compute ends after this (504)")
    check_input: bool = Field(True, description="refuse input that does not look like BraTS-space brain MR (422; "
                              "?force=true per request)")
    jobs_dir: Optional[str] = Field(None, description="where job records and results live (shared storage when "
                                    "replicas span nodes); None: $TMPDIR/singr-jobs-<uid>")
    max_jobs: int = Field(16, gt=0, description="jobs queued or running at once (503 above)")
    job_deadline_s: float = Field(3600.0, gt=0, description="a job's compute ends after this (failed)")
    job_ttl_s: float = Field(3600.0, gt=0, description="a finished job's result is kept this long")
    job_stale_s: float = Field(30.0, gt=0, description="a job whose replica has not written for this long failed")
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
