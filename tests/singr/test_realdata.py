"""The real BraTS-space case in ../shared/data/brats-case (path from SINGR_BRATS_CASE).

Under CI the case must be there: a missing case fails instead of skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from singr.data.readers import load_case_from_files
from singr.preprocess import normalize_image
from singr.regions import labels_to_regions
from singr.sing import DistanceCache, SingSettings, compute_distances, inner_boundary, sing_from_distances, sing_maps

pytestmark = pytest.mark.realdata
DEFAULT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brats-case"


@pytest.fixture(scope="module")
def brats_case():
    root = Path(os.environ.get("SINGR_BRATS_CASE", DEFAULT))
    if not (root / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {root} (set SINGR_BRATS_CASE)")
        pytest.skip(f"real BraTS case not found at {root}")
    return load_case_from_files({m: root / f"{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")},
                                label=root / "seg.nii.gz", label_convention="auto", case_id="brats-case")


def test_reads_real_case(brats_case):
    c = brats_case
    assert c.image.shape == (4, 240, 240, 155) and c.image.dtype == np.float32
    assert c.label.shape == (240, 240, 155) and c.label_convention == "brats2023"
    assert set(np.unique(c.label).tolist()) == {0, 1, 2, 3}
    assert tuple(c.spacing) == (1.0, 1.0, 1.0)
    regions = labels_to_regions(c.label, c.label_convention)
    tc, wt, et = regions
    assert (et <= tc).all() and (tc <= wt).all() and et.any()


def test_sing_maps_of_three_regions(brats_case):
    """Maps of TC, WT, ET on the z-scored 4-channel image, at 3 mm (every 3rd voxel) to keep
    the reference engine's time in the test suite to seconds."""
    img = normalize_image(brats_case.image)[:, ::3, ::3, ::3]
    regions = labels_to_regions(brats_case.label, "brats2023")[:, ::3, ::3, ::3]
    maps = sing_maps(regions, img, lam=0.5, delta=0.5, spacing=(3.0, 3.0, 3.0))
    assert maps.shape == regions.shape and maps.dtype == np.float32
    for r, s in zip(regions, maps):
        assert s.min() >= -1.0 and s.max() <= 1.0
        assert (s[r] >= 0.5).all() and (s[~r] <= -0.5).all()
        np.testing.assert_allclose(s[inner_boundary(r)], 0.5, atol=1e-6)
        band_share = (s > -1.0).mean()
        assert 0.0 < band_share < 0.2     # the band hugs the tumour; most of the head is -1
    # the cached path gives the same map as the direct one (ET, the smallest region)
    cache = DistanceCache(Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"singr-real-{os.getpid()}")
    d = cache.get_or_compute("brats-case", "ET", regions[2], img, SingSettings(lam=0.5), (3.0, 3.0, 3.0))
    np.testing.assert_array_equal(sing_from_distances(d, 0.5), maps[2])
    direct = compute_distances(regions[2], img, lam=0.5, spacing=(3.0, 3.0, 3.0))
    np.testing.assert_array_equal(sing_from_distances(direct, 0.3), sing_from_distances(d, 0.3))
    # the fast default engine against the reference engine (FastGeodis, full volume) on every region
    for r, fast in zip(regions, maps):
        ref = sing_from_distances(compute_distances(r, img, lam=0.5, spacing=(3.0, 3.0, 3.0),
                                                    engine="fastgeodis"), 0.5)
        band = ref > -1
        dS = np.abs(fast - ref)[band]
        assert dS.mean() <= 0.005 and (dS > 0.05).mean() <= 0.01
        assert (np.sign(fast) == np.sign(ref)).all()
