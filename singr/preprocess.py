"""Preprocessing: cases on disk -> normalised image + region masks -> SiNG distance cache.

nnU-Net-style stage between reading and training. For each case it writes, under the
cache root (``data.cache_dir``):

    <case_id>/image.b2nd    float32 (C, D, H, W), z-scored over brain voxels per channel
    <case_id>/regions.b2nd  uint8 (R, D, H, W), [TC, WT, ET] or [FG]
    <case_id>/meta.json     spacing, shape, crop, full shape, convention, region names, the
                            source files' sizes/mtimes, the format version
    <case_id>/<region>__lam..npz   unnormalised distances per lambda (singr.sing.cache)

As nnU-Net does, each case is cropped to its foreground's bounding box (any channel non-zero,
or labelled) before it is stored: ``crop`` in meta.json is that box in the full volume, so a
prediction on the stored arrays pastes back exactly (:meth:`PreparedCase.paste`). The arrays
are blosc2 ``.b2nd`` files (lossless, chunked: :mod:`singr.io.compressed`), read whole or by
training window. On the real case the cache shrank from 25x to 2.5x its NIfTI input; a
training patch costs more CPU to read (decompression: about half the patch rate of the old
uncompressed cache with the same augmentation, on a warm page cache), which the cheaper
augmentation of :class:`singr.data.dataset.PatchAugment` more than pays for (1.4x the old
cache with MONAI's transforms; benchmarks/RESULTS.md, "Compact cache"). A cache of
an older format (``version`` in meta.json) is rebuilt by :func:`prepare_case` and refused by
:func:`load_prepared`, never misread; the old format's ``image.npy`` / ``regions.npy`` are
deleted when it is rebuilt.

Normalisation is MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``: the
image given to the SiNG transform is the normalised one, so lambda means the same on every
scan. Training then reads only these arrays (windows decompressed as needed), and the
SiNG target for any delta is built from the cached distances at load time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import SingrInputError
from .io import write_json
from .io.compressed import open_b2nd, save_b2nd
from .regions import labels_to_regions, region_names
from .sing import DistanceCache, SingSettings

PREP_VERSION = 2  # 1: whole-volume image.npy / regions.npy; 2: cropped to the foreground, blosc2
_OLD_FILES = ("image.npy", "regions.npy")


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Z-score each channel over its non-zero (brain) voxels; background stays 0."""
    from monai.transforms import NormalizeIntensity

    out = NormalizeIntensity(nonzero=True, channel_wise=True)(np.asarray(image, dtype=np.float32))
    return np.asarray(out, dtype=np.float32)


Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def foreground_box(image: np.ndarray, label: np.ndarray | None = None) -> Box:
    """``((lo, hi),) * 3``: the bounding box of the voxels non-zero in any channel of ``image``
    (C, D, H, W) or labelled in ``label``; the whole volume when nothing is."""
    from .geometry import bounding_box

    fg = np.any(np.asarray(image) != 0, axis=0)
    if label is not None:
        fg |= np.asarray(label) > 0
    box = bounding_box(fg) or tuple(slice(0, int(n)) for n in fg.shape)
    return ((box[0].start, box[0].stop), (box[1].start, box[1].stop), (box[2].start, box[2].stop))


