"""One case given by hand (``singr predict``): a case folder, modality files, or one 4-D file.

A case folder may use BraTS 2020 names (``<case>_flair.nii.gz`` ...), BraTS 2023 names
(``<case>-t2f.nii.gz`` ...) or plain modality names (``t2f.nii.gz``, ``flair.nii``,
``T1c.nii.gz`` ...: any name :func:`canonical_modality` knows, in either naming).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

from ...errors import SingrInputError
from .base import (
    BRATS2023_NAMES,
    MODALITIES,
    NII_EXTS,
    CaseFiles,
    LoadedCase,
    canonical_modality,
    check_label_convention,
    expected_text,
    given_modalities,
    load_nifti_case,
    select_brats_modalities,
)
from .brats import BRATS2020, BRATS2023

_LABEL_STEMS = ("seg", "label", "labels", "mask")


def _stem(name: str) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE)


def _plain_files(folder: Path) -> tuple[dict[str, Path], Path | None, str]:
    """Files named by modality alone: ``{canonical: path}``, the label, the naming used."""
    found: dict[str, Path] = {}
    label = None
    naming = "brats2020"
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or not p.name.lower().endswith(NII_EXTS):
            continue
        stem = _stem(p.name)
        if stem.lower() in _LABEL_STEMS:
            label = p
            continue
        c = canonical_modality(stem)
        if c is None:
            continue
        if c in found:
            raise SingrInputError(f"two files for modality {c}: {found[c].name} and {p.name}", case=folder.name,
                                  path=folder)
        found[c] = p
        if stem.lower() in BRATS2023_NAMES:
            naming = "brats2023"
    return found, label, naming


def find_case_folder_files(folder: str | Path, label_convention: str = "auto") -> CaseFiles:
    """The files of one case folder (``singr predict --case DIR``); see the module docstring."""
    folder = Path(folder)
    check_label_convention(label_convention)
    if not folder.is_dir():
        raise SingrInputError("case folder does not exist", case=folder.name, path=folder)
    for reader in (BRATS2020, BRATS2023):
        if reader.is_case_dir(folder):
            return reader.case(folder, label_convention, list(MODALITIES))
    found, label, naming = _plain_files(folder)
    if found:
        missing = [m for m in MODALITIES if m not in found]
        if missing:
            shown = [BRATS2023_NAMES[MODALITIES.index(m)] if naming == "brats2023" else m for m in missing]
            raise SingrInputError(f"missing modalities {shown} in the case folder; expected one file per "
                                  f"modality named {expected_text(MODALITIES)}", case=folder.name, path=folder)
        return CaseFiles(case_id=folder.name, images=dict(found), label=label, layout="files",
                         label_convention=label_convention, folder=folder, naming=naming)
    raise SingrInputError(
        f"no MR files in the case folder; expected {folder.name}_{{flair,t1,t1ce,t2}}.nii[.gz] (BraTS 2020), "
        f"{folder.name}-{{t2f,t1n,t1c,t2w}}.nii.gz (BraTS 2023) or plain names t2f.nii.gz, t1n.nii.gz, "
        "t1c.nii.gz, t2w.nii.gz", case=folder.name, path=folder)


def load_case_from_files(files: Mapping[str, str | Path] | Sequence[str | Path] | str | Path, *,
                         case_id: str = "input", label: str | Path | None = None, label_convention: str = "auto",
                         modalities: Sequence[str] = MODALITIES, check: bool = True) -> LoadedCase:
    """Load a case from separate modality files (``singr predict --files``).

    ``files``: a mapping modality name -> path (BraTS 2020 or 2023 names, any order), or a
    sequence of paths in canonical order (flair, t1, t1ce, t2, restricted to
    ``modalities``), or a single 4-D NIfTI whose last axis holds the channels in that
    order. ``label_convention``: a convention, or "auto" (from the label values; the
    naming of the files decides when there is no label: BraTS 2023 names -> brats2023).
    """
    check_label_convention(label_convention)
    expected = select_brats_modalities(modalities, where="load_case_from_files")
    if isinstance(files, (str, Path)):
        files = [files]
    naming = "brats2020"
    if isinstance(files, Mapping):
        given = given_modalities(files, expected, case_id=case_id)
        if all(str(k).strip().lower() in BRATS2023_NAMES for k in files):
            naming = "brats2023"
        images = [(m, Path(given[m])) for m in expected]
        image_4d = None
    else:
        paths = [Path(p) for p in files]
        if len(paths) == 1 and len(expected) > 1:
            images, image_4d = [(m, paths[0]) for m in expected], paths[0]
        elif len(paths) != len(expected):
            raise SingrInputError(f"{len(paths)} image files given; expected {len(expected)} in the order "
                                  f"{expected_text(expected)}, or one 4-D NIfTI", case=case_id)
        else:
            images, image_4d = list(zip(expected, paths)), None
    layout = "brats2023" if naming == "brats2023" else "files"
    case = load_nifti_case(case_id, images, Path(label) if label is not None else None, layout=layout,
                           label_convention=label_convention, check=check, naming=naming, image_4d=image_4d)
    case.source["layout"] = "files"
    case.source["naming"] = naming
    return case


def load_files_case(case: CaseFiles, check: bool = True) -> LoadedCase:
    """:func:`load_case` for a :class:`CaseFiles` found by :func:`find_case_folder_files` (plain names)."""
    images = [(m, Path(case.images[m])) for m in MODALITIES if m in case.images]
    layout = "brats2023" if case.naming == "brats2023" else "files"
    out = load_nifti_case(case.case_id, images, Path(case.label) if case.label is not None else None, layout=layout,
                          label_convention=case.label_convention, check=check, naming=case.naming)
    out.source["layout"] = "files"
    out.source["naming"] = case.naming
    return out
