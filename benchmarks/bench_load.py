"""The endpoint under load, at BraTS size: what a valid request costs while others attack.

In one run, against one replica of the real endpoint (Ray Serve in-process, loopback, the
defaults of ``serve/settings.py``): a plain request of the real BraTS case (or a BraTS-size
synthetic one) measured alone, then measured again while

* ``--bombers`` clients send the same case with ``?tta=true`` in a loop (8x its cost: the
  admission budget runs some, queues some, answers the rest 503 + Retry-After),
* 20 slow clients trickle uploads from another loopback address,
* a hostile set is sent over and over: a 320^3 voxel bomb in a few kB, a 66-byte gzip whose
  header announces a 1 GB data offset, a 256^3 cube (over the default voxel cap), a noise
  volume (not a brain), a truncated gzip;

and reports the ratio of the valid request's latency under load to alone, the answers by status,
the replica's peak resident memory during the hostile set against before it (``/proc``), and the
job API's time to 202 against the synchronous answer. ``python benchmarks/bench_load.py`` prints
the figures; ``--results RESULTS.md`` writes the section ``load``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

MODS = ("flair", "t1", "t1ce", "t2")
REAL = Path(os.environ.get("SINGR_BRATS_CASE", Path(__file__).resolve().parents[2] / "shared/data/brats-case"))


def _nii_gz(array: np.ndarray) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes(), compresslevel=1)


def _case_files(tiny: bool) -> tuple[dict[str, bytes], str]:
    if not tiny and (REAL / "t1c.nii.gz").is_file():
        names = dict(zip(MODS, ("t2f", "t1n", "t1c", "t2w")))
        return {m: (REAL / f"{n}.nii.gz").read_bytes() for m, n in names.items()}, f"the real case ({REAL.name})"
    from singr.data.synth import synthesize_case

    shape, box = ((64, 64, 48), None) if tiny else ((240, 240, 155), (150, 185, 140))
    image, _ = synthesize_case(shape, seed=1, brain_box=box)
    return {m: _nii_gz(np.asarray(image[i], np.float32)) for i, m in enumerate(MODS)}, f"synthetic {shape}"


def _hostile() -> list[tuple[str, dict[str, bytes]]]:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2, 2, 2))
    hdr.set_data_dtype(np.float32)
    raw = bytearray(hdr.binaryblock + b"\0" * 4 + b"\0" * 32)
    raw[108:112] = np.float32(1e9).tobytes()  # vox_offset: 1 GB
    offset_bomb = gzip.compress(bytes(raw))
    noise = _nii_gz(np.random.default_rng(0).random((96, 96, 96)).astype(np.float32) + 1)
    cube = _nii_gz(np.zeros((256, 256, 256), np.uint8))
    voxel_bomb = _nii_gz(np.zeros((320, 320, 320), np.uint8))
    return [("voxel bomb 320^3", {m: voxel_bomb for m in MODS}), ("vox_offset 1e9", {m: offset_bomb for m in MODS}),
            ("cube 256^3", {m: cube for m in MODS}), ("noise", {m: noise for m in MODS}),
            ("truncated gzip", {m: noise[: len(noise) // 3] for m in MODS})]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _replica_pid() -> int:
    """The replica of this process' own Ray (a child of its raylet): other Rays may serve singr too."""
    from tune.raycompat import local_node

    ours = set(local_node()[1])
    for pid in subprocess.run(["pgrep", "-f", "ServeReplica:singr"], capture_output=True, text=True).stdout.split():
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid in ours:
            return int(pid)
    raise RuntimeError("no replica of this Ray found")


def _trickle(port: int, answers: list, source: str) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    raw = b""
    try:
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\n"
                  b"Content-Length: 1000000\r\n\r\n")
        for _ in range(240):
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


