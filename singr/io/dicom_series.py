"""DICOM MR series: found in a folder or a zip, checked, read into a NIfTI-style volume.

How (and why this way):

* **Headers with pydicom.** Every file with the DICOM Part 10 preamble (``DICM`` at byte 128)
  is parsed once with ``stop_before_pixels`` and grouped by SeriesInstanceUID. Files without
  an image plane (DICOMDIR, SEG, RTSTRUCT, SR, presentation states) are skipped; enhanced
  multi-frame images are kept as an unsupported series that errors name.
* **Order and geometry from those headers**, as dcm2niix and nibabel derive them: slices are
  sorted by their position along the slice normal ``n = r x c`` (``r``, ``c`` the row and column
  direction cosines of ImageOrientationPatient), which is what GDCM's IPP sorter
  (``GetGDCMSeriesFileNames``) does; sorting here, once, means the order the checks below see
  is the order the pixels are read in and the order :mod:`.dicom_seg` writes frames in. GDCM's
  sorter also falls back silently to file-name order when positions repeat, where this one
  stops with an error.
* **Pixels with SimpleITK** (``ImageSeriesReader`` on that file list): GDCM decodes every
  transfer syntax scanners and PACS send (JPEG lossless, JPEG-LS, JPEG 2000, RLE) without the
  optional pydicom plugins, and applies RescaleSlope/Intercept. dcm2niix was not chosen: an
  external binary behind a subprocess, with its own heuristics and messages and a file
  round trip; the checks and the errors belong to this code. The geometry SimpleITK reports
  (LPS origin, spacing, direction) is compared with the header geometry as a safety net.

Checks, each a :class:`SingrInputError` naming the series (``series <number> '<description>'``)
and what was expected: an image plane in every file; one image size, one orientation and one
pixel spacing per series; grey-scale single-frame images; at least two slices; one slice per
position (several at one position: multi-echo, repeated or mixed acquisitions); positions along
the slice normal (no gantry tilt or shear); evenly spaced slices (a gap of a multiple of the
spacing is reported as missing slices).

The volume's voxel grid and affine (the formulae of dcm2niix and nibabel; voxel ``(i, j, k)`` =
column ``i``, row ``j`` of the ``k``-th slice in ascending position along ``n``)::

    M_LPS = [[r * dc, c * dr, s, p0], [0, 0, 0, 1]]
    affine = diag(-1, -1, 1, 1) @ M_LPS            (RAS, as NIfTI)

with ``(dr, dc)`` = PixelSpacing (row spacing, column spacing), ``p0`` the first slice's
ImagePositionPatient and ``s = (p_last - p0) / (N - 1)`` the slice step (parallel to ``n``).
The array is ``(columns, rows, slices)``: SimpleITK's ``(z, y, x)`` array transposed.
"""
from __future__ import annotations

import contextlib
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import SingrInputError

