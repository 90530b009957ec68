"""On-disk cache of unnormalised SiNG distances, per (case, region, lambda, engine settings).

Layout: ``<root>/<case_id>/<region>__<key>.npz`` where ``key`` encodes lambda, engine,
iterations, boundary mode and spacing. Each file holds the band-cropped G^lambda, the band
and the mask (bit-packed) and the SHA-1 of the full region mask, zip-compressed (an entry is read
once per worker; compressed it takes about half the bytes); an entry whose mask hash differs
from the current label is stale and recomputed. Files are written atomically, so
concurrent writers (Ray actors, DDP ranks) never leave a half-written entry.

Delta is not part of the key: :func:`singr.sing.sing_from_distances` applies it at load time.
Nothing in a cache file is executable: ``np.load`` runs with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io import save_npz
from .definition import Distances
from .engines import compute_distances


@dataclass(frozen=True)
class SingSettings:
    """Everything but delta that a distance map depends on."""

    lam: float = 0.5
    iterations: int = 4
    engine: str = "fast"
    boundary_mode: str = "3d"

    def key(self, spacing: Sequence[float]) -> str:
        sp = "x".join(f"{float(s):g}" for s in spacing)
        return f"lam{float(self.lam):g}_{self.engine}_it{int(self.iterations)}_{self.boundary_mode}_sp{sp}"


def mask_digest(mask: np.ndarray) -> str:
    m = np.ascontiguousarray(mask, dtype=bool)
    h = hashlib.sha1(np.packbits(m).tobytes())
    h.update(str(m.shape).encode())
    return h.hexdigest()


def _pack(d: Distances, digest: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"shape": np.asarray(d.shape, dtype=np.int64), "digest": np.asarray(digest)}
    if d.bbox is not None:
        assert d.g_lam is not None and d.band is not None and d.mask is not None
        out["bbox"] = np.asarray([[s.start, s.stop] for s in d.bbox], dtype=np.int64)
        out["g_lam"] = d.g_lam.astype(np.float32)
        out["band"] = np.packbits(d.band.ravel())
        out["mask"] = np.packbits(d.mask.ravel())
    return out


def _unpack(z: "np.lib.npyio.NpzFile") -> tuple[Distances, str]:
    shape = tuple(int(v) for v in z["shape"])
    digest = str(z["digest"])
    if "bbox" not in z.files:
        return Distances.empty(shape), digest
    bbox = tuple(slice(int(a), int(b)) for a, b in z["bbox"])
    g = z["g_lam"]
    n = g.size
    band = np.unpackbits(z["band"])[:n].astype(bool).reshape(g.shape)
    mask = np.unpackbits(z["mask"])[:n].astype(bool).reshape(g.shape)
    tau = float(g.max()) if g.size else 0.0  # g_lam is 0 outside the band and >= 0 inside
    return Distances(shape, bbox, g, band, mask, tau), digest


class DistanceCache:
    """Cache of :class:`Distances` on disk. ``hits`` and ``misses`` count lookups."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, case_id: str, region: str, settings: SingSettings, spacing: Sequence[float]) -> Path:
        return self.root / case_id / f"{region}__{settings.key(spacing)}.npz"

    def load(self, case_id: str, region: str, mask: np.ndarray, settings: SingSettings,
             spacing: Sequence[float]) -> Distances | None:
        """Cached distances, or None when absent, unreadable or stale (mask changed)."""
        p = self.path(case_id, region, settings, spacing)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                d, digest = _unpack(z)
        except Exception:
            return None  # a corrupt entry is recomputed and replaced
        if digest != mask_digest(mask) or d.shape != tuple(mask.shape):
            return None
        return d

    def store(self, case_id: str, region: str, mask: np.ndarray, settings: SingSettings,
              spacing: Sequence[float], d: Distances) -> Path:
        p = self.path(case_id, region, settings, spacing)
        save_npz(p, _pack(d, mask_digest(mask)), compress=True)  # read once per worker: size beats speed here
        return p

    def get_or_compute(self, case_id: str, region: str, mask: np.ndarray, image: np.ndarray,
                       settings: SingSettings, spacing: Sequence[float], device: str = "cpu") -> Distances:
        d = self.load(case_id, region, mask, settings, spacing)
        if d is not None:
            self.hits += 1
            return d
        self.misses += 1
        d = compute_distances(mask, image, settings.lam, spacing, settings.iterations, settings.engine,
                              device, settings.boundary_mode)
        self.store(case_id, region, mask, settings, spacing, d)
        return d
