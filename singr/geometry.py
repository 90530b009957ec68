"""Bounding boxes of masks, as tuples of slices (one helper for the SiNG band, the metrics'
crop and inference's crop to the brain)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[slice, ...]

__all__ = ["Box", "bounding_box", "grow_box", "box_shape"]


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


def box_shape(box: Box) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in box)
