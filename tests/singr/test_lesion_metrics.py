"""BraTS 2023 lesion-wise Dice / HD95 (singr.metrics.lesion_metrics) on hand-made 3-D cases.

Cubes of 5 x 5 x 5 = 125 voxels are lesions above the glioma size threshold (50 voxels).
The last tests compare with a direct re-implementation of the challenge's loop
(github.com/rachitsaluja/BraTS-2023-Metrics): each lesion dilated on its own, whole-volume masks.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from singr.metrics import (
    LESION_DILATION_ITERS,
    LESION_MIN_VOXELS,
    LESION_MISS_HD95_MM,
    case_metrics,
    hd95,
    lesion_metrics,
)

SHAPE = (40, 40, 40)
ONE_MM = (1.0, 1.0, 1.0)


def _cube(corner: tuple[int, int, int], size: int | tuple[int, int, int] = 5, shape=SHAPE) -> np.ndarray:
    sizes = (size,) * 3 if isinstance(size, int) else size
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(c, c + s) for c, s in zip(corner, sizes))] = True
    return m


def test_glioma_constants_from_the_challenge_code():
    assert (LESION_DILATION_ITERS, LESION_MIN_VOXELS, LESION_MISS_HD95_MM) == (3, 50, 374.0)


def test_perfect_single_lesion():
    gt = _cube((10, 10, 10))
    out = lesion_metrics(gt.copy(), gt, ONE_MM)
    assert out["LesionDice"] == 1.0
    assert out["LesionHD95"] == 0.0
    assert (out["GTLesions"], out["PredLesions"], out["Detected"], out["Misses"], out["FalsePositives"]) == \
        (1, 1, 1, 0, 0)


def test_missed_lesion_scores_zero_and_374():
    a, b = _cube((2, 2, 2)), _cube((25, 25, 25))
    out = lesion_metrics(a, a | b, ONE_MM)
    assert out["LesionDice"] == pytest.approx(1 / 2)
    assert out["LesionHD95"] == pytest.approx((0 + 374) / 2)
    assert (out["GTLesions"], out["Detected"], out["Misses"], out["FalsePositives"]) == (2, 1, 1, 0)


def test_false_positive_lesion_adds_to_the_denominator():
    gt = _cube((2, 2, 2))
    fp = np.zeros(SHAPE, dtype=bool)
    fp[30, 30, 30] = True  # one voxel is enough: predictions are not size-filtered
    out = lesion_metrics(gt | fp, gt, ONE_MM)
    assert out["LesionDice"] == pytest.approx(1 / 2)
    assert out["LesionHD95"] == pytest.approx((0 + 374) / 2)
    assert (out["GTLesions"], out["PredLesions"], out["FalsePositives"], out["Misses"]) == (1, 2, 1, 0)


def test_empty_ground_truth_with_a_prediction():
    out = lesion_metrics(_cube((2, 2, 2)), np.zeros(SHAPE, dtype=bool), ONE_MM)
    assert (out["LesionDice"], out["LesionHD95"], out["FalsePositives"]) == (0.0, 374.0, 1)


def test_both_empty_is_a_perfect_score():
    empty = np.zeros(SHAPE, dtype=bool)
    out = lesion_metrics(empty, empty, ONE_MM)
    assert (out["LesionDice"], out["LesionHD95"]) == (1.0, 0.0)
    assert out["GTLesions"] == out["PredLesions"] == out["FalsePositives"] == 0


@pytest.mark.parametrize("gap, n_lesions", [(6, 1), (7, 2)])
def test_components_merge_into_one_lesion_after_dilation(gap, n_lesions):
    # 3 dilations grow each cube by 3 voxels: a gap of 6 closes, a gap of 7 leaves a voxel between them
    a, b = _cube((5, 10, 10)), _cube((10 + gap, 10, 10))
    out = lesion_metrics(a, a | b, ONE_MM)
    assert out["GTLesions"] == n_lesions
    if n_lesions == 1:  # P = a scored against the merged lesion a | b
        assert out["LesionDice"] == pytest.approx(2 * 125 / (125 + 250))
        assert out["LesionHD95"] == pytest.approx(hd95(a, a | b, ONE_MM))
        assert out["Misses"] == 0
    else:
        assert out["LesionDice"] == pytest.approx(1 / 2)
        assert out["Misses"] == 1


def test_no_dilation_keeps_the_parts_apart():
    a, b = _cube((5, 10, 10)), _cube((12, 10, 10))
    assert lesion_metrics(a, a | b, ONE_MM, dilation_iters=0)["GTLesions"] == 2
    assert lesion_metrics(a, a | b, ONE_MM, dilation_iters=1)["GTLesions"] == 1


def test_prediction_near_the_lesion_is_a_hit_not_a_false_positive():
    gt = _cube((10, 10, 10))
    near = _cube((17, 10, 10))  # 2 voxels off the lesion: inside its 3-voxel dilation, no overlap
    out = lesion_metrics(near, gt, ONE_MM)
    assert (out["Detected"], out["Misses"], out["FalsePositives"]) == (1, 0, 0)
    assert out["LesionDice"] == 0.0
    assert out["LesionHD95"] == pytest.approx(hd95(near, gt, ONE_MM))
    assert out["LesionHD95"] < LESION_MISS_HD95_MM


def test_all_touching_components_are_scored_together():
    gt = _cube((10, 10, 10), size=(10, 5, 5))
    left, right = _cube((10, 10, 10), size=(4, 5, 5)), _cube((16, 10, 10), size=(4, 5, 5))
    out = lesion_metrics(left | right, gt, ONE_MM)
    assert (out["PredLesions"], out["GTLesions"], out["FalsePositives"]) == (2, 1, 0)
    assert out["LesionDice"] == pytest.approx(2 * 200 / (200 + 250))


def test_lesion_under_the_minimum_size_is_ignored():
    big = _cube((2, 2, 2))
    small = _cube((25, 25, 25), size=(5, 5, 2))  # exactly 50 voxels: left out (the challenge keeps > 50)
    out = lesion_metrics(big, big | small, ONE_MM)
    assert (out["LesionDice"], out["LesionHD95"]) == (1.0, 0.0)
    assert (out["GTLesions"], out["IgnoredGTLesions"], out["Misses"]) == (1, 1, 0)
    # predicting the small lesion is not a false positive either
    out = lesion_metrics(big | small, big | small, ONE_MM)
    assert (out["LesionDice"], out["FalsePositives"]) == (1.0, 0)
    # one voxel more and it counts (and is missed)
    small[25, 25, 27] = True
    out = lesion_metrics(big, big | small, ONE_MM)
    assert (out["GTLesions"], out["Misses"], out["LesionDice"]) == (2, 1, pytest.approx(0.5))
    # min_lesion_voxels=0 counts every lesion
    assert lesion_metrics(big, big | _cube((25, 25, 25), 2), ONE_MM, min_lesion_voxels=0)["GTLesions"] == 2


def test_only_small_lesions_and_no_prediction_is_a_perfect_score():
    small = _cube((10, 10, 10), 3)
    out = lesion_metrics(np.zeros(SHAPE, dtype=bool), small, ONE_MM)
    assert (out["LesionDice"], out["LesionHD95"], out["GTLesions"], out["IgnoredGTLesions"]) == (1.0, 0.0, 0, 1)


def test_spacing_scales_the_lesion_hd95():
    gt = _cube((10, 10, 10), 8)
    pred = _cube((12, 11, 10), 8)
    at_1 = lesion_metrics(pred, gt, ONE_MM)["LesionHD95"]
    assert at_1 > 0
    assert lesion_metrics(pred, gt, (2.0, 2.0, 2.0))["LesionHD95"] == pytest.approx(2 * at_1)
    anisotropic = lesion_metrics(pred, gt, (1.0, 3.0, 1.0))["LesionHD95"]
    assert anisotropic == pytest.approx(hd95(pred, gt, (1.0, 3.0, 1.0)))
    assert anisotropic != pytest.approx(at_1)
    # the size threshold counts voxels, whatever their size; misses stay 374 mm
    assert lesion_metrics(np.zeros(SHAPE, dtype=bool), gt, (0.5, 0.5, 0.5))["LesionHD95"] == 374.0


def test_bad_arguments_are_named():
    gt = _cube((2, 2, 2))
    with pytest.raises(ValueError, match="dilation_iters"):
        lesion_metrics(gt, gt, ONE_MM, dilation_iters=-1)
    with pytest.raises(ValueError, match="min_lesion_voxels"):
        lesion_metrics(gt, gt, ONE_MM, min_lesion_voxels=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing"):
        lesion_metrics(gt, gt, (1.0, 1.0))
    with pytest.raises(ValueError, match="same shape"):
        lesion_metrics(gt, gt[:-1], ONE_MM)


def test_case_metrics_default_is_unchanged_and_lesion_adds_columns():
    names = ("TC", "WT", "ET")
    a, b = _cube((2, 2, 2)), _cube((25, 25, 25))
    gt = np.stack([a | b, a | b, a])
    pred = np.stack([a, a | b, a])
    plain = case_metrics(pred, gt, ONE_MM, names)
    assert list(plain) == [f"{m}_{r}" for r in names for m in ("Dice", "IoU", "HD95")] + \
        ["Dice_mean", "IoU_mean", "HD95_mean"]
    full = case_metrics(pred, gt, ONE_MM, names, lesion=True)
    assert {k: full[k] for k in plain} == plain
    extra = [k for k in full if k not in plain]
    assert extra == ["LesionDice_TC", "LesionHD95_TC", "LesionDice_WT", "LesionHD95_WT",
                     "LesionDice_ET", "LesionHD95_ET", "LesionDice_mean", "LesionHD95_mean"]
    assert full["LesionDice_TC"] == pytest.approx(0.5)
    assert full["LesionHD95_TC"] == pytest.approx(187.0)
    assert full["LesionDice_WT"] == full["LesionDice_ET"] == 1.0
    assert full["LesionDice_mean"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert full["LesionHD95_mean"] == pytest.approx(187.0 / 3)
    assert all(isinstance(v, float) for v in full.values())


# --- a direct re-implementation of the challenge's loop, for random cases ---------------------------

_STRUCT18 = ndimage.generate_binary_structure(3, 2)
_STRUCT26 = ndimage.generate_binary_structure(3, 3)


def _reference(pred: np.ndarray, gt: np.ndarray, spacing, dil: int, thresh: int) -> tuple[float, float, int]:
    """Lesion-wise Dice, HD95, FP count the way the challenge computes them (whole-volume masks)."""
    def dilate(m):
        return ndimage.binary_dilation(m, _STRUCT18, iterations=dil) if dil else m

    gt_cc, _ = ndimage.label(gt, _STRUCT26)
    pred_cc, _ = ndimage.label(pred, _STRUCT26)
    dil_cc, n_dil = ndimage.label(dilate(gt), _STRUCT26)
    combined = np.where(gt_cc > 0, dil_cc, 0)
    hit_any: list[int] = []
    rows = []
    for comp in range(1, n_dil + 1):
        gt_tmp = combined == comp
        hits = [int(h) for h in np.unique(pred_cc[dilate(gt_tmp)]) if h]
        hit_any += hits
        pred_tmp = np.isin(pred_cc, hits)
        d = 2 * np.logical_and(pred_tmp, gt_tmp).sum() / (pred_tmp.sum() + gt_tmp.sum())
        h = hd95(pred_tmp, gt_tmp, spacing, crop=False) if hits else 374.0
        rows.append((int(gt_tmp.sum()), d, h))
    fp = len(set(np.unique(pred_cc).tolist()) - set(hit_any) - {0})
    kept = [(d, h) for v, d, h in rows if v > thresh]
    n = len(kept) + fp
    if n == 0:
        return 1.0, 0.0, fp
    return sum(d for d, _ in kept) / n, (sum(h for _, h in kept) + 374 * fp) / n, fp


def _random_blobs(rng: np.random.Generator, shape=(24, 24, 24), n=5) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for _ in range(n):
        size = rng.integers(1, 6, size=3)
        corner = [rng.integers(0, s - k) for s, k in zip(shape, size)]
        m[tuple(slice(c, c + k) for c, k in zip(corner, size))] = True
    return m


@pytest.mark.parametrize("seed", range(12))
def test_matches_a_direct_port_of_the_challenge_loop(seed):
    rng = np.random.default_rng(seed)
    gt = _random_blobs(rng, n=int(rng.integers(0, 6)))
    seen = np.arange(gt.shape[0])[:, None, None] < rng.integers(0, gt.shape[0] + 1)  # GT beyond a cut is missed
    pred = _random_blobs(rng, n=int(rng.integers(0, 6))) | (gt & seen & (rng.random(gt.shape) < 0.8))
    dil, thresh = int(rng.integers(0, 4)), int(rng.choice([0, 5, 20]))
    spacing = (1.0, float(rng.choice([1.0, 1.5])), 2.0)
    out = lesion_metrics(pred, gt, spacing, dilation_iters=dil, min_lesion_voxels=thresh)
    ref_dice, ref_hd, ref_fp = _reference(pred, gt, spacing, dil, thresh)
    assert out["LesionDice"] == pytest.approx(ref_dice, abs=1e-9)
    assert out["LesionHD95"] == pytest.approx(ref_hd, rel=1e-5)
    assert out["FalsePositives"] == ref_fp
