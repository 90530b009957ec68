"""SiNG transform: hand-computed values on slabs and a ball, its properties, and the cache."""
from __future__ import annotations

import numpy as np
import pytest

from singr import SingrInputError, sing_map, sing_maps
from singr.sing import DistanceCache, SingSettings, compute_distances, inner_boundary, sing_from_distances


def slab(shape=(16, 30, 30), x0=4, x1=10, margin=2):
    """Slab x in [x0, x1), kept `margin` voxels away from the other faces."""
    m = np.zeros(shape, bool)
    m[x0:x1, margin:shape[1] - margin, margin:shape[2] - margin] = True
    return m


C = (slice(None), 15, 15)  # the centre line along x, far from the slab's side faces


def test_slab_lambda0_hand_values():
    # Boundary at x=4 and x=9; inside G0 = 0,1,2,2,1,0 -> beta = 2 = tau.
    # S = 0.5 + 0.25 * G inside, -(0.5 + 0.25 * G) outside within G0 <= 2, -1 beyond.
    m = slab()
    s = sing_map(m, np.zeros(m.shape, np.float32), lam=0.0, delta=0.5)
    expect = np.full(16, -1.0)
    expect[2:4] = [-1.0, -0.75]
    expect[4:10] = [0.5, 0.75, 1.0, 1.0, 0.75, 0.5]
    expect[10:12] = [-0.75, -1.0]
    np.testing.assert_allclose(s[C], expect, atol=1e-6)


def test_slab_intensity_step_hand_values():
    # Image 0 inside, 1 outside; lam = 0.5: the step out of the mask costs 0.5*1 + 0.5*1 = 1,
    # later steps 0.5. Outside G = 1, 1.5 (x=3, 2); inside G = 0, 0.5, 1 -> tau = 1.5.
    m = slab()
    img = np.where(m, 0.0, 1.0).astype(np.float32)
    s = sing_map(m, img, lam=0.5, delta=0.5)
    k = 0.5 / 1.5
    np.testing.assert_allclose(s[C][1:8], [-1.0, -1.0, -(k * 1.0 + 0.5), 0.5, 0.5 + k * 0.5, 0.5 + k * 1.0,
                                           0.5 + k * 1.0], atol=1e-5)


def test_slab_anisotropic_spacing_hand_values():
    # Spacing 2 mm along x: spatial steps cost 2 * (1 - lam) = 1, the intensity step 0.5.
    # Outside G = 1.5, 2.5; inside G = 0, 1, 2; G0 inside max 4 -> band reaches x = 2; tau = 2.5.
    m = slab()
    img = np.where(m, 0.0, 1.0).astype(np.float32)
    s = sing_map(m, img, lam=0.5, delta=0.5, spacing=(2.0, 1.0, 1.0))
    np.testing.assert_allclose(s[C][1:7], [-1.0, -1.0, -0.8, 0.5, 0.7, 0.9], atol=1e-5)
    iso = sing_map(m, img, lam=0.5, delta=0.5)
    assert not np.allclose(s, iso)


def ball(n=24, r=6.0):
    g = np.indices((n, n, n)) - (n - 1) / 2
    return (g ** 2).sum(0) <= r * r


@pytest.mark.parametrize("delta", [0.5, 0.2, 0.0])
def test_ball_properties(delta):
    m = ball()
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2,) + m.shape).astype(np.float32)
    s = sing_map(m, img, lam=0.5, delta=delta)
    assert s.dtype == np.float32 and s.shape == m.shape
    assert s.min() >= -1.0 and s.max() <= 1.0
    assert (s[m] >= delta).all()                      # sign agrees with the mask, |S| >= delta inside
    assert (s[~m] <= -delta).all()
    d = compute_distances(m, img, lam=0.5)
    band = np.zeros(m.shape, bool)
    band[d.bbox] = d.band
    assert (s[~band] == -1.0).all()                   # -1 outside the band
    assert (np.abs(s[band]) >= delta - 1e-6).all()
    assert np.isclose(np.abs(s[band]).max(), 1.0)     # tau normalises the band's maximum to 1
    np.testing.assert_allclose(s[inner_boundary(m)], delta, atol=1e-6)  # boundary: G = 0


def test_ball_lambda0_centre_is_one():
    m = ball(n=25, r=6.0)
    s = sing_map(m, np.zeros(m.shape, np.float32), lam=0.0, delta=0.5)
    assert s[12, 12, 12] == pytest.approx(1.0)
    assert s[12, 12, 5] == pytest.approx(-1.0) or s[12, 12, 5] < -0.5


