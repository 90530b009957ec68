"""A NIfTI-style volume written as a DICOM MR series (one file per slice): the inverse of
:func:`singr.io.dicom_series.read_series`, for tests, demos and users who need DICOM input.

Geometry (``affine`` RAS, voxel ``(i, j, k)``)::

    M = diag(-1, -1, 1, 1) @ affine                      (LPS)
    PixelSpacing = [|M[:3,1]|, |M[:3,0]|]                 (row spacing, column spacing)
    ImageOrientationPatient = [M[:3,0] / |M[:3,0]|, M[:3,1] / |M[:3,1]|]
    ImagePositionPatient of slice k = M[:3,3] + k M[:3,2]
    pixel (row j, column i) of slice k = volume[i, j, k]

The first two axes must be orthogonal and the third along their normal (either sign). Reading
the series back gives the same voxels and affine when the third axis points along the normal
``r x c`` (a right-handed affine: ``det(affine[:3, :3]) > 0``, as in BraTS), and the same image
with the third axis reversed otherwise (the reader sorts slices along the normal).

Intensities: integer values that fit 16 bits are stored as they are (unsigned when none is
negative); anything else as 16-bit integers with RescaleSlope/Intercept (exact to 1/65535 of
the value range).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import SingrInputError
from .atomic import atomic_path
from .dicom_series import LPS_TO_RAS, singr_version

__all__ = ["Study", "write_dicom_series", "write_dicom_case", "DEFAULT_DESCRIPTIONS", "MR_IMAGE_STORAGE"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DEFAULT_DESCRIPTIONS: dict[str, str] = {"flair": "FLAIR AX", "t1": "T1 MPRAGE pre", "t1ce": "AX T1 POST GD",
                                        "t2": "T2 TSE"}
"""Series descriptions :func:`write_dicom_case` gives by default: how scanners name such series."""


def _uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


@dataclass
class Study:
    """What the series of one study share: patient, study and frame of reference."""

    patient_id: str = "SINGR-DEMO"
    patient_name: str = "Demo^Patient"
    study_uid: str = field(default_factory=_uid)
    frame_of_reference_uid: str = field(default_factory=_uid)
    study_date: str = field(default_factory=lambda: datetime.date.today().strftime("%Y%m%d"))
    study_time: str = "120000"
    study_id: str = "1"
    accession_number: str = ""


def _encode(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored, slope, intercept)`` with ``volume = stored * slope + intercept``."""
    v = np.asarray(volume)
    if v.size and not np.isfinite(v).all():
        raise SingrInputError("volume holds NaN or inf; expected finite intensities")
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if np.array_equal(v, np.rint(v)):
        if lo >= 0 and hi <= 65535:
            return v.astype(np.uint16), 1.0, 0.0
        if lo >= -32768 and hi <= 32767:
            return v.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 or 1.0
    stored = np.rint((v.astype(np.float64) - lo) / slope).astype(np.uint16)
    return stored, slope, lo


def _ds(x: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(x) + 0.0)


def _plane(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    m = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    a_i, a_j, a_k, origin = m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3]
    dc, dr = float(np.linalg.norm(a_i)), float(np.linalg.norm(a_j))
    if min(dc, dr, float(np.linalg.norm(a_k))) <= 0:
        raise SingrInputError("affine has a zero voxel size; expected a valid voxel-to-world matrix")
    r, c = a_i / dc, a_j / dr
    n = np.cross(r, c)
    if abs(float(r @ c)) > 1e-6 or np.linalg.norm(np.cross(n, a_k)) > 1e-6 * np.linalg.norm(a_k):
        raise SingrInputError("affine is sheared (axes not orthogonal); expected an orthogonal grid for DICOM")
    return r, c, a_k, origin, (dr, dc)


def write_dicom_series(volume: np.ndarray, affine: np.ndarray, folder: str | Path, *, description: str,
                       series_number: int, study: Study | None = None, protocol_name: str | None = None,
                       contrast_agent: str | None = None, series_uid: str | None = None) -> list[Path]:
    """Write ``volume`` (X, Y, Z) with RAS ``affine`` as an MR series into ``folder``
    (``IM0001.dcm`` ...; each file atomically), one file per slice along the third axis.
    Returns the files in slice order. ``contrast_agent`` fills ContrastBolusAgent."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    version = singr_version()

    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise SingrInputError(f"expected a 3-D volume, got shape {vol.shape}")
    study = study or Study()
    r, c, a_k, origin, (dr, dc) = _plane(affine)
    stored, slope, intercept = _encode(vol)
    series_uid = series_uid or _uid()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lo, hi = float(vol.min()), float(vol.max())
    n = np.cross(r, c)
    out = []
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        sop = _uid()
        meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
        meta.MediaStorageSOPInstanceUID = UID(sop)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = _header(study, meta, description, series_number, series_uid, protocol_name, contrast_agent,
                     version)
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = k + 1
        pos = origin + k * a_k
        ds.ImagePositionPatient = [_ds(x) for x in pos]
        ds.ImageOrientationPatient = [_ds(x) for x in np.concatenate([r, c])]
        ds.PixelSpacing = [_ds(dr), _ds(dc)]
        ds.SliceThickness = _ds(float(np.linalg.norm(a_k)))
        ds.SliceLocation = _ds(float(pos @ n))
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
        ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1.0))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        out.append(path)
    return out


def _header(study: Study, meta: object, description: str, series_number: int, series_uid: str,
            protocol_name: str | None, contrast_agent: str | None, version: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = meta  # type: ignore[assignment]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = study.patient_name, study.patient_id, "", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study.study_uid, study.study_date, study.study_time
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = study.study_id, study.accession_number, ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, series_number, "MR"
    ds.SeriesDescription = description
    ds.ProtocolName = protocol_name if protocol_name is not None else description
    ds.SeriesDate, ds.SeriesTime = study.study_date, study.study_time
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study.frame_of_reference_uid, ""
    ds.Manufacturer, ds.SoftwareVersions = "SiNGR", f"singr {version} (converted from NIfTI)"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
    ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "", "", ""
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent
    return ds


def write_dicom_case(image: np.ndarray, affine: np.ndarray, modalities: Sequence[str], folder: str | Path, *,
                     descriptions: Mapping[str, str] | None = None, study: Study | None = None,
                     contrast_agent: str = "GADOLINIUM") -> dict[str, list[Path]]:
    """Write a case's channels (``image`` (C, X, Y, Z), canonical ``modalities``) as one study:
    series ``1..C`` in subfolders ``<number>_<modality>`` of ``folder``, described as
    ``descriptions`` (default :data:`DEFAULT_DESCRIPTIONS`); the ``t1ce`` series gets
    ContrastBolusAgent ``contrast_agent``. Returns ``{modality: files}``."""
    study = study or Study()
    names = {**DEFAULT_DESCRIPTIONS, **dict(descriptions or {})}
    out: dict[str, list[Path]] = {}
    for i, mod in enumerate(modalities):
        out[mod] = write_dicom_series(image[i], affine, Path(folder) / f"{i + 1}_{mod}",
                                      description=names.get(mod, mod), series_number=i + 1, study=study,
                                      contrast_agent=contrast_agent if mod == "t1ce" else None)
    return out
