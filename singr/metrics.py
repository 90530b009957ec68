"""Segmentation metrics per region: Dice, IoU, HD95 in mm (docs/method.md 1.4).

Masks are 3-D numpy arrays (bool, or 0/1 numbers). Empty masks follow the BraTS convention:

    both empty          Dice 1, IoU 1, HD95 0 mm
    exactly one empty   Dice 0, IoU 0, HD95 373.13 mm (:data:`EMPTY_HD95_MM`, the diagonal
                        of a 240 x 240 x 155 volume at 1 mm)

MONAI's Hausdorff distance returns inf / nan in those cases, so they are settled before it
is called.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "EMPTY_HD95_MM",
    "dice",
    "iou",
    "hd95",
    "case_metrics",
    "summarize",
]

EMPTY_HD95_MM: float = 373.13
"""HD95 when exactly one of prediction and ground truth is empty: sqrt(240^2 + 240^2 + 155^2) mm."""


def _as_mask(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a bool (or 0/1) array, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a bool (or 0/1) array, found values other than 0 and 1")
    return arr.astype(bool)


def _check_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got pred {pred.shape} and gt {gt.shape}")
    if pred.ndim != 3:
        raise ValueError(f"pred and gt must be 3-D masks (X, Y, Z), got shape {pred.shape}")
    return pred, gt


def _check_spacing(spacing: Sequence[float] | float) -> tuple[float, float, float]:
    seq: Sequence[float] = (float(spacing),) * 3 if isinstance(spacing, numbers.Real) else spacing  # type: ignore
    try:
        values = tuple(float(s) for s in seq)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be 3 positive numbers (mm per voxel), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be 3 positive numbers (mm per voxel), got {spacing!r}")
    return values  # type: ignore[return-value]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2 |P & G| / (|P| + |G|)``; 1.0 when both masks are empty."""
    pred, gt = _check_masks(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union ``|P & G| / |P | G|``; 1.0 when both masks are empty."""
    pred, gt = _check_masks(pred, gt)
    union = int(np.logical_or(pred, gt).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, gt).sum()) / union


def _joint_bbox(pred: np.ndarray, gt: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of ``pred | gt`` grown by ``margin`` voxels, clipped to the array."""
    both = np.logical_or(pred, gt)
    slices = []
    for axis in range(both.ndim):
        other = tuple(a for a in range(both.ndim) if a != axis)
        idx = np.flatnonzero(both.any(axis=other))
        lo = max(int(idx[0]) - margin, 0)
        hi = min(int(idx[-1]) + 1 + margin, both.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
         *, crop: bool = True) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks, in mm.

    Computed by ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=spacing)``
    (the larger of the two directed 95th percentiles of surface-to-surface distances).
    Both empty -> 0.0; exactly one empty -> :data:`EMPTY_HD95_MM`.

    Args:
        pred, gt: 3-D masks of the same shape.
        spacing: voxel size in mm along the three axes (or one number for all).
        crop: compute on the joint bounding box of both masks plus a 1-voxel margin (the
            surfaces and their distances are unchanged; it only saves time on large volumes).
    """
    pred, gt = _check_masks(pred, gt)
    spacing = _check_spacing(spacing)
    pred_empty, gt_empty = not pred.any(), not gt.any()
    if pred_empty and gt_empty:
        return 0.0
    if pred_empty or gt_empty:
        return EMPTY_HD95_MM
    if crop:
        box = _joint_bbox(pred, gt, margin=1)
        pred, gt = pred[box], gt[box]

    import torch
    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None]
    g = torch.from_numpy(np.ascontiguousarray(gt))[None, None]
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated `always_return_as_numpy` argument internally
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        value = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=list(spacing))
    return float(value.reshape(-1)[0])


def case_metrics(pred_regions: np.ndarray, gt_regions: np.ndarray, spacing: Sequence[float] | float,
                 region_names: Sequence[str]) -> dict[str, float]:
    """Dice, IoU and HD95 (mm) per region of one case, and their means over regions.

    Args:
        pred_regions, gt_regions: bool arrays shaped (R, X, Y, Z).
        spacing: voxel size in mm (3 numbers).
        region_names: R names, e.g. ("TC", "WT", "ET").

    Returns:
        ``{"Dice_TC": .., "IoU_TC": .., "HD95_TC": .., ..., "Dice_mean": .., "IoU_mean": ..,
        "HD95_mean": ..}`` with plain floats.
    """
    pred_regions, gt_regions = np.asarray(pred_regions), np.asarray(gt_regions)
    names = list(region_names)
    if pred_regions.shape != gt_regions.shape:
        raise ValueError(f"pred_regions and gt_regions must have the same shape, got "
                         f"{pred_regions.shape} and {gt_regions.shape}")
    if pred_regions.ndim != 4:
        raise ValueError(f"region masks must be shaped (R, X, Y, Z), got {pred_regions.shape}")
    if len(names) != pred_regions.shape[0]:
        raise ValueError(f"got {len(names)} region names {names} for {pred_regions.shape[0]} region channels")
    if len(set(names)) != len(names):
        raise ValueError(f"region names must be unique, got {names}")
    spacing = _check_spacing(spacing)
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {"Dice": [], "IoU": [], "HD95": []}
    for r, name in enumerate(names):
        values = {
            "Dice": dice(pred_regions[r], gt_regions[r]),
            "IoU": iou(pred_regions[r], gt_regions[r]),
            "HD95": hd95(pred_regions[r], gt_regions[r], spacing),
        }
        for metric, v in values.items():
            out[f"{metric}_{name}"] = float(v)
            per_metric[metric].append(float(v))
    for metric, vals in per_metric.items():
        out[f"{metric}_mean"] = float(np.mean(vals))
    return out


def _is_number(v: object) -> bool:
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_))


def summarize(rows: Sequence[Mapping[str, object]]) -> dict[str, dict[str, float | int]]:
    """Mean, standard deviation, standard error and median of every numeric key over rows.

    Non-numeric values (such as ``"case": "BraTS20_Training_001"``) and booleans are ignored;
    a key missing from some rows is summarised over the rows that have it. NaN propagates.

    Returns ``{key: {"mean", "std", "se", "median", "n"}}`` in first-seen key order, where
    ``std`` is the sample standard deviation (ddof=1) and ``se = std / sqrt(n)``; with
    ``n = 1`` both ``std`` and ``se`` are 0.0 (not NaN), so a single case still summarises.
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise ValueError(f"summarize expects a list of dicts, got an item of type {type(row).__name__}")
        for key, v in row.items():
            if _is_number(v):
                values.setdefault(key, []).append(float(v))  # type: ignore[arg-type]
    out: dict[str, dict[str, float | int]] = {}
    for key, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        n = arr.size
        std = float(np.std(arr, ddof=1)) if n > 1 else (0.0 if math.isfinite(arr[0]) else float("nan"))
        out[key] = {
            "mean": float(np.mean(arr)),
            "std": std,
            "se": std / math.sqrt(n),
            "median": float(np.median(arr)),
            "n": n,
        }
    return out
