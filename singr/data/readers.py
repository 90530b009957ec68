"""Find and load cases from the data layouts in DESIGN.md 1.5.

Layouts: "brats2020", "brats2023", "lgg" (kaggle_3m TIFF slices), "nnunet" (nnU-Net raw
folder with ``dataset.json``), and "auto" (detected from the folder contents).

Modalities are named canonically with the BraTS 2020 names, in the canonical order
``flair, t1, t1ce, t2``; the BraTS 2023 names ``t2f, t1n, t1c, t2w`` are the same scans
in the same order and map onto them. LGG slices are RGB: ``pre, flair, post``.

Arrays keep the file's own axis order (no reorientation): image (C, X, Y, Z) float32,
label (X, Y, Z) uint8. Every error is a :class:`SingrInputError` naming case and file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import SingrInputError
from ..io import nifti_spacing, read_nifti
from ..regions import CONVENTIONS, check_convention, check_labels, detect_convention

__all__ = [
    "MODALITIES", "BRATS2023_NAMES", "LGG_CHANNELS", "LAYOUTS", "CaseFiles", "LoadedCase",
    "canonical_modality", "discover_cases", "detect_layout", "load_case", "load_case_from_files",
    "find_case_folder_files", "load_case_from_bytes",
]

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Canonical modality order (BraTS 2020 names)."""
BRATS2023_NAMES: tuple[str, ...] = ("t2f", "t1n", "t1c", "t2w")
"""BraTS 2023 names of the same scans, in the same order as :data:`MODALITIES`."""
LGG_CHANNELS: tuple[str, ...] = ("pre", "flair", "post")
"""Channels of the kaggle_3m RGB TIFF slices: pre-contrast, FLAIR, post-contrast."""
LAYOUTS: tuple[str, ...] = ("brats2020", "brats2023", "lgg", "nnunet")

_ALIASES: dict[str, str] = {
    **{m: m for m in MODALITIES},
    **dict(zip(BRATS2023_NAMES, MODALITIES)),
    # names seen in nnU-Net dataset.json files and elsewhere
    "t2flair": "flair", "t2_flair": "flair", "t2-flair": "flair", "fla": "flair",
    "t1w": "t1", "t1native": "t1", "native": "t1",
    "t1gd": "t1ce", "t1c": "t1ce", "t1post": "t1ce", "t1contrast": "t1ce", "t1ce": "t1ce", "t1wce": "t1ce",
    "t2weighted": "t2",
}
_NII_EXTS = (".nii.gz", ".nii")
_AFFINE_ATOL = 1e-3


def canonical_modality(name: str) -> str | None:
    """Canonical name (``flair``, ``t1``, ``t1ce``, ``t2``) for a modality name, or None."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    key = re.sub(r"[^a-z0-9]", "", key)
    return _ALIASES.get(key)


@dataclass
class CaseFiles:
    """Where one case's files are.

    ``images`` maps modality name to a NIfTI path (BraTS, nnU-Net) or, for "lgg", to the
    ordered list of slice TIFFs (every LGG channel maps to the same list; the channel is
    picked by name from :data:`LGG_CHANNELS`). A path may not exist: :func:`load_case`
    then names the missing modality and the expected file. ``label`` is a path, a list of
    mask slices (LGG) or None (no ground truth). ``label_convention`` is one of
    ``regions.CONVENTIONS`` or "auto" (decided at load from the label values).
    ``label_map`` remaps stored label values at load (nnU-Net data sets whose labels are
    BraTS classes under other numbers). ``spacing`` overrides the voxel spacing (LGG).
    """

    case_id: str
    images: dict[str, Path | list[Path]]
    label: Path | list[Path] | None
    layout: str
    label_convention: str
    label_map: dict[int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    folder: Path | None = None


@dataclass
class LoadedCase:
    """One case in memory: image (C, X, Y, Z) float32, label (X, Y, Z) uint8 or None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: Any
    spacing: tuple[float, float, float]
    modalities: list[str]
    label_convention: str
    source: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers

def _nii_file(folder: Path, stem: str) -> Path | None:
    for ext in _NII_EXTS:
        p = folder / (stem + ext)
        if p.is_file():
            return p
    return None


def _check_label_convention(label_convention: str) -> None:
    if label_convention != "auto":
        check_convention(label_convention)


def _select_brats_modalities(modalities: Sequence[str] | None, *, where: str) -> list[str]:
    if modalities is None:
        return list(MODALITIES)
    chosen = []
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


def _list_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# --------------------------------------------------------------------------- BraTS

