"""The Signed Normalized Geodesic (SiNG) transform as the paper writes it (Eq. 3-5).

For a binary region mask M and a (normalised) image I:

    R_B   = foreground voxels with a 6-connected background neighbour (3-D inner boundary)
    G^l_i = generalised geodesic distance from voxel i to R_B, step cost
            (1 - l) * spatial step + l * sum_c |I_c(j) - I_c(k)|
    beta  = max_{i in M} G^0_i,          band B = { i : G^0_i <= beta }
    tau   = max_{i in B} G^l_i,          s_i = +1 inside M, -1 outside
    S_i   = (1 - delta) / tau * s_i * G^l_i + delta * s_i   (i in B),   S_i = -1 otherwise

Empty mask: S = -1 everywhere. The image is the *normalised* one (z-score over brain
voxels per channel), so that lambda means the same on every scan; the transform does not
normalise. Paper defaults: lambda = 0.5, delta = 0.5.

G^l and G^0 depend on lambda but not on delta: :class:`Distances` holds them cropped to
the band's bounding box, and :func:`sing_from_distances` applies the last step for any
delta without recomputing anything. The distances themselves come from
:mod:`singr.sing.engines`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import SingrInputError
from ..geometry import Box, bounding_box

__all__ = ["FAR", "BOUNDARY_MODES", "Distances", "inner_boundary", "canny2d_boundary", "boundary",
           "distances_from_maps", "sing_from_distances", "check_inputs", "check_lam", "check_delta"]

FAR = 1e10
"""The initial distance of non-seed voxels (FastGeodis' ``v``)."""
BOUNDARY_MODES = ("3d", "canny2d")


@dataclass(frozen=True)
class Distances:
    """Unnormalised distances of one region, cropped to the band's bounding box.

    ``bbox`` is a tuple of slices into the full volume of shape ``shape``; ``g_lam``,
    ``band`` and ``mask`` have the bbox's shape. ``g_lam`` is 0 outside the band.
    An empty mask gives ``bbox = None`` (the map is -1 everywhere).
    """

    shape: tuple[int, ...]
    bbox: Box | None
    g_lam: np.ndarray | None
    band: np.ndarray | None
    mask: np.ndarray | None
    tau: float | None = None  # max of g_lam over the band (None: computed on use)

    @classmethod
    def empty(cls, shape: Sequence[int]) -> "Distances":
        return cls(tuple(int(s) for s in shape), None, None, None, None)


def check_lam(lam: float) -> None:
    if not 0.0 <= float(lam) <= 1.0:
        raise SingrInputError(f"lambda must be in [0, 1], got {lam}")


def check_delta(delta: float) -> None:
    if not 0.0 <= float(delta) < 1.0:
        raise SingrInputError(f"delta must be in [0, 1), got {delta}")


def check_inputs(mask: np.ndarray, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(mask as bool, image as float32 (C, D, H, W))``, or an error saying what was expected."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise SingrInputError(f"mask must be 3-D (D, H, W), got shape {mask.shape}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1:] != mask.shape:
        raise SingrInputError(
            f"image must be (C, D, H, W) or (D, H, W) matching mask {mask.shape}, got {image.shape}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise SingrInputError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    if not np.isfinite(image).all():
        raise SingrInputError(f"image holds {int((~np.isfinite(image)).sum())} NaN or inf voxels")
    return mask.astype(bool), image


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """3-D inner boundary: foreground voxels with at least one 6-connected background neighbour.

    Voxels on the volume's faces count as touching background (outside the volume is
    background), so a non-empty mask always has a boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return mask & ~eroded


def canny2d_boundary(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Parity mode with the released code: 2-D edges of M per slice along ``axis``.

    The edge of a binary slice is its 4-connected inner boundary (what Canny finds on a
    binary image, without the smoothing); the caps of the tumour along ``axis`` are missed.
    """
    mask = np.asarray(mask, dtype=bool)
    moved = np.moveaxis(mask, axis, 0)
    st = np.zeros((1, 3, 3), dtype=bool)
    st[0] = ndimage.generate_binary_structure(2, 1)
    eroded = ndimage.binary_erosion(moved, structure=st, border_value=0)
    return np.moveaxis(moved & ~eroded, 0, axis)


def boundary(mask: np.ndarray, mode: str = "3d") -> np.ndarray:
    """R_B of ``mask``: ``"3d"`` (the default, :func:`inner_boundary`) or ``"canny2d"``."""
    if mode == "3d":
        return inner_boundary(mask)
    if mode == "canny2d":
        return canny2d_boundary(mask)
    raise SingrInputError(f"unknown boundary mode {mode!r}; expected one of {', '.join(BOUNDARY_MODES)}")


def distances_from_maps(mask: np.ndarray, g_lam: np.ndarray, g0: np.ndarray) -> Distances:
    """Band B = {G^0 <= beta} and the crop to its bounding box, from G^lambda and G^0."""
    if not mask.any():
        return Distances.empty(mask.shape)
    beta = float(g0[mask].max())
    band = g0 <= beta
    band |= mask  # every foreground voxel has G^0 <= beta by definition; keep it exact in float
    bb = bounding_box(band)
    assert bb is not None
    g = np.where(band[bb], g_lam[bb], 0.0).astype(np.float32)
    return Distances(tuple(mask.shape), bb, g, band[bb].copy(), mask[bb].copy(), float(g.max()))


def sing_from_distances(d: Distances, delta: float = 0.5, window: Box | None = None) -> np.ndarray:
    """The SiNG map (float32, values in [-1, 1]) from cached distances, for any delta.

    With ``window`` (three slices with explicit start and stop), only that part of the
    volume is built: a training crop costs the crop, not the volume.
    """
    check_delta(delta)
    win: Box = window if window is not None else tuple(slice(0, n) for n in d.shape)
    out = np.full(tuple(w.stop - w.start for w in win), -1.0, dtype=np.float32)
    if d.bbox is None:
        return out
    assert d.g_lam is not None and d.band is not None and d.mask is not None
    lo = [max(w.start, b.start) for w, b in zip(win, d.bbox)]
    hi = [min(w.stop, b.stop) for w, b in zip(win, d.bbox)]
    if any(h <= lo_ for lo_, h in zip(lo, hi)):
        return out
    tau = d.tau if d.tau is not None else (float(d.g_lam[d.band].max()) if d.band.any() else 0.0)
    src = tuple(slice(a - b.start, h - b.start) for a, h, b in zip(lo, hi, d.bbox))
    dst = tuple(slice(a - w.start, h - w.start) for a, h, w in zip(lo, hi, win))
    g, band, mask = d.g_lam[src], d.band[src], d.mask[src]
    scale = (1.0 - delta) / tau if tau > 0 else 0.0
    s = np.where(mask, np.float32(1.0), np.float32(-1.0))
    val = np.clip(s * (g * np.float32(scale) + np.float32(delta)), -1.0, 1.0)
    crop = out[dst]
    crop[band] = val[band]
    return out
