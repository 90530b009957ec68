"""The SiNGR HTTP inference endpoint: a Ray Serve deployment with a FastAPI ingress.

Start it with ``serve run serve/config.yaml`` or ``singr serve [--model ...]``; the
OpenAPI page is at ``/docs``. Endpoints (version 1):

    POST /v1/segment   modality NIfTI uploads -> label map .nii.gz (volumes in headers),
                       ?output=json -> volumes + model identity, ?output=signed -> signed maps
    GET  /v1/health    200 once the model is loaded, 503 before (or when loading failed)
    GET  /v1/model     name, version, lambda, delta, gamma, architecture, modalities, spacing

Concurrent requests are batched for the network forward pass (``@serve.batch``); bad
input gets a 4xx JSON body ``{"error", "detail", "file", "case"}``.
"""

import asyncio
import json
import logging
import re
import threading
import time
from typing import Any, AsyncIterator, Literal, Optional

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from singr.errors import SingrInputError

from .model import DEFAULT_MODEL, forward_batch, load_model

log = logging.getLogger("ray.serve")

API_VERSION = "v1"
SETTINGS_DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,        # checkpoint path, models:/<name>@<alias>, models:/<name>/<version>, name@alias
    "tracking_uri": None,          # MLflow tracking URI; default MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    "device": "auto",              # auto: the replica's GPU when it has one
    "max_upload_mb": 256.0,        # request body limit (413 above)
    "max_file_mb": 1024.0,         # limit on each file's decompressed size (413 above)
    "max_batch_size": 4,           # @serve.batch: requests per forward pass
    "batch_wait_timeout_s": 0.05,  # @serve.batch: how long to wait for a batch to fill
    "roi_size": None,              # sliding-window size override (default: the checkpoint's infer.roi_size)
    "sw_batch_size": None,         # windows per network call override
    "num_threads": None,           # torch CPU threads per replica (default: Ray's OMP_NUM_THREADS)
}

_GZIP_TYPES = {"application/gzip", "application/x-gzip", "application/octet-stream", "application/nifti",
               "application/x-nifti", "application/x-nifti-gz", ""}
_MODALITY_HELP = ("name each file by modality: form field names or file names flair/t1/t1ce/t2 (BraTS 2020) "
                  "or t2f/t1n/t1c/t2w (BraTS 2023), or send one 4-D NIfTI")

