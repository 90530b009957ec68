"""The SiNGR HTTP endpoint: a Ray Serve deployment with a FastAPI ingress.

Start it with ``singr serve [--model ...]`` or ``serve run serve/config.yaml``. Routes:

    GET  /             the viewer (NiiVue): drop a case, see the label map and the signed maps
    POST /v1/segment   modality NIfTI uploads -> label map .nii.gz (volumes in headers);
                       ?output=json -> volumes + model identity, ?output=signed -> signed maps;
                       ?tta=true mirrors at test time; ?postprocess=false skips the model's
                       post-processing rules; ?label_convention= picks the labels
    GET  /v1/health    200 once the model is loaded, 503 before (or when loading failed)
    GET  /v1/model     the model card as JSON: identity, lambda/delta/gamma, members, metrics
    GET  /docs         the OpenAPI page (its scripts served from here: works offline)

Concurrent requests are batched for the forward pass (``@serve.batch``). Every error is the
JSON body ``{"error", "detail", "file", "case"}`` (FastAPI's own 404/405/422 included).
Uploads hold at most ``max_concurrent_uploads`` of a replica's slots (more get 503 at once),
so health checks and small requests always get through; an API key (``X-API-Key``) can be
required, and must be when the endpoint binds to a non-loopback address.
"""

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from .model import load_model
from .settings import endpoint_settings
from .upload import HTTPProblem, parse_upload, problem_from, read_body

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

Errors: 401 missing or wrong API key, 408 upload too slow (below the minimum rate, idle, or
over the total time: the detail names which), 413 upload too large (bytes or
voxels), 415 not a NIfTI / not gzip / wrong content type, 422 missing or extra modality,
shapes or affines that disagree or are singular, a zero, negative or NaN voxel size, 2-D
image, NaN voxels; 429 too many uploads from one address being read at once; 503 while the model
is loading or when the replica is busy with uploads. The body is always JSON
`{"error", "detail", "file", "case"}`.
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
        },
    },
    "responses": {
        "200": {"description": "label map (.nii.gz), or JSON with ?output=json, or signed maps with ?output=signed",
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {}},
                "headers": {"X-Volume-TC-ml": {"schema": {"type": "number"},
                                               "description": "volume of region TC in ml (one header per region)"},
                            "X-Volumes-ml": {"schema": {"type": "string"}, "description": "all volumes, JSON"}}},
        "401": {"description": "missing or wrong X-API-Key"},
        "408": {"description": "the upload was too slow (the limit that fired is named)"},
        "429": {"description": "too many uploads from one client address being read at once"},
        "413": {"description": "upload over the size or voxel limit"},
        "415": {"description": "not a NIfTI file, not gzip, or not multipart/form-data"},
        "422": {"description": "missing/extra modality, shapes or affines disagree or are singular, not 3-D, NaN"},
        "503": {"description": "the model is not loaded yet, or the replica is busy with uploads"},
    },
}

api = FastAPI(title="SiNGR segmentation", version="1.1.0", description=DESCRIPTION, docs_url=None, redoc_url=None,
              openapi_tags=[{"name": "v1", "description": "version 1 of the API"}])


def _json_problem(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "file": None, "case": None}, status_code=status,
                        headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    names = {404: "not found", 405: "method not allowed"}
    return _json_problem(exc.status_code, names.get(exc.status_code, "http error"), str(exc.detail),
                         dict(exc.headers or {}))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
    return _json_problem(422, "invalid input", f"{where}: {first.get('msg', 'invalid request')}" if where else
                         str(first.get("msg", "invalid request")))


@api.exception_handler(HTTPProblem)
async def _problem(request: Request, exc: HTTPProblem) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return _json_problem(500, "internal error", f"{type(exc).__name__}: {exc}")


@serve.deployment(name="SingrSegmenter", max_ongoing_requests=16, ray_actor_options={"num_cpus": 1},
                  health_check_period_s=5, health_check_timeout_s=30)
