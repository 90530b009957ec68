"""Two engines behind one function: the geodesic distances of steps 1-3 of the transform.

* ``"fastgeodis"`` (the reference): FastGeodis ``generalised_geodesic3d(image, softmask,
  spacing, v=1e10, lambda, iterations)`` on the full volume, for G^lambda and for G^0.
* ``"fast"`` (the default; :mod:`singr.sing.raster`): the same raster scan on a crop that
  holds the band, compiled with numba; bitwise equal to the reference on the real BraTS
  case (``benchmarks/RESULTS.md``). On a CUDA device it uses FastGeodis' GPU kernel on the
  full volume, which is faster there than cropping (measured on an H200: 1.1 s for the 3
  regions of a BraTS case against 2.1 s with the crop found on the CPU).

G^0 needs no image: lambda = 0 multiplies the intensity term by 0, so it is computed on a
zero one-channel image (exact, and cheaper).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ..device import resolve_device
from ..errors import SingrInputError
from .definition import (
    FAR,
    Distances,
    boundary,
    check_delta,
    check_inputs,
    check_lam,
    distances_from_maps,
    sing_from_distances,
)

__all__ = ["ENGINES", "geodesic_distance", "compute_distances", "sing_map", "sing_maps", "map_regions"]

ENGINES = ("fast", "fastgeodis")


def geodesic_distance(image: np.ndarray, seeds: np.ndarray, lam: float, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      iterations: int = 4, device: str = "cpu") -> np.ndarray:
    """FastGeodis ``generalised_geodesic3d`` from ``seeds`` (bool, D x H x W); float32 out.

    ``image`` is (C, D, H, W) float32. Softmask = 0 on seeds, 1 elsewhere; v = 1e10.
    """
    import FastGeodis
    import torch

    dev = resolve_device(device)
    img_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(dev)
    soft = torch.from_numpy((~seeds).astype(np.float32))[None, None].to(dev)
    out = FastGeodis.generalised_geodesic3d(img_t, soft, [float(s) for s in spacing], FAR, float(lam), int(iterations))
    return out[0, 0].detach().cpu().numpy().astype(np.float32, copy=False)


def _full_volume(mask: np.ndarray, image: np.ndarray, seeds: np.ndarray, lam: float, spacing: Sequence[float],
                 iterations: int, device: str) -> Distances:
    g_lam = geodesic_distance(image, seeds, lam, spacing, iterations, device)
    g0 = g_lam if lam == 0 else geodesic_distance(np.zeros((1,) + mask.shape, np.float32), seeds, 0.0, spacing,
                                                   iterations, device)
    return distances_from_maps(mask, g_lam, g0)


def _cropped(mask: np.ndarray, image: np.ndarray, seeds: np.ndarray, lam: float, spacing: Sequence[float],
             iterations: int) -> Distances:
    from .raster import fast_distance_maps

    crop, g_lam, g0 = fast_distance_maps(mask, image, seeds, lam, spacing, iterations)
    d = distances_from_maps(mask[crop], g_lam, g0)
    if d.bbox is None:
        return Distances.empty(mask.shape)
    full_bb = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, d.bbox))
    return Distances(tuple(mask.shape), full_bb, d.g_lam, d.band, d.mask, d.tau)


def compute_distances(mask: np.ndarray, image: np.ndarray, lam: float = 0.5,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0), iterations: int = 4, engine: str = "fast",
                      device: str = "cpu", boundary_mode: str = "3d") -> Distances:
    """Steps 1-3 of the transform for one region: boundary, G^lambda, G^0, band and crop."""
    mask, image = check_inputs(mask, image, spacing)
    check_lam(lam)
    if engine not in ENGINES:
        raise SingrInputError(f"unknown SiNG engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if not mask.any():
        return Distances.empty(mask.shape)
    seeds = boundary(mask, boundary_mode)
    dev = resolve_device(device)
    if engine == "fastgeodis" or dev.startswith("cuda"):
        return _full_volume(mask, image, seeds, lam, spacing, iterations, dev)
    return _cropped(mask, image, seeds, lam, spacing, iterations)


def sing_map(mask: np.ndarray, image: np.ndarray, lam: float = 0.5, delta: float = 0.5,
             spacing: Sequence[float] = (1.0, 1.0, 1.0), iterations: int = 4, engine: str = "fast",
             device: str = "cpu", boundary_mode: str = "3d") -> np.ndarray:
    """SiNG map of one region: float32 (D, H, W) in [-1, 1].

    ``mask`` bool (D, H, W); ``image`` (C, D, H, W) or (D, H, W), used as given (already
    normalised); ``spacing`` in the arrays' axis order; ``device`` 'cpu', 'cuda' or 'auto'.
    """
    check_delta(delta)
    d = compute_distances(mask, image, lam, spacing, iterations, engine, device, boundary_mode)
    return sing_from_distances(d, delta)


def sing_maps(regions: np.ndarray, image: np.ndarray, lam: float = 0.5, delta: float = 0.5,
              spacing: Sequence[float] = (1.0, 1.0, 1.0), iterations: int = 4, engine: str = "fast",
              device: str = "cpu", boundary_mode: str = "3d") -> np.ndarray:
    """SiNG maps of several regions: regions (R, D, H, W) bool -> float32 (R, D, H, W)."""
    regions = np.asarray(regions)
    if regions.ndim != 4:
        raise SingrInputError(f"regions must be (R, D, H, W), got shape {regions.shape}")
    return np.stack(map_regions(
        lambda r: sing_map(r, image, lam, delta, spacing, iterations, engine, device, boundary_mode), regions,
        engine))


def map_regions(fn: Callable[[Any], Any], regions: Any, engine: str = "fast", workers: int | None = None) -> list:
    """``[fn(r) for r in regions]``, on a thread per core for the fast engine (its kernels
    release the GIL); sequential for FastGeodis, which parallelises itself."""
    items = list(regions)
    n = min(len(items), workers or os.cpu_count() or 1)
    if engine != "fast" or n <= 1:
        return [fn(r) for r in items]
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, items))
