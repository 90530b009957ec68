"""A case given as DICOM: a folder (any depth) or a ``.zip`` of MR series, one per modality.

The series are found and checked by :mod:`singr.io.dicom_series`, told apart by the rule (or
the explicit mapping) of :mod:`.dicom_modality`, and must lie on one grid: the same size, and
affines equal within :data:`AFFINE_ATOL` (1e-3), as for NIfTI files. Clinical series are
rarely on one grid (a 5 mm axial T2 beside a 1 mm sagittal MPRAGE): such a study is refused
with the series that differs named; register and resample it first (as BraTS does).

The case's image is ``(C, columns, rows, slices)`` in the canonical modality order with the
RAS affine of the first series (see :mod:`singr.io.dicom_series` for the formulae); the label
convention is BraTS 2023 (``ET = 3``) unless given. :func:`read_dicom_case` also returns the
series themselves (headers, no pixels), which :func:`singr.io.dicom_seg.write_dicom_seg` needs
to reference them.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import SingrInputError
from ...io.dicom_series import (
    MAX_ZIP_BYTES,
    DicomSeries,
    SeriesGeometry,
    check_same_study,
    is_dicom_file,
    open_dicom,
    read_series,
    series_geometry,
)
from ...regions import check_convention, check_labels, detect_convention
from .base import (
    AFFINE_ATOL,
    MODALITIES,
    NII_EXTS,
    CaseFiles,
    LoadedCase,
    _check_finite,
    _read_label,
    select_brats_modalities,
)
from .dicom_modality import assign_series, parse_dicom_map

__all__ = ["DicomCase", "DICOM", "is_dicom_input", "read_dicom_case", "load_dicom_case", "nifti_header",
           "nifti_label_file"]


@dataclass
class DicomCase:
    """The series a DICOM case was read from: ``{modality: series}`` (headers, slice order in
    ``geometry``), and the series a segmentation references (``reference``: t1ce when read)."""

    series: dict[str, DicomSeries]
    geometry: dict[str, SeriesGeometry]
    reference: str
    ignored: list[str] = field(default_factory=list)

    def datasets(self, modality: str | None = None) -> list[Any]:
        """The headers of ``modality``'s series (default the reference) in slice order."""
        m = modality or self.reference
        return self.geometry[m].headers(self.series[m])


def _label_name(name: str) -> bool:
    stem = re.sub(r"\.nii(\.gz)?$", "", name.lower())
    return stem in ("seg", "label", "labels", "mask") or "seg" in stem


def is_dicom_input(path: str | Path, *, max_files: int = 2000) -> bool:
    """Whether ``path`` holds a DICOM case: a ``.zip``, or a folder with DICOM Part 10 files
    somewhere under it (looking at up to ``max_files`` files) and no NIfTI image of its own (a
    NIfTI label, ``seg.nii.gz`` or ``*seg*.nii[.gz]``, may lie beside DICOM series)."""
    path = Path(path)
    if path.is_file():
        return zipfile.is_zipfile(path)
    if not path.is_dir():
        return False
    if any(p.is_file() and p.name.lower().endswith(NII_EXTS) and not _label_name(p.name) for p in path.iterdir()):
        return False
    seen = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_dicom_file(Path(dirpath) / name):
                return True
            seen += 1
            if seen >= max_files:
                return False
    return False


def nifti_label_file(folder: Path) -> Path | None:
    """The NIfTI label beside a folder's DICOM series (``seg.nii.gz``, ``*seg*.nii[.gz]``), if one."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(NII_EXTS) and _label_name(p.name))
    if len(found) > 1:
        raise SingrInputError(f"several NIfTI label files {[p.name for p in found]}; expected at most one",
                              case=folder.name, path=folder)
    return found[0] if found else None


def nifti_header(affine: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> Any:
    """A NIfTI-1 header for a volume read from DICOM: voxel size, mm, scanner coordinates
    (qform and sform code 1), as dcm2niix and SimpleITK write it."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(tuple(int(s) for s in shape))
    hdr.set_zooms(tuple(float(s) for s in spacing))
    hdr.set_xyzt_units("mm")
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    return hdr


