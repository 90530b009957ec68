"""Jobs for long cases: ``POST /v1/jobs`` answers 202 at once, ``GET /v1/jobs/{id}`` gives the
progress and then the result. A CPU case with TTA takes minutes: synchronous HTTP is the
wrong shape for it (proxies and browsers give up first).

A job's record lives in a folder of its own under ``jobs_dir`` (``<id>/job.json``, written to
a temporary name and renamed; results beside it), so any replica can answer for it: on one
machine every replica shares the folder; replicas on several nodes need it on shared storage.
The replica that runs a job refreshes its ``heartbeat`` every few seconds; a queued or
running job whose heartbeat is older than ``stale_s`` belonged to a replica that stopped
(restarted, node lost) and reads as ``failed`` with that reason: the case must be sent again
(its image lived in that replica's memory). Finished jobs are deleted ``ttl_s`` after they
end. Job ids are 22 random URL-safe characters (``secrets.token_urlsafe(16)``): they are the
only handle on a patient's result besides the API key.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from .upload import HTTPProblem

__all__ = ["JobStore", "ACTIVE", "FINAL", "default_jobs_dir"]

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PUBLIC = ("id", "status", "progress", "created", "started", "finished", "output", "options", "error", "volumes_ml",
           "warnings", "model", "cost_mvox")


def default_jobs_dir() -> Path:
    """``$TMPDIR/singr-jobs-<uid>``: one folder per user on this machine."""
    return Path(tempfile.gettempdir()) / f"singr-jobs-{os.getuid()}"


class JobStore:
    """The job records of one endpoint (see the module docstring)."""

    def __init__(self, root: str | Path, ttl_s: float = 3600.0, stale_s: float = 30.0, owner: str = ""):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ttl_s, self.stale_s, self.owner = float(ttl_s), float(stale_s), owner

    def _dir(self, job_id: str) -> Path:
        if not _ID.match(job_id or ""):
            raise HTTPProblem(404, "not found", f"no job {job_id!r} (job ids are 16-64 letters, digits, - or _)")
        return self.root / job_id

    def _write(self, job_id: str, record: dict[str, Any]) -> None:
        d = self._dir(job_id)
        tmp = d / f".job.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, d / "job.json")

    def _read(self, job_id: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(job_id) / "job.json").read_text())
        except FileNotFoundError:
            raise HTTPProblem(404, "not found", f"no job {job_id!r}: unknown, or deleted {self.ttl_s:g} s after it "
                              "ended") from None
        except ValueError as e:  # a record cut by a crash between write and rename cannot happen; say so if it does
            raise HTTPProblem(500, "internal error", f"job {job_id!r}: unreadable record ({e})") from None

    def create(self, output: str, options: dict[str, Any], model: dict[str, Any], cost: float) -> dict[str, Any]:
        """A new queued job; returns its public record."""
        job_id = secrets.token_urlsafe(16)
        (self.root / job_id).mkdir(mode=0o700)
        now = time.time()
        record = {"id": job_id, "status": "queued", "progress": 0.0, "created": now, "started": None,
                  "finished": None, "output": output, "options": options, "error": None, "volumes_ml": None,
                  "warnings": [], "model": model, "cost_mvox": round(cost / 1e6, 3), "owner": self.owner,
                  "heartbeat": now, "cancel": False}
        self._write(job_id, record)
        return self.public(record)

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the record and refresh its heartbeat; returns the record."""
        record = self._read(job_id)
        record.update(fields)
        record["heartbeat"] = time.time()
        self._write(job_id, record)
        return record

    def get(self, job_id: str) -> dict[str, Any]:
        """The record, with a stale active job read as failed (see the module docstring)."""
        record = self._read(job_id)
        if record["status"] in ACTIVE and time.time() - float(record.get("heartbeat") or 0) > self.stale_s:
            record.update(status="failed", finished=time.time(),
                          error=f"the replica running this job stopped before it finished (no heartbeat for over "
                                f"{self.stale_s:g} s: restarted, or its node was lost); send the case again")
            self._write(job_id, record)
        return record

    def public(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {k: record.get(k) for k in _PUBLIC}
        out["status_url"] = f"/v1/jobs/{record['id']}"
        out["result_url"] = f"/v1/jobs/{record['id']}/result"
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for a job's end: a queued or running job ends at its next network call."""
        record = self.get(job_id)
        if record["status"] in ACTIVE:
            record = self.update(job_id, cancel=True)
        return record

    def cancel_requested(self, job_id: str) -> bool:
        try:
            return bool(self._read(job_id).get("cancel"))
        except HTTPProblem:
            return True  # deleted: nobody wants it

    def write_result(self, job_id: str, name: str, data: bytes) -> Path:
        path = self._dir(job_id) / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def result_path(self, job_id: str, name: str) -> Path:
        return self._dir(job_id) / name

    def active(self) -> int:
        """Jobs queued or running (by any replica), stale ones not counted."""
        n = 0
        for d in self.root.iterdir():
            if _ID.match(d.name) and (d / "job.json").is_file():
                try:
                    n += self.get(d.name)["status"] in ACTIVE
                except HTTPProblem:
                    pass
        return n

    def expire(self, now: Optional[float] = None) -> list[str]:
        """Delete the jobs that ended more than ``ttl_s`` ago; returns their ids."""
        now = time.time() if now is None else now
        gone = []
        for d in list(self.root.iterdir()):
            if not _ID.match(d.name):
                continue
            try:
                record = json.loads((d / "job.json").read_text())
            except (OSError, ValueError):
                continue
            if record.get("status") in FINAL and now - float(record.get("finished") or now) > self.ttl_s:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
        return gone
