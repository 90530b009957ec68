"""BraTS layouts: one folder per case, one NIfTI per modality and a ``seg`` label.

* ``brats2020`` (BraTS 2018-2021): ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]``; Kaggle
  copies are uncompressed, and in one of them case 355's label is ``W39_1998.09.19_Segm.nii``
  (a single ``*seg*`` NIfTI is accepted as the label).
* ``brats2023`` (BraTS 2023+): ``<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz``.

Case folders are found at depth 1, else depth 2 (Kaggle nests them), else the root itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...errors import SingrInputError
from .base import (
    BRATS2023_NAMES,
    MODALITIES,
    NII_EXTS,
    CaseFiles,
    LoadedCase,
    load_nifti_case,
    nii_file,
    select_brats_modalities,
)


def list_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class BratsReader:
    """The reader of one BraTS naming (``layout`` brats2020 or brats2023)."""

    def __init__(self, layout: str, sep: str, names: Sequence[str], pattern: str):
        self.layout, self.sep, self.names, self.pattern = layout, sep, tuple(names), pattern

    def is_case_dir(self, folder: Path) -> bool:
        return any(nii_file(folder, f"{folder.name}{self.sep}{n}") is not None for n in self.names)

    def case_dirs(self, root: Path) -> list[Path]:
        dirs = [d for d in list_dirs(root) if self.is_case_dir(d)]
        if not dirs:
            dirs = [d for sub in list_dirs(root) for d in list_dirs(sub) if self.is_case_dir(d)]
        if not dirs and self.is_case_dir(root):
            dirs = [root]
        return sorted(dirs, key=lambda d: d.name)

    def detect(self, root: Path) -> int:
        return len(self.case_dirs(root))

    def _label(self, folder: Path, case_id: str, image_files: set[Path]) -> Path | None:
        label = nii_file(folder, f"{case_id}{self.sep}seg")
        if label is not None:
            return label
        candidates = sorted(
            p for p in folder.iterdir()
            if p.is_file() and p not in image_files and "seg" in p.name.lower()
            and p.name.lower().endswith(NII_EXTS) and not p.name.startswith("."))
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise SingrInputError(
                f"no {case_id}{self.sep}seg.nii[.gz] and several candidate label files "
                f"{[p.name for p in candidates]}; expected exactly one", case=case_id, path=folder)
        return None

    def case(self, folder: Path, label_convention: str, modalities: Sequence[str]) -> CaseFiles:
        case_id = folder.name
        found = {m: nii_file(folder, f"{case_id}{self.sep}{n}") for m, n in zip(MODALITIES, self.names)}
        ext = next((".nii.gz" if p.name.endswith(".gz") else ".nii" for p in found.values() if p), ".nii.gz")
        images: dict[str, Path] = {}
        for m, n in zip(MODALITIES, self.names):
            if m in modalities:
                images[m] = found[m] or folder / f"{case_id}{self.sep}{n}{ext}"
        label = self._label(folder, case_id, {p for p in found.values() if p is not None})
        return CaseFiles(case_id=case_id, images=dict(images), label=label, layout=self.layout,
                         label_convention=label_convention, folder=folder, naming=self.layout)

    def discover(self, root: Path, label_convention: str, modalities: Sequence[str] | None,
                 spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
        mods = select_brats_modalities(modalities, where=self.layout)
        return [self.case(d, label_convention, mods) for d in self.case_dirs(root)]

    def load(self, case: CaseFiles, check: bool = True) -> LoadedCase:
        images = []
        for mod, path in case.images.items():
            if isinstance(path, list):
                raise SingrInputError(f"{mod}: expected one NIfTI file, got a list", case=case.case_id)
            images.append((mod, Path(path)))
        if isinstance(case.label, list):
            raise SingrInputError("expected one label NIfTI file, got a list", case=case.case_id)
        return load_nifti_case(case.case_id, images, Path(case.label) if case.label is not None else None,
                               layout=case.layout, label_convention=case.label_convention,
                               label_map=case.label_map, check=check, naming=case.naming)


BRATS2020 = BratsReader("brats2020", "_", MODALITIES, "<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]")
BRATS2023 = BratsReader("brats2023", "-", BRATS2023_NAMES, "<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz")
