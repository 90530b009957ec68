"""The fast engine equals the reference engine (FastGeodis on the full volume)."""
from __future__ import annotations

import numpy as np
import pytest

from singr.sing import compute_distances, geodesic_distance, inner_boundary, sing_from_distances
from singr.sing.raster import raster_geodesic


def blob(shape, seed, n=3):
    """A few overlapping random ellipsoids: irregular, sometimes touching the faces."""
    rng = np.random.default_rng(seed)
    g = np.indices(shape).astype(float)
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = rng.uniform(0.25, 0.75, 3) * np.array(shape)
        r = rng.uniform(2.5, 7.0, 3)
        m |= (((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
    return m


@pytest.mark.parametrize("lam,spacing,channels", [
    (0.0, (1.0, 1.0, 1.0), 1), (0.5, (1.0, 1.0, 1.0), 4), (0.8, (1.0, 1.5, 2.5), 2), (1.0, (1.0, 1.0, 1.0), 1),
])
def test_kernel_is_bitwise_fastgeodis(lam, spacing, channels):
    shape = (22, 25, 19)
    rng = np.random.default_rng(1)
    img = rng.normal(size=(channels,) + shape).astype(np.float32)
    seeds = inner_boundary(blob(shape, 2))
    ref = geodesic_distance(img, seeds, lam, spacing, 4)
    fast, _ = raster_geodesic(img, seeds, lam, spacing, 4)
    np.testing.assert_array_equal(fast, ref)


def test_early_stop_only_when_converged():
    shape = (20, 20, 20)
    seeds = inner_boundary(blob(shape, 3))
    full, ran = raster_geodesic(None, seeds, 0.0, (1, 1, 1), 10)
    assert ran < 10                      # lambda = 0 converges in a couple of sweeps
    np.testing.assert_array_equal(full, raster_geodesic(None, seeds, 0.0, (1, 1, 1), ran)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 0.9])
def test_fast_engine_maps_equal_reference(seed, lam):
    shape = (32, 34, 28)
    rng = np.random.default_rng(seed)
    # smooth-ish image with structure, so geodesic paths bend
    img = rng.normal(size=(2,) + shape).astype(np.float32).cumsum(axis=1) / 4
    m = blob(shape, seed)
    spacing = (1.0, 1.0, 2.0) if seed % 2 else (1.0, 1.0, 1.0)
    ref = compute_distances(m, img, lam, spacing, engine="fastgeodis")
    fast = compute_distances(m, img, lam, spacing, engine="fast")
    for delta in (0.5, 0.0):
        a, b = sing_from_distances(fast, delta), sing_from_distances(ref, delta)
        band = b > -1
        d = np.abs(a - b)
        assert d[band].mean() <= 0.005 and (d[band] > 0.05).mean() <= 0.01
        assert (np.sign(a) == np.sign(b)).all()


def test_fast_engine_small_and_face_touching_masks():
    shape = (16, 16, 16)
    img = np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32)
    for m in (np.zeros(shape, bool), blob(shape, 5, n=1)):
        m2 = m.copy()
        m2[0:3, 5:9, 5:9] = True          # touches a face of the volume
        m2[12, 12, 12] = True             # a single voxel
        for mask in (m, m2):
            ref = sing_from_distances(compute_distances(mask, img, 0.5, engine="fastgeodis"))
            fast = sing_from_distances(compute_distances(mask, img, 0.5, engine="fast"))
            np.testing.assert_array_equal(fast, ref)