DESCRIPTION = """
Brain-tumour segmentation with a SiNGR model (signed normalized geodesic regression).

**POST /v1/segment** takes the case's MR modalities as a `multipart/form-data` upload, one
NIfTI file (`.nii` or `.nii.gz`) per modality, named by the form field or the file name with
BraTS 2020 names `flair, t1, t1ce, t2` or BraTS 2023 names `t2f, t1n, t1c, t2w`; or one 4-D
NIfTI whose last axis holds the modalities in the order `flair, t1, t1ce, t2` (also as a raw
`application/gzip` / `application/octet-stream` body). The modalities must share shape and
affine. It returns the label map (`application/gzip`, `.nii.gz`) in the input's geometry
(affine and header kept), with region volumes in millilitres in the `X-Volume-<region>-ml`
headers and all of them as JSON in `X-Volumes-ml`.

`?output=json` returns the volumes and the model's identity instead; `?output=signed` returns
the predicted signed maps (4-D NIfTI, last axis = regions, `tanh` of the network output).

Errors: 413 upload too large, 415 not a NIfTI / not gzip / wrong content type, 422 missing or
extra modality, shapes or affines that disagree, 2-D image, NaN voxels; the body is JSON
`{"error", "detail", "file", "case"}`. 503 while the model is loading.
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
                                  "description": "alternatively: one 4-D NIfTI (X, Y, Z, 4) in the order flair, t1, t1ce, t2"},
                    },
                },
                "encoding": {m: {"contentType": "application/gzip, application/octet-stream"}
                             for m in ("flair", "t1", "t1ce", "t2", "image")},
            },
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {"description": "label map (.nii.gz), or JSON with ?output=json, or signed maps with ?output=signed",
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {}},
                "headers": {"X-Volume-TC-ml": {"schema": {"type": "number"},
                                               "description": "volume of region TC in ml (one header per region)"},
                            "X-Volumes-ml": {"schema": {"type": "string"}, "description": "all volumes, JSON"}}},
        "413": {"description": "upload over the size limit"},
        "415": {"description": "not a NIfTI file, not gzip, or not multipart/form-data"},
        "422": {"description": "missing/extra modality, shapes or affines disagree, not 3-D, NaN voxels"},
        "503": {"description": "the model is not loaded yet"},
    },
}

api = FastAPI(title="SiNGR segmentation", version="1.0.0", description=DESCRIPTION,
              openapi_tags=[{"name": "v1", "description": "version 1 of the API"}])


class HTTPProblem(Exception):
    def __init__(self, status: int, error: str, detail: str, file: str | None = None, case: str | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.file, self.case = status, error, detail, file, case

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "detail": self.detail, "file": self.file, "case": self.case},
                            status_code=self.status)


def _problem_from(err: Exception) -> HTTPProblem:
    from singr.io import NiftiBytesError

    if isinstance(err, HTTPProblem):
        return err
    if isinstance(err, NiftiBytesError):
        if err.kind == "too_large":
            return HTTPProblem(413, "too large", err.reason, err.path, err.case)
        return HTTPProblem(415, "not a NIfTI file", err.reason, err.path, err.case)
    if isinstance(err, SingrInputError):
        return HTTPProblem(422, "invalid input", err.reason, err.path, err.case)
    return HTTPProblem(422, "invalid input", f"could not interpret the upload ({type(err).__name__}: {err})")


def _modality_key(field: str | None, filename: str | None) -> str | None:
    """The modality a multipart part names, from its field name, else its file name."""
    from singr.data.readers import canonical_modality

    cands = []
    if field:
        cands.append(field)
    if filename:
        stem = re.sub(r"\.(nii(\.gz)?|gz)$", "", filename.strip().rsplit("/", 1)[-1], flags=re.IGNORECASE)
        cands += [stem, re.split(r"[-_.\s]", stem)[-1]]
    for c in cands:
        if canonical_modality(c) is not None:
            return c
    return None


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPProblem(413, "too large", f"request body of {int(length)} bytes is over the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, "too large", f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_upload(request: Request, body: bytes) -> tuple[dict[str, bytes] | bytes, dict[str, str]]:
    """Multipart parts -> ({modality key: bytes}, {key: upload name}) or (4-D bytes, names)."""
    ctype = request.headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main != "multipart/form-data":
        if main in _GZIP_TYPES:
            if not body:
                raise HTTPProblem(422, "invalid input", f"empty request body; {_MODALITY_HELP}")
            return body, {"4d": "body"}
        raise HTTPProblem(415, "unsupported media type",
                          f"content type {main!r}; expected multipart/form-data with NIfTI files ({_MODALITY_HELP}) "
                          "or a raw 4-D NIfTI body (application/gzip)")
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=64, max_fields=64).parse()
    except MultiPartException as e:
        raise HTTPProblem(422, "invalid input", f"malformed multipart body ({e.message})") from None
    except Exception as e:
        raise HTTPProblem(422, "invalid input", f"malformed multipart body ({type(e).__name__}: {e})") from None
    try:
        parts: list[tuple[str, str | None, bytes]] = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise HTTPProblem(422, "invalid input", f"form field {field!r} is text, not a file; {_MODALITY_HELP}",
                                  file=field)
            parts.append((field, value.filename, await value.read()))
    finally:
        await form.close()
    if not parts:
        raise HTTPProblem(422, "invalid input", f"no files uploaded; {_MODALITY_HELP}")
    keys = [_modality_key(f, n) for f, n, _ in parts]
    if len(parts) == 1 and keys[0] is None:
        f, n, data = parts[0]
        return data, {"4d": n or f}
    files: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for (field, fname, data), key in zip(parts, keys):
        label = fname or field
        if key is None:
            raise HTTPProblem(422, "invalid input",
                              f"cannot tell which modality the upload {label!r} (form field {field!r}) is; {_MODALITY_HELP}",
                              file=label)
        if key in files:
            raise HTTPProblem(422, "invalid input", f"modality {key!r} uploaded twice; expected each once", file=label)
        files[key], names[key] = data, label
    return files, names


@serve.deployment(name="SingrSegmenter", max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class SingrSegmenter:
    """One replica: loads the model in the background, then serves /v1/*."""

    def __init__(self, **settings: Any):
        unknown = set(settings) - set(SETTINGS_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; expected {sorted(SETTINGS_DEFAULTS)}")
        self.settings = {**SETTINGS_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
        self.max_bytes = int(float(self.settings["max_upload_mb"]) * 1024 * 1024)
        self.max_file_bytes = int(float(self.settings["max_file_mb"]) * 1024 * 1024)
        self._infer.set_max_batch_size(int(self.settings["max_batch_size"]))
        self._infer.set_batch_wait_timeout_s(float(self.settings["batch_wait_timeout_s"]))
        self.loaded = None
        self.load_error: str | None = None
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        if self.settings["num_threads"]:
            import torch

            torch.set_num_threads(int(self.settings["num_threads"]))
        threading.Thread(target=self._load, name="singr-model-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.loaded = load_model(self.settings["model"], self.settings["tracking_uri"], self.settings["device"])
            log.info("singr model loaded in %.1f s: %s", time.perf_counter() - t0, self.loaded.identity)
        except Exception as e:  # reported by /v1/health
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("singr model failed to load: %s", self.load_error)

    def _not_ready(self) -> JSONResponse:
        if self.load_error:
            return JSONResponse({"status": "error", "detail": f"the model failed to load: {self.load_error}",
                                 "model": self.settings["model"]}, status_code=503)
        return JSONResponse({"status": "loading", "detail": "the model is loading",
                             "model": self.settings["model"]}, status_code=503, headers={"Retry-After": "2"})

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _infer(self, images: list[np.ndarray]) -> list[Any]:
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(images))
        return await asyncio.to_thread(forward_batch, self.loaded.predictor, images,
                                       self.settings["roi_size"], self.settings["sw_batch_size"])

    @api.get("/v1/health", tags=["v1"], summary="Readiness: 200 once the model is loaded, 503 before",
             responses={503: {"description": "loading, or the model failed to load"}})
    async def health(self) -> Any:
        if self.loaded is None:
            return self._not_ready()
        ident = self.loaded.identity
        return {"status": "ready", "model": ident.get("name"), "version": ident.get("version"), **self.stats}

    @api.get("/v1/model", tags=["v1"], summary="The loaded model's identity and what it expects",
             responses={503: {"description": "the model is not loaded yet"}})
    async def model(self) -> Any:
        if self.loaded is None:
            return self._not_ready()
        from singr.data.readers import BRATS2023_NAMES, MODALITIES

        ident = dict(self.loaded.identity)
        ident["modalities_brats2023"] = [BRATS2023_NAMES[MODALITIES.index(m)] if m in MODALITIES else m
                                         for m in ident["modalities"]]
        ident["max_upload_mb"] = self.settings["max_upload_mb"]
        ident["max_file_mb"] = self.settings["max_file_mb"]
        ident["api_version"] = API_VERSION
        return ident

    @api.post("/v1/segment", tags=["v1"], summary="Segment one case", openapi_extra=_SEGMENT_BODY,
              response_class=Response)
    async def segment(
        self,
        request: Request,
        output: Literal["nifti", "json", "signed"] = Query(
            "nifti", description="nifti: label map .nii.gz; json: volumes and model identity; "
            "signed: signed maps (4-D .nii.gz)"),
        label_convention: Optional[Literal["brats2020", "brats2023", "binary"]] = Query(
            None, description="labels of the returned map (default: the training data's convention)"),
    ) -> Response:
        if self.loaded is None:
            return self._not_ready()
        pred = self.loaded.predictor
        t0 = time.perf_counter()
        try:
            body = await _read_body(request, self.max_bytes)
            files, names = await _parse_upload(request, body)
            del body
            from singr.data.readers import load_case_from_bytes

            mods = self.loaded.identity["modalities"] or None
            case = await asyncio.to_thread(load_case_from_bytes, files, names=names, max_size=self.max_file_bytes,
                                           **({"modalities": mods} if mods else {}))
            pred.check_channels(case.image)
            if label_convention == "binary" and len(pred.meta["region_names"]) != 1 or \
                    label_convention in ("brats2020", "brats2023") and len(pred.meta["region_names"]) != 3:
                raise HTTPProblem(422, "invalid input", f"label_convention {label_convention!r} does not fit the "
                                  f"model's regions {list(pred.meta['region_names'])}")
        except Exception as e:  # every content problem is a 4xx
            return _problem_from(e).response()
        logits = await self._infer(case.image)
        self.stats["requests"] += 1
        result = await asyncio.to_thread(self._respond, case, logits, output, label_convention)
        log.info("segment %s %s in %.2f s", output, tuple(case.image.shape[1:]), time.perf_counter() - t0)
        return result

    def _respond(self, case: Any, logits: Any, output: str, label_convention: str | None) -> Response:
        from singr.io import nifti_bytes

        pred = self.loaded.predictor
        ident = self.loaded.identity
        p = pred.from_logits(logits, label_convention)
        conv = label_convention or pred.meta["label_convention"]
        vox_ml = float(abs(np.linalg.det(case.affine[:3, :3]))) / 1000.0
        vols = {n: round(float(r.sum()) * vox_ml, 4) for n, r in zip(p.region_names, p.regions)}
        headers = {"X-Volumes-ml": json.dumps(vols), "X-Region-Names": ",".join(p.region_names),
                   "X-Label-Convention": conv, "X-Model-Name": str(ident.get("name")),
                   "X-Model-Version": str(ident.get("version"))}
        headers.update({f"X-Volume-{n}-ml": f"{v:.4f}" for n, v in vols.items()})
        if output == "json":
            return JSONResponse({"volumes_ml": vols, "region_names": list(p.region_names), "label_convention": conv,
                                 "shape": list(case.image.shape[1:]), "voxel_ml": vox_ml,
                                 "label_counts": {str(int(k)): int(c) for k, c in
                                                  zip(*np.unique(p.labels, return_counts=True))},
                                 "model": ident}, headers=headers)
        if output == "signed":
            data = nifti_bytes(np.moveaxis(p.signed, 0, -1), case.affine, case.header)
            name = "signed.nii.gz"
        else:
            data = nifti_bytes(p.labels, case.affine, case.header)
            name = "seg.nii.gz"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(content=data, media_type="application/gzip", headers=headers)


def settings_from_args(args: dict[str, Any] | None) -> dict[str, Any]:
    args = dict(args or {})
    unknown = set(args) - set(SETTINGS_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)}; expected {sorted(SETTINGS_DEFAULTS)}")
    return args


def build_app(args: dict[str, Any]):
    """Serve application builder: ``import_path: serve.app:build_app`` with ``args`` (keys of
    :data:`SETTINGS_DEFAULTS`); the config's ``deployments`` section sets replicas and resources."""
    return make_app(args)


def make_app(args: Optional[dict[str, Any]] = None, deployment_options: Optional[dict[str, Any]] = None):
    """The application with ``args`` (see :data:`SETTINGS_DEFAULTS`) and ``deployment_options``
    (``num_replicas``, ``max_ongoing_requests``, ``ray_actor_options`` ...), for ``serve.run``."""
    settings = settings_from_args(args)
    dep = SingrSegmenter.options(**deployment_options) if deployment_options else SingrSegmenter
    return dep.bind(**settings)


app = build_app  # ``serve run serve.app:app model=...``
