"""The endpoint's HTTP surface: the FastAPI app, its OpenAPI description and the error handlers
that give every answer the JSON body ``{"error", "detail", "file", "case"}``.

The routes themselves are methods of the deployment (:mod:`serve.app`), registered on
:data:`api` with ``@api.get`` / ``@api.post``.
"""
import logging
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .upload import HTTPProblem

log = logging.getLogger("ray.serve")

API_VERSION = "v1"
STATIC = Path(__file__).with_name("static")

DESCRIPTION = """
Brain-tumour segmentation with a SiNGR model (signed normalized geodesic regression).

**POST /v1/segment** takes the case's MR modalities as a `multipart/form-data` upload, one
NIfTI file (`.nii` or `.nii.gz`) per modality, named by the form field or the file name with
BraTS 2020 names `flair, t1, t1ce, t2` or BraTS 2023 names `t2f, t1n, t1c, t2w`; or one 4-D
NIfTI whose last axis holds the modalities in the order `flair, t1, t1ce, t2` (also as a raw
`application/gzip` / `application/octet-stream` body). The modalities must share shape and
affine. It returns the label map (`application/gzip`, `.nii.gz`) in the input's geometry
(its affine and voxel size; free-text header fields and extensions are not copied), in the
label convention of the upload's names (BraTS 2023 names: ET = 3) unless `label_convention`
says otherwise, with region volumes in millilitres in the `X-Volume-<region>-ml` headers and
all of them as JSON in `X-Volumes-ml`.

`?output=json` returns the volumes and the model's identity instead; `?output=signed` returns
the predicted signed maps (4-D NIfTI, last axis = regions, the averaged `tanh` maps, values
near 0 lie on an uncertain border); `?tta=true` averages the 8 mirrorings of the volume;
`?postprocess=false` returns the thresholded maps without the model's post-processing rules
(small components removed, small ET relabelled; see `postprocess` in GET /v1/model).

**DICOM**: a zip of the case's MR series (the raw body as `application/zip`, or the one file of
a multipart upload) is read as DICOM: the series are told apart by their descriptions ("AX T1
POST GD", "T1 MPRAGE pre", "FLAIR AX", "T2 TSE": the rule of `singr predict`) or by
`?dicom_map=t1ce=7` (repeatable; modality = series number, SeriesInstanceUID or description);
missing slices, mixed series, grids that disagree and unplaceable series are 422s naming the
series. `?output=dicom-seg` returns the label map as a DICOM Segmentation (`application/dicom`,
`seg.dcm`) that references the uploaded series, one segment per tumour region; every other
output works for DICOM input too (the NIfTI label map is on the series' grid). **POST /v1/scan**
takes the same upload and returns the case as read, not segmented: one 4-D NIfTI in the label
map's geometry, modalities in `X-Modalities` order (how the viewer shows a DICOM zip's scan).

`?model=challenger` (an alias, or a version such as `3`; or Serve's header
`serve_multiplexed_model_id`) answers with that version of the served registered model instead of
its champion, on `/v1/segment`, `/v1/jobs` and `/v1/model`, so a champion and a challenger can be
compared on one endpoint; nothing else can be named (no path, no other model). `GET /v1/models`
lists what the replica holds.

`?force=true` segments input that does not look like BraTS-space brain MR (not skull-stripped,
modalities not co-registered, another voxel size, no contrast); without it such input is a 422,
with it the findings come back in `X-Input-Warnings` (JSON list; also a whole tumour filling most of
the brain).

**POST /v1/jobs** takes the same upload and options and answers **202** at once with the job's
record (`id`, `status`, `status_url`, `result_url`); the upload is checked first, so bad input is
still a 4xx right away. **GET /v1/jobs/{id}** gives `status` (`queued`, `running`, `done`, `failed`,
`cancelled`), `progress` (0-1) and, once done, the volumes; **GET /v1/jobs/{id}/result** the file of
the job's `output` (or `?output=json`); **DELETE /v1/jobs/{id}** cancels it. A job whose replica
stopped reads as `failed`, with that reason. Use jobs for cases that take more than a few seconds
(a CPU case with `tta=true` takes minutes).

Each request is priced from its NIfTI headers before any voxel is decoded: voxels x passes
(members x 8 with TTA). A replica runs work up to `compute_budget_mvox` million voxel-passes,
queues a bounded amount more (cheapest first), and answers the rest 503 with `Retry-After`; a
synchronous request's compute ends at `compute_deadline_s` (504) or when its client goes away.

Errors: 401 missing or wrong API key, 404 no such job, 408 upload too slow (below the minimum
rate, idle, or over the total time: the detail names which), 409 job result asked before the job
is done, 413 upload too large (bytes, or voxels per volume: `max_voxels`, by default 256 x 256 x
192; a BraTS case has 8.9 M), 415 not a NIfTI / not gzip / wrong content type, 422 missing or extra
modality, shapes or affines that disagree or are singular, a zero, negative or NaN voxel size,
2-D image, NaN voxels, input that is not brain-like (see `force`), DICOM series that cannot be read or
placed, `?output=dicom-seg` for NIfTI input; 429 too many uploads from one
address being read at once; 503 while the model is loading, when the replica is busy (reading
slots, compute queue, `max_jobs`: with `Retry-After`); 504 the compute deadline passed. The body
is always JSON `{"error", "detail", "file", "case"}`.
"""

_SEGMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        **{m: {"type": "string", "format": "binary",
                               "description": f"{m} NIfTI (.nii.gz or .nii); BraTS 2023 name {m23} also accepted"}
                           for m, m23 in zip(("flair", "t1", "t1ce", "t2"), ("t2f", "t1n", "t1c", "t2w"))},
                        "image": {"type": "string", "format": "binary",
                                  "description": "alternatively: one 4-D NIfTI (X, Y, Z, 4) in the order flair, t1, "
                                                 "t1ce, t2"},
                    },
                },
                "encoding": {m: {"contentType": "application/gzip, application/octet-stream"}
                             for m in ("flair", "t1", "t1ce", "t2", "image")},
            },
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary",
                                           "description": "a zip of the case's DICOM MR series"}},
        },
    },
    "responses": {
        "200": {"description": "label map (.nii.gz), or JSON with ?output=json, or signed maps with ?output=signed, "
                               "or a DICOM SEG with ?output=dicom-seg",
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
                            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {}},
                "headers": {"X-Volume-TC-ml": {"schema": {"type": "number"},
                                               "description": "volume of region TC in ml (one header per region)"},
                            "X-Volumes-ml": {"schema": {"type": "string"}, "description": "all volumes, JSON"}}},
        "401": {"description": "missing or wrong X-API-Key"},
        "408": {"description": "the upload was too slow (the limit that fired is named)"},
        "429": {"description": "too many uploads from one client address being read at once"},
        "413": {"description": "upload over the size or voxel limit"},
        "415": {"description": "not a NIfTI file, not gzip, or not multipart/form-data"},
        "422": {"description": "missing/extra modality, shapes or affines disagree or are singular, not 3-D, NaN, "
                               "not brain-like input (see force)"},
        "503": {"description": "the model is not loaded yet, or the replica is busy (Retry-After says when to retry)"},
        "504": {"description": "the compute deadline passed (compute_deadline_s); send long cases as jobs"},
    },
}

_SCAN_BODY = {
    "requestBody": _SEGMENT_BODY["requestBody"],
    "responses": {
        "200": {"description": "the case's image as one 4-D NIfTI (X, Y, Z, modality; int16 where every value is "
                               "a whole number, else float32) in the geometry the label map comes in; the "
                               "modalities' order in X-Modalities",
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
                "headers": {"X-Modalities": {"schema": {"type": "string"}, "description": "e.g. flair,t1,t1ce,t2"}}},
        **{k: v for k, v in _SEGMENT_BODY["responses"].items() if k in ("401", "408", "413", "415", "429")},  # type: ignore[attr-defined]
        "422": {"description": "missing/extra modality, shapes or affines disagree, DICOM series that cannot be read "
                               "or placed (brain-likeness is not checked: its findings come in X-Input-Warnings)"},
        "503": {"description": "the model is not loaded yet, or the replica is busy reading uploads"},
    },
}

QUERY = {  # the query parameters of the routes that take a case (serve.app), with their descriptions
    "output": Query("nifti", description="nifti: label map .nii.gz; json: volumes and model identity; "
                    "signed: signed maps (4-D .nii.gz); dicom-seg: a DICOM Segmentation referencing the uploaded "
                    "series (DICOM input only)"),
    "dicom_map": Query(None, description="DICOM input: modality=series (number, SeriesInstanceUID or description), "
                       "repeatable, for series the naming rule cannot place, e.g. dicom_map=t1ce=7"),
    "label_convention": Query(None, description="labels of the returned map (default: the upload's naming; BraTS "
                              "2023 -> ET = 3)"),
    "tta": Query(None, description="test-time mirroring (8 passes); default: the model's"),
    "postprocess": Query(None, description="apply the model's post-processing rules; default: the model's "
                         "infer.postprocess"),
    "force": Query(False, description="segment input that does not look like BraTS-space input (not skull-stripped, "
                   "not co-registered, another voxel size): answered with X-Input-Warnings instead of 422"),
}

api = FastAPI(title="SiNGR segmentation", version="1.2.0", description=DESCRIPTION, docs_url=None, redoc_url=None,
              openapi_tags=[{"name": "v1", "description": "version 1 of the API"}])


def json_problem(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "file": None, "case": None}, status_code=status,
                        headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    names = {404: "not found", 405: "method not allowed"}
    return json_problem(exc.status_code, names.get(exc.status_code, "http error"), str(exc.detail),
                         dict(exc.headers or {}))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
    return json_problem(422, "invalid input", f"{where}: {first.get('msg', 'invalid request')}" if where else
                         str(first.get("msg", "invalid request")))


@api.exception_handler(HTTPProblem)
async def _problem(request: Request, exc: HTTPProblem) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return json_problem(500, "internal error", f"{type(exc).__name__}: {exc}")
