"""Signed Normalized Geodesic (SiNG) transform (DESIGN.md 1.1).

For a binary region mask M and a (normalised) image I:

    R_B   = foreground voxels with a 6-connected background neighbour (3-D inner boundary)
    G^l_i = generalised geodesic distance from voxel i to R_B, step cost
            (1 - l) * spatial step + l * sum_c |I_c(j) - I_c(k)|       (FastGeodis)
    beta  = max_{i in M} G^0_i,          band B = { i : G^0_i <= beta }
    tau   = max_{i in B} G^l_i,          s_i = +1 inside M, -1 outside
    S_i   = (1 - delta) / tau * s_i * G^l_i + delta * s_i   (i in B),   S_i = -1 otherwise

Empty mask: S = -1 everywhere.

Engines: "fastgeodis" is the reference (FastGeodis on the full volume); "fast" (default,
:mod:`singr.fastsing`) gives the same values on a band-sized crop with a compiled kernel.

G^l and G^0 depend on lambda but not on delta; :class:`Distances` holds them, cropped to
the band's bounding box, so that :func:`sing_from_distances` applies step 5 for any delta
without recomputing anything (see :mod:`singr.cache`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .errors import SingrInputError

ENGINES = ("fast", "fastgeodis")
BOUNDARY_MODES = ("3d", "canny2d")
_FAR = 1e10  # FastGeodis' "v": the initial distance of non-seed voxels


@dataclass(frozen=True)
class Distances:
    """Unnormalised distances of one region, cropped to the band's bounding box.

    ``bbox`` is a tuple of slices into the full volume of shape ``shape``; ``g_lam`` and
    ``band`` and ``mask`` have the bbox's shape. ``g_lam`` is 0 outside the band.
    An empty mask gives ``bbox = None`` (the map is -1 everywhere).
    """

    shape: tuple[int, int, int]
    bbox: tuple[slice, slice, slice] | None
    g_lam: np.ndarray | None
    band: np.ndarray | None
    mask: np.ndarray | None
    tau: float | None = None  # max of g_lam over the band (None: computed on use)


def _check_inputs(mask: np.ndarray, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
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
    if mode == "3d":
        return inner_boundary(mask)
    if mode == "canny2d":
        return canny2d_boundary(mask)
    raise SingrInputError(f"unknown boundary mode {mode!r}; expected one of {', '.join(BOUNDARY_MODES)}")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SingrInputError(f"device {device!r} asked for, but no CUDA GPU is visible")
    if device != "cpu" and not device.startswith("cuda"):
        raise SingrInputError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
    return device


def geodesic_distance(
    image: np.ndarray,
    seeds: np.ndarray,
    lam: float,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    iterations: int = 4,
    device: str = "cpu",
) -> np.ndarray:
    """FastGeodis ``generalised_geodesic3d`` from ``seeds`` (bool, D x H x W); float32 out.

    ``image`` is (C, D, H, W) float32. Softmask = 0 on seeds, 1 elsewhere; v = 1e10.
    """
    import FastGeodis
    import torch

    dev = resolve_device(device)
    img_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(dev)
    soft = torch.from_numpy((~seeds).astype(np.float32))[None, None].to(dev)
    out = FastGeodis.generalised_geodesic3d(img_t, soft, [float(s) for s in spacing], _FAR, float(lam), int(iterations))
    return out[0, 0].detach().cpu().numpy().astype(np.float32, copy=False)


def _bbox(a: np.ndarray) -> tuple[slice, slice, slice]:
    idx = [np.flatnonzero(a.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    return tuple(slice(int(ix[0]), int(ix[-1]) + 1) for ix in idx)  # type: ignore[return-value]


def distances_from_maps(mask: np.ndarray, g_lam: np.ndarray, g0: np.ndarray) -> Distances:
    """Band (G^0 <= beta) and crop, from full-volume G^lambda and G^0 (steps 3-4)."""
    if not mask.any():
        return Distances(tuple(mask.shape), None, None, None, None)  # type: ignore[arg-type]
    beta = float(g0[mask].max())
    band = g0 <= beta
    band |= mask  # every foreground voxel has G^0 <= beta by definition; keep it exact in float
    bb = _bbox(band)
    g = np.where(band[bb], g_lam[bb], 0.0).astype(np.float32)
    tau = float(g.max())
    return Distances(tuple(mask.shape), bb, g, band[bb].copy(), mask[bb].copy(), tau)  # type: ignore[arg-type]


def compute_distances(
    mask: np.ndarray,
    image: np.ndarray,
    lam: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    iterations: int = 4,
    engine: str = "fast",
    device: str = "cpu",
    boundary_mode: str = "3d",
) -> Distances:
    """Steps 1-3 of the transform: boundary, G^lambda, G^0 and band, for one region."""
    mask, image = _check_inputs(mask, image, spacing)
    _check_lam(lam)
    if engine not in ENGINES:
        raise SingrInputError(f"unknown SiNG engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if not mask.any():
        return Distances(tuple(mask.shape), None, None, None, None)  # type: ignore[arg-type]
    seeds = boundary(mask, boundary_mode)
    if engine == "fast":
        return _fast_distances(mask, image, seeds, lam, spacing, iterations, device)
    g_lam = geodesic_distance(image, seeds, lam, spacing, iterations, device)
    # lambda = 0 ignores intensities exactly (0 * |dI| = 0): one zero channel gives the same G^0, faster
    g0 = g_lam if lam == 0 else geodesic_distance(np.zeros((1,) + mask.shape, np.float32), seeds, 0.0, spacing,
                                                   iterations, device)
    return distances_from_maps(mask, g_lam, g0)


def _fast_distances(mask: np.ndarray, image: np.ndarray, seeds: np.ndarray, lam: float,
                    spacing: Sequence[float], iterations: int, device: str) -> Distances:
    """The "fast" engine (singr.fastsing) on the CPU: band-sized crop, compiled kernel.

    On a CUDA device FastGeodis' GPU kernel on the full volume is already faster than
    cropping (measured on an H200: 1.1 s for the 3 regions of a BraTS case, against 2.1 s
    with the crop found on the CPU), so there the fast engine is the full-volume GPU path.
    """
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        g_lam = geodesic_distance(image, seeds, lam, spacing, iterations, dev)
        g0 = g_lam if lam == 0 else geodesic_distance(np.zeros((1,) + mask.shape, np.float32), seeds, 0.0,
                                                       spacing, iterations, dev)
        return distances_from_maps(mask, g_lam, g0)
    from .fastsing import fast_distance_maps

    crop, g_lam, g0 = fast_distance_maps(mask, image, seeds, lam, spacing, iterations)
    d = distances_from_maps(mask[crop], g_lam, g0)
    if d.bbox is None:
        return Distances(tuple(mask.shape), None, None, None, None)  # type: ignore[arg-type]
    full_bb = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, d.bbox))
    return Distances(tuple(mask.shape), full_bb, d.g_lam, d.band, d.mask, d.tau)  # type: ignore[arg-type]


def _check_lam(lam: float) -> None:
    if not 0.0 <= float(lam) <= 1.0:
        raise SingrInputError(f"lambda must be in [0, 1], got {lam}")


def _check_delta(delta: float) -> None:
    if not 0.0 <= float(delta) < 1.0:
        raise SingrInputError(f"delta must be in [0, 1), got {delta}")


def sing_from_distances(d: Distances, delta: float = 0.5,
                        window: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """Step 5: the SiNG map (float32) from cached distances, for any delta.

    With ``window`` (three slices with explicit start and stop), only that part of the
    volume is built: a training crop costs the crop, not the volume.
    """
    _check_delta(delta)
    if window is None:
        window = tuple(slice(0, n) for n in d.shape)  # type: ignore[assignment]
    assert window is not None
    out = np.full(tuple(w.stop - w.start for w in window), -1.0, dtype=np.float32)
    if d.bbox is None:
        return out
    assert d.g_lam is not None and d.band is not None and d.mask is not None
    lo = [max(w.start, b.start) for w, b in zip(window, d.bbox)]
    hi = [min(w.stop, b.stop) for w, b in zip(window, d.bbox)]
    if any(h <= l for l, h in zip(lo, hi)):
        return out
    tau = d.tau if d.tau is not None else (float(d.g_lam[d.band].max()) if d.band.any() else 0.0)
    src = tuple(slice(l - b.start, h - b.start) for l, h, b in zip(lo, hi, d.bbox))
    dst = tuple(slice(l - w.start, h - w.start) for l, h, w in zip(lo, hi, window))
    g, band, mask = d.g_lam[src], d.band[src], d.mask[src]
    scale = (1.0 - delta) / tau if tau > 0 else 0.0
    s = np.where(mask, np.float32(1.0), np.float32(-1.0))
    val = np.clip(s * (g * np.float32(scale) + np.float32(delta)), -1.0, 1.0)
    crop = out[dst]
    crop[band] = val[band]
    return out


def sing_map(
    mask: np.ndarray,
    image: np.ndarray,
    lam: float = 0.5,
    delta: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    iterations: int = 4,
    engine: str = "fast",
    device: str = "cpu",
    boundary_mode: str = "3d",
) -> np.ndarray:
    """SiNG map of one region: float32 (D, H, W) in [-1, 1].

    ``mask`` bool (D, H, W); ``image`` (C, D, H, W) or (D, H, W), used as given (already
    normalised); ``spacing`` in the arrays' axis order; ``device`` 'cpu', 'cuda' or 'auto'.
    """
    _check_delta(delta)
    d = compute_distances(mask, image, lam, spacing, iterations, engine, device, boundary_mode)
    return sing_from_distances(d, delta)


def sing_maps(
    regions: np.ndarray,
    image: np.ndarray,
    lam: float = 0.5,
    delta: float = 0.5,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    iterations: int = 4,
    engine: str = "fast",
    device: str = "cpu",
    boundary_mode: str = "3d",
) -> np.ndarray:
    """SiNG maps of several regions: regions (R, D, H, W) bool -> float32 (R, D, H, W)."""
    regions = np.asarray(regions)
    if regions.ndim != 4:
        raise SingrInputError(f"regions must be (R, D, H, W), got shape {regions.shape}")
    return np.stack(map_regions(
        lambda r: sing_map(r, image, lam, delta, spacing, iterations, engine, device, boundary_mode), regions,
        engine))


def map_regions(fn, regions, engine: str = "fast", workers: int | None = None) -> list:
    """``[fn(r) for r in regions]``, on a thread per core for the fast engine (its kernel
    releases the GIL); sequential for FastGeodis, which parallelises itself."""
    items = list(regions)
    n = min(len(items), workers or os.cpu_count() or 1)
    if engine != "fast" or n <= 1:
        return [fn(r) for r in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, items))
