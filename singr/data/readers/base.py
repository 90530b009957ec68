"""What every reader shares: case records, modality names, and one stack-and-check.

Modalities are named canonically with the BraTS 2020 names, in the canonical order
``flair, t1, t1ce, t2``; the BraTS 2023 names ``t2f, t1n, t1c, t2w`` are the same scans
in the same order and map onto them. Arrays keep the file's own axis order (no
reorientation): image (C, X, Y, Z) float32, label (X, Y, Z) uint8.

:func:`stack_volumes` is the one place where volumes become an image: whether they come
from files on disk or from an HTTP upload, each is checked the same way (3-D, non-empty,
real-valued, finite, the same shape and affine as the first, a valid affine) and every
error is a :class:`SingrInputError` naming the case and the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import SingrInputError
from ...io import check_affine, nifti_spacing, read_nifti
from ...regions import check_convention, check_labels, detect_convention

__all__ = ["MODALITIES", "BRATS2023_NAMES", "LGG_CHANNELS", "CaseFiles", "LoadedCase", "Volume",
           "canonical_modality", "select_brats_modalities", "modality_list", "stack_volumes", "label_to_uint8",
           "resolve_convention", "check_label_convention", "load_nifti_case", "read_volume", "AFFINE_ATOL",
           "NII_EXTS", "nii_file"]

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Canonical modality order (BraTS 2020 names)."""
BRATS2023_NAMES: tuple[str, ...] = ("t2f", "t1n", "t1c", "t2w")
"""BraTS 2023 names of the same scans, in the same order as :data:`MODALITIES`."""
LGG_CHANNELS: tuple[str, ...] = ("pre", "flair", "post")
"""Channels of the kaggle_3m RGB TIFF slices: pre-contrast, FLAIR, post-contrast."""

_ALIASES: dict[str, str] = {
    **{m: m for m in MODALITIES},
    **dict(zip(BRATS2023_NAMES, MODALITIES)),
    # names seen in nnU-Net dataset.json files and elsewhere
    "t2flair": "flair", "t2_flair": "flair", "t2-flair": "flair", "fla": "flair",
    "t1w": "t1", "t1native": "t1", "native": "t1",
    "t1gd": "t1ce", "t1c": "t1ce", "t1post": "t1ce", "t1contrast": "t1ce", "t1ce": "t1ce", "t1wce": "t1ce",
    "t2weighted": "t2",
}
NII_EXTS = (".nii.gz", ".nii")
AFFINE_ATOL = 1e-3


def canonical_modality(name: str) -> str | None:
    """Canonical name (``flair``, ``t1``, ``t1ce``, ``t2``) for a modality name, or None."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", key))


def modality_list(canonical: Sequence[str], naming: str = "brats2020") -> list[str]:
    """``canonical`` modality names as the user names them (``naming``: brats2020 or brats2023)."""
    if naming == "brats2023":
        return [BRATS2023_NAMES[MODALITIES.index(m)] if m in MODALITIES else m for m in canonical]
    return list(canonical)


def select_brats_modalities(modalities: Sequence[str] | None, *, where: str) -> list[str]:
    """The canonical modalities asked for (either naming; default all four), in canonical order."""
    if modalities is None:
        return list(MODALITIES)
    chosen: list[str] = []
    for m in modalities:
        c = canonical_modality(m)
        if c is None:
            raise SingrInputError(
                f"unknown modality {m!r} for {where}; expected names from {list(MODALITIES)} "
                f"or {list(BRATS2023_NAMES)}")
        if c in chosen:
            raise SingrInputError(f"modality {m!r} given twice ({where})")
        chosen.append(c)
    if not chosen:
        raise SingrInputError(f"no modalities selected ({where})")
    return [m for m in MODALITIES if m in chosen]


def nii_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    for ext in NII_EXTS:
        p = folder / (stem + ext)
        if p.is_file():
            return p
    return None


def check_label_convention(label_convention: str) -> None:
    if label_convention != "auto":
        check_convention(label_convention)


@dataclass
class CaseFiles:
    """Where one case's files are.

    ``images`` maps modality name to a NIfTI path (BraTS, nnU-Net) or, for "lgg", to the
    ordered list of slice TIFFs (every LGG channel maps to the same list; the channel is
    picked by name from :data:`LGG_CHANNELS`). A path may not exist: the reader then names
    the missing modality and the expected file. ``label`` is a path, a list of mask slices
    (LGG) or None (no ground truth). ``label_convention`` is one of
    ``regions.CONVENTIONS`` or "auto" (decided at load from the label values).
    ``label_map`` remaps stored label values at load (nnU-Net data sets whose labels are
    BraTS classes under other numbers). ``spacing`` overrides the voxel spacing (LGG).
    ``naming`` is how the user's files name the modalities (brats2020 or brats2023), so
    that errors speak the user's language.
    """

    case_id: str
    images: dict[str, Any]
    label: Any
    layout: str
    label_convention: str
    label_map: dict[int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    folder: Path | None = None
    naming: str = "brats2020"


@dataclass
class LoadedCase:
    """One case in memory: image (C, X, Y, Z) float32, label (X, Y, Z) uint8 or None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: Any
    spacing: tuple[float, ...]
    modalities: list[str]
    label_convention: str
    source: dict = field(default_factory=dict)


