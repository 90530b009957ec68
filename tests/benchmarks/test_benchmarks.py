"""The benchmarks run (on tiny inputs); their timings are not tested, only that they are produced
and that what they compare agrees (same maps, same label maps, a warm cache computes nothing)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmarks_run_on_tiny_input(tmp_path):
    case = Path(os.environ.get("SINGR_BRATS_CASE", ROOT.parent / "shared" / "data" / "brats-case"))
    if not (case / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {case}")
        pytest.skip("real BraTS case not found")
    out = tmp_path / "RESULTS.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--repeats", "1",
                        "--case", str(case), "--out", str(out)], capture_output=True, text=True, timeout=900,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    for needle in ("fast engine (default)", "reference engine", "bitwise equal", "samples/s", "peak RSS",
                   "HTTP endpoint", "in-process (`singr predict`)", "cold (empty)", "warm (second run)"):
        assert needle in text
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["infer"]["labels_equal"] is True  # the endpoint returns what singr predict writes
    assert res["sweep_maps"]["warm_computed"] == 0 and res["sweep_maps"]["cold_computed"] > 0
    assert res["sweep_maps"]["warm_cached"] == res["sweep_maps"]["cold_computed"]
    assert "| TC |" in text and "| WT |" in text and "| ET |" in text
    # fast inference: the section and its agreement figures (Dice per region of ours vs the plain sliding window)
    assert "## Fast inference: the Predictor vs a plain sliding window" in text and "ours vs baseline" in text
    fi = res["fast_infer"]
    for key, dice in fi["dice"].items():
        assert set(dice) == {"TC", "WT", "ET"}, key
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in dice.values()), (key, dice)
    assert "ours_vs_baseline" in fi["dice"] and 0.0 <= fi["min_dice"] <= 1.0
    # the same-answer row: our execution over the baseline's windows (no crop, constant blending)
    assert fi["min_dice_exact"] == min(fi["dice"]["ours_exact_vs_baseline"].values())
    assert fi["seconds"]["ours_exact"] > 0 and "same answer" in text
    assert fi["seconds"]["baseline"] > 0 and fi["seconds"]["ours"] > 0
    # the compact cache: the same data in fewer bytes, patch rates of both formats measured
    c = res["cache"]
    assert "## Compact cache" in text and c["regions_exact"] is True and c["image_max_abs_diff"] < 1e-6
    assert c["format2_bytes"] < c["format1_bytes"] and c["format2_over_input"] == c["format2_bytes"] / c["input_bytes"]
    assert all(r["format1_per_s"] > 0 and r["format2_per_s"] > 0 for r in c["rates"].values())
    a = c["augment"]  # the augmentation against MONAI's transforms, and the pipeline before both changes
    assert a["ratio"] == pytest.approx(statistics.median([o / m for o, m in zip(a["ours"], a["monai"])]))
    assert a["monai_per_s"] > 0 and a["before_per_s"] > 0 and "format 1, MONAI transforms (before)" in text
    # BraTS-size synthetic cases (tiny geometry here): both generators timed, the box one's head smaller
    s = res["synth"]
    assert "## BraTS-size synthetic cases" in text and s["cases"] >= 2
    assert s["before_s"] > 0 and s["now_s"] > 0 and s["now_bytes"] < s["before_bytes"]
    assert max(s["now_brain_ml"]) < min(s["before_brain_ml"]) and s["real"]["brain_ml"] > 500
    # trial start-up: both runners' sweeps ran, each with its slot share and start-up parts
    b = res["startup"]
    assert "## Trial start-up" in text and len(b["train"]["scores"]) == len(b["inline"]["scores"]) == 2
    for runner in ("train", "inline"):
        assert 0.0 < b[runner]["epoch_share"] <= 1.0 and b[runner]["startup_s"] >= 0.0 and b[runner]["wall_s"] > 0
    assert "startup/worker_group_s" in b["train"]["parts"] and "startup/worker_group_s" not in b["inline"]["parts"]