_BRATS = {
    # layout: (separator, names in canonical order)
    "brats2020": ("_", MODALITIES),
    "brats2023": ("-", BRATS2023_NAMES),
}


def _is_brats_case_dir(folder: Path, layout: str) -> bool:
    sep, names = _BRATS[layout]
    return any(_nii_file(folder, f"{folder.name}{sep}{n}") is not None for n in names)


def _brats_label(folder: Path, case_id: str, sep: str, image_files: set[Path]) -> Path | None:
    label = _nii_file(folder, f"{case_id}{sep}seg")
    if label is not None:
        return label
    # Fallback (Kaggle BraTS 2020 case 355: "W39_1998.09.19_Segm.nii"): one *seg* NIfTI.
    candidates = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p not in image_files and "seg" in p.name.lower()
        and p.name.lower().endswith(_NII_EXTS) and not p.name.startswith("."))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise SingrInputError(
            f"no {case_id}{sep}seg.nii[.gz] and several candidate label files "
            f"{[p.name for p in candidates]}; expected exactly one", case=case_id, path=folder)
    return None


def _brats_case(folder: Path, layout: str, label_convention: str, modalities: list[str]) -> CaseFiles:
    sep, names = _BRATS[layout]
    case_id = folder.name
    found = {m: _nii_file(folder, f"{case_id}{sep}{n}") for m, n in zip(MODALITIES, names)}
    ext = next((".nii.gz" if p.name.endswith(".gz") else ".nii" for p in found.values() if p), ".nii.gz")
    images: dict[str, Path | list[Path]] = {}
    for m, n in zip(MODALITIES, names):
        if m in modalities:
            images[m] = found[m] if found[m] is not None else folder / f"{case_id}{sep}{n}{ext}"
    label = _brats_label(folder, case_id, sep, {p for p in found.values() if p is not None})
    return CaseFiles(case_id=case_id, images=images, label=label, layout=layout,
                     label_convention=label_convention, folder=folder)


def _brats_case_dirs(root: Path, layout: str) -> list[Path]:
    """Case folders at depth 1, else depth 2 (Kaggle nests them), else root itself."""
    dirs = [d for d in _list_dirs(root) if _is_brats_case_dir(d, layout)]
    if not dirs:
        dirs = [d for sub in _list_dirs(root) for d in _list_dirs(sub) if _is_brats_case_dir(d, layout)]
    if not dirs and _is_brats_case_dir(root, layout):
        dirs = [root]
    return sorted(dirs, key=lambda d: d.name)


# --------------------------------------------------------------------------- LGG

_LGG_IMAGE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)
_LGG_MASK = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)_mask\.tiff?$", re.IGNORECASE)


def _is_lgg_case_dir(folder: Path) -> bool:
    return any(_LGG_MASK.match(p.name) or _LGG_IMAGE.match(p.name) for p in folder.glob("*.tif*"))


def _lgg_case(folder: Path, modalities: list[str], spacing: tuple[float, float, float] | None) -> CaseFiles:
    case_id = folder.name
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for p in folder.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        m = _LGG_MASK.match(p.name)
        if m:
            masks[int(m.group("n"))] = p
            continue
        m = _LGG_IMAGE.match(p.name)
        if m:
            n = int(m.group("n"))
            if n in images:
                raise SingrInputError(f"two image slices numbered {n}: {images[n].name}, {p.name}",
                                      case=case_id, path=folder)
            images[n] = p
    if not images:
        raise SingrInputError("no image slices <name>_<n>.tif found (only masks)", case=case_id, path=folder)
    order = sorted(images)  # integer order: 1, 2, ..., 10 (not lexicographic)
    slices = [images[n] for n in order]
    label: list[Path] | None = None
    if masks:
        label = [masks.get(n, images[n].with_name(images[n].name.rsplit(".", 1)[0] + "_mask.tif"))
                 for n in order]
        extra = sorted(set(masks) - set(images))
        if extra:
            raise SingrInputError(f"mask slices without an image slice: numbers {extra}; expected a "
                                  f"<name>_<n>.tif for every <name>_<n>_mask.tif", case=case_id, path=folder)
    return CaseFiles(case_id=case_id, images={m: list(slices) for m in modalities}, label=label,
                     layout="lgg", label_convention="binary", spacing=spacing, folder=folder)


def _select_lgg_modalities(modalities: Sequence[str] | None) -> list[str]:
    if modalities is None:
        return ["flair"]
    chosen = [str(m).lower() for m in modalities]
    bad = [m for m in chosen if m not in LGG_CHANNELS]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise SingrInputError(f"LGG modalities must be distinct names from {list(LGG_CHANNELS)}, got {list(modalities)}")
    return [m for m in LGG_CHANNELS if m in chosen]


