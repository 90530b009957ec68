"""A label map as a DICOM Segmentation (SEG) object, written with highdicom, and read back.

The SEG references the source series it was computed on: its frames point at the source
slices (the t1ce series when the case came from DICOM), and the other series of the case are
listed as further sources. It is a BINARY segmentation with one segment per tumour class of
the label convention, frames only where a segment is present (``omit_empty_frames``; all
frames for an empty label map, which a SEG cannot encode with none), and
the algorithm named (SiNGR, AUTOMATIC, family "Artificial Intelligence", ``singr.__version__``).

Segments and their codes (DICOM CID 7150 for the category, CID 7151 for the types; SNOMED CT
where CID 7151 has a SNOMED concept):

===========  =================  =====================================================  =============
segment      BraTS label        segmented property type                                 category
===========  =================  =====================================================  =============
1 NCR        1                  SCT 6574001 "Necrosis"                                  SCT 49755003
2 ED         2                  SCT 79654002 "Edema"                                    SCT 49755003
3 ET         4 (2020), 3 (2023) NCIt C113842 "Enhancing Lesion" (CID 7151 has no SCT)  SCT 49755003
1 FG         1 (binary)         SCT 52988006 "Lesion"                                   SCT 49755003
===========  =================  =====================================================  =============

with category SCT 49755003 "Morphologically Abnormal Structure" (formerly "Morphologically
Altered Structure") and anatomic region SCT 12738006 "Brain".

Voxel order: the label map is on the grid :func:`singr.io.dicom_series.read_series` reads
(``(columns, rows, slices)``, slices ascending along the normal); frame ``k`` of the SEG is
``labels[:, :, k].T`` on the ``k``-th source slice in that order, which is computed again here
from the source headers, so the datasets may be given in any order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SingrInputError
from ..regions import ET_LABEL, check_convention
from .atomic import atomic_write
from .dicom_series import SEG_STORAGE, DicomSeries, SeriesGeometry, series_geometry, singr_version

__all__ = ["SEGMENT_CODES", "segment_classes", "write_dicom_seg", "read_dicom_seg", "SEG_STORAGE"]

CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
BRAIN = ("12738006", "SCT", "Brain")
SEGMENT_CODES: dict[str, tuple[str, tuple[str, str, str]]] = {
    "NCR": ("Necrotic tumour core (NCR)", ("6574001", "SCT", "Necrosis")),
    "ED": ("Peritumoural edema (ED)", ("79654002", "SCT", "Edema")),
    "ET": ("Enhancing tumour (ET)", ("C113842", "NCIt", "Enhancing Lesion")),
    "FG": ("Lesion (FG)", ("52988006", "SCT", "Lesion")),
}
"""Tumour class -> (segment label, segmented property type (value, scheme, meaning))."""
_COLOURS = {"NCR": (255, 60, 60), "ED": (60, 200, 60), "ET": (255, 220, 0), "FG": (255, 60, 60)}


def segment_classes(label_convention: str) -> list[tuple[str, int]]:
    """``[(class, label value)]`` of a convention, in segment-number order (segment ``i + 1``)."""
    check_convention(label_convention)
    if label_convention == "binary":
        return [("FG", 1)]
    return [("NCR", 1), ("ED", 2), ("ET", ET_LABEL[label_convention])]


def _code(c: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=c[0], scheme_designator=c[1], meaning=c[2])


def _source(datasets: Sequence[Any]) -> tuple[DicomSeries, SeriesGeometry]:
    """The source slices as a series, checked and in slice order."""
    if not datasets:
        raise SingrInputError("no source images for the DICOM SEG; expected the slices of one MR series")
    first = datasets[0]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise SingrInputError(f"source images from {len(uids)} series; expected the slices of one MR series")
    number = first.get("SeriesNumber", None)
    series = DicomSeries(uid=uids.pop(), number=int(number) if number not in (None, "") else None,
                         description=str(first.get("SeriesDescription", "") or ""),
                         protocol=str(first.get("ProtocolName", "") or ""), modality=str(first.get("Modality", "")),
                         files=[Path(str(getattr(ds, "filename", None) or f"instance-{i + 1}"))
                                for i, ds in enumerate(datasets)], headers=list(datasets))
    return series, series_geometry(series)


def write_dicom_seg(labels: np.ndarray, source: Sequence[Any], out_path: str | Path, *, label_convention: str,
                    further_sources: Sequence[Any] = (), affine: np.ndarray | None = None,
                    series_number: int = 900, series_description: str = "SiNGR tumour segmentation") -> Path:
    """Write ``labels`` ((columns, rows, slices) on the grid of ``source``, in
    ``label_convention``) as a DICOM SEG referencing ``source`` (the pydicom datasets of one
    series; headers suffice) and ``further_sources`` (other series of the case) to ``out_path``
    atomically. ``affine`` (RAS), when given, must match the source's within 1e-3."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    version = singr_version()

    series, geo = _source(source)
    labels = np.asarray(labels)
    if labels.shape != geo.shape:
        raise SingrInputError(f"label map of shape {labels.shape} does not fit {series.name} "
                              f"({'x'.join(map(str, geo.shape))} columns x rows x slices); expected its grid",
                              path=out_path)
    if affine is not None and float(np.abs(np.asarray(affine) - geo.affine).max()) > 1e-3:
        raise SingrInputError(f"label map's affine differs from the grid of {series.name}; expected the label map "
                              "on the source series' grid", path=out_path)
    classes = segment_classes(label_convention)
    lut = np.zeros(256, dtype=np.uint8)
    for i, (_, value) in enumerate(classes):
        lut[value] = i + 1
    values = {int(v) for v in np.unique(labels)}
    extra = values - {0} - {v for _, v in classes}
    if extra or labels.dtype.kind not in "iub":
        raise SingrInputError(f"label values {sorted(extra) or labels.dtype}; expected integers in "
                              f"{sorted({0} | {v for _, v in classes})} ({label_convention})", path=out_path)
    frames = lut[labels.astype(np.uint8)].transpose(2, 1, 0)
    algorithm = hd.AlgorithmIdentificationSequence(name="SiNGR", family=codes.cid7162.ArtificialIntelligence,
                                                   version=version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=SEGMENT_CODES[name][0], segmented_property_category=_code(CATEGORY),
            segmented_property_type=_code(SEGMENT_CODES[name][1]), algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, anatomic_regions=[_code(BRAIN)],
            display_color=hd.color.CIELabColor.from_rgb(*_COLOURS[name]))
        for i, (name, _) in enumerate(classes)]
    seg = hd.seg.Segmentation(
        source_images=geo.headers(series), pixel_array=frames, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="SiNGR", manufacturer_model_name="SiNGR",
        software_versions=f"singr {version}", device_serial_number="none",
        content_description=f"tumour segmentation ({label_convention} labels)", content_label="SINGR",
        series_description=series_description, omit_empty_frames=bool(frames.any()),
        further_source_images=list(further_sources) or None)
    return atomic_write(out_path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))


