"""Metrics against hand computation: Dice, IoU, HD95 (mm), empty-case conventions, summaries."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from singr.metrics import EMPTY_HD95_MM, case_metrics, dice, hd95, iou, summarize


def _box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def _hd95_brute_force(pred, gt, spacing):
    """Surface voxels = mask XOR erosion (6-connectivity); symmetric max of directed 95th percentiles."""
    sp = np.asarray(spacing, dtype=float)

    def surface(m):
        return np.argwhere(m ^ ndimage.binary_erosion(m)) * sp

    a, b = surface(pred), surface(gt)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_empty_hd95_is_the_brats_diagonal():
    assert EMPTY_HD95_MM == pytest.approx(math.sqrt(240 ** 2 + 240 ** 2 + 155 ** 2), abs=0.01)


def test_dice_and_iou_by_hand():
    pred = np.zeros((4, 4, 4), dtype=bool)
    gt = np.zeros((4, 4, 4), dtype=bool)
    pred[0, 0, :3] = True          # 3 voxels
    gt[0, 0, 1:] = True            # 3 voxels, 2 shared
    assert dice(pred, gt) == pytest.approx(2 * 2 / 6)
    assert iou(pred, gt) == pytest.approx(2 / 4)
    assert dice(pred, pred) == 1.0 and iou(pred, pred) == 1.0
    # 0/1 integer masks are accepted
    assert dice(pred.astype(np.uint8), gt.astype(np.int64)) == pytest.approx(2 / 3)


def test_empty_case_conventions():
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = _box((5, 5, 5), (1, 1, 1), (3, 3, 3))
    assert (dice(empty, empty), iou(empty, empty), hd95(empty, empty, (1, 1, 1))) == (1.0, 1.0, 0.0)
    for a, b in [(empty, full), (full, empty)]:
        assert dice(a, b) == 0.0 and iou(a, b) == 0.0
        assert hd95(a, b, (1, 1, 1)) == EMPTY_HD95_MM


def test_hd95_parallel_plates_known_distance():
    # two 6x6 one-voxel plates 3 voxels apart along x: every surface voxel is exactly 3 from the other
    shape = (12, 10, 10)
    pred = _box(shape, (4, 2, 2), (5, 8, 8))
    gt = _box(shape, (7, 2, 2), (8, 8, 8))
    assert hd95(pred, gt, (1, 1, 1)) == pytest.approx(3.0, abs=1e-5)
    assert hd95(pred, gt, (2.0, 1, 1)) == pytest.approx(6.0, abs=1e-5)
    # plates 2 apart along z with anisotropic spacing (1, 1, 2.5) -> 5 mm
    pred_z = _box(shape, (2, 2, 3), (8, 8, 4))
    gt_z = _box(shape, (2, 2, 5), (8, 8, 6))
    assert hd95(pred_z, gt_z, (1, 1, 2.5)) == pytest.approx(5.0, abs=1e-5)
    assert hd95(pred, pred, (1, 1, 1)) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.5), (0.8, 1.2, 3.0)])
def test_hd95_offset_cubes_against_brute_force(spacing):
    shape = (16, 16, 16)
    pred = _box(shape, (3, 3, 3), (9, 9, 9))
    gt = _box(shape, (5, 3, 4), (11, 9, 10))  # shifted by (2, 0, 1)
    expected = _hd95_brute_force(pred, gt, spacing)
    assert hd95(pred, gt, spacing) == pytest.approx(expected, abs=1e-4)
    # the whole cube shifted by 2 along x: the far faces are 2 * spacing_x apart
    assert expected >= 2 * spacing[0] - 1e-9


def test_hd95_crop_equals_uncropped():
    rng = np.random.default_rng(0)
    shape = (20, 18, 16)
    pred = ndimage.binary_dilation(rng.random(shape) > 0.985, iterations=1)
    gt = ndimage.binary_dilation(rng.random(shape) > 0.985, iterations=1)
    pred[0, 5, 5] = True  # touches the volume border: the crop is clipped there
    for spacing in [(1, 1, 1), (1, 1, 2.5)]:
        cropped = hd95(pred, gt, spacing)
        full = hd95(pred, gt, spacing, crop=False)
        assert cropped == pytest.approx(full, abs=1e-5)
        assert cropped == pytest.approx(_hd95_brute_force(pred, gt, spacing), abs=1e-4)
    # small objects far apart in a big volume
    big = (60, 60, 40)
    a = _box(big, (5, 5, 5), (8, 8, 8))
    b = _box(big, (40, 45, 30), (44, 48, 33))
    assert hd95(a, b, (1, 1, 2)) == pytest.approx(hd95(a, b, (1, 1, 2), crop=False), abs=1e-4)


def test_bad_inputs():
    a = np.zeros((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="same shape"):
        dice(a, np.zeros((3, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="3-D"):
        iou(np.zeros((3, 3), dtype=bool), np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="0 and 1"):
        dice(np.full((3, 3, 3), 2), a)
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1, 0, 1))


def test_case_metrics_keys_and_means():
    shape = (10, 10, 10)
    tc_p = _box(shape, (2, 2, 2), (5, 5, 5))
    tc_g = _box(shape, (2, 2, 2), (5, 5, 5))
    wt_p = _box(shape, (2, 2, 2), (6, 6, 6))
    wt_g = _box(shape, (4, 2, 2), (5, 6, 6))  # plate inside the prediction
    et_p = np.zeros(shape, dtype=bool)
    et_g = _box(shape, (3, 3, 3), (4, 4, 4))  # missed entirely
    pred = np.stack([tc_p, wt_p, et_p])
    gt = np.stack([tc_g, wt_g, et_g])
    out = case_metrics(pred, gt, (1, 1, 1), ("TC", "WT", "ET"))
    assert list(out) == ["Dice_TC", "IoU_TC", "HD95_TC", "Dice_WT", "IoU_WT", "HD95_WT",
                         "Dice_ET", "IoU_ET", "HD95_ET", "Dice_mean", "IoU_mean", "HD95_mean"]
    assert out["Dice_TC"] == 1.0 and out["HD95_TC"] == 0.0
    assert out["Dice_WT"] == pytest.approx(2 * 16 / (64 + 16))
    assert out["IoU_WT"] == pytest.approx(16 / 64)
    assert out["Dice_ET"] == 0.0 and out["HD95_ET"] == EMPTY_HD95_MM
    assert out["Dice_mean"] == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    assert out["HD95_mean"] == pytest.approx((0.0 + out["HD95_WT"] + EMPTY_HD95_MM) / 3)
    assert all(isinstance(v, float) for v in out.values())
    with pytest.raises(ValueError, match="region names"):
        case_metrics(pred, gt, (1, 1, 1), ("TC", "WT"))


def test_summarize_by_hand():
    rows = [
        {"case": "a", "Dice_TC": 0.8, "HD95_TC": 2.0, "ok": True},
        {"case": "b", "Dice_TC": 0.6, "HD95_TC": 4.0, "ok": False},
        {"case": "c", "Dice_TC": 0.9, "HD95_TC": np.float32(9.0)},
    ]
    out = summarize(rows)
    assert list(out) == ["Dice_TC", "HD95_TC"]  # "case" and booleans ignored
    d = out["Dice_TC"]
    mean = (0.8 + 0.6 + 0.9) / 3
    std = math.sqrt(((0.8 - mean) ** 2 + (0.6 - mean) ** 2 + (0.9 - mean) ** 2) / 2)
    assert d["mean"] == pytest.approx(mean)
    assert d["std"] == pytest.approx(std)
    assert d["se"] == pytest.approx(std / math.sqrt(3))
    assert d["median"] == pytest.approx(0.8)
    assert d["n"] == 3
    assert out["HD95_TC"]["median"] == pytest.approx(4.0)
    one = summarize([{"case": "a", "Dice_WT": 0.7}])["Dice_WT"]
    assert one == {"mean": 0.7, "std": 0.0, "se": 0.0, "median": 0.7, "n": 1}
    assert summarize([]) == {}
