"""The endpoint against hostile or unlucky clients, and `singr serve` as a process.

Each test here failed on singr 0.1: voxel bombs cost gigabytes, trickling uploads blocked the
health check, a zero sform gave a plain-text 500, FastAPI's own errors were not the
documented JSON, there was no API key, /v1/model showed server paths, the label map copied
the upload's free-text header, a model that failed to load left `singr serve` answering 503
forever, and SIGTERM left Ray's agents orphaned."""
from __future__ import annotations

import gzip
import os
import select
import signal
import socket
import subprocess
import sys
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
PY = sys.executable
BIN = Path(PY).parent
KEY = "sekret-key"
MODS = ("flair", "t1", "t1ce", "t2")



def _nii_gz(array: np.ndarray, affine: np.ndarray | None = None, header=None) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.eye(4) if affine is None else affine, header=header).to_bytes(),
                         compresslevel=1)


def _files(mapping: dict[str, bytes]) -> list:
    return [(m, (f"{m}.nii.gz", d, "application/gzip")) for m, d in mapping.items()]


@pytest.fixture(scope="module")
def hardened(smoke_model):
    """The app with small limits and an API key, on a free loopback port."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import serve

    from serve.app import make_app

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="singr-harden")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app({"model": str(smoke_model["checkpoint"]), "api_key": KEY, "max_upload_mb": 16,
                            "max_voxels": 64 ** 3, "upload_timeout_s": 30, "upload_idle_s": 3,
                            "upload_min_rate_kbps": 64, "upload_rate_grace_s": 15,
                            "max_concurrent_uploads": 3, "max_uploads_per_client": 2, "num_threads": 1},
                           {"num_replicas": 1, "max_ongoing_requests": 8, "ray_actor_options": {"num_cpus": 0.5}}),
                  name="singr", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and httpx.get(base + "/v1/health", timeout=10).status_code != 200:
            time.sleep(0.3)
        yield {"base": base, "port": port, "model": smoke_model, "headers": {"X-API-Key": KEY}}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _is_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert set(body) == {"error", "detail", "file", "case"} and body["error"] and body["detail"], body
    return body


def test_voxel_bomb_is_refused_from_its_header(hardened):
    bomb = _nii_gz(np.zeros((320, 320, 320), np.uint8))  # 32.8 M voxels in a few kB (never inflated: unit test)
    r = httpx.post(hardened["base"] + "/v1/segment", files=_files({m: bomb for m in MODS}),
                   headers=hardened["headers"], timeout=60)
    body = _is_problem(r, 413)
    assert "voxels" in body["detail"] and body["file"] == "flair.nii.gz"


def _trickle(port: int, answers: list, source: str = "127.0.0.1", n_bytes: int = 40) -> None:
    """A client that sends its upload a byte every 0.5 s until the server answers (or ``n_bytes`` are
    sent); appends (status, answer) as soon as the answer comes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    head = (f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            "Content-Type: application/gzip\r\nContent-Length: 1000000\r\n\r\n")
    data = ""
    try:
        s.sendall(head.encode())
        for _ in range(n_bytes):
            if select.select([s], [], [], 0.5)[0]:  # answered: stop sending
                break
            s.sendall(b"\x1f")
        raw = b""
        while select.select([s], [], [], 60 if not raw else 5)[0]:  # the whole answer: head, then body
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
            head_end = raw.find(b"\r\n\r\n")
            length = next((int(x.split(b":")[1]) for x in raw[:head_end].split(b"\r\n")
                           if x.lower().startswith(b"content-length:")), None) if head_end >= 0 else None
            if length is not None and len(raw) >= head_end + 4 + length:
                break
        data = raw.decode(errors="replace")
    except OSError:
        pass  # the server closed the connection
    finally:
        s.close()
    try:
        answers.append((int(data.split()[1]) if data.startswith("HTTP/") else -1, data))
    except (ValueError, IndexError):
        answers.append((-1, data))