def _frame_source(seg: Any, folder: Path, path: Path) -> list[Any]:
    """The headers of the series in ``folder`` (or zip) whose slices the SEG's frames lie on."""
    from .dicom_series import open_dicom

    try:
        item = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        sop = str(item.ReferencedSOPInstanceUID)
    except (AttributeError, IndexError) as err:
        raise SingrInputError("the SEG's frames name no source image; expected a SEG derived from a series",
                              path=path) from err
    with open_dicom(folder) as found:
        for s in found:
            if any(str(h.get("SOPInstanceUID", "")) == sop for h in s.headers):
                return s.headers
    raise SingrInputError(f"the series the SEG was computed on (it holds instance {sop}) is not in {folder}",
                          path=path)


def read_dicom_seg(path: str | Path, source: Sequence[Any] | str | Path, *,
                   label_convention: str = "brats2023") -> np.ndarray:
    """The label map ((columns, rows, slices) uint8, in ``label_convention``) of the DICOM SEG
    at ``path`` on the grid of the series ``source``: its pydicom datasets (any order), or a
    folder or zip holding it (the series the SEG's frames lie on is found there). The inverse
    of :func:`write_dicom_seg`. Segments are told apart by their property type codes
    (:data:`SEGMENT_CODES`); a segment of another type, or a SEG that does not reference
    ``source``, is an error."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # noqa: BLE001 - pydicom and highdicom raise many types
        raise SingrInputError(f"cannot read as a DICOM Segmentation ({type(err).__name__}: {err})",
                              path=path) from err
    if isinstance(source, (str, Path)):
        source = _frame_source(seg, Path(source), path)
    series, geo = _source(source)
    refs = {str(s.SeriesInstanceUID) for s in getattr(seg, "ReferencedSeriesSequence", [])}
    if series.uid not in refs:
        raise SingrInputError(f"the SEG does not reference {series.name} ({series.uid}); expected the series it "
                              "was computed on", path=path)
    by_code = {SEGMENT_CODES[c][1][0]: c for c in SEGMENT_CODES}
    wanted = dict(segment_classes(label_convention)) if label_convention != "binary" else {"FG": 1}
    lut = np.zeros(256, dtype=np.uint8)
    for number in seg.get_segment_numbers():
        code = str(seg.get_segment_description(number).segmented_property_type.value)
        cls = by_code.get(code)
        if cls is None or cls not in wanted:
            raise SingrInputError(f"segment {number} has property type {code}; expected one of "
                                  f"{[SEGMENT_CODES[c][1][0] for c in wanted]} ({label_convention})", path=path)
        lut[number] = wanted[cls]
    uids = [str(h.SOPInstanceUID) for h in geo.headers(series)]
    pix = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False,
                                            assert_missing_frames_are_empty=True)
    return np.ascontiguousarray(lut[np.asarray(pix, dtype=np.int64)].transpose(2, 1, 0))
