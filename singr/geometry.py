"""Bounding boxes of masks, as tuples of slices (one helper for the SiNG band, the metrics'
crop and inference's crop to the brain), and the two crops built on them: a prediction and
its ground truth cut to the box that holds both (:func:`crop_to_union`), and a fixed-size
window around the brain of an image (:func:`crop_around_brain`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[slice, ...]

__all__ = ["Box", "bounding_box", "grow_box", "crop_to_union", "crop_around_brain"]


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> Box | None:
    """Slices of the smallest box holding every non-zero voxel of ``mask``, grown by
    ``margin`` voxels per axis (one number, or one per axis) and clipped to the array;
    None for an empty mask."""
    a = np.asarray(mask)
    idx = [np.flatnonzero(a.any(axis=tuple(j for j in range(a.ndim) if j != i))) for i in range(a.ndim)]
    if any(ix.size == 0 for ix in idx):
        return None
    box = tuple(slice(int(ix[0]), int(ix[-1]) + 1) for ix in idx)
    return grow_box(box, margin, a.shape) if np.any(margin) else box


def grow_box(box: Box, by: int | Sequence[int], shape: Sequence[int]) -> Box:
    """``box`` grown by ``by`` voxels on both sides of every axis, clipped to ``shape``."""
    grow = [int(by)] * len(box) if isinstance(by, (int, np.integer)) else [int(b) for b in by]
    return tuple(slice(max(0, s.start - g), min(int(n), s.stop + g)) for s, g, n in zip(box, grow, shape))


def crop_to_union(pred: np.ndarray, gt: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a prediction and its ground truth (R, D, H, W) cut to the box of their union
    over regions, grown by ``margin`` voxels (one voxel when both are empty): the connected
    components, their sizes and Dice are unchanged, the memory kept is the tumour's."""
    box = bounding_box(np.any(pred, axis=0) | np.any(gt, axis=0), margin=margin)
    if box is None:
        box = tuple(slice(0, 1) for _ in pred.shape[1:])
    sub = (slice(None), *box)
    return pred[sub].copy(), gt[sub].copy()


def crop_around_brain(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A float32 (C, *size) window of an image (C, x, y, z) centred on the bounding box of the
    brain (the voxels non-zero in any channel; the volume's centre when there are none),
    shifted to stay inside the image and zero-padded where the image is smaller."""
    brain = np.any(image != 0, axis=0)
    box = bounding_box(brain) if brain.any() else None
    centre = [(s.start + s.stop) // 2 for s in box] if box is not None else [d // 2 for d in image.shape[1:]]
    out = np.zeros((image.shape[0], *map(int, size)), dtype=np.float32)
    src, dst = [], []
    for c, w, d in zip(centre, size, image.shape[1:]):
        lo = min(max(0, c - int(w) // 2), max(0, d - int(w)))
        hi = min(d, lo + int(w))
        src.append(slice(lo, hi))
        dst.append(slice(0, hi - lo))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out