def bench_load(checkpoint: Path, tiny: bool, bombers: int, rounds: int, jobs_dir: Path) -> dict[str, Any]:
    import httpx
    import ray
    from ray import serve

    from serve.app import make_app
    from serve.proxy_errors import CALLBACK, CALLBACK_ENV
    from tune.nodes import free_port

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ[CALLBACK_ENV] = CALLBACK
    files, what = _case_files(tiny)
    form = [(m, (f"{m}.nii.gz", d, "application/gzip")) for m, d in files.items()]
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="singr-bench-load")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        extra = {"heavy_mvox": 1.0} if tiny else {}  # the tiny case's TTA (1.6 M) is heavy as BraTS TTA (71 M) is
        serve.run(make_app({"model": str(checkpoint), "roi_size": [128, 128, 128], "jobs_dir": str(jobs_dir),
                            **extra},
                           {"num_replicas": 1, "max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 1}}),
                  name="singr", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        while httpx.get(base + "/v1/health", timeout=10).status_code != 200:
            time.sleep(0.3)
        pid = _replica_pid()

        timings: list[str] = []

        def valid() -> float:
            t0 = time.perf_counter()
            r = httpx.post(base + "/v1/segment", files=form, timeout=900)
            assert r.status_code == 200, r.text[:300]
            timings.append(r.headers.get("server-timing", ""))
            return time.perf_counter() - t0

        valid()  # warm
        alone = [valid() for _ in range(rounds)]
        t0 = time.perf_counter()
        sync_tta = httpx.post(base + "/v1/segment", files=form, params={"tta": "true"}, timeout=1800)
        tta_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        job = httpx.post(base + "/v1/jobs", files=form, params={"tta": "true"}, timeout=300)
        accepted_s = time.perf_counter() - t0
        rec, progress = job.json(), []
        while rec["status"] in ("queued", "running"):
            time.sleep(0.5)
            rec = httpx.get(f"{base}/v1/jobs/{rec['id']}", timeout=30).json()
            progress.append(rec["progress"])
        job_s = time.perf_counter() - t0

        rss_before = _rss_mib(pid)
        hostile_peak, hostile_codes = rss_before, []
        t_end = time.time() + 10  # the hostile set alone: what refused uploads cost the replica
        with httpx.Client(timeout=300) as c:
            while time.time() < t_end:
                for _, h in _hostile():
                    r = c.post(base + "/v1/segment", files=[(m, (f"{m}.nii.gz", d, "application/gzip"))
                                                             for m, d in h.items()])
                    hostile_codes.append(r.status_code)
                    hostile_peak = max(hostile_peak, _rss_mib(pid))
        stop = threading.Event()
        codes: dict[str, list[int]] = {"bomb": [], "hostile": []}
        retry_after: list[str] = []
        peak = [rss_before]

        def bomber() -> None:
            with httpx.Client(timeout=1800) as c:
                while not stop.is_set():
                    r = c.post(base + "/v1/segment", files=form, params={"tta": "true"})
                    codes["bomb"].append(r.status_code)
                    if r.status_code == 503:
                        retry_after.append(r.headers.get("retry-after", ""))
                        time.sleep(1.0)

        def hostile() -> None:
            with httpx.Client(timeout=300) as c:
                while not stop.is_set():
                    for _, h in _hostile():
                        r = c.post(base + "/v1/segment", files=[(m, (f"{m}.nii.gz", d, "application/gzip"))
                                                                 for m, d in h.items()])
                        codes["hostile"].append(r.status_code)

        def sampler() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_mib(pid))
                time.sleep(0.1)

        slow: list[int] = []
        threads = [threading.Thread(target=f, daemon=True) for f in [bomber] * bombers + [hostile, sampler]]
        threads += [threading.Thread(target=_trickle, args=(port, slow, "127.0.0.2"), daemon=True) for _ in range(20)]
        for t in threads:
            t.start()
        time.sleep(5.0)
        alone_timing = timings[-1]
        under = [valid() for _ in range(rounds)]
        stop.set()
        for t in threads:  # the bombs still queued are not waited for (daemon threads)
            t.join(timeout=5)
        health = httpx.get(base + "/v1/health", timeout=30).json()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    count = (lambda xs: {str(k): xs.count(k) for k in sorted(set(xs))})
    return {"case": what, "bombers": bombers, "alone_s": alone, "under_load_s": under,
            "ratio": statistics.median(under) / statistics.median(alone), "tta_sync_s": tta_s,
            "tta_status": sync_tta.status_code, "job_accepted_s": accepted_s, "job_done_s": job_s,
            "job_progress_samples": len(progress), "bomb_codes": count(codes["bomb"]),
            "hostile_codes": count(codes["hostile"]), "slow_codes": count(slow),
            "retry_after": sorted(set(retry_after)),
            "replica_rss_before_mib": rss_before, "replica_rss_peak_mib": peak[0], "admission": health["admission"],
            "hostile_alone_codes": count(hostile_codes), "timing_alone": alone_timing,
            "timing_under_load": timings[-rounds:], "replica_rss_hostile_peak_mib": hostile_peak,
            "hostile_bytes": {k: sum(len(d) for d in h.values()) for k, h in _hostile()}}


def _train_smoke(work: Path) -> Path:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    singr = [sys.executable, "-m", "singr"]
    subprocess.run(singr + ["synth", "-c", "smoke.yaml", "-q"], cwd=work, env=env, check=True)
    subprocess.run(singr + ["train", "-c", "smoke.yaml", "-q"], cwd=work, env=env, check=True)
    return work / "runs" / "smoke" / "checkpoints" / "best.safetensors"


def section(r: dict[str, Any]) -> str:
    med = statistics.median
    five = sum(v for k, v in {**r["bomb_codes"], **r["hostile_codes"]}.items() if k.startswith("5") and k != "503")
    return "\n".join([
        f"One replica (1 CPU, defaults of `serve/settings.py`, smoke model, window 128^3), {r['case']}; "
        f"`python benchmarks/bench_load.py`. Same run, same request: alone, then with {r['bombers']} clients "
        "sending it with `?tta=true` in a loop, 20 slow clients trickling from 127.0.0.2 and the hostile set "
        "(voxel bomb, 1 GB vox_offset, 256^3 cube, noise, truncated gzip) sent over and over.", "",
        "| figure | value |", "| --- | --- |",
        f"| plain request alone, median of {len(r['alone_s'])} | {med(r['alone_s']):.2f} s |",
        f"| the same under load, median (max) | {med(r['under_load_s']):.2f} s ({max(r['under_load_s']):.2f} s): "
        f"**{r['ratio']:.2f}x** |",
        f"| where the time went (Server-Timing, ms): alone / under load | `{r['timing_alone']}` / "
        f"{'; '.join(f'`{t}`' for t in r['timing_under_load'])} |",
        f"| `?tta=true` synchronous | {r['tta_sync_s']:.1f} s (status {r['tta_status']}) |",
        f"| the same as a job: 202 after / done after | {r['job_accepted_s']:.2f} s / {r['job_done_s']:.1f} s "
        f"({r['job_progress_samples']} progress polls) |",
        "| TTA bombs answered in the window (those in flight at its end are not waited for) | "
        f"{r['bomb_codes']} (Retry-After {r['retry_after']}) |",
        f"| hostile uploads answered | {r['hostile_codes']}; other 5xx: {five} |",
        f"| slow clients answered | {r['slow_codes']} |",
        f"| the hostile set alone for 10 s: answers, replica RSS before / peak | {r['hostile_alone_codes']}; "
        f"{r['replica_rss_before_mib']:.0f} / {r['replica_rss_hostile_peak_mib']:.0f} MiB (uploads of "
        f"{', '.join(f'{k} {v / 1e3:.0f} kB' for k, v in r['hostile_bytes'].items())}) |",
        f"| replica RSS peak during the whole load | {r['replica_rss_peak_mib']:.0f} MiB |",
        f"| admission counters after | {json.dumps(r['admission'])} |", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="model to serve (default: a smoke model trained here)")
    ap.add_argument("--tiny", action="store_true", help="a 64x64x48 synthetic case (seconds, for tests)")
    ap.add_argument("--bombers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--results", type=Path, help="write the section 'load' of this RESULTS.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="singr-bench-load-") as tmp:
        ckpt = args.checkpoint or _train_smoke(Path(tmp))
        r = bench_load(ckpt, args.tiny, args.bombers, args.rounds, Path(tmp) / "jobs")
    text = section(r)
    print(text)
    if args.results:
        from sections import put  # benchmarks/ is this script's folder

        put(args.results, "load", text, "## The endpoint under load (`benchmarks/bench_load.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
