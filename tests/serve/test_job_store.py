"""The job records (serve.jobs.JobStore) without Ray: states, staleness, expiry, ids that cannot
reach outside the folder, atomic writes."""
from __future__ import annotations

import json
import time

import pytest

from serve.jobs import JobStore
from serve.upload import HTTPProblem


def test_a_job_goes_from_queued_to_done_with_its_result(tmp_path):
    store = JobStore(tmp_path / "jobs", ttl_s=60, stale_s=30, owner="host:1")
    rec = store.create("nifti", {"tta": False}, {"name": "m", "version": "3"}, cost=8.9e6)
    assert rec["status"] == "queued" and rec["cost_mvox"] == 8.9 and rec["status_url"] == f"/v1/jobs/{rec['id']}"
    assert len(rec["id"]) >= 16 and "owner" not in rec and "heartbeat" not in rec  # the public record
    assert store.active() == 1
    store.update(rec["id"], status="running", started=time.time(), progress=0.4)
    assert store.get(rec["id"])["progress"] == 0.4
    store.write_result(rec["id"], "seg.nii.gz", b"data")
    store.update(rec["id"], status="done", progress=1.0, finished=time.time())
    assert store.active() == 0 and store.result_path(rec["id"], "seg.nii.gz").read_bytes() == b"data"
    assert not list((tmp_path / "jobs" / rec["id"]).glob(".*tmp"))  # nothing half-written left


def test_a_job_whose_replica_stopped_reads_as_failed(tmp_path):
    store = JobStore(tmp_path, stale_s=0.2)
    rec = store.create("json", {}, {}, 1.0)
    store.update(rec["id"], status="running")
    time.sleep(0.3)
    got = store.get(rec["id"])
    assert got["status"] == "failed" and "replica running this job stopped" in got["error"]
    assert json.loads((tmp_path / rec["id"] / "job.json").read_text())["status"] == "failed"  # said once, kept


def test_cancel_marks_only_active_jobs(tmp_path):
    store = JobStore(tmp_path)
    a = store.create("nifti", {}, {}, 1.0)["id"]
    assert store.cancel(a)["cancel"] is True and store.cancel_requested(a)
    b = store.create("nifti", {}, {}, 1.0)["id"]
    store.update(b, status="done", finished=time.time())
    assert store.cancel(b)["cancel"] is False


def test_finished_jobs_expire_after_their_ttl(tmp_path):
    store = JobStore(tmp_path, ttl_s=10)
    old = store.create("nifti", {}, {}, 1.0)["id"]
    store.update(old, status="done", finished=time.time() - 11)
    running = store.create("nifti", {}, {}, 1.0)["id"]
    assert store.expire() == [old]
    assert not (tmp_path / old).exists() and (tmp_path / running).exists()
    with pytest.raises(HTTPProblem) as e:
        store.get(old)
    assert e.value.status == 404


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "", "x" * 100, "short"])
def test_ids_that_are_not_job_ids_are_404(tmp_path, bad):
    store = JobStore(tmp_path)
    with pytest.raises(HTTPProblem) as e:
        store.get(bad)
    assert e.value.status == 404