# --------------------------------------------------------------------------- nnU-Net

def _nnunet_labels(labels: Mapping[str, Any], path: Path) -> tuple[str | None, dict[int, int] | None]:
    """Label convention and value remapping implied by a dataset.json "labels" entry.

    Returns (convention or None when it cannot tell, remap or None for identity).
    Accepts nnU-Net v2 ({"name": value or [values]}) and v1 ({"value": "name"}).
    """
    if labels and all(str(k).strip().lstrip("-").isdigit() for k in labels) and \
            all(isinstance(v, str) for v in labels.values()):
        labels = {v: int(k) for k, v in labels.items()}  # v1 -> v2
    plain: dict[str, int] = {}
    regions: dict[str, set[int]] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            regions[name] = {int(v) for v in value}
        else:
            try:
                plain[name] = int(value)
            except (TypeError, ValueError):
                raise SingrInputError(f"label {name!r} has value {value!r}; expected an integer or a list",
                                      path=path) from None
    fg_plain = {n: v for n, v in plain.items() if v != 0}
    if regions:
        # Region-based (e.g. nnU-Net Dataset137: whole tumor [1,2,3], tumor core [2,3], enhancing [3]).
        sets = sorted(regions.values(), key=len, reverse=True) + [{v} for v in fg_plain.values()]
        sets = sorted({frozenset(s) for s in sets}, key=len, reverse=True)
        if len(sets) == 3 and sets[2] < sets[1] < sets[0] and len(sets[2]) == 1 \
                and len(sets[1] - sets[2]) == 1 and len(sets[0] - sets[1]) == 1:
            et = next(iter(sets[2]))
            ncr = next(iter(sets[1] - sets[2]))
            ed = next(iter(sets[0] - sets[1]))
            return _brats_remap(ncr, ed, et)
        return None, None
    if len(fg_plain) == 1:
        (value,) = fg_plain.values()
        return "binary", (None if value == 1 else {value: 1})
    roles: dict[str, int] = {}
    for name, value in fg_plain.items():
        key = re.sub(r"[^a-z]", "", name.lower())
        if key.startswith("non") or "necro" in key or key in ("ncr", "net", "ncrnet", "core") :
            role = "ncr"
        elif "edema" in key or "oedema" in key or key in ("ed", "peritumoral"):
            role = "ed"
        elif "enhanc" in key or key == "et":
            role = "et"
        else:
            return None, None
        if role in roles:
            return None, None
        roles[role] = value
    if set(roles) == {"ncr", "ed", "et"}:
        return _brats_remap(roles["ncr"], roles["ed"], roles["et"])
    return None, None


def _brats_remap(ncr: int, ed: int, et: int) -> tuple[str, dict[int, int] | None]:
    if (ncr, ed) == (1, 2) and et in (3, 4):
        return ("brats2023" if et == 3 else "brats2020"), None
    return "brats2023", {ncr: 1, ed: 2, et: 3}


