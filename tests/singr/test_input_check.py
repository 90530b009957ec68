"""Input that is not BraTS-space brain MR is recognised (singr.data.input_check), on the real case,
on synthetic cases and on what a scanner or an attacker sends instead."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from singr.data.input_check import LIMITS, check_input, check_prediction, profile_input

REAL = Path(os.environ.get("SINGR_BRATS_CASE", Path(__file__).resolve().parents[3] / "shared/data/brats-case"))


def _real_image() -> np.ndarray:
    import nibabel as nib

    if not (REAL / "t1c.nii.gz").is_file():
        pytest.skip(f"the shared real case is not at {REAL}")
    return np.stack([np.asarray(nib.load(REAL / f"{m}.nii.gz").dataobj, dtype=np.float32)
                     for m in ("t2f", "t1n", "t1c", "t2w")])


def _synthetic() -> np.ndarray:
    from singr.data.synth import synthesize_case  # the generator the demo trains on

    return np.asarray(synthesize_case((48, 48, 40), seed=3)[0], dtype=np.float32)


def test_the_real_case_passes_and_its_profile_is_brain_like():
    prof = profile_input(_real_image(), (1.0, 1.0, 1.0))
    assert check_input(prof, ("t2f", "t1n", "t1c", "t2w"), (1.0, 1.0, 1.0)) == []
    assert 0.05 < prof.foreground_share < 0.3 and 800 < prof.foreground_ml < 1600
    assert min(prof.mask_dice) > 0.99 and min(prof.contrast_cv) > 0.1


def test_synthetic_cases_pass():
    prof = profile_input(_synthetic(), (1.0, 1.0, 1.0))
    assert check_input(prof, (), (1.0, 1.0, 1.0)) == [], prof


def test_what_is_not_brats_space_input_is_named():
    rng = np.random.default_rng(0)
    noise = rng.random((4, 40, 40, 30)).astype(np.float32) + 0.1
    found = check_input(profile_input(noise, (1, 1, 1)), ("flair", "t1", "t1ce", "t2"))
    assert len(found) == 1 and "not skull-stripped" in found[0] and "100%" in found[0]

    big = check_input(profile_input(noise, (4, 4, 4)), ())  # 48 000 voxels of 64 ul: 3.1 l
    assert any("larger than any brain" in f for f in big)

    img = _synthetic()
    flat = img.copy()
    flat[2][flat[2] != 0] = 5.0  # a constant channel inside the brain
    found = check_input(profile_input(flat, (1, 1, 1)), ("flair", "t1", "t1ce", "t2"))
    assert found == [found[0]] and "no contrast in t1ce" in found[0]

    moved = img.copy()
    moved[1] = np.roll(img[1], 12, axis=0)  # one modality not co-registered
    found = check_input(profile_input(moved, (1, 1, 1)), ("flair", "t1", "t1ce", "t2"))
    assert any("one brain mask" in f and "t1 " in f for f in found), found

    found = check_input(profile_input(img, (1.0, 1.0, 3.0)), (), (1.0, 1.0, 1.0))
    assert found and "voxel size 1x1x3 mm" in found[0] and "resample" in found[0]
    assert check_input(profile_input(img, (1.0, 1.0, 1.4)), (), (1.0, 1.0, 1.0)) == []  # within the factor 1.5


def test_a_tumour_filling_the_brain_is_a_warning():
    img = _synthetic()
    prof = profile_input(img, (1, 1, 1))
    brain = np.any(img != 0, axis=0)
    small = np.zeros((3,) + brain.shape, bool)
    small[:, 20:24, 20:24, 18:22] = True
    assert check_prediction(("TC", "WT", "ET"), small, prof) == []
    whole = np.stack([brain, brain, brain])
    (w,) = check_prediction(("TC", "WT", "ET"), whole, prof)
    assert "WT fills 100% of the brain" in w
    assert LIMITS["max_tumour_share"] < 1.0