@serve.ingress(api)
class SingrSegmenter:
    """One replica. Its (async) constructor loads the model in a worker thread, so Serve routes
    requests to the replica only once it can answer them; a model that fails to load leaves
    the replica up to say why (/v1/health: 503) while ``check_health`` reports it unhealthy,
    and Serve restarts it."""

    async def __init__(self, **settings: Any):  # type: ignore[misc]
        self.settings = endpoint_settings(settings)
        self.max_bytes = int(float(self.settings["max_upload_mb"]) * 1024 * 1024)
        self.max_file_bytes = int(float(self.settings["max_file_mb"]) * 1024 * 1024)
        self.uploads = asyncio.Semaphore(int(self.settings["max_concurrent_uploads"]))
        self.decodes = asyncio.Semaphore(int(self.settings["max_concurrent_decodes"]))
        self.reading: dict[str, int] = {}  # client address -> uploads being read
        self._infer.set_max_batch_size(int(self.settings["max_batch_size"]))  # type: ignore[attr-defined]
        self._infer.set_batch_wait_timeout_s(float(self.settings["batch_wait_timeout_s"]))  # type: ignore
        self.loaded: Any = None
        self.load_error: str | None = None
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        if self.settings["num_threads"]:
            import torch

            torch.set_num_threads(int(self.settings["num_threads"]))
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            overrides = {k: self.settings[k] for k in ("roi_size", "sw_batch_size", "tta")
                         if self.settings[k] is not None}
            self.loaded = load_model(self.settings["model"], self.settings["tracking_uri"], self.settings["device"],
                                     trust_checkpoint=bool(self.settings["trust_checkpoint"]))
            if overrides:
                self.loaded.predictor = self.loaded.predictor.with_settings(**overrides)
            log.info("singr model loaded in %.1f s: %s", time.perf_counter() - t0, self.loaded.identity.get("name"))
        except Exception as e:  # noqa: BLE001 - reported by /v1/health and check_health
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("singr model failed to load: %s", self.load_error)

    def check_health(self) -> None:
        """Serve's health check: a replica whose model failed to load is unhealthy (restarted)."""
        if self.load_error:
            raise RuntimeError(f"the model failed to load: {self.load_error}")

    def _not_ready(self) -> JSONResponse:
        if self.load_error:
            return _json_problem(503, "model failed to load", self.load_error)
        return _json_problem(503, "loading", "the model is loading", {"Retry-After": "2"})

    def _authorize(self, request: Request) -> None:
        key = self.settings["api_key"]
        if not key:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), str(key).encode()):
            raise HTTPProblem(401, "unauthorized", "missing or wrong API key; send it in the X-API-Key header",
                              headers={"WWW-Authenticate": "X-API-Key"})

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _infer(self, jobs: list[tuple[np.ndarray, Optional[str], bool, bool]]) -> list[Any]:
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        pred = self.loaded.predictor
        out: list[Any] = [None] * len(jobs)
        for tta, post in sorted({(j[2], j[3]) for j in jobs}):  # requests with the same settings run together
            idx = [i for i, j in enumerate(jobs) if (j[2], j[3]) == (tta, post)]
            same = tta == pred.settings.tta and post == pred.settings.postprocess
            p = pred if same else pred.with_settings(tta=tta, postprocess=post)
            res = await asyncio.to_thread(p.predict_batch, [jobs[i][0] for i in idx], [jobs[i][1] for i in idx])
            for i, r in zip(idx, res):
                out[i] = r
        return out

    @api.get("/", include_in_schema=False)
    async def viewer(self) -> Any:
        page = STATIC / "index.html"
        if not page.is_file():
            return HTMLResponse("<p>SiNGR endpoint: the viewer is not installed; see <a href='/docs'>/docs</a>.</p>")
        return FileResponse(page, media_type="text/html")

    @api.get("/static/{path:path}", include_in_schema=False)
    async def static(self, path: str) -> Any:
        target = (STATIC / path).resolve()
        if not str(target).startswith(str(STATIC.resolve()) + "/") or not target.is_file():
            raise HTTPProblem(404, "not found", f"no static file {path!r}")
        return FileResponse(target)

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> Any:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="SiNGR segmentation: API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # nothing leaves the origin

    @api.get("/v1/health", tags=["v1"], summary="Readiness: 200 once the model is loaded, 503 before",
             responses={503: {"description": "loading, or the model failed to load"}})
    async def health(self) -> Any:
        if self.loaded is None:
            return self._not_ready()
        ident = self.loaded.identity
        return {"status": "ready", "model": ident.get("name"), "version": ident.get("version"), **self.stats}

    @api.get("/v1/model", tags=["v1"], summary="The loaded model's card: identity, settings, metrics",
             responses={401: {"description": "missing or wrong API key"},
                        503: {"description": "the model is not loaded yet"}})
    async def model(self, request: Request) -> Any:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        from singr.data.readers.base import modality_list

        ident = dict(self.loaded.identity)
        ident["modalities_brats2023"] = modality_list(ident["modalities"], "brats2023")
        ident["limits"] = {k: self.settings[k] for k in ("max_upload_mb", "max_file_mb", "max_voxels",
                                                          "upload_timeout_s")}
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
            None, description="labels of the returned map (default: the upload's naming; BraTS 2023 -> ET = 3)"),
        tta: Optional[bool] = Query(None, description="test-time mirroring (8 passes); default: the model's"),
        postprocess: Optional[bool] = Query(
            None, description="apply the model's post-processing rules; default: the model's infer.postprocess"),
    ) -> Response:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        client = request.client.host if request.client else "unknown"
        if self.reading.get(client, 0) >= int(self.settings["max_uploads_per_client"]):
            raise HTTPProblem(429, "too many requests", f"{self.reading[client]} uploads from your address are being "
                              "read already (max_uploads_per_client); send them at network speed, then the next",
                              headers={"Retry-After": "5"})
        if self.uploads.locked():
            raise HTTPProblem(503, "busy", "this replica is reading as many uploads as it allows; retry shortly",
                              headers={"Retry-After": "2"})
        pred = self.loaded.predictor
        t0 = time.perf_counter()
        self.reading[client] = self.reading.get(client, 0) + 1
        try:
            async with self.uploads:  # reading slots: a slow client holds one for the rate grace at most
                body = await read_body(request, self.max_bytes, float(self.settings["upload_timeout_s"]),
                                       float(self.settings["upload_idle_s"]),
                                       float(self.settings["upload_min_rate_kbps"]),
                                       float(self.settings["upload_rate_grace_s"]))
        except Exception as e:  # noqa: BLE001 - every reading problem is a 4xx
            raise problem_from(e) from None
        finally:
            self.reading[client] -= 1
            if not self.reading[client]:
                del self.reading[client]
        async with self.decodes:  # decoding slots, never held by a reader
            try:
                files, names = await parse_upload(request.headers, body)
                del body
                from singr.data.readers import load_case_from_bytes

                mods = self.loaded.identity["modalities"] or None
                case = await asyncio.to_thread(load_case_from_bytes, files, names=names,
                                               max_size=self.max_file_bytes,
                                               max_voxels=int(self.settings["max_voxels"]),
                                               **({"modalities": mods} if mods else {}))
                del files
                pred.check_channels(case.image)
                regions = pred.region_names
                if label_convention == "binary" and len(regions) != 1 or \
                        label_convention in ("brats2020", "brats2023") and len(regions) != 3:
                    raise HTTPProblem(422, "invalid input", f"label_convention {label_convention!r} does not fit the "
                                      f"model's regions {list(regions)}")
            except Exception as e:  # noqa: BLE001 - every content problem is a 4xx
                raise problem_from(e) from None
        conv = label_convention or (case.label_convention if len(pred.region_names) == 3 else None)
        use_tta = bool(pred.settings.tta if tta is None else tta)
        use_post = bool(pred.settings.postprocess if postprocess is None else postprocess)
        image, case.image = case.image, None  # type: ignore[assignment]  # free the upload's copy
        p = await self._infer((image, conv, use_tta, use_post))
        del image
        self.stats["requests"] += 1
        applied = use_post and pred.postprocess is not None
        result = await asyncio.to_thread(self._respond, case, p, output, use_tta, applied)
        log.info("segment %s in %.2f s", output, time.perf_counter() - t0)
        return result

    def _respond(self, case: Any, p: Any, output: str, tta: bool, postprocessed: bool = False) -> Response:
        from singr.io import check_affine, nifti_bytes, voxel_ml

        affine = check_affine(case.affine, case=case.case_id)
        ident = self.loaded.identity
        vox = voxel_ml(affine)
        vols = {n: round(float(r.sum()) * vox, 4) for n, r in zip(p.region_names, p.regions)}
        headers = {"X-Volumes-ml": json.dumps(vols), "X-Region-Names": ",".join(p.region_names),
                   "X-Label-Convention": p.label_convention, "X-Model-Name": str(ident.get("name")),
                   "X-Model-Version": str(ident.get("version")), "X-TTA": str(tta).lower(),
                   "X-Postprocess": str(postprocessed).lower()}
        headers.update({f"X-Volume-{n}-ml": f"{v:.4f}" for n, v in vols.items()})
        if output == "json":
            return JSONResponse({"volumes_ml": vols, "region_names": list(p.region_names),
                                 "label_convention": p.label_convention, "shape": list(p.labels.shape),
                                 "voxel_ml": vox, "tta": tta, "postprocess": postprocessed,
                                 "label_counts": {str(int(k)): int(c) for k, c in
                                                  zip(*np.unique(p.labels, return_counts=True))},
                                 "model": {k: ident.get(k) for k in ("source", "name", "version", "alias",
                                                                     "architecture", "lambda", "delta", "gamma")}},
                                headers=headers)
        if output == "signed":
            data = nifti_bytes(np.moveaxis(p.signed, 0, -1), affine, case.header)
            name = "signed.nii.gz"
        else:
            data = nifti_bytes(p.labels, affine, case.header)
            name = "seg.nii.gz"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(content=data, media_type="application/gzip", headers=headers)


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder: ``import_path: serve.app:build_app`` with ``args`` (fields of
    :class:`serve.settings.EndpointSettings`); the config's ``deployments`` section sets replicas and resources."""
    return make_app(args)


def make_app(args: Optional[dict[str, Any]] = None, deployment_options: Optional[dict[str, Any]] = None) -> Any:
    """The application with ``args`` (see :class:`serve.settings.EndpointSettings`) and ``deployment_options``
    (``num_replicas``, ``max_ongoing_requests``, ``ray_actor_options`` ...), for ``serve.run``."""
    settings = endpoint_settings(args)
    dep: Any = SingrSegmenter
    if deployment_options:
        dep = dep.options(**deployment_options)
    return dep.bind(**settings)


app = build_app  # ``serve run serve.app:app model=...``