def _nnunet_cases(root: Path, label_convention: str, modalities: Sequence[str] | None) -> list[CaseFiles]:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SingrInputError(f"cannot read dataset.json ({err})", path=meta_path) from err
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise SingrInputError('expected a "channel_names" entry such as {"0": "FLAIR"}', path=meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in _NII_EXTS:
        raise SingrInputError(f"file_ending {ending!r} is not supported; expected .nii.gz or .nii", path=meta_path)
    try:
        indices = sorted(int(k) for k in channels)
    except ValueError:
        raise SingrInputError(f"channel_names keys must be integers, got {list(channels)}", path=meta_path) from None
    raw = [str(channels[str(i)]) for i in indices]
    canon = [canonical_modality(n) for n in raw]
    names = [c if c is not None else n for c, n in zip(canon, raw)]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for n, i in zip(names, indices)]
    order = list(range(len(indices)))
    if all(c is not None for c in canon) and len(set(canon)) == len(canon):
        order.sort(key=lambda j: MODALITIES.index(canon[j]))
    if modalities is not None:
        wanted = []
        for m in modalities:
            c = canonical_modality(m) or m
            match = [j for j in order if names[j] == c or raw[j] == m]
            if not match:
                raise SingrInputError(f"modality {m!r} not among the channels {raw}", path=meta_path)
            wanted.append(match[0])
        order = [j for j in order if j in wanted]
    if label_convention == "auto":
        convention, remap = _nnunet_labels(meta.get("labels", {}) or {}, meta_path)
        if convention is None:
            raise SingrInputError(
                f"cannot tell the label convention from the labels {meta.get('labels')}; expected BraTS "
                "classes (necrosis, edema, enhancing) or {background: 0, <name>: 1}; "
                f"set label_convention to one of {', '.join(CONVENTIONS)}", path=meta_path)
    else:
        convention, remap = label_convention, None
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise SingrInputError("no imagesTr folder beside dataset.json", path=root)
    pattern = re.compile(r"^(?P<id>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    ids = sorted({m.group("id") for p in images_dir.iterdir() if (m := pattern.match(p.name))})
    cases = []
    for case_id in ids:
        images = {names[j]: images_dir / f"{case_id}_{indices[j]:04d}{ending}" for j in order}
        label = labels_dir / f"{case_id}{ending}"
        cases.append(CaseFiles(case_id=case_id, images=images, label=label if label.is_file() else None,
                               layout="nnunet", label_convention=convention, label_map=remap, folder=root))
    return cases


# --------------------------------------------------------------------------- discovery

def _layout_counts(root: Path) -> dict[str, int]:
    counts = {"brats2020": len(_brats_case_dirs(root, "brats2020")),
              "brats2023": len(_brats_case_dirs(root, "brats2023")),
              "lgg": sum(_is_lgg_case_dir(d) for d in _list_dirs(root))}
    return {k: v for k, v in counts.items() if v}


def _expected_text() -> str:
    return ("expected one of: brats2020 (<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]), "
            "brats2023 (<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz), "
            "lgg (<case>/<case>_<n>.tif and <case>_<n>_mask.tif), "
            "nnunet (dataset.json, imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz)")


def detect_layout(root: str | Path) -> str:
    """Detect the layout of a data folder; error naming ``root`` when none matches."""
    root = Path(root)
    if not root.is_dir():
        raise SingrInputError(f"data folder does not exist; {_expected_text()}", path=root)
    if (root / "dataset.json").is_file():
        return "nnunet"
    counts = _layout_counts(root)
    if not counts:
        raise SingrInputError(f"no cases found under {root}: {_expected_text()}", path=root)
    if len(counts) > 1:
        raise SingrInputError(f"cases of several layouts under {root}: {counts}; expected one layout "
                              "per folder (pass layout= to choose)", path=root)
    return next(iter(counts))


def discover_cases(root: str | Path, layout: str = "auto", label_convention: str = "auto",
                   modalities: Sequence[str] | None = None,
                   spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
    """All cases under ``root``, sorted by case id.

    ``layout``: one of :data:`LAYOUTS` or "auto". ``label_convention``: one of
    ``regions.CONVENTIONS`` or "auto" (BraTS: from the label values at load time; nnU-Net:
    from dataset.json; LGG: always "binary"). ``modalities``: a subset to load (BraTS names
    of either year, LGG names from :data:`LGG_CHANNELS`, default ``["flair"]``; nnU-Net
    channel names); default all. ``spacing``: LGG voxel spacing, default (1, 1, 1).
    Files are not opened here; :func:`load_case` checks them.
    """
    root = Path(root)
    _check_label_convention(label_convention)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise SingrInputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)} or auto")
    if not root.is_dir():
        raise SingrInputError(f"data folder does not exist; {_expected_text()}", path=root)
    if layout in _BRATS:
        mods = _select_brats_modalities(modalities, where=layout)
        cases = [_brats_case(d, layout, label_convention, mods) for d in _brats_case_dirs(root, layout)]
    elif layout == "lgg":
        if label_convention not in ("auto", "binary"):
            raise SingrInputError(f"the lgg layout has binary masks; label_convention {label_convention!r} "
                                  "does not apply (expected auto or binary)", path=root)
        mods = _select_lgg_modalities(modalities)
        cases = [_lgg_case(d, mods, spacing) for d in _list_dirs(root) if _is_lgg_case_dir(d)]
    else:
        if not (root / "dataset.json").is_file():
            raise SingrInputError("nnunet layout needs a dataset.json", path=root)
        cases = _nnunet_cases(root, label_convention, modalities)
    if not cases:
        raise SingrInputError(f"no cases found under {root}: {_expected_text()}", path=root)
    cases.sort(key=lambda c: c.case_id)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SingrInputError(f"case ids occur more than once: {dup}", path=root)
    return cases