def test_trickling_uploads_do_not_block_health(hardened):
    """12 clients from one address send a body a byte at a time: 2 are read (max_uploads_per_client),
    the others get 429 at once; the 2 are cut once their mean rate is below the minimum after the
    grace (408 naming upload_min_rate_kbps); meanwhile the health check answers every time."""
    base, port = hardened["base"], hardened["port"]
    answers: list = []
    threads = [threading.Thread(target=_trickle, args=(port, answers), daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    for _ in range(10):
        assert httpx.get(base + "/v1/health", timeout=10).status_code == 200
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=60)
    codes = [c for c, _ in answers]
    assert sorted(set(codes)) == [408, 429] and codes.count(408) == 2, codes
    assert all("upload_min_rate_kbps" in body for c, body in answers if c == 408), answers
    assert all('"too many requests"' in body and "max_uploads_per_client" in body for c, body in answers if c == 429)
    small = hardened["model"]["files"]  # and the replica still segments
    assert httpx.post(base + "/v1/segment", files=_files(small), headers=hardened["headers"],
                      timeout=120).status_code == 200


def test_a_valid_request_gets_through_20_slow_clients(hardened):
    """20 clients trickle from 127.0.0.2 (one address: 2 of them read, 18 refused with 429); a valid
    upload from 127.0.0.1 meanwhile is read and segmented while those 2 still hold their reads.
    Before reads were slotted per address and decoding had slots of its own, the 3 reading slots
    went to the slow clients and every valid upload got 503 for the whole upload timeout."""
    base, port = hardened["base"], hardened["port"]
    answers: list = []
    threads = [threading.Thread(target=_trickle, args=(port, answers, "127.0.0.2"), daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(answers) < 18 and time.time() < deadline:  # the 18 refused at once
        time.sleep(0.1)
    assert [c for c, _ in answers].count(429) == 18, answers
    r = httpx.post(base + "/v1/segment", files=_files(hardened["model"]["files"]), headers=hardened["headers"],
                   timeout=120)
    still_reading = 20 - len(answers)  # the slow clients not yet answered when the valid one was
    assert r.status_code == 200, r.text[:300]
    assert still_reading == 2, answers  # answered while both slow reads were still held
    for t in threads:
        t.join(timeout=60)
    assert sorted(c for c, _ in answers).count(408) == 2, answers


def _with_sform(data: bytes, srow: np.ndarray) -> bytes:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    hdr = img.header.copy()
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srow
    return gzip.compress(nib.Nifti1Image(np.asarray(img.dataobj), None, header=hdr).to_bytes())


@pytest.mark.parametrize("srow", [np.zeros((3, 4)), np.array([[1.0, 0, 0, 0], [0, np.nan, 0, 0], [0, 0, 1, 0]])])
@pytest.mark.parametrize("output", ["nifti", "json"])
def test_degenerate_geometry_is_a_json_422(hardened, srow, output):
    files = {m: _with_sform(d, srow) for m, d in hardened["model"]["files"].items()}
    r = httpx.post(hardened["base"] + "/v1/segment", params={"output": output}, files=_files(files),
                   headers=hardened["headers"], timeout=60)
    assert "affine" in _is_problem(r, 422)["detail"]


def test_every_error_is_the_documented_json(hardened):
    base, h = hardened["base"], hardened["headers"]
    _is_problem(httpx.get(base + "/v1/segment", headers=h, timeout=30), 405)
    _is_problem(httpx.get(base + "/v1/nothing", timeout=30), 404)
    body = _is_problem(httpx.post(base + "/v1/segment", params={"output": "png"}, files=_files({"t2": b"x"}),
                                  headers=h, timeout=30), 422)
    assert "output" in body["detail"]
    _is_problem(httpx.get(base + "/static/../app.py", timeout=30), 404)


def test_api_key_and_no_server_paths(hardened):
    base, small = hardened["base"], hardened["model"]["files"]
    _is_problem(httpx.post(base + "/v1/segment", files=_files(small), timeout=60), 401)
    _is_problem(httpx.post(base + "/v1/segment", files=_files(small), headers={"X-API-Key": "wrong"}, timeout=60),
                401)
    _is_problem(httpx.get(base + "/v1/model", timeout=30), 401)
    health = httpx.get(base + "/v1/health", timeout=30)
    model = httpx.get(base + "/v1/model", headers=hardened["headers"], timeout=30)
    assert health.status_code == 200 and model.status_code == 200
    text = health.text + model.text
    for leak in (str(hardened["model"]["work"]), "/tmp/", "/work/", "/root"):
        assert leak not in text, leak
    assert model.json()["uri"] == "best.safetensors"


def test_label_map_drops_free_text_from_the_upload(hardened):
    hdr = nib.Nifti1Header()
    hdr["descrip"] = b"Patient: Jane Doe"
    hdr.extensions.append(nib.nifti1.Nifti1Extension(6, b"Jane Doe, MRN 1234"))
    files = {}
    for m, d in hardened["model"]["files"].items():
        img = nib.Nifti1Image.from_bytes(gzip.decompress(d))
        files[m] = _nii_gz(np.asarray(img.dataobj), img.affine, header=hdr)
    r = httpx.post(hardened["base"] + "/v1/segment", files=_files(files), headers=hardened["headers"], timeout=120)
    assert r.status_code == 200, r.text
    raw = gzip.decompress(r.content)
    out = nib.Nifti1Image.from_bytes(raw)
    assert b"Jane" not in raw and len(out.header.extensions) == 0
    assert bytes(out.header["descrip"]).strip(b"\0") == b""


def test_a_replica_whose_model_fails_is_unhealthy(hardened, tmp_path):
    from ray import serve

    from serve.app import make_app

    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 100)
    status = ""
    try:  # Serve's health check fails the replica: the deployment fails (or shows UNHEALTHY meanwhile)
        serve.run(make_app({"model": str(bad)}, {"ray_actor_options": {"num_cpus": 0.25}}), name="broken",
                  route_prefix="/broken", blocking=False)
        deadline = time.time() + 120
        while time.time() < deadline and not status.endswith(("UNHEALTHY", "DEPLOY_FAILED")):
            app = serve.status().applications.get("broken")
            status = str(app.deployments["SingrSegmenter"].status if app else "")
            time.sleep(1.0)
    except RuntimeError as e:
        status = f"DEPLOY_FAILED: {e}"
    finally:
        serve.delete("broken")
    assert status.endswith(("UNHEALTHY", "DEPLOY_FAILED")) or "failed" in status, status


# --------------------------------------------------------------------------- `singr serve` as a process


def _serve_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"})
    return env


def test_serve_refuses_bad_sources_before_starting(tmp_path):
    singr = str(BIN / "singr")
    p = subprocess.run([singr, "serve", "--model", "missing.safetensors"], cwd=tmp_path, env=_serve_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "missing.safetensors" in p.stderr and "not found" in p.stderr
    p = subprocess.run([singr, "serve", "--model", "models:/nope@champion"], cwd=tmp_path, env=_serve_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no MLflow store" in p.stderr
    assert not (tmp_path / "mlflow.db").exists()  # looking for a model never creates an empty store
    p = subprocess.run([singr, "serve", "--model", "x.safetensors", "--host", "0.0.0.0"], cwd=tmp_path,
                       env=_serve_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "API key" in p.stderr


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.time() + timeout
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} in:\n" + "".join(lines))


def _descendants(pid: int) -> set[int]:
    from tune.devcluster import descendants

    return descendants([pid]) - {pid}


def test_serve_exits_with_the_load_error(tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 100)
    p = subprocess.run([str(BIN / "singr"), "serve", "--model", str(bad), "--port", str(free_port())],
                       cwd=tmp_path, env=_serve_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "failed to load" in p.stdout and "broken safetensors checkpoint" in p.stdout


def test_sigterm_stops_serve_cleanly(smoke_model, tmp_path):
    from tune.devcluster.procs import alive as _alive

    port = free_port()
    proc = subprocess.Popen([str(BIN / "singr"), "serve", "--model", str(smoke_model["checkpoint"]), "--port",
                             str(port)], cwd=tmp_path, env=_serve_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, "model loaded, ready", 300)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10).status_code == 200
        kids = _descendants(proc.pid)
        assert kids, "Ray's processes run below singr serve"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "[singr] stopping" in out
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in kids):
        time.sleep(0.5)
    assert not [p for p in kids if _alive(p)], "orphaned processes after SIGTERM"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
