"""The endpoint under load: jobs (from curl), admission by cost, compute deadlines, a lost
replica's jobs, and a valid request getting through while cost bombs and slow clients run.

Loopback only, bounded in time and count. Figures are printed (``pytest -s``), never asserted:
latency is compared with the same request measured alone in the same run."""
from __future__ import annotations

import gzip
import json
import os
import select
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tune.nodes import free_port

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MODS = ("flair", "t1", "t1ce", "t2")
BOMB_SHAPE = (96, 96, 64)  # brain-like synthetic case: 0.59 M voxels, 4.7 M voxel-passes with TTA


def _nii_gz(array: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.eye(4) if affine is None else affine).to_bytes(), compresslevel=1)


def _files(mapping: dict[str, bytes]) -> list:
    return [(m, (f"{m}.nii.gz", d, "application/gzip")) for m, d in mapping.items()]


def _bomb_files() -> dict[str, bytes]:
    from singr.data.synth import synthesize_case

    image, _ = synthesize_case(BOMB_SHAPE, seed=7)
    return {m: _nii_gz(np.asarray(image[i], np.float32)) for i, m in enumerate(MODS)}


@pytest.fixture(scope="module")
def loaded(smoke_model, tmp_path_factory):
    """Two apps on one Serve: ``/`` with a small compute budget (a TTA bomb is heavy: one at a time,
    outside the batches; one queued: each bomb queued is one more to wait for at the end of a test)
    and fast-failing job heartbeats; ``/tight`` with a compute deadline no request can meet."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import serve

    from serve.app import make_app
    from serve.proxy_errors import CALLBACK, CALLBACK_ENV

    os.environ[CALLBACK_ENV] = CALLBACK  # as singr serve does: the proxy's own errors in the JSON body
    jobs = tmp_path_factory.mktemp("jobs")
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="singr-load")
    common = {"model": str(smoke_model["checkpoint"]), "num_threads": 1, "max_uploads_per_client": 4}
    dep = {"num_replicas": 1, "max_ongoing_requests": 24, "ray_actor_options": {"num_cpus": 0.5}}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app({**common, "compute_budget_mvox": 6.0, "max_queued_mvox": 5.0, "heavy_mvox": 1.0,
                            "jobs_dir": str(jobs),
                            "job_stale_s": 4.0}, dep), name="singr", route_prefix="/")
        serve.run(make_app({**common, "compute_deadline_s": 0.001}, {**dep, "ray_actor_options": {"num_cpus": 0.25}}),
                  name="tight", route_prefix="/tight")
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and not all(
                httpx.get(u + "/v1/health", timeout=10).status_code == 200 for u in (base, base + "/tight")):
            time.sleep(0.3)
        yield {"base": base, "port": port, "model": smoke_model, "jobs": Path(jobs), "bomb": _bomb_files()}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _problem(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail", "file", "case"} and body["detail"], body
    return body


def _wait_job(base: str, job_id: str, until: tuple[str, ...] = ("done", "failed", "cancelled"),
              timeout: float = 180) -> tuple[dict, list[float]]:
    seen: list[float] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()
        seen.append(rec["progress"])
        if rec["status"] in until:
            return rec, seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {rec['status']} after {timeout} s: {rec}")


def test_a_job_from_curl_gives_what_segment_gives(loaded, tmp_path):
    base, files = loaded["base"], loaded["model"]["files"]
    for m, d in files.items():
        (tmp_path / f"{m}.nii.gz").write_bytes(d)
    form = [a for m in MODS for a in ("-F", f"{m}=@{tmp_path / f'{m}.nii.gz'}")]
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *form, f"{base}/v1/jobs"], capture_output=True,
                         text=True, timeout=120)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "202", out.stdout[:300]
    rec = json.loads(body)
    assert rec["status"] in ("queued", "running", "done") and rec["status_url"] == f"/v1/jobs/{rec['id']}"
    done, _ = _wait_job(base, rec["id"])
    assert done["status"] == "done" and done["progress"] == 1.0 and done["error"] is None
    seg = tmp_path / "seg.nii.gz"
    got = subprocess.run(["curl", "-s", "-o", str(seg), "-w", "%{http_code}", f"{base}{rec['result_url']}"],
                         capture_output=True, text=True, timeout=60)
    assert got.stdout == "200"
    sync = httpx.post(base + "/v1/segment", files=_files(files), timeout=120)
    assert sync.status_code == 200
    np.testing.assert_array_equal(np.asarray(nib.load(seg).dataobj),
                                  np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(sync.content)).dataobj))
    js = httpx.get(f"{base}{rec['result_url']}", params={"output": "json"}, timeout=30).json()
    assert js["volumes_ml"] == json.loads(sync.headers["x-volumes-ml"]) == done["volumes_ml"]
    # unknown or malformed ids are the documented 404
    assert _problem(httpx.get(f"{base}/v1/jobs/{'x' * 22}", timeout=30), 404)["error"] == "not found"
    assert httpx.get(f"{base}/v1/jobs/..%2F..%2Fetc", timeout=30).status_code == 404


def test_a_running_job_can_be_cancelled(loaded):
    base = loaded["base"]
    r = httpx.post(base + "/v1/jobs", files=_files(loaded["bomb"]), params={"tta": "true"}, timeout=120)
    assert r.status_code == 202, r.text[:300]
    job = r.json()["id"]
    _wait_job(base, job, until=("running",), timeout=120)
    assert httpx.delete(f"{base}/v1/jobs/{job}", timeout=30).status_code == 202
    rec, _ = _wait_job(base, job)
    assert rec["status"] == "cancelled" and rec["progress"] < 1.0 and "cancelled" in rec["error"], rec
    body = _problem(httpx.get(f"{base}/v1/jobs/{job}/result", timeout=30), 409)
    assert "cancelled" in body["detail"]


def test_default_voxel_cap_refuses_the_256_cube_from_its_header(loaded):
    cube = _nii_gz(np.zeros((256, 256, 256), np.uint8))  # 16.8 M voxels: the cost bomb
    body = _problem(httpx.post(loaded["base"] + "/v1/segment", files=_files({m: cube for m in MODS}), timeout=60), 413)
    assert "max_voxels" in body["detail"] and "8928000" in body["detail"] and body["file"] == "flair.nii.gz"


def test_noise_is_refused_not_segmented_into_a_tumour(loaded):
    noise = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32) + 1
    body = _problem(httpx.post(loaded["base"] + "/v1/segment", files=_files({m: _nii_gz(noise) for m in MODS}),
                               timeout=60), 422)
    assert body["error"] == "not brain-like input" and "not skull-stripped" in body["detail"]


def test_the_compute_deadline_is_a_504_and_the_replica_goes_on(loaded):
    tight = loaded["base"] + "/tight"
    body = _problem(httpx.post(tight + "/v1/segment", files=_files(loaded["model"]["files"]), timeout=120), 504)
    assert "compute deadline of 0.001 s" in body["detail"] and "POST /v1/jobs" in body["detail"]
    health = httpx.get(tight + "/v1/health", timeout=30).json()
    assert health["abandoned"] >= 1 and health["admission"]["running"] == 0
    assert health["admission"]["abandoned"] >= 1  # counted where the work ends, not only by the route


def _trickle(port: int, answers: list, source: str) -> None:
    """An upload sent a byte every 0.5 s until the server answers; appends the status."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    raw = b""
    try:
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\n"
                  b"Content-Length: 1000000\r\n\r\n")
        for _ in range(120):
            if select.select([s], [], [], 0.5)[0]:
                break
            s.sendall(b"\x1f")
        if select.select([s], [], [], 60)[0]:
            raw = s.recv(65536)
    except OSError:
        pass
    finally:
        s.close()
    answers.append(int(raw.split()[1]) if raw.startswith(b"HTTP/") else -1)


