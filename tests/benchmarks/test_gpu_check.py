"""The GPU check's pieces that run without a GPU: its RESULTS.md section, its table, and the
message it stops with where torch sees no GPU (the check itself runs on a GPU machine only:
``bash benchmarks/gpu_check.sh``)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_section_is_appended_then_replaced(tmp_path):
    res = tmp_path / "RESULTS.md"
    res.write_text("# Results\n\nother text\n")
    gpu_check.put_section(res, "first run\n")
    body = res.read_text()
    assert body.startswith("# Results\n\nother text\n") and "## GPU check" in body and "first run" in body
    res.write_text(body + "\n## later section\n\nkept\n")
    gpu_check.put_section(res, "second run\n")
    body = res.read_text()
    assert "second run" in body and "first run" not in body and body.count(gpu_check.BEGIN) == 1
    assert body.endswith("## later section\n\nkept\n") and "other text" in body
    kept = gpu_check.kept_section(res)  # what run.py appends when it rewrites the file
    assert kept[1] == gpu_check.HEADING and kept[3].startswith(gpu_check.BEGIN) and "second run" in kept[3]
    assert gpu_check.kept_section(tmp_path / "none.md") == []


def test_table_names_every_step():
    res = {"date": "2026-12-04", "device": "cuda", "trial_gpu": 0.5, "amp": True, "cases": 6, "shape": [240, 240, 155],
           "patch": "128x128x128", "batch": 2, "serve_gpus": 1.0, "wall_s": 300.0,
           "machine": {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "capability": "9.0", "cpu_count": 16,
                       "torch": "2.11.0", "cuda": "13.0", "ray": "2.60.0", "fastgeodis_cuda": True},
           "maps": {"regions": 3, "lambdas": [0.25, 0.5, 0.75], "cpu_s": 6.0, "cuda_s": 1.5, "speedup": 4.0,
                    "max_abs_diff_sing": 1e-6},
           "sweep": {"wall_s": 150.0, "map_seconds": 30.0, "maps_computed": 45, "map_cases": 5,
                     "registered": {"name": "singr-gpu-check", "version": 1, "alias": "champion"},
                     "trials": [{"trial_id": "t1", "first_report_s": 20.0, "epoch_s": 5.0, "patches_per_s": 9.5,
                                 "data_wait_share": 0.25, "val_share": 0.1, "epochs_run": 4}],
                     "gpu": {"samples": 100, "util_mean_pct": 55.0, "util_busy_share": 0.5, "memory_max_mib": 9000.0}},
           "serve": {"ready_s": 20.0, "first_request_s": 5.0, "warm_request_s": 2.0, "requests": 4, "device": "cuda"}}
    md = gpu_check.markdown(res)
    for needle in ("NVIDIA H200", "**4.0x**", "45 maps of 5 cases", "**9.5 patches/s**", "waiting for data 25%",
                   "mean utilisation 55.0%", "singr-gpu-check v1 @champion", "then 2.0 s (median of 3)",
                   "--num-gpus 1"):
        assert needle in md, needle


def test_refuses_without_a_gpu(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--work", str(tmp_path / "w"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "no CUDA GPU visible to torch" in r.stderr
    assert not (tmp_path / "w").exists()