def _check_grid(case_id: str, ref: tuple[str, DicomSeries, SeriesGeometry], s: DicomSeries, g: SeriesGeometry
                ) -> None:
    """``s`` on the grid of the reference series: the same size, affines within AFFINE_ATOL."""
    rmod, rs, rg = ref
    if g.shape != rg.shape:
        raise SingrInputError(f"{s.name} has {'x'.join(map(str, g.shape))} voxels, {rs.name} ({rmod}) "
                              f"{'x'.join(map(str, rg.shape))}; expected the series on one grid (co-registered "
                              "and resampled to one voxel grid, as BraTS data are: singr prepare does it)",
                              case=case_id, path=s.files[0])
    diff = float(np.abs(g.affine - rg.affine).max())
    if diff > AFFINE_ATOL:
        raise SingrInputError(f"{s.name} lies on another grid than {rs.name} ({rmod}): position or "
                              f"orientation differs by up to {diff:.4g} (atol {AFFINE_ATOL}); expected the series "
                              "on one grid (co-registered and resampled, as BraTS data are: singr prepare does it)",
                              case=case_id, path=s.files[0])


def _convention(label_convention: str, label: np.ndarray | None, *, case: str, path: Any) -> str:
    """As given; else from the label values; else BraTS 2023 (today's BraTS)."""
    if label_convention != "auto":
        check_convention(label_convention)
        return label_convention
    if label is None:
        return "brats2023"
    try:
        return detect_convention(np.unique(label)) or "brats2023"
    except SingrInputError as err:
        raise SingrInputError(err.reason, case=case, path=path) from None


def _seg_label(segs: list[tuple[Path, Any]], dicom: DicomCase, convention: str, case_id: str) -> tuple[Any, Path]:
    """The label map of the one DICOM SEG that references a series of the case."""
    from ...io.dicom_seg import read_dicom_seg

    uids = {s.uid: m for m, s in dicom.series.items()}
    mine = []
    for p, ds in segs:
        refs = [str(r.SeriesInstanceUID) for r in getattr(ds, "ReferencedSeriesSequence", [])]
        hit = next((uids[u] for u in refs if u in uids), None)
        if hit is not None:
            mine.append((p, hit))
    if len(mine) > 1:
        names = ", ".join(p.name for p, _ in mine)
        raise SingrInputError(f"{len(mine)} DICOM SEG files reference the case's series ({names}); expected at most "
                              "one label", case=case_id)
    if not mine:
        return None, Path()
    p, m = mine[0]
    return read_dicom_seg(p, dicom.datasets(m), label_convention=convention), p