__all__ = ["DicomSeries", "SeriesGeometry", "is_dicom_file", "find_series", "open_dicom", "series_geometry",
           "read_series", "check_same_study", "singr_version", "LPS_TO_RAS", "MAX_ZIP_BYTES", "SEG_STORAGE"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_ZIP_BYTES = 8 << 30  # what a zip may unpack to (8 GiB): far above a study's four MR series
_DIR_TOL = 1e-4  # direction cosines: one orientation per series
_MM_TOL = 1e-3  # positions and spacings (mm), relative to the spacing where noted
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def singr_version() -> str:
    """singr's installed version (as ``singr.__version__``, without importing the package, which
    imports the readers that import this module)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("singr")
    except PackageNotFoundError:
        return "0+unknown"


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class DicomSeries:
    """One series: its identity, its files and their headers (no pixel data), in file order
    until :func:`series_geometry` sorts them (``sorted`` then holds the slice order)."""

    uid: str
    number: int | None
    description: str
    protocol: str
    modality: str
    files: list[Path] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)
    unsupported: str | None = None  # why the series cannot be read (enhanced multi-frame ...)

    @property
    def name(self) -> str:
        """How errors name the series: ``series 7 'AX T1 POST GD'``."""
        num = self.number if self.number is not None else "?"
        return f"series {num} '{self.description}'"

    @property
    def contrast_agent(self) -> str:
        return str(self.headers[0].get("ContrastBolusAgent", "") or "").strip() if self.headers else ""


@dataclass
class SeriesGeometry:
    """A checked series' slice order and grid; ``affine`` is RAS (NIfTI), ``affine_lps`` DICOM's."""

    order: list[int]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    affine_lps: np.ndarray

    def files(self, series: DicomSeries) -> list[Path]:
        return [series.files[i] for i in self.order]

    def headers(self, series: DicomSeries) -> list[Any]:
        return [series.headers[i] for i in self.order]


def _text(ds: Any, key: str) -> str:
    return str(ds.get(key, "") or "").strip()


def _number(ds: Any) -> int | None:
    try:
        v = ds.get("SeriesNumber", None)
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def find_series(folder: str | Path, *, segs: list[tuple[Path, Any]] | None = None) -> list[DicomSeries]:
    """The image series of the DICOM files under ``folder`` (any depth), by SeriesNumber.

    Files that are not DICOM Part 10 are skipped, as are DICOM objects without an image plane
    (DICOMDIR, SEG, RTSTRUCT, SR, ...). Files holding the same SOPInstanceUID count once.
    DICOM Segmentations found on the way are appended to ``segs`` as ``(path, header)``.
    """
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise SingrInputError("DICOM folder does not exist", path=folder)
    by_uid: dict[str, DicomSeries] = {}
    seen: set[str] = set()
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(".") or not p.is_file() or not is_dicom_file(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for a damaged file
            raise SingrInputError(f"cannot read the DICOM header ({type(err).__name__}: {err}); expected a "
                                  "readable DICOM file", path=p) from err
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        if sop_class == _DICOMDIR_CLASS or "SeriesInstanceUID" not in ds:
            continue
        if sop_class == SEG_STORAGE:
            if segs is not None:
                segs.append((p, ds))
            continue
        multi = "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1
        if not multi and "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds:
            continue  # not an image (SEG, RTSTRUCT, SR, KO, PR ...)
        sop = _text(ds, "SOPInstanceUID")
        if sop and sop in seen:
            continue
        seen.add(sop)
        uid = str(ds.SeriesInstanceUID)
        s = by_uid.get(uid)
        if s is None:
            s = by_uid[uid] = DicomSeries(uid, _number(ds), _text(ds, "SeriesDescription"),
                                          _text(ds, "ProtocolName"), _text(ds, "Modality"))
        if multi:
            s.unsupported = ("an enhanced multi-frame image; expected classic single-frame images (one file per "
                             "slice: export them so from the scanner or PACS, or convert the series with dcm2niix)")
        s.files.append(p)
        s.headers.append(ds)
    return sorted(by_uid.values(), key=lambda s: (s.number is None, s.number or 0, s.description, s.uid))


@contextlib.contextmanager
def open_dicom(path: str | Path, *, max_bytes: int = MAX_ZIP_BYTES, segs: list[tuple[Path, Any]] | None = None
               ) -> Iterator[list[DicomSeries]]:
    """:func:`find_series` of a folder or a ``.zip``; a zip is unpacked into a temporary folder
    (members under numbered names, never their own paths) that lives for the ``with`` block."""
    path = Path(path)
    if path.is_dir():
        yield find_series(path, segs=segs)
        return
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise SingrInputError("not a folder or a zip of DICOM files", path=path)
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="singr-dicom-") as tmp:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise SingrInputError(f"the zip unpacks to {total} bytes, over the limit of {max_bytes}", path=path)
        for i, m in enumerate(members):
            with zf.open(m) as src, open(Path(tmp) / f"{i:06d}", "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        yield find_series(tmp, segs=segs)


def _floats(ds: Any, key: str, n: int, series: DicomSeries, path: Path) -> np.ndarray:
    v = ds.get(key, None)
    try:
        arr = np.array([float(x) for x in v], dtype=np.float64) if v is not None else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (n,) or not np.isfinite(arr).all():
        raise SingrInputError(f"{series.name}: {path.name} has no valid {key} ({n} numbers); expected an image "
                              "plane in every slice", path=path)
    return arr


def _one_value(values: list[Any], what: str, series: DicomSeries, expected: str, same: Any) -> None:
    first = values[0]
    odd = [i for i, v in enumerate(values) if not same(v, first)]
    if odd:
        i = odd[0]
        raise SingrInputError(f"{series.name}: mixed {what}: {_show(first)} in {series.files[0].name} but "
                              f"{_show(values[i])} in {series.files[i].name} ({len(odd)} of {len(values)} files); "
                              f"expected {expected}", path=series.files[i])


def _show(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return "[" + ", ".join(f"{x:g}" for x in v) + "]"
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    return str(v)


def series_geometry(series: DicomSeries) -> SeriesGeometry:
    """Check ``series`` (see the module docstring) and return its slice order and grid."""
    if series.unsupported:
        raise SingrInputError(f"{series.name}: {series.unsupported}", path=series.files[0])
    hs, files = series.headers, series.files
    sizes = [(int(h.get("Rows", 0) or 0), int(h.get("Columns", 0) or 0)) for h in hs]
    _one_value(sizes, "image sizes (rows x columns)", series, "one image size per series (the folder mixes series, "
               "or the series holds a localizer)", lambda a, b: a == b)
    samples = [int(h.get("SamplesPerPixel", 1) or 1) for h in hs]
    if samples[0] != 1 or min(sizes[0]) < 1:
        raise SingrInputError(f"{series.name}: {samples[0]} samples per pixel, size {_show(sizes[0])}; expected "
                              "grey-scale MR images", path=files[0])
    iop = [_floats(h, "ImageOrientationPatient", 6, series, f) for h, f in zip(hs, files)]
    _one_value(iop, "orientations (ImageOrientationPatient)", series, "one orientation per series (a localizer or "
               "several series in one)", lambda a, b: bool(np.abs(a - b).max() <= _DIR_TOL))
    ps = [_floats(h, "PixelSpacing", 2, series, f) for h, f in zip(hs, files)]
    _one_value(ps, "pixel spacings (PixelSpacing)", series, "one pixel spacing per series",
               lambda a, b: bool(np.abs(a - b).max() <= _MM_TOL * max(float(b.max()), 1e-6)))
    if len(hs) < 2:
        raise SingrInputError(f"{series.name}: a single slice; expected a 3-D series of several slices",
                              path=files[0])
    r, c = iop[0][:3], iop[0][3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(float(r @ c)) > 1e-3:
        raise SingrInputError(f"{series.name}: ImageOrientationPatient {_show(iop[0])} is not two orthogonal unit "
                              "vectors; expected direction cosines", path=files[0])
    if float(ps[0].min()) <= 0:
        raise SingrInputError(f"{series.name}: PixelSpacing {_show(ps[0])}; expected sizes above 0 mm",
                              path=files[0])
    n = np.cross(r, c)
    pos = np.stack([_floats(h, "ImagePositionPatient", 3, series, f) for h, f in zip(hs, files)])
    d = pos @ n
    order = [int(i) for i in np.argsort(d, kind="stable")]
    d_sorted = d[order]
    steps = np.diff(d_sorted)
    step = float(np.median(steps))
    tol = max(_MM_TOL, 0.01 * step)
    same = np.flatnonzero(steps <= tol)
    if same.size:
        a, b = order[int(same[0])], order[int(same[0]) + 1]
        shared = len(set(same.tolist()) | set((same + 1).tolist()))
        raise SingrInputError(f"{series.name}: {shared} slices share positions (e.g. {files[a].name} and "
                              f"{files[b].name} at {d[a]:.3f} mm along the normal): a multi-echo, repeated or mixed "
                              "acquisition; expected one slice per position (split the series or keep one echo)",
                              path=files[b])
    inplane = pos[order] - np.outer(d_sorted, n)
    shift = float(np.abs(inplane - inplane[0]).max())
    if shift > tol:
        raise SingrInputError(f"{series.name}: slice positions move {shift:.3f} mm within the slice plane (gantry "
                              "tilt or a sheared stack); expected slices stacked along the normal of "
                              "ImageOrientationPatient", path=files[order[0]])
    bad = np.flatnonzero(np.abs(steps - step) > tol)
    if bad.size:
        k = int(bad[0])
        a, b = order[k], order[k + 1]
        gap = float(steps[k])
        ratio = gap / step
        where = (f"between {files[a].name} and {files[b].name} (positions {d_sorted[k]:.3f} and "
                 f"{d_sorted[k + 1]:.3f} mm)")
        if round(ratio) >= 2 and abs(ratio - round(ratio)) * step <= tol:
            raise SingrInputError(f"{series.name}: missing slices: a gap of {gap:.3f} mm ({round(ratio) - 1} slice"
                                  f"{'s' if round(ratio) > 2 else ''}) {where}; expected evenly spaced slices "
                                  f"{step:.3f} mm apart", path=files[b])
        raise SingrInputError(f"{series.name}: uneven slice spacing: {gap:.3f} mm {where}, {step:.3f} mm elsewhere "
                              f"(steps {float(steps.min()):.3f}..{float(steps.max()):.3f} mm); expected evenly "
                              "spaced slices", path=files[b])
    p0 = pos[order[0]]
    s = (pos[order[-1]] - p0) / (len(order) - 1)
    rows, cols = sizes[0]
    lps = np.eye(4)
    lps[:3, 0] = r * ps[0][1]
    lps[:3, 1] = c * ps[0][0]
    lps[:3, 2] = s
    lps[:3, 3] = p0
    return SeriesGeometry(order=order, shape=(cols, rows, len(order)),
                          spacing=(float(ps[0][1]), float(ps[0][0]), float(np.linalg.norm(s))),
                          affine=LPS_TO_RAS @ lps, affine_lps=lps)


def read_series(series: DicomSeries, geometry: SeriesGeometry | None = None) -> tuple[np.ndarray, SeriesGeometry]:
    """The voxels of ``series`` (checked by :func:`series_geometry` unless ``geometry`` is
    given) as an array ``(columns, rows, slices)``, RescaleSlope/Intercept applied, and its
    geometry. Read with SimpleITK in the checked slice order."""
    import SimpleITK as sitk

    geo = geometry or series_geometry(series)
    files = [str(f) for f in geo.files(series)]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise SingrInputError(f"{series.name}: cannot decode the pixel data ({first}); expected readable MR "
                              "images", path=files[0]) from err
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    if arr.shape != geo.shape:
        raise SingrInputError(f"{series.name}: SimpleITK read a volume of shape {_show(arr.shape)}, the headers "
                              f"describe {_show(geo.shape)}; expected them to agree", path=files[0])
    direction = np.array(img.GetDirection()).reshape(3, 3)
    itk = np.eye(4)
    itk[:3, :3] = direction * np.array(img.GetSpacing())
    itk[:3, 3] = img.GetOrigin()
    if np.abs(itk - geo.affine_lps).max() > 1e-3 * max(1.0, float(np.abs(geo.affine_lps[:3, 3]).max())):
        raise SingrInputError(f"{series.name}: SimpleITK's geometry (origin {_show(np.array(img.GetOrigin()))}, "
                              f"spacing {_show(np.array(img.GetSpacing()))}) differs from the headers'; expected "
                              "them to agree", path=files[0])
    return arr, geo


def check_same_study(series: Sequence[DicomSeries], what: Sequence[str]) -> None:
    """The series come from one patient (PatientID), else an error naming two that differ."""
    ids = [_text(s.headers[0], "PatientID") for s in series]
    for s, w, pid in zip(series, what, ids):
        if pid != ids[0]:
            raise SingrInputError(f"{s.name} ({w}) is of patient '{pid}', {series[0].name} ({what[0]}) of patient "
                                  f"'{ids[0]}'; expected one patient's series", path=s.files[0])
