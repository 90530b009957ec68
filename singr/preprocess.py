"""Preprocessing: cases on disk -> normalised image + region masks -> SiNG distance cache.

nnU-Net-style stage between reading and training. For each case it writes, under the
cache root (``data.cache_dir``):

    <case_id>/image.npy     float32 (C, D, H, W), z-scored over brain voxels per channel
    <case_id>/regions.npy   uint8 (R, D, H, W), [TC, WT, ET] or [FG]
    <case_id>/meta.json     spacing, shape, convention, region names, source files' sizes/mtimes
    <case_id>/<region>__lam..npz   unnormalised distances per lambda (singr.sing.cache)

Normalisation is MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``: the
image given to the SiNG transform is the normalised one, so lambda means the same on every
scan. Training then reads only these arrays (memory-mapped), and the
SiNG target for any delta is built from the cached distances at load time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import SingrInputError
from .io import save_npy, write_json
from .regions import labels_to_regions, region_names
from .sing import DistanceCache, SingSettings

PREP_VERSION = 1


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Z-score each channel over its non-zero (brain) voxels; background stays 0."""
    from monai.transforms import NormalizeIntensity

    out = NormalizeIntensity(nonzero=True, channel_wise=True)(np.asarray(image, dtype=np.float32))
    return np.asarray(out, dtype=np.float32)


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray          # (C, D, H, W) float32, normalised
    regions: np.ndarray | None  # (R, D, H, W) bool, None for unlabelled cases
    spacing: tuple[float, float, float]
    region_names: tuple[str, ...]
    label_convention: str
    modalities: tuple[str, ...] = ()


def _source_stamp(case: Any) -> list[list[Any]]:
    paths: list[Path] = []
    for v in list(case.images.values()) + ([case.label] if case.label is not None else []):
        if isinstance(v, (list, tuple)):
            paths.extend(Path(p) for p in v)
        else:
            paths.append(Path(v))
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append([str(p), st.st_size, int(st.st_mtime)])
        except OSError:
            out.append([str(p), -1, -1])
    return out


def prepare_case(case: Any, cache_root: str | Path, spacing: Sequence[float] | None = None) -> PreparedCase:
    """Read, check and normalise one case (readers.CaseFiles), writing the arrays once.

    A case whose source files are unchanged since the last call is read from the cache.
    """
    from .data.readers import load_case

    root = Path(cache_root) / case.case_id
    meta_p = root / "meta.json"
    stamp = _source_stamp(case)
    if meta_p.exists():
        try:
            meta = json.loads(meta_p.read_text())
            if meta.get("version") == PREP_VERSION and meta.get("sources") == stamp and (
                    spacing is None or list(map(float, spacing)) == meta["spacing"]):
                return load_prepared(cache_root, case.case_id)
        except (OSError, ValueError, KeyError):
            pass
    loaded = load_case(case)
    sp = tuple(float(s) for s in (spacing if spacing is not None else loaded.spacing))
    image = normalize_image(loaded.image)
    regions = labels_to_regions(loaded.label, loaded.label_convention) if loaded.label is not None else None
    root.mkdir(parents=True, exist_ok=True)
    save_npy(root / "image.npy", image)
    if regions is not None:
        save_npy(root / "regions.npy", regions.astype(np.uint8))
    names = region_names(loaded.label_convention)
    write_json(meta_p, {"version": PREP_VERSION, "case_id": case.case_id, "spacing": list(sp),
                          "shape": list(image.shape[1:]), "channels": int(image.shape[0]),
                          "modalities": list(loaded.modalities), "label_convention": loaded.label_convention,
                          "region_names": list(names), "has_label": regions is not None, "sources": stamp})
    return PreparedCase(case.case_id, image, regions.astype(bool) if regions is not None else None,
                        (sp[0], sp[1], sp[2]),
                        tuple(names), loaded.label_convention, tuple(loaded.modalities))


def load_prepared(cache_root: str | Path, case_id: str, mmap: bool = False) -> PreparedCase:
    root = Path(cache_root) / case_id
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise SingrInputError("preprocessed case missing or unreadable; run preprocessing first",
                              case=case_id, path=root / "meta.json") from e
    mode: Any = "r" if mmap else None
    image = np.load(root / "image.npy", mmap_mode=mode)
    regions = np.load(root / "regions.npy", mmap_mode=mode).astype(bool) if meta["has_label"] else None
    return PreparedCase(case_id, image, regions, tuple(meta["spacing"]), tuple(meta["region_names"]),
                        meta["label_convention"], tuple(meta.get("modalities", ())))


def preprocess_cases(
    cases: Iterable[Any],
    cache_root: str | Path,
    settings: Sequence[SingSettings] | None,
    spacing: Sequence[float] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, int]:
    """Prepare every case and fill the distance cache for each of ``settings``.

    Returns counts: ``cases``, ``maps_computed`` (cache misses) and ``maps_cached`` (hits).
    """
    from tqdm.auto import tqdm

    cases = list(cases)
    cache = DistanceCache(cache_root)
    it = tqdm(cases, desc="preprocess", unit="case", disable=not progress)
    for case in it:
        prep = prepare_case(case, cache_root, spacing)
        if prep.regions is None or not settings:
            continue
        for s in settings:
            for name, mask in zip(prep.region_names, prep.regions):
                cache.get_or_compute(prep.case_id, name, mask, prep.image, s, prep.spacing, device)
        it.set_postfix(computed=cache.misses, cached=cache.hits)
    return {"cases": len(cases), "maps_computed": cache.misses, "maps_cached": cache.hits}


__all__ = ["normalize_image", "PreparedCase", "prepare_case", "load_prepared", "preprocess_cases"]