@dataclass
class Volume:
    """One volume to stack: its modality, the name errors use, and how to read it."""

    modality: str
    name: str
    read: Callable[[], tuple[np.ndarray, np.ndarray, Any]]


def _check_finite(array: np.ndarray, *, case: str, path: str, what: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if n:
        n_nan = int(np.isnan(array).sum())
        raise SingrInputError(f"{what}: {n} non-finite voxels ({n_nan} NaN, {n - n_nan} inf); "
                              "expected finite intensities", case=case, path=path)


def _check_volume(arr: np.ndarray, *, case: str, path: str, what: str, check: bool) -> None:
    if arr.ndim != 3:
        kind = "2-D" if arr.ndim == 2 else f"{arr.ndim}-D"
        raise SingrInputError(f"{what}: expected a 3-D volume, got a {kind} array of shape {arr.shape}",
                              case=case, path=path)
    if min(arr.shape) < 1:
        raise SingrInputError(f"{what} is empty (shape {arr.shape})", case=case, path=path)
    if arr.dtype.kind not in "biuf":
        raise SingrInputError(f"{what}: data type {arr.dtype} is not real-valued; expected integer or "
                              "floating-point intensities", case=case, path=path)
    if check:
        _check_finite(arr, case=case, path=path, what=what)


def stack_volumes(case_id: str, volumes: Sequence[Volume], *, check: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read ``volumes`` and stack them into an image (C, X, Y, Z) float32.

    Returns ``(image, affine, header)`` of the first volume. Checks, each an error naming
    the case and the volume: 3-D, non-empty, real-valued; and with ``check``: finite
    voxels, the same affine as the first volume (atol 1e-3) and a valid affine.
    """
    image: np.ndarray | None = None
    ref_affine: np.ndarray | None = None
    ref_header: Any = None
    ref = volumes[0] if volumes else None
    for c, vol in enumerate(volumes):
        arr, affine, header = vol.read()
        _check_volume(arr, case=case_id, path=vol.name, what=f"{vol.modality} image", check=check)
        if image is None:
            if check:
                check_affine(affine, case=case_id, path=vol.name)
            image = np.empty((len(volumes),) + arr.shape, dtype=np.float32)
            ref_affine, ref_header = affine, header
        else:
            assert ref is not None
            if arr.shape != image.shape[1:]:
                raise SingrInputError(f"{vol.modality} image has shape {arr.shape}, but {ref.modality} image "
                                      f"{Path(ref.name).name} has shape {image.shape[1:]}; expected equal shapes",
                                      case=case_id, path=vol.name)
            if check and not np.allclose(affine, np.asarray(ref_affine), atol=AFFINE_ATOL):
                raise SingrInputError(f"{vol.modality} image affine differs from that of {Path(ref.name).name} "
                                      f"(atol {AFFINE_ATOL}); expected co-registered scans on one grid",
                                      case=case_id, path=vol.name)
        image[c] = arr
        del arr
    if image is None:
        raise SingrInputError("no image files for this case", case=case_id)
    assert ref_affine is not None
    return image, ref_affine, ref_header


def split_4d(arr: np.ndarray, modalities: Sequence[str], *, case: str, path: str, check: bool) -> np.ndarray:
    """A 4-D array (X, Y, Z, C) with one channel per modality -> image (C, X, Y, Z) float32."""
    if len(modalities) == 1 and arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[3] != len(modalities):
        raise SingrInputError(f"a single image file must be 4-D with {len(modalities)} channels on the last axis "
                              f"({', '.join(modalities)}); got shape {arr.shape}", case=case, path=path)
    _check_volume(arr[..., 0], case=case, path=path, what="image", check=False)
    if check:
        _check_finite(arr, case=case, path=path, what="image")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)


def _volume_reader(path: Path, case: str, what: str) -> Callable[[], tuple[np.ndarray, np.ndarray, Any]]:
    return lambda: read_volume(path, case=case, what=what)


def read_volume(path: Path, *, case: str, what: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """A 3-D NIfTI volume, or an error naming the case and file."""
    array, affine, header = read_nifti(path, case=case)
    if array.ndim != 3:
        kind = "2-D" if array.ndim == 2 else f"{array.ndim}-D"
        raise SingrInputError(f"{what}: expected a 3-D volume, got a {kind} array of shape {array.shape}",
                              case=case, path=path)
    return array, affine, header


def label_to_uint8(label: np.ndarray, *, case: str, path: Path | str, label_map: dict[int, int] | None
                   ) -> np.ndarray:
    """Integer labels 0..255 as uint8 (``label_map`` applied), or an error naming the file."""
    if label.dtype.kind == "f":
        if not np.isfinite(label).all():
            raise SingrInputError("label map holds NaN or inf; expected integer labels", case=case, path=path)
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise SingrInputError("label map holds non-integer values; expected integer labels",
                                  case=case, path=path)
        label = rounded
    elif label.dtype.kind not in "iub":
        raise SingrInputError(f"label map has data type {label.dtype}; expected integers", case=case, path=path)
    values = np.unique(label)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise SingrInputError(f"label values {values.tolist()[:10]} outside 0..255; expected small integer labels",
                              case=case, path=path)
    out = label.astype(np.uint8)
    if label_map:
        lut = np.arange(256, dtype=np.uint8)
        for src, dst in label_map.items():
            lut[int(src)] = int(dst)
        out = lut[out]
    return out


def resolve_convention(convention: str, label: np.ndarray | None, layout: str, *, case: str,
                       path: Path | str | None) -> str:
    """The label convention: as given, else detected from the label values (3 -> 2023, 4 -> 2020),
    else the layout's own (brats2023 for that layout, brats2020 otherwise)."""
    if convention != "auto":
        return convention
    fallback = "brats2023" if layout == "brats2023" else "brats2020"
    if label is None:
        return fallback
    try:
        return detect_convention(np.unique(label)) or fallback
    except SingrInputError as err:
        raise SingrInputError(err.reason, case=case, path=path) from None


def _read_label(label_path: Path, image: np.ndarray, ref_affine: np.ndarray, ref_name: str, *, case_id: str,
                label_map: dict[int, int] | None, check: bool) -> np.ndarray:
    arr, affine, _ = read_volume(label_path, case=case_id, what="label")
    if arr.shape != image.shape[1:]:
        raise SingrInputError(f"label has shape {arr.shape}, but the images ({ref_name}) have shape "
                              f"{image.shape[1:]}; expected equal shapes", case=case_id, path=label_path)
    if check and not np.allclose(affine, ref_affine, atol=AFFINE_ATOL):
        raise SingrInputError(f"label affine differs from that of {ref_name} (atol {AFFINE_ATOL}); "
                              "expected the label on the image grid", case=case_id, path=label_path)
    return label_to_uint8(arr, case=case_id, path=label_path, label_map=label_map)


def load_nifti_case(case_id: str, images: Sequence[tuple[str, Path]], label_path: Path | None, *, layout: str,
                    label_convention: str, label_map: dict[int, int] | None = None, check: bool = True,
                    naming: str = "brats2020", image_4d: Path | None = None) -> LoadedCase:
    """A case from NIfTI files: one per modality (``images``), or one 4-D file (``image_4d``,
    channels in the order of ``images``' modalities), and an optional label."""
    mods = [m for m, _ in images]
    if image_4d is not None:
        arr, affine, header = read_nifti(image_4d, case=case_id)
        image = split_4d(arr, mods, case=case_id, path=str(image_4d), check=check)
        if check:
            check_affine(affine, case=case_id, path=image_4d)
        ref_name = image_4d.name
        sources: dict[str, str] = {"4d": str(image_4d)}
    else:
        for mod, path in images:
            if not Path(path).is_file():
                shown = modality_list([mod], naming)[0]
                raise SingrInputError(f"missing {shown} image: expected file {Path(path).name}", case=case_id,
                                      path=path)
        vols = [Volume(mod, str(path), _volume_reader(Path(path), case_id, f"{mod} image")) for mod, path in images]
        image, affine, header = stack_volumes(case_id, vols, check=check)
        ref_name = Path(images[0][1]).name
        sources = {m: str(p) for m, p in images}
    label = None
    if label_path is not None:
        if not Path(label_path).is_file():
            raise SingrInputError("label file not found", case=case_id, path=label_path)
        label = _read_label(Path(label_path), image, affine, ref_name, case_id=case_id, label_map=label_map,
                            check=check)
    convention = resolve_convention(label_convention, label, layout, case=case_id, path=label_path)
    check_convention(convention)
    if label is not None and check:
        check_labels(label, convention, case=case_id, path=str(label_path))
    return LoadedCase(case_id=case_id, image=image, label=label, affine=affine, header=header,
                      spacing=nifti_spacing(header), modalities=mods, label_convention=convention,
                      source={"layout": layout, "images": sources,
                              "label": str(label_path) if label_path is not None else None})


def expected_text(expected: Sequence[str]) -> str:
    """How an error lists the expected modalities: both namings."""
    return f"{list(expected)} (BraTS 2023 names: {modality_list(expected, 'brats2023')})"


def given_modalities(files: Mapping[str, Any], expected: Sequence[str], *, case_id: str) -> dict[str, Any]:
    """``{canonical modality: value}`` from a mapping keyed by modality names of either naming;
    errors for unknown, repeated and missing modalities (named as the caller named them)."""
    naming = "brats2023" if files and all(str(k).strip().lower() in BRATS2023_NAMES for k in files) else "brats2020"
    given: dict[str, Any] = {}
    for key, value in files.items():
        c = canonical_modality(str(key))
        if c is None or c not in expected:
            raise SingrInputError(f"unexpected modality {key!r}; expected {expected_text(expected)}",
                                  case=case_id, path=str(value) if isinstance(value, (str, Path)) else None)
        if c in given:
            raise SingrInputError(f"modality {c} given twice ({key!r}); expected each of {expected_text(expected)} "
                                  "once", case=case_id)
        given[c] = value
    missing = [m for m in expected if m not in given]
    if missing:
        raise SingrInputError(f"missing modalities {modality_list(missing, naming)}; expected "
                              f"{expected_text(expected)}", case=case_id)
    return given
