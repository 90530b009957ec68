"""A prediction turned into the endpoint's answer, for ``POST /v1/segment`` and for a job's result.

:func:`render` gives the headers (volumes in ``X-Volume-<region>-ml`` and ``X-Volumes-ml``, model,
TTA, post-processing, warnings), the JSON summary, and the file (label map or signed maps,
``.nii.gz`` in the input's geometry, or a DICOM SEG for DICOM input) unless ``output`` is ``json``.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from fastapi.responses import JSONResponse, Response

__all__ = ["render", "as_response", "media_type", "scan_bytes"]


def render(case: Any, p: Any, output: str, tta: bool, postprocessed: bool, ident: dict[str, Any],
           warnings: list[str], dicom: Any = None) -> tuple[dict[str, str], dict[str, Any], Optional[bytes],
                                                             Optional[str]]:
    """(headers, summary, file bytes or None, file name or None) for prediction ``p`` of ``case``;
    ``dicom``: the series of a DICOM upload (``output`` ``dicom-seg`` references them)."""
    from singr.io import check_affine, nifti_bytes, voxel_ml

    affine = check_affine(case.affine, case=case.case_id)
    vox = voxel_ml(affine)
    vols = {n: round(float(r.sum()) * vox, 4) for n, r in zip(p.region_names, p.regions)}
    headers = {"X-Volumes-ml": json.dumps(vols), "X-Region-Names": ",".join(p.region_names),
               "X-Label-Convention": p.label_convention, "X-Model-Name": str(ident.get("name")),
               "X-Model-Version": str(ident.get("version")), "X-TTA": str(tta).lower(),
               "X-Postprocess": str(postprocessed).lower()}
    headers.update({f"X-Volume-{n}-ml": f"{v:.4f}" for n, v in vols.items()})
    if warnings:
        headers["X-Input-Warnings"] = json.dumps(warnings)
    summary = {"volumes_ml": vols, "region_names": list(p.region_names), "label_convention": p.label_convention,
               "shape": list(p.labels.shape), "voxel_ml": vox, "tta": tta, "postprocess": postprocessed,
               "warnings": list(warnings),
               "label_counts": {str(int(k)): int(c) for k, c in zip(*np.unique(p.labels, return_counts=True))},
               "model": {k: ident.get(k) for k in ("source", "name", "version", "alias", "architecture", "lambda",
                                                   "delta", "gamma")}}
    if output == "json":
        return headers, summary, None, None
    if dicom is not None:
        summary["dicom"] = {"series": case.source.get("series"), "ignored": case.source.get("ignored"),
                            "reference": dicom.reference}
    if output == "dicom-seg":
        from .dicom_upload import dicom_seg_bytes

        return headers, summary, dicom_seg_bytes(p.labels, dicom, case, p.label_convention), "seg.dcm"
    if output == "signed":
        return headers, summary, nifti_bytes(np.moveaxis(p.signed, 0, -1), affine, case.header), "signed.nii.gz"
    return headers, summary, nifti_bytes(p.labels, affine, case.header), "seg.nii.gz"


def scan_bytes(case: Any, warnings: list[str]) -> tuple[dict[str, str], bytes]:
    """(headers, ``.nii.gz`` bytes) of the case's image as read: one 4-D volume (X, Y, Z, modality)
    in the case's geometry, the label map's; int16 where every value is a whole number within
    int16 (DICOM pixels, BraTS files), else float32. ``X-Modalities`` names the channels in order."""
    from singr.io import check_affine, nifti_bytes

    affine = check_affine(case.affine, case=case.case_id)
    img = np.moveaxis(np.asarray(case.image, dtype=np.float32), 0, -1)
    if img.size and np.isfinite(img).all() and img.min() >= -32768 and img.max() <= 32767 and \
            np.array_equal(img, np.rint(img)):
        img = img.astype(np.int16)
    headers = {"X-Modalities": ",".join(case.modalities)}
    if warnings:
        headers["X-Input-Warnings"] = json.dumps(warnings)
    return headers, nifti_bytes(img, affine, None)


def as_response(headers: dict[str, str], summary: dict[str, Any], data: Optional[bytes],
                name: Optional[str]) -> Response:
    """The HTTP answer: the JSON summary, or the file with the headers."""
    if data is None:
        return JSONResponse(summary, headers=headers)
    headers = {**headers, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(content=data, media_type=media_type(name), headers=headers)


def media_type(name: Optional[str]) -> str:
    """``application/dicom`` for a DICOM SEG (``.dcm``), else ``application/gzip`` (``.nii.gz``)."""
    return "application/dicom" if str(name or "").endswith(".dcm") else "application/gzip"
