"""Latency of a running endpoint: ``python -m serve.bench --case DIR [--clients 8 --requests 4]``.

Sends the case's modality files (``<m>.nii.gz`` or BraTS-named, 2020 or 2023 names) to
POST /v1/segment from ``--clients`` concurrent clients, ``--requests`` each, checks every
answer is 200, and prints p50 / p95 latency and throughput. Client only (no Ray).
"""
from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

NAMES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}


def case_files(folder: Path) -> list:
    files = []
    for m20, m23 in NAMES.items():
        hits = [p for p in sorted(folder.glob("*.nii*"))
                if p.name.split(".")[0].lower().replace("-", "_").split("_")[-1] in (m20, m23)]
        if not hits:
            raise SystemExit(f"no {m20}/{m23} file in {folder}")
        files.append((m20, (hits[0].name, hits[0].read_bytes(), "application/gzip")))
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--case", required=True, type=Path, help="folder with the four modality NIfTI files")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=5, help="per client")
    ap.add_argument("--output", default="nifti", choices=["nifti", "json", "signed"])
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    files = case_files(a.case)
    url = a.url.rstrip("/") + "/v1/segment"
    with httpx.Client(timeout=900) as c:
        for _ in range(a.warmup):
            c.post(url, files=files, params={"output": a.output}).raise_for_status()

    def client(_: int) -> list[float]:
        out = []
        with httpx.Client(timeout=900) as c:
            for _ in range(a.requests):
                t = time.perf_counter()
                r = c.post(url, files=files, params={"output": a.output})
                out.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.clients) as pool:
        lat = sorted(t for ts in pool.map(client, range(a.clients)) for t in ts)
    wall = time.perf_counter() - t0
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    print(f"{len(lat)} requests ({a.clients} clients x {a.requests}), {a.case.name}: "
          f"p50 {statistics.median(lat):.3f} s, "
          f"p95 {p95:.3f} s, min {lat[0]:.3f} s, max {lat[-1]:.3f} s, {len(lat) / wall:.2f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