def find_case_folder_files(folder: str | Path, label_convention: str = "auto") -> CaseFiles:
    """The files of a single case folder in BraTS 2020 or 2023 naming (``singr predict --case DIR``)."""
    folder = Path(folder)
    _check_label_convention(label_convention)
    if not folder.is_dir():
        raise SingrInputError("case folder does not exist", case=folder.name, path=folder)
    for layout in _BRATS:
        if _is_brats_case_dir(folder, layout):
            return _brats_case(folder, layout, label_convention, list(MODALITIES))
    raise SingrInputError(
        f"no BraTS files in the case folder; expected {folder.name}_{{flair,t1,t1ce,t2}}.nii[.gz] (BraTS 2020) "
        f"or {folder.name}-{{t2f,t1n,t1c,t2w}}.nii.gz (BraTS 2023)", case=folder.name, path=folder)


# --------------------------------------------------------------------------- loading

def _read_volume(path: Path, *, case: str, what: str) -> tuple[np.ndarray, np.ndarray, Any]:
    array, affine, header = read_nifti(path, case=case)
    if array.ndim != 3:
        kind = "2-D" if array.ndim == 2 else f"{array.ndim}-D"
        raise SingrInputError(f"{what}: expected a 3-D volume, got a {kind} array of shape {array.shape}",
                              case=case, path=path)
    return array, affine, header


