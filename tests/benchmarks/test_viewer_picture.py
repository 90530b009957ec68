"""benchmarks/viewer_picture.py's data and scores (the run itself trains for 20 minutes and drives
a browser: it makes the README's pictures): the training data are the real case (links) and its
left-right mirror image (written), split so that the mirror is the validation case; the region
Dice follows BraTS 2023 labels; the crosshair lands on the tumour in NiiVue's RAS fractions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


def test_region_dice_uses_brats_2023_regions():
    vp = benchmark_module("viewer_picture")
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1:3, 1:3, 1:3] = 1  # NCR: in WT and TC
    seg[3:5, 1:3, 1:3] = 2  # ED: WT only
    seg[1:3, 3:5, 1:3] = 3  # ET: all three
    assert vp.region_dice(seg, seg) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    pred = seg.copy()
    pred[pred == 2] = 0     # the oedema missed: WT 2*16/(16+24), TC and ET untouched
    assert vp.region_dice(pred, seg) == {"WT": round(32 / 40, 4), "TC": 1.0, "ET": 1.0}
    assert vp.region_dice(np.zeros_like(seg), seg)["ET"] == 0.0


@pytest.mark.realdata
def test_the_data_are_the_case_and_its_mirror(tmp_path):
    case = Path(os.environ.get("SINGR_BRATS_CASE", ROOT.parent / "shared" / "data" / "brats-case"))
    if not (case / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {case}")
        pytest.skip("real BraTS case not found")
    vp = benchmark_module("viewer_picture")
    data = vp.make_data(case, tmp_path)
    assert json.loads((tmp_path / "split.json").read_text())["val"] == ["real-mirror"]
    link = data / "real" / "real-t1c.nii.gz"
    assert link.is_symlink() and link.resolve() == (case / "t1c.nii.gz").resolve()
    seg = np.asarray(nib.load(str(case / "seg.nii.gz")).dataobj)
    mirror = nib.load(str(data / "real-mirror" / "real-mirror-seg.nii.gz"))
    np.testing.assert_array_equal(np.asarray(mirror.dataobj), seg[::-1])
    np.testing.assert_allclose(mirror.affine, nib.load(str(case / "seg.nii.gz")).affine)
    assert vp.region_dice(np.asarray(mirror.dataobj), seg)["WT"] < 0.5  # the tumour is on one side
    # the crosshair: fractions along R, A, S, as nibabel's RAS reorientation of the label map places the tumour
    canonical = np.asarray(nib.as_closest_canonical(nib.load(str(case / "seg.nii.gz"))).dataobj) > 0
    expected = (np.argwhere(canonical).mean(0) + 0.5) / canonical.shape
    np.testing.assert_allclose(vp.tumour_centre(case), expected, atol=1e-6)
    assert not np.allclose(expected, (np.argwhere(seg > 0).mean(0) + 0.5) / seg.shape, atol=0.01)  # axes flipped