def test_valid_requests_get_through_cost_bombs_and_slow_clients(loaded):
    """4 clients send TTA cases in a loop (4.7 M voxel-passes each against a budget of 6 M: one runs,
    one queues (5 M), the others get 503 + Retry-After) while 20 slow clients trickle from 127.0.0.2; a plain
    case from 127.0.0.1 is answered each time, cheapest first, beside the bomb in flight."""
    base, port, small = loaded["base"], loaded["port"], loaded["model"]["files"]
    alone = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert httpx.post(base + "/v1/segment", files=_files(small), timeout=120).status_code == 200
        alone.append(time.perf_counter() - t0)
    before = httpx.get(base + "/v1/health", timeout=30).json()["admission"]
    stop = threading.Event()
    bomb_codes: list[int] = []
    retry_after: list[str] = []

    def bomber() -> None:
        with httpx.Client(timeout=300) as c:
            while not stop.is_set():
                r = c.post(base + "/v1/segment", files=_files(loaded["bomb"]), params={"tta": "true"})
                bomb_codes.append(r.status_code)
                if r.status_code == 503:
                    retry_after.append(r.headers.get("retry-after", ""))
                    assert r.json()["error"] == "busy"
                    time.sleep(0.5)

    slow: list[int] = []
    threads = [threading.Thread(target=bomber, daemon=True) for _ in range(4)]
    threads += [threading.Thread(target=_trickle, args=(port, slow, "127.0.0.2"), daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(3.0)  # the bombs are running and queued
    under = []
    codes = []
    for _ in range(4):
        t0 = time.perf_counter()
        r = httpx.post(base + "/v1/segment", files=_files(small), timeout=300)
        under.append(time.perf_counter() - t0)
        codes.append(r.status_code)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    after = httpx.get(base + "/v1/health", timeout=30).json()["admission"]
    assert codes == [200] * 4, codes
    assert bomb_codes and set(bomb_codes) <= {200, 503}, bomb_codes  # no other 5xx
    assert 200 in bomb_codes and 503 in bomb_codes, bomb_codes
    assert all(ra.isdigit() and int(ra) >= 1 for ra in retry_after), retry_after
    assert after["queued"] > before["queued"] and after["refused"] > before["refused"]  # the bombs contended
    assert len(slow) == 20 and set(slow) <= {408, 429}, slow
    print(f"\n[load] plain case alone: median {statistics.median(alone):.2f} s; under 4 TTA bombers + 20 slow "
          f"clients: median {statistics.median(under):.2f} s, max {max(under):.2f} s "
          f"({statistics.median(under) / statistics.median(alone):.1f}x); bombs: {bomb_codes.count(200)} x 200, "
          f"{bomb_codes.count(503)} x 503 (Retry-After {sorted(set(retry_after))}); slow clients: "
          f"{slow.count(429)} x 429, {slow.count(408)} x 408; admission {after}")


def test_a_lost_replicas_jobs_fail_with_a_clear_status(loaded):
    """A replica killed mid-work: its job reads `failed` with the reason, and a synchronous request
    in flight gets the documented JSON 500 (from the proxy, through serve.proxy_errors)."""
    import ray

    base = loaded["base"]
    r = httpx.post(base + "/v1/jobs", files=_files(loaded["bomb"]), params={"tta": "true"}, timeout=120)
    job = r.json()["id"]
    _wait_job(base, job, until=("running",), timeout=120)
    in_flight: list = []
    sync = threading.Thread(target=lambda: in_flight.append(httpx.post(
        base + "/v1/segment", files=_files(loaded["bomb"]), params={"tta": "true"}, timeout=300)), daemon=True)
    sync.start()
    time.sleep(1.0)
    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if "SingrSegmenter" in a["name"] and "tight" not in a["name"]]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)
    sync.join(timeout=300)
    lost = in_flight[0]
    print(f"\n[load] in-flight request of the killed replica: {lost.status_code} {lost.text[:200]}")
    body = _problem(lost, 500)
    assert "replica stopped" in body["detail"]
    deadline = time.time() + 120
    rec: dict = {}
    while time.time() < deadline:  # Serve starts a new replica; the job's record says what happened
        try:
            resp = httpx.get(f"{base}/v1/jobs/{job}", timeout=30)
            if resp.status_code == 200:
                rec = resp.json()
                if rec["status"] == "failed":
                    break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    assert rec.get("status") == "failed" and "replica running this job stopped" in rec["error"], rec
    # the proxy's own 404 (no application at this prefix) is JSON too
    assert _problem(httpx.get(base + "/tightly/x", timeout=30), 404)