def _check_finite(array: np.ndarray, *, case: str, path: Path, what: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if n:
        n_nan = int(np.isnan(array).sum())
        raise SingrInputError(f"{what}: {n} non-finite voxels ({n_nan} NaN, {n - n_nan} inf); "
                              "expected finite intensities", case=case, path=path)


def _label_to_uint8(label: np.ndarray, *, case: str, path: Path, label_map: dict[int, int] | None) -> np.ndarray:
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


def _resolve_convention(convention: str, label: np.ndarray | None, layout: str, *, case: str,
                        path: Path | None) -> str:
    if convention != "auto":
        return convention
    fallback = "brats2023" if layout == "brats2023" else "brats2020"
    if label is None:
        return fallback
    try:
        return detect_convention(np.unique(label)) or fallback
    except SingrInputError as err:
        raise SingrInputError(err.reason, case=case, path=path) from None


def _load_nifti_case(case_id: str, images: Sequence[tuple[str, Path]], label_path: Path | None, *,
                     layout: str, label_convention: str, label_map: dict[int, int] | None, check: bool,
                     expected_names: Mapping[str, str] | None = None) -> LoadedCase:
    for mod, path in images:
        if not Path(path).is_file():
            expect = (expected_names or {}).get(mod, Path(path).name)
            raise SingrInputError(f"missing {mod} image: expected file {expect}", case=case_id, path=path)
    if label_path is not None and not Path(label_path).is_file():
        raise SingrInputError("label file not found", case=case_id, path=label_path)
    image: np.ndarray | None = None
    ref_affine = ref_header = None
    ref_path: Path | None = None
    for c, (mod, path) in enumerate(images):
        arr, affine, header = _read_volume(Path(path), case=case_id, what=f"{mod} image")
        if image is None:
            image = np.empty((len(images),) + arr.shape, dtype=np.float32)
            ref_affine, ref_header, ref_path = affine, header, Path(path)
        else:
            if arr.shape != image.shape[1:]:
                raise SingrInputError(f"{mod} image has shape {arr.shape}, but {images[0][0]} image "
                                      f"{ref_path.name} has shape {image.shape[1:]}; expected equal shapes",
                                      case=case_id, path=path)
            if check and not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
                raise SingrInputError(f"{mod} image affine differs from that of {ref_path.name} "
                                      f"(atol {_AFFINE_ATOL}); expected co-registered scans on one grid",
                                      case=case_id, path=path)
        if check:
            _check_finite(arr, case=case_id, path=Path(path), what=f"{mod} image")
        image[c] = arr
    assert image is not None and ref_path is not None
    label = None
    if label_path is not None:
        arr, affine, _ = _read_volume(Path(label_path), case=case_id, what="label")
        if arr.shape != image.shape[1:]:
            raise SingrInputError(f"label has shape {arr.shape}, but the images ({ref_path.name}) have shape "
                                  f"{image.shape[1:]}; expected equal shapes", case=case_id, path=label_path)
        if check and not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
            raise SingrInputError(f"label affine differs from that of {ref_path.name} (atol {_AFFINE_ATOL}); "
                                  "expected the label on the image grid", case=case_id, path=label_path)
        label = _label_to_uint8(arr, case=case_id, path=Path(label_path), label_map=label_map)
    convention = _resolve_convention(label_convention, label, layout, case=case_id, path=label_path)
    check_convention(convention)
    if label is not None and check:
        check_labels(label, convention, case=case_id, path=str(label_path))
    return LoadedCase(
        case_id=case_id, image=image, label=label, affine=ref_affine, header=ref_header,
        spacing=nifti_spacing(ref_header), modalities=[m for m, _ in images], label_convention=convention,
        source={"layout": layout, "images": {m: str(p) for m, p in images},
                "label": str(label_path) if label_path is not None else None})


def _read_tiff(path: Path, *, case: str) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise SingrInputError("slice file not found", case=case, path=path)
    try:
        return np.asarray(tifffile.imread(str(path)))
    except Exception as err:
        raise SingrInputError(f"cannot read as TIFF ({type(err).__name__}: {err})", case=case, path=path) from err


def _load_lgg(case: CaseFiles, check: bool) -> LoadedCase:
    cid = case.case_id
    mods = list(case.images)
    slices = case.images[mods[0]]
    if not isinstance(slices, list) or not slices:
        raise SingrInputError("expected a list of slice files for the lgg layout", case=cid, path=case.folder)
    numbers = [int(_LGG_IMAGE.match(Path(p).name).group("n")) for p in slices]  # type: ignore[union-attr]
    gaps = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
    if gaps:
        raise SingrInputError(f"slice numbers are not consecutive: missing {gaps}; expected slices "
                              f"{min(numbers)}..{max(numbers)}", case=cid, path=case.folder)
    channels = [LGG_CHANNELS.index(m) for m in mods]
    first = _read_tiff(Path(slices[0]), case=cid)
    if first.ndim != 3 or first.shape[2] < 3:
        raise SingrInputError(f"expected an RGB slice of shape (H, W, 3) (pre-contrast, FLAIR, post-contrast), "
                              f"got shape {first.shape}", case=cid, path=slices[0])
    h, w = first.shape[:2]
    image = np.empty((len(mods), h, w, len(slices)), dtype=np.float32)
    for k, p in enumerate(slices):
        arr = first if k == 0 else _read_tiff(Path(p), case=cid)
        if arr.shape != first.shape:
            raise SingrInputError(f"slice has shape {arr.shape}, expected {first.shape} like {Path(slices[0]).name}",
                                  case=cid, path=p)
        image[:, :, :, k] = np.moveaxis(arr[..., channels], -1, 0)
    if check:
        _check_finite(image, case=cid, path=Path(slices[0]).parent, what="image")
    label = None
    if case.label is not None:
        masks = case.label if isinstance(case.label, list) else [case.label]
        if len(masks) != len(slices):
            raise SingrInputError(f"{len(masks)} mask slices for {len(slices)} image slices; expected one "
                                  "<name>_<n>_mask.tif per image slice", case=cid, path=case.folder)
        label = np.empty((h, w, len(slices)), dtype=np.uint8)
        for k, p in enumerate(masks):
            p = Path(p)
            if not p.is_file():
                raise SingrInputError(f"missing mask slice: expected file {p.name} for image slice "
                                      f"{Path(slices[k]).name}", case=cid, path=p)
            m = _read_tiff(p, case=cid)
            if m.ndim == 3:
                m = m[..., 0]
            if m.shape != (h, w):
                raise SingrInputError(f"mask has shape {m.shape}, expected {(h, w)} like the image slices",
                                      case=cid, path=p)
            label[:, :, k] = m > 0
    spacing = tuple(float(s) for s in (case.spacing or (1.0, 1.0, 1.0)))
    return LoadedCase(
        case_id=cid, image=image, label=label, affine=np.diag(list(spacing) + [1.0]).astype(np.float64),
        header=None, spacing=spacing, modalities=mods, label_convention="binary",  # type: ignore[arg-type]
        source={"layout": "lgg", "images": [str(p) for p in slices],
                "label": [str(p) for p in case.label] if isinstance(case.label, list) else None,
                "channels": mods})


def load_case(case: CaseFiles, *, check: bool = True) -> LoadedCase:
    """Read one case into memory.

    Checks (each a :class:`SingrInputError` naming case and file): missing modality file,
    unreadable file, non-3-D array, shapes that disagree between modalities or with the
    label, and, when ``check``: affines that disagree (atol 1e-3), NaN/inf voxels, label
    values outside the convention.
    """
    if case.layout == "lgg":
        return _load_lgg(case, check)
    images = []
    for mod, path in case.images.items():
        if isinstance(path, list):
            raise SingrInputError(f"{mod}: expected one NIfTI file, got a list", case=case.case_id)
        images.append((mod, Path(path)))
    if not images:
        raise SingrInputError("no image files for this case", case=case.case_id, path=case.folder)
    label = case.label
    if isinstance(label, list):
        raise SingrInputError("expected one label NIfTI file, got a list", case=case.case_id)
    return _load_nifti_case(case.case_id, images, Path(label) if label is not None else None, layout=case.layout,
                            label_convention=case.label_convention, label_map=case.label_map, check=check)


def load_case_from_files(files: Mapping[str, str | Path] | Sequence[str | Path], *, case_id: str = "input",
                         label: str | Path | None = None, label_convention: str = "brats2020",
                         modalities: Sequence[str] = MODALITIES, check: bool = True) -> LoadedCase:
    """Load a case from separate modality files (``singr predict``).

    ``files``: a mapping modality name -> path (BraTS 2020 or 2023 names, any order), or a
    sequence of paths in canonical order (flair, t1, t1ce, t2, restricted to
    ``modalities``), or a single 4-D NIfTI whose last axis holds the channels in that
    order. ``modalities``: the channels expected (default all four; either naming; the
    image is always in canonical order). ``label_convention``: a convention or "auto".
    """
    _check_label_convention(label_convention)
    expected = _select_brats_modalities(modalities, where="load_case_from_files")
    expected_text = f"{expected} (BraTS 2023 names: {[BRATS2023_NAMES[MODALITIES.index(m)] for m in expected]})"
    if isinstance(files, (str, Path)):
        files = [files]
    if isinstance(files, Mapping):
        given: dict[str, Path] = {}
        for key, path in files.items():
            c = canonical_modality(str(key))
            if c is None or c not in expected:
                raise SingrInputError(f"unexpected modality {key!r}; expected {expected_text}",
                                      case=case_id, path=path)
            if c in given:
                raise SingrInputError(f"modality {c} given twice ({key!r}); expected each of {expected_text} once",
                                      case=case_id, path=path)
            given[c] = Path(path)
        missing = [m for m in expected if m not in given]
        if missing:
            raise SingrInputError(f"missing modalities {missing}; expected {expected_text}", case=case_id)
        images = [(m, given[m]) for m in expected]
    else:
        paths = [Path(p) for p in files]
        if len(paths) == 1 and len(expected) > 1:
            return _load_4d(paths[0], case_id=case_id, label=label, label_convention=label_convention,
                            modalities=expected, check=check)
        if len(paths) != len(expected):
            raise SingrInputError(f"{len(paths)} image files given; expected {len(expected)} in the order "
                                  f"{expected_text}, or one 4-D NIfTI", case=case_id)
        images = list(zip(expected, paths))
    return _load_nifti_case(case_id, images, Path(label) if label is not None else None, layout="files",
                            label_convention=label_convention, label_map=None, check=check)


def _load_4d(path: Path, *, case_id: str, label: str | Path | None, label_convention: str,
             modalities: list[str], check: bool) -> LoadedCase:
    arr, affine, header = read_nifti(path, case=case_id)
    if arr.ndim != 4 or arr.shape[3] != len(modalities):
        raise SingrInputError(f"a single image file must be 4-D with {len(modalities)} channels on the last axis "
                              f"({', '.join(modalities)}); got shape {arr.shape}", case=case_id, path=path)
    if check:
        _check_finite(arr, case=case_id, path=path, what="image")
    image = np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)
    lab = None
    label_path = Path(label) if label is not None else None
    if label_path is not None:
        larr, laff, _ = _read_volume(label_path, case=case_id, what="label")
        if larr.shape != image.shape[1:]:
            raise SingrInputError(f"label has shape {larr.shape}, but the image has {image.shape[1:]}; "
                                  "expected equal shapes", case=case_id, path=label_path)
        if check and not np.allclose(laff, affine, atol=_AFFINE_ATOL):
            raise SingrInputError(f"label affine differs from that of {path.name} (atol {_AFFINE_ATOL})",
                                  case=case_id, path=label_path)
        lab = _label_to_uint8(larr, case=case_id, path=label_path, label_map=None)
    convention = _resolve_convention(label_convention, lab, "files", case=case_id, path=label_path)
    if lab is not None and check:
        check_labels(lab, convention, case=case_id, path=str(label_path))
    return LoadedCase(case_id=case_id, image=image, label=lab, affine=affine, header=header,
                      spacing=nifti_spacing(header), modalities=list(modalities), label_convention=convention,
                      source={"layout": "files", "images": {"4d": str(path)},
                              "label": str(label_path) if label_path else None})


