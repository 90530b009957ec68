"""DICOM in and DICOM SEG out for the endpoint (issue 23): a zip of the case's MR series.

* **In**: ``POST /v1/segment`` (or ``/v1/jobs``) with a zip of the series, as the raw body
  (``application/zip``) or as the one file of a multipart upload. The series are told apart by
  singr's naming rule (:mod:`singr.data.readers.dicom_modality`: "AX T1 POST GD", "FLAIR AX",
  ...) or by ``?dicom_map=t1ce=7`` (repeatable: modality = series number, UID or description),
  and read by :func:`singr.data.readers.dicom.read_dicom_case` (pydicom headers, SimpleITK
  pixels; missing slices, mixed series and grids refused with the series named, as 422).
* **Price** (:func:`serve.upload.zip_voxels`): before anything is unpacked, from the zip's
  directory: the members' unpacked size (at most ``max_unpacked`` bytes, else 413) over 2 bytes
  a voxel and the modalities, a bound on the voxels of one volume (413 over ``max_voxels``).
* **Out**: ``?output=dicom-seg``: the label map as a DICOM Segmentation (highdicom) that
  references the t1ce series and the others (:func:`singr.io.dicom_seg.write_dicom_seg`);
  ``application/dicom``, ``seg.dcm``. Any output works for DICOM input; ``dicom-seg`` needs it.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DicomUpload", "is_zip", "decode_dicom", "dicom_seg_bytes", "ZIP_TYPES"]

ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}
_MAGIC = b"PK\x03\x04"


@dataclass
class DicomUpload:
    """A zip of DICOM series as uploaded: its bytes and the name it came with."""

    data: bytes
    name: str


def is_zip(data: bytes, name: str | None = None, content_type: str = "") -> bool:
    """A zip by its magic bytes (the name and the content type only confirm it)."""
    return data[:4] == _MAGIC or (content_type.lower() in ZIP_TYPES and data[:2] == b"PK")


def decode_dicom(upload: DicomUpload, mapping: Sequence[str] | None, modalities: Sequence[str] | None,
                 max_unpacked: int) -> tuple[Any, Any]:
    """``(case, series)`` of the zip (:func:`~singr.data.readers.dicom.read_dicom_case`); its
    :class:`~singr.errors.SingrInputError` names the series that is wrong."""
    from singr.data.readers.dicom import read_dicom_case
    from singr.errors import SingrInputError

    stem = Path(upload.name).stem or "dicom"
    with tempfile.TemporaryDirectory(prefix="singr-serve-dicom-") as tmp:
        path = Path(tmp) / f"{stem}.zip"
        path.write_bytes(upload.data)
        kw: dict[str, Any] = {"modalities": list(modalities)} if modalities else {}
        try:
            return read_dicom_case(path, list(mapping or []), case_id=stem, max_bytes=int(max_unpacked), **kw)
        except SingrInputError as e:  # the answer names the upload, never a folder of this server
            reason = e.reason.replace(str(tmp), upload.name).replace("--dicom-map", "?dicom_map= (repeatable)")
            raise SingrInputError(reason, case=e.case, path=upload.name) from None


def dicom_seg_bytes(labels: Any, series: Any, case: Any, label_convention: str) -> bytes:
    """The DICOM SEG of ``labels`` referencing the case's series (the reference one first)."""
    from singr.io.dicom_seg import write_dicom_seg

    further = [h for m in case.modalities if m != series.reference for h in series.datasets(m)]
    with tempfile.TemporaryDirectory(prefix="singr-serve-seg-") as tmp:
        out = Path(tmp) / "seg.dcm"
        write_dicom_seg(labels, series.datasets(), out, label_convention=label_convention, further_sources=further,
                        affine=case.affine)
        return out.read_bytes()