def test_constant_image_makes_lambda_irrelevant():
    m = ball()
    img = np.full((3,) + m.shape, 2.0, np.float32)
    np.testing.assert_allclose(sing_map(m, img, lam=0.0), sing_map(m, img, lam=0.8), atol=1e-5)


def test_empty_mask_is_minus_one():
    m = np.zeros((8, 9, 10), bool)
    s = sing_map(m, np.zeros((8, 9, 10), np.float32))
    assert (s == -1.0).all() and s.dtype == np.float32


def test_sing_maps_stacks_regions():
    r = np.stack([ball(), np.zeros((24, 24, 24), bool)])
    out = sing_maps(r, np.zeros((24, 24, 24), np.float32))
    assert out.shape == (2, 24, 24, 24)
    np.testing.assert_array_equal(out[0], sing_map(r[0], np.zeros((24, 24, 24), np.float32)))
    assert (out[1] == -1).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(lam=1.5), "lambda"), (dict(delta=1.0), "delta"), (dict(spacing=(1, 0, 1)), "spacing"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(SingrInputError, match=match):
        sing_map(ball(), np.zeros((24, 24, 24), np.float32), **kwargs)


def test_bad_shapes_and_nan():
    with pytest.raises(SingrInputError, match="3-D"):
        sing_map(np.ones((4, 4), bool), np.zeros((4, 4), np.float32))
    with pytest.raises(SingrInputError, match="matching mask"):
        sing_map(ball(), np.zeros((24, 24, 23), np.float32))
    img = np.zeros((24, 24, 24), np.float32)
    img[0, 0, 0] = np.nan
    with pytest.raises(SingrInputError, match="NaN"):
        sing_map(ball(), img)


def test_canny2d_mode_misses_the_caps():
    m = slab(shape=(30, 30, 16), x0=2, x1=28, margin=2)
    m[:, :, :4] = False
    m[:, :, 10:] = False  # slab of z in [4, 10): caps at z=4 and z=9
    img = np.zeros(m.shape, np.float32)
    s3 = sing_map(m, img, lam=0.0)
    s2 = sing_map(m, img, lam=0.0, boundary_mode="canny2d")
    assert s3[15, 15, 4] == pytest.approx(0.5)  # a cap voxel is boundary in 3-D
    assert s2[15, 15, 4] > 0.5                  # but not for per-slice edges


def test_cache_equals_direct_and_is_reused(tmp_path):
    m = ball()
    img = np.random.default_rng(1).normal(size=(2,) + m.shape).astype(np.float32)
    cache = DistanceCache(tmp_path)
    st = SingSettings(lam=0.5)
    d = cache.get_or_compute("case1", "WT", m, img, st, (1.0, 1.0, 1.0))
    assert (cache.hits, cache.misses) == (0, 1)
    d2 = DistanceCache(tmp_path).get_or_compute("case1", "WT", m, img, st, (1.0, 1.0, 1.0))
    for delta in (0.5, 0.3, 0.0):
        direct = sing_map(m, img, lam=0.5, delta=delta)
        np.testing.assert_array_equal(sing_from_distances(d, delta), direct)
        np.testing.assert_array_equal(sing_from_distances(d2, delta), direct)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic: no temporary left behind
    # a window builds exactly the crop of the full map
    win = (slice(3, 20), slice(0, 11), slice(9, 24))
    np.testing.assert_array_equal(sing_from_distances(d2, 0.5, win), sing_from_distances(d2, 0.5)[win])


def test_cache_detects_changed_mask_and_other_lambda(tmp_path):
    m = ball()
    img = np.zeros((1,) + m.shape, np.float32)
    cache = DistanceCache(tmp_path)
    cache.get_or_compute("c", "TC", m, img, SingSettings(lam=0.5), (1, 1, 1))
    m2 = m.copy()
    m2[12, 12, 3] = True
    assert cache.load("c", "TC", m2, SingSettings(lam=0.5), (1, 1, 1)) is None   # stale
    assert cache.load("c", "TC", m, SingSettings(lam=0.7), (1, 1, 1)) is None    # other lambda
    assert cache.load("c", "TC", m, SingSettings(lam=0.5), (1, 1, 1)) is not None
    p = cache.path("c", "TC", SingSettings(lam=0.5), (1, 1, 1))
    p.write_bytes(b"garbage")                                                     # corrupt -> recompute
    assert cache.load("c", "TC", m, SingSettings(lam=0.5), (1, 1, 1)) is None
    cache.get_or_compute("c", "TC", m, img, SingSettings(lam=0.5), (1, 1, 1))
    assert cache.misses == 2