def load_case_from_bytes(files: Mapping[str, bytes] | bytes, *, case_id: str = "input",
                         names: Mapping[str, str] | None = None, modalities: Sequence[str] = MODALITIES,
                         check: bool = True, max_size: int | None = None) -> LoadedCase:
    """:func:`load_case_from_files` for files held in memory (HTTP uploads), without a label.

    ``files``: modality name (BraTS 2020 or 2023 names) -> the bytes of a ``.nii``/``.nii.gz``
    file, or the bytes of one 4-D NIfTI (channels on the last axis in the order of
    ``modalities``). ``names`` gives each modality's upload name for error messages.
    Same checks as the file readers (missing/extra modality, 3-D volumes, equal shapes,
    affines within 1e-3, finite voxels); bytes that are not NIfTI raise
    :class:`singr.io.NiftiBytesError`. ``max_size`` bounds each decompressed file.
    """
    from ..io import read_nifti_bytes

    expected = _select_brats_modalities(modalities, where="load_case_from_bytes")
    expected_text = f"{expected} (BraTS 2023 names: {[BRATS2023_NAMES[MODALITIES.index(m)] for m in expected]})"
    names = dict(names or {})
    if isinstance(files, (bytes, bytearray, memoryview)):
        name = names.get("4d") or "image"
        arr, affine, header = read_nifti_bytes(bytes(files), name=name, case=case_id, max_size=max_size)
        if len(expected) == 1 and arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[3] != len(expected):
            raise SingrInputError(f"a single image file must be 4-D with {len(expected)} channels on the last "
                                  f"axis ({', '.join(expected)}), or send one file per modality {expected_text}; "
                                  f"got shape {arr.shape}", case=case_id, path=name)
        _check_real(arr, case=case_id, path=name, what="image")
        if check:
            _check_finite(arr, case=case_id, path=name, what="image")  # type: ignore[arg-type]
        image = np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)
        return LoadedCase(case_id=case_id, image=image, label=None, affine=affine, header=header,
                          spacing=nifti_spacing(header), modalities=list(expected), label_convention="brats2020",
                          source={"layout": "upload", "images": {"4d": name}})
    given: dict[str, tuple[str, bytes]] = {}
    for key, data in files.items():
        name = names.get(key, key)
        c = canonical_modality(str(key))
        if c is None or c not in expected:
            raise SingrInputError(f"unexpected modality {key!r}; expected {expected_text}", case=case_id, path=name)
        if c in given:
            raise SingrInputError(f"modality {c} given twice ({key!r}); expected each of {expected_text} once",
                                  case=case_id, path=name)
        given[c] = (name, data)
    missing = [m for m in expected if m not in given]
    if missing:
        raise SingrInputError(f"missing modalities {missing}; expected {expected_text}", case=case_id)
    image: np.ndarray | None = None
    ref_affine = ref_header = None
    ref_name = ""
    for c, mod in enumerate(expected):
        name, data = given[mod]
        arr, affine, header = read_nifti_bytes(data, name=name, case=case_id, max_size=max_size)
        if arr.ndim != 3:
            kind = "2-D" if arr.ndim == 2 else f"{arr.ndim}-D"
            raise SingrInputError(f"{mod} image: expected a 3-D volume, got a {kind} array of shape {arr.shape}",
                                  case=case_id, path=name)
        if min(arr.shape) < 1:
            raise SingrInputError(f"{mod} image is empty (shape {arr.shape})", case=case_id, path=name)
        _check_real(arr, case=case_id, path=name, what=f"{mod} image")
        if image is None:
            image = np.empty((len(expected),) + arr.shape, dtype=np.float32)
            ref_affine, ref_header, ref_name = affine, header, name
        else:
            if arr.shape != image.shape[1:]:
                raise SingrInputError(f"{mod} image has shape {arr.shape}, but {expected[0]} image {ref_name} "
                                      f"has shape {image.shape[1:]}; expected equal shapes", case=case_id, path=name)
            if check and not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
                raise SingrInputError(f"{mod} image affine differs from that of {ref_name} (atol {_AFFINE_ATOL}); "
                                      "expected co-registered scans on one grid", case=case_id, path=name)
        if check:
            _check_finite(arr, case=case_id, path=name, what=f"{mod} image")  # type: ignore[arg-type]
        image[c] = arr
    assert image is not None
    return LoadedCase(case_id=case_id, image=image, label=None, affine=ref_affine, header=ref_header,
                      spacing=nifti_spacing(ref_header), modalities=list(expected), label_convention="brats2020",
                      source={"layout": "upload", "images": {m: given[m][0] for m in expected}})


def _check_real(array: np.ndarray, *, case: str, path: str, what: str) -> None:
    if array.dtype.kind not in "biuf":
        raise SingrInputError(f"{what}: data type {array.dtype} is not real-valued; expected integer or "
                              "floating-point intensities", case=case, path=path)