@dataclass
class PreparedCase:
    """A preprocessed case: ``image`` and ``regions`` cover ``crop`` of the case's ``full_shape``
    volume (the whole volume when ``crop`` is None). ``image`` is a numpy array, or a blosc2 array
    read by window when loaded with ``mmap=True`` (``image[window]`` returns numpy)."""

    case_id: str
    image: Any                  # (C, D, H, W) float32, normalised
    regions: np.ndarray | None  # (R, D, H, W) bool, None for unlabelled cases
    spacing: tuple[float, float, float]
    region_names: tuple[str, ...]
    label_convention: str
    modalities: tuple[str, ...] = ()
    crop: Box | None = None
    full_shape: tuple[int, int, int] | None = None

    def paste(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """``array`` (..., d, h, w) on the stored grid, put back into the full volume (..., D, H, W)
        at ``crop``, ``fill`` elsewhere: the inverse of the crop, exact."""
        if self.crop is None or self.full_shape is None:
            return array
        lead = array.shape[:-3]
        want = tuple(hi - lo for lo, hi in self.crop)
        if tuple(array.shape[-3:]) != want:
            raise ValueError(f"array of spatial shape {tuple(array.shape[-3:])} does not fit the crop {want} "
                             f"of case {self.case_id}")
        out = np.full(lead + tuple(self.full_shape), fill, dtype=array.dtype)
        out[(Ellipsis,) + tuple(slice(lo, hi) for lo, hi in self.crop)] = array
        return out


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
        except (OSError, ValueError, KeyError, SingrInputError):
            pass  # unreadable or corrupt: rebuilt below
    loaded = load_case(case)
    sp = tuple(float(s) for s in (spacing if spacing is not None else loaded.spacing))
    full = tuple(int(n) for n in loaded.image.shape[1:])
    box = foreground_box(loaded.image, loaded.label)
    win = tuple(slice(lo, hi) for lo, hi in box)
    image = normalize_image(loaded.image[(slice(None),) + win])  # the crop holds every non-zero voxel
    label = loaded.label[win] if loaded.label is not None else None
    regions = labels_to_regions(label, loaded.label_convention) if label is not None else None
    root.mkdir(parents=True, exist_ok=True)
    meta_p.unlink(missing_ok=True)  # no meta.json describes arrays being replaced
    for old in _OLD_FILES:
        (root / old).unlink(missing_ok=True)
    save_b2nd(root / "image.b2nd", image)
    if regions is not None:
        save_b2nd(root / "regions.b2nd", regions.astype(np.uint8))
    names = region_names(loaded.label_convention)
    write_json(meta_p, {"version": PREP_VERSION, "case_id": case.case_id, "spacing": list(sp),
                        "shape": list(image.shape[1:]), "channels": int(image.shape[0]),
                        "crop": [list(b) for b in box], "full_shape": list(full),
                        "modalities": list(loaded.modalities), "label_convention": loaded.label_convention,
                        "region_names": list(names), "has_label": regions is not None, "sources": stamp})
    return PreparedCase(case.case_id, image, regions.astype(bool) if regions is not None else None,
                        (sp[0], sp[1], sp[2]), tuple(names), loaded.label_convention, tuple(loaded.modalities),
                        box, (full[0], full[1], full[2]))


def load_prepared(cache_root: str | Path, case_id: str, mmap: bool = False) -> PreparedCase:
    root = Path(cache_root) / case_id
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise SingrInputError("preprocessed case missing or unreadable; run preprocessing first",
                              case=case_id, path=root / "meta.json") from e
    if meta.get("version") != PREP_VERSION:
        raise SingrInputError(f"preprocessed with an older cache format (version {meta.get('version')}, this singr "
                              f"reads {PREP_VERSION}); run preprocessing again (`singr preprocess`, or any "
                              "train/tune command) to rebuild it", case=case_id, path=root / "meta.json")
    try:
        image = open_b2nd(root / "image.b2nd", lazy=mmap)
        regions = open_b2nd(root / "regions.b2nd").astype(bool) if meta["has_label"] else None
    except Exception as e:  # noqa: BLE001 - blosc2 raises several types for a missing or corrupt file
        raise SingrInputError(f"preprocessed arrays missing or corrupt ({type(e).__name__}: {e}); run preprocessing "
                              "again", case=case_id, path=root) from e
    crop = tuple((int(a), int(b)) for a, b in meta["crop"])
    return PreparedCase(case_id, image, regions, tuple(meta["spacing"]), tuple(meta["region_names"]),
                        meta["label_convention"], tuple(meta.get("modalities", ())),
                        (crop[0], crop[1], crop[2]), tuple(int(n) for n in meta["full_shape"]))  # type: ignore[arg-type]


def prepare_case_maps(case: Any, cache_root: str | Path, settings: Sequence[SingSettings] | None,
                      spacing: Sequence[float] | None = None, device: str = "cpu",
                      cache: DistanceCache | None = None) -> PreparedCase:
    """One case of :func:`preprocess_cases`: prepare it (:func:`prepare_case`) and, when it is
    labelled, fill the distance cache of every region for each of ``settings``. ``cache``
    (default: a new one on ``cache_root``) counts the maps computed (``misses``) and loaded
    (``hits``)."""
    cache = DistanceCache(cache_root) if cache is None else cache
    prep = prepare_case(case, cache_root, spacing)
    if prep.regions is not None:
        for s in settings or ():
            for name, mask in zip(prep.region_names, prep.regions):
                cache.get_or_compute(prep.case_id, name, mask, prep.image, s, prep.spacing, device)
    return prep


def preprocess_cases(
    cases: Iterable[Any],
    cache_root: str | Path,
    settings: Sequence[SingSettings] | None,
    spacing: Sequence[float] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, int]:
    """Prepare every case and fill the distance cache for each of ``settings`` (:func:`prepare_case_maps`).

    Returns counts: ``cases``, ``maps_computed`` (cache misses) and ``maps_cached`` (hits).
    """
    from tqdm.auto import tqdm

    cases = list(cases)
    cache = DistanceCache(cache_root)
    it = tqdm(cases, desc="preprocess", unit="case", disable=not progress)
    for case in it:
        prep = prepare_case_maps(case, cache_root, settings, spacing, device, cache)
        if prep.regions is not None and settings:
            it.set_postfix(computed=cache.misses, cached=cache.hits)
    return {"cases": len(cases), "maps_computed": cache.misses, "maps_cached": cache.hits}


__all__ = ["normalize_image", "foreground_box", "PreparedCase", "prepare_case", "load_prepared", "prepare_case_maps",
           "preprocess_cases"]
