"""singr's metrics against the BraTS challenges' own package (brats-evaluation, in a virtual
environment of its own: scripts/setup_brats_eval.sh), on predictions made from the real case:
the same Dice (1e-6), HD95 never below the package's pooled percentile and equal where both
directions agree, the same lesion-wise Dice where every lesion is matched, and false positives
counted in singr's lesion-wise mean (BraTS 2023) but not in the package's sq_dsc."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_singr_metrics_agree_with_the_official_package_where_the_definitions_agree(tmp_path):
    case = Path(os.environ.get("SINGR_BRATS_CASE", ROOT.parent / "shared" / "data" / "brats-case"))
    if not (case / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {case}")
        pytest.skip("real BraTS case not found")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import brats_eval_compare as bec
    finally:
        sys.path.pop(0)
    table = bec.compare(case, tmp_path)
    assert len(table) == 18 and bec.check_agreement(table) == []
    by = {(r["prediction"], r["region"]): r for r in table}
    same = by[("the reference itself", "WT")]
    assert same["dice_official"] == same["dice_singr"] == 1.0 and same["hd95_singr"] == same["hd95_official"] == 0
    cut = by[("half of the tumour cut away", "WT")]  # far errors in one direction only: the pooled percentile is lower
    assert cut["hd95_singr"] > cut["hd95_official"] > 0 and cut["dice_singr"] == pytest.approx(cut["dice_official"])
    fp = by[("two small false-positive blobs", "WT")]  # BraTS 2023 counts them in the mean, sq_dsc does not
    assert fp["fp"] == 2 and fp["lesion_dice_official"] == pytest.approx(1.0)
    assert fp["lesion_dice_singr"] == pytest.approx(1 / 3, abs=1e-3)
    report = bec.write_report(table, tmp_path / "report", case)
    assert "all hold" in report.read_text()
