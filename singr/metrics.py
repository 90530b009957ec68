"""Segmentation metrics per region: Dice, IoU, HD95 in mm (docs/method.md 1.4).

Masks are 3-D numpy arrays (bool, or 0/1 numbers). Empty masks follow the BraTS convention:

    both empty          Dice 1, IoU 1, HD95 0 mm
    exactly one empty   Dice 0, IoU 0, HD95 373.13 mm (:data:`EMPTY_HD95_MM`, the diagonal
                        of a 240 x 240 x 155 volume at 1 mm)

MONAI's Hausdorff distance returns inf / nan in those cases, so they are settled before it
is called.

:func:`lesion_metrics` gives the BraTS 2023 lesion-wise Dice and HD95 (one score per
ground-truth lesion; missed and false-positive lesions score 0 and 374 mm);
``case_metrics(..., lesion=True)`` adds them per region.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "EMPTY_HD95_MM",
    "LESION_MISS_HD95_MM",
    "LESION_DILATION_ITERS",
    "LESION_MIN_VOXELS",
    "dice",
    "iou",
    "hd95",
    "lesion_metrics",
    "case_metrics",
    "summarize",
]

EMPTY_HD95_MM: float = 373.13
"""HD95 when exactly one of prediction and ground truth is empty: sqrt(240^2 + 240^2 + 155^2) mm."""

# BraTS 2023 lesion-wise metrics, glioma sub-challenge ("BraTS-GLI"): the values of
# get_challenge_parameters() in github.com/rachitsaluja/BraTS-2023-Metrics
# (brats_2023_metrics/surface_distance/brats_metrics.py; eval.py has the same numbers).
LESION_MISS_HD95_MM: float = 374.0
"""Lesion-wise HD95 of a missed or a false-positive lesion (the challenge replaces inf by 374)."""
LESION_DILATION_ITERS: int = 3
"""Dilations of the ground truth (18-connected 3x3x3 structure) before its lesions are labelled (GLI: 3)."""
LESION_MIN_VOXELS: int = 50
"""Ground-truth lesions of at most this many voxels are left out of the lesion-wise scores (GLI: 50)."""


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


def _check_count(value: object, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _label26(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a 3-D mask: (labels 0..n with 0 = background, n)."""
    from skimage.measure import label

    labels, n = label(mask, connectivity=3, background=0, return_num=True)
    return labels, int(n)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` binary dilations with the 18-connected 3x3x3 structure (0 -> the mask itself).

    scipy reads ``iterations=0`` as "until nothing changes", hence the explicit case.
    """
    from scipy import ndimage

    if iterations == 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 2), iterations=iterations)


def _union_box(boxes: Sequence[tuple[slice, ...]], shape: tuple[int, ...], margin: int = 1) -> tuple[slice, ...]:
    """Smallest box holding all ``boxes``, grown by ``margin`` voxels and clipped to ``shape``."""
    return tuple(slice(max(min(b[a].start for b in boxes) - margin, 0),
                       min(max(b[a].stop for b in boxes) + margin, shape[a])) for a in range(len(shape)))


def lesion_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float, *,
                   dilation_iters: int = LESION_DILATION_ITERS,
                   min_lesion_voxels: int = LESION_MIN_VOXELS) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice and HD95 (mm) of one region.

    Follows ``get_lesion_wise_score`` / ``get_lesion_wise_results`` of the challenge code
    (github.com/rachitsaluja/BraTS-2023-Metrics, brats_2023_metrics/surface_distance/brats_metrics.py);
    the defaults are its glioma values (BraTS-GLI: dilation 3, lesion volume threshold 50):

    * ground-truth lesions ``G_k``: the GT voxels of one 26-connected component ``D_k`` of the GT
      dilated ``dilation_iters`` times (18-connected structure), so GT parts that close are one lesion;
    * predicted lesions: the 26-connected components of ``pred``; ``P_k`` is the union of those
      touching ``D_k`` (``D_k`` is also the dilation of ``G_k``, the region the challenge matches in);
    * per lesion ``Dice(P_k, G_k)`` and ``HD95(P_k, G_k)`` (:func:`hd95`, MONAI); a missed lesion
      (no ``P_k``) scores 0 and :data:`LESION_MISS_HD95_MM`;
    * false positives: predicted components touching no ``D_k``; each scores 0 and 374 mm;
    * ``LesionDice = sum_k Dice_k / (K + FP)``, ``LesionHD95 = (sum_k HD95_k + 374 FP) / (K + FP)``,
      over the ``K`` lesions of more than ``min_lesion_voxels`` voxels. A smaller lesion is left out
      of both sums (it is neither a miss nor a hit) and predictions touching it are not false positives.
    * ``K + FP = 0`` (both masks empty, or only left-out lesions and nothing else predicted):
      LesionDice 1.0, LesionHD95 0.0, as the challenge code maps its 0/0 = NaN.

    Differences from the challenge code: lesion size is counted in voxels (it multiplies by the voxel
    volume, identical on BraTS' 1 mm grid), and HD95 is MONAI's (the challenge uses DeepMind's
    surface-distance package, which weights surface elements by area; values can differ slightly).

    Returns:
        ``{"LesionDice", "LesionHD95"}`` as floats and the counts as ints: ``"GTLesions"`` (K),
        ``"IgnoredGTLesions"`` (left out as too small), ``"PredLesions"`` (predicted components),
        ``"Detected"`` and ``"Misses"`` (of the K lesions), ``"FalsePositives"``.
    """
    pred, gt = _check_masks(pred, gt)
    spacing = _check_spacing(spacing)
    dilation_iters = _check_count(dilation_iters, "dilation_iters")
    min_lesion_voxels = _check_count(min_lesion_voxels, "min_lesion_voxels")
    from scipy import ndimage

    zones, n_zones = _label26(_dilate(gt, dilation_iters))
    pred_labels, n_pred = _label26(pred)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    pred_boxes = ndimage.find_objects(pred_labels)
    touched = np.zeros(n_pred + 1, dtype=bool)
    dices: list[float] = []
    hds: list[float] = []
    ignored = detected = 0
    for k, box in enumerate(ndimage.find_objects(zones), start=1):
        zone = zones[box] == k
        lesion = gt[box] & zone
        size = int(lesion.sum())
        hits = np.unique(pred_labels[box][zone])
        hits = hits[hits > 0]
        touched[hits] = True
        if size <= min_lesion_voxels:
            ignored += 1
            continue
        if hits.size == 0:
            dices.append(0.0)
            hds.append(LESION_MISS_HD95_MM)
            continue
        detected += 1
        overlap = int(np.logical_and(pred[box], lesion).sum())  # predicted voxels in G_k all belong to P_k
        dices.append(2.0 * overlap / (size + int(pred_sizes[hits].sum())))
        crop = _union_box([box] + [pred_boxes[h - 1] for h in hits], pred.shape, margin=1)
        p_k = np.isin(pred_labels[crop], hits)
        g_k = gt[crop] & (zones[crop] == k)
        hds.append(hd95(p_k, g_k, spacing, crop=True))
    fp = int(n_pred - touched[1:].sum())
    denom = len(dices) + fp
    return {
        "LesionDice": float(sum(dices) / denom) if denom else 1.0,
        "LesionHD95": float((sum(hds) + fp * LESION_MISS_HD95_MM) / denom) if denom else 0.0,
        "GTLesions": len(dices),
        "IgnoredGTLesions": ignored,
        "PredLesions": n_pred,
        "Detected": detected,
        "Misses": len(dices) - detected,
        "FalsePositives": fp,
    }


def case_metrics(pred_regions: np.ndarray, gt_regions: np.ndarray, spacing: Sequence[float] | float,
                 region_names: Sequence[str], *, lesion: bool = False) -> dict[str, float]:
    """Dice, IoU and HD95 (mm) per region of one case, and their means over regions.

    Args:
        pred_regions, gt_regions: bool arrays shaped (R, X, Y, Z).
        spacing: voxel size in mm (3 numbers).
        region_names: R names, e.g. ("TC", "WT", "ET").
        lesion: also give the BraTS 2023 lesion-wise scores (:func:`lesion_metrics`, glioma defaults).

    Returns:
        ``{"Dice_TC": .., "IoU_TC": .., "HD95_TC": .., ..., "Dice_mean": .., "IoU_mean": ..,
        "HD95_mean": ..}`` with plain floats; with ``lesion=True`` followed by ``"LesionDice_TC"``,
        ``"LesionHD95_TC"``, ..., ``"LesionDice_mean"``, ``"LesionHD95_mean"``.
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
    if lesion:
        out.update(_lesion_columns(pred_regions, gt_regions, spacing, names))
    return out


def _lesion_columns(pred_regions: np.ndarray, gt_regions: np.ndarray, spacing: tuple[float, float, float],
                    names: Sequence[str]) -> dict[str, float]:
    """``LesionDice_<region>``, ``LesionHD95_<region>`` and their ``_mean`` over regions."""
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {"LesionDice": [], "LesionHD95": []}
    for r, name in enumerate(names):
        scores = lesion_metrics(pred_regions[r], gt_regions[r], spacing)
        for metric, vals in per_metric.items():
            out[f"{metric}_{name}"] = float(scores[metric])
            vals.append(float(scores[metric]))
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
