"""benchmarks/scale.py on tiny cases: every stage measured at every N, the section written
between its markers and kept by run.py; no timing is asserted, only that figures exist and
agree (cases added, maps computed for the new cases only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_scale_runs_on_tiny_cases(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmarks\n\nearlier text\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--tiny", "--n", "2", "3",
                        "--work", str(tmp_path / "w"), "--out", str(out)], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "w" / "scale.json").read_text())
    rows = res["rows"]
    assert [row["n"] for row in rows] == [2, 3] and [row["new"] for row in rows] == [2, 1]
    assert [row["maps_computed"] for row in rows] == [12, 6]  # 3 regions x 2 lambdas, the new cases only
    assert rows[1]["maps_cached"] == 12
    for row in rows:
        assert row["synth_s_per_case"] > 0 and row["preprocess_s_per_case"] > 0 and row["map_s_per_case_lambda"] > 0
        assert 0 < row["input_bytes_per_case"] and 0 < row["lambda_bytes_per_case"] < row["cache_bytes_per_case"]
        assert all(row["patches"][f"workers_{w}"] > 0 for w in (0, 1, 2))
    assert set(res["growth"]) >= {"synth_s_per_case", "preprocess_s_per_case", "map_s_per_case_lambda",
                                  "driver_peak_rss"}
    b = res["brats2021"]
    assert b["cases"] == 1251 and b["cache_gb"] > 0 and b["map_stage_h"] > 0 and set(b["loader_keeps_up"]) == {
        "V100", "A100 (AMP)"}
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text") and "## At BraTS size" in text
    assert "<!-- scale:begin -->" in text and "| 3 |" in text
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import scale
    finally:
        sys.path.pop(0)
    kept = scale.kept_section(out)  # what run.py puts back when it rewrites RESULTS.md
    assert kept[1] == scale.HEADING and "| 2 |" in kept[3] and kept[3].endswith("<!-- scale:end -->")