def read_dicom_case(path: str | Path, mapping: Mapping[str, str] | Sequence[str] | None = None, *,
                    case_id: str | None = None, modalities: Sequence[str] = MODALITIES, check: bool = True,
                    label_convention: str = "auto", label: str | Path | None = None,
                    seg_label: bool = False, max_bytes: int = MAX_ZIP_BYTES) -> tuple[LoadedCase, DicomCase]:
    """Read a DICOM case (folder or zip): ``(case, series)``. ``mapping``: modality ->
    SeriesNumber / SeriesInstanceUID / SeriesDescription (``["t1ce=7", ...]`` or a dict),
    for series the naming rule cannot place. The label: a NIfTI file ``label`` on the series'
    grid, or with ``seg_label`` a DICOM SEG in the folder that references one of the series.
    ``label_convention``: as given, else from the label values, else brats2023. Every problem
    is a :class:`SingrInputError` naming the series. ``max_bytes``: what a zip may unpack to."""
    path = Path(path)
    case_id = case_id or (path.stem if path.is_file() else path.name)
    if label_convention != "auto":
        check_convention(label_convention)
    mods = select_brats_modalities(modalities, where="read_dicom_case")
    explicit = parse_dicom_map(mapping)  # type: ignore[arg-type]
    image: np.ndarray | None = None
    segs: list[tuple[Path, Any]] = []
    with open_dicom(path, segs=segs, max_bytes=max_bytes) as series:
        if not series:
            raise SingrInputError("no DICOM image series found (files with the DICM preamble and an image "
                                  "plane); expected one MR series per modality", case=case_id, path=path)
        chosen = assign_series(series, explicit, mods, where=str(path))
        check_same_study(list(chosen.values()), list(chosen))
        geos: dict[str, SeriesGeometry] = {}
        for c, m in enumerate(mods):
            s = chosen[m]
            try:
                geos[m] = series_geometry(s)
                if c:
                    _check_grid(case_id, (mods[0], chosen[mods[0]], geos[mods[0]]), s, geos[m])
                arr, _ = read_series(s, geos[m])
            except SingrInputError as err:
                raise SingrInputError(f"{m}: {err.reason}", case=case_id, path=err.path) from None
            if image is None:
                image = np.empty((len(mods),) + arr.shape, dtype=np.float32)
            image[c] = arr
            if check:
                _check_finite(image[c], case=case_id, path=s.name, what=f"{m} image")
        assert image is not None
        ref = geos[mods[0]]
        used = {id(s) for s in chosen.values()}
        ignored = [s.name for s in series if id(s) not in used]
        dicom = DicomCase(series=dict(chosen), geometry=geos, reference="t1ce" if "t1ce" in mods else mods[0],
                          ignored=ignored)
        lab, lab_path = None, None
        if label is not None:
            lab = _read_label(Path(label), image, ref.affine, chosen[mods[0]].name, case_id=case_id, label_map=None,
                              check=check)
            lab_path = Path(label)
        elif seg_label:
            conv = "brats2023" if label_convention == "auto" else label_convention
            lab, seg_path = _seg_label(segs, dicom, conv, case_id)
            lab_path = seg_path if lab is not None else None
    convention = _convention(label_convention, lab, case=case_id, path=lab_path)
    if lab is not None and check:
        check_labels(lab, convention, case=case_id, path=str(lab_path))
    case = LoadedCase(case_id=case_id, image=image, label=lab, affine=ref.affine.copy(),
                      header=nifti_header(ref.affine, ref.shape, ref.spacing), spacing=ref.spacing,
                      modalities=list(mods), label_convention=convention,
                      source={"layout": "dicom", "path": str(path), "naming": "dicom",
                              "series": {m: {"number": s.number, "description": s.description, "uid": s.uid}
                                         for m, s in chosen.items()}, "ignored": ignored,
                              "label": str(lab_path) if lab_path is not None else None})
    return case, dicom


def load_dicom_case(path: str | Path, mapping: Mapping[str, str] | Sequence[str] | None = None,
                    **kwargs: Any) -> LoadedCase:
    """:func:`read_dicom_case` without the series."""
    return read_dicom_case(path, mapping, **kwargs)[0]


class DicomReader:
    """The ``dicom`` layout: one folder per case under the root, each holding the case's MR
    series (any depth) and optionally its label: a NIfTI ``seg.nii.gz`` (or ``*seg*.nii[.gz]``)
    on the series' grid, or a DICOM SEG that references one of the series. Series are told
    apart by the naming rule (:mod:`.dicom_modality`); there is no per-case mapping here."""

    layout = "dicom"
    pattern = "<case>/<DICOM MR series, any depth> [+ seg.nii.gz or a DICOM SEG]"

    def case_dirs(self, root: Path) -> list[Path]:
        return sorted((d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith(".")
                       and is_dicom_input(d, max_files=50)), key=lambda d: d.name)

    def detect(self, root: Path) -> int:
        return len(self.case_dirs(root))

    def discover(self, root: Path, label_convention: str, modalities: Sequence[str] | None,
                 spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
        mods = select_brats_modalities(modalities, where=self.layout)
        out = []
        for d in self.case_dirs(root):
            files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
            label = nifti_label_file(d)
            # images: the modalities to read (their series are found at load) and, under "dicom", every
            # file of the folder, so that the preprocessing cache sees a changed file
            out.append(CaseFiles(case_id=d.name, images={m: [] for m in mods} | {"dicom": files}, label=label,
                                 layout=self.layout, label_convention=label_convention, folder=d, naming="dicom"))
        return out

    def load(self, case: CaseFiles, check: bool = True) -> LoadedCase:
        if case.folder is None:
            raise SingrInputError("a DICOM case needs its folder", case=case.case_id)
        mods = [m for m in MODALITIES if m in case.images]
        return read_dicom_case(case.folder, case_id=case.case_id, modalities=mods, check=check,
                               label_convention=case.label_convention, label=case.label,
                               seg_label=case.label is None)[0]


DICOM = DicomReader()
