"""The SiNGR HTTP endpoint: a Ray Serve deployment with a FastAPI ingress.

Start it with ``singr serve [--model ...]`` or ``serve run serve/config.yaml``. Routes:

    GET    /                 the viewer (NiiVue): drop a case, see the label map and the signed maps
    POST   /v1/segment       modality NIfTI uploads -> label map .nii.gz (volumes in headers);
                             ?output=json -> volumes + model identity, ?output=signed -> signed maps;
                             ?tta=true mirrors at test time; ?postprocess=false skips the model's
                             post-processing rules; ?label_convention= picks the labels;
                             ?force=true segments input that does not look like BraTS-space input
    POST   /v1/scan          the same upload, not segmented: the case as read, one 4-D .nii.gz (the viewer
                             shows a DICOM zip's scan with it)
    POST   /v1/jobs          the same upload and options, answered 202 with a job id at once
    GET    /v1/jobs/{id}     the job's state and progress; .../result its answer; DELETE cancels
    GET    /v1/health        200 once the model is loaded, 503 before (or when loading failed)
    GET    /v1/model         the model card as JSON: identity, lambda/delta/gamma, members, metrics
    GET    /v1/models        the champion and the variants loaded (?model=<alias or version> on the
                             routes above picks one: serve.variants)
    GET    /docs             the OpenAPI page (its scripts served from here: works offline)

A request is priced from its headers before any voxel is decoded (voxels x passes) and admitted
within the replica's compute budget, queued, or refused with 503 + Retry-After
(:mod:`serve.admission`); a synchronous request ends at ``compute_deadline_s`` (504) or when its
client goes away. Input that is plainly not BraTS-space brain MR is refused (422, see
:mod:`singr.data.input_check`). Concurrent requests are batched for the forward pass
(``@serve.batch``, two batches at once). Every error is the JSON body
``{"error", "detail", "file", "case"}``. Uploads hold at most ``max_concurrent_uploads``
reading slots (more get 503 at once), so health checks always get through; an API key
(``X-API-Key``) can be required, and must be when the endpoint binds to a non-loopback address.
"""

import asyncio
import hmac
import json
import os
import socket
import time
from typing import Any, Literal, Optional

import numpy as np
from fastapi import Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray import serve

from .admission import Abandoned, Admission, Busy, Ticket, request_cost, watch_all
from .api import _SCAN_BODY, _SEGMENT_BODY, API_VERSION, QUERY, STATIC, api, json_problem, log
from .jobs import JobStore, default_jobs_dir
from .model import load_model
from .respond import as_response, media_type, render, scan_bytes
from .settings import endpoint_settings
from .upload import HTTPProblem, parse_upload, problem_from, read_body, upload_voxels
from .variants import ModelVariants

_Output = Literal["nifti", "json", "signed", "dicom-seg"]
_Convention = Optional[Literal["brats2020", "brats2023", "binary"]]
_OUTPUT_Q, _MAP_Q, _CONV_Q = QUERY["output"], QUERY["dicom_map"], QUERY["label_convention"]
_TTA_Q, _POST_Q, _FORCE_Q = QUERY["tta"], QUERY["postprocess"], QUERY["force"]


@serve.deployment(name="SingrSegmenter", max_ongoing_requests=16, ray_actor_options={"num_cpus": 1},
                  health_check_period_s=5, health_check_timeout_s=30)
@serve.ingress(api)
class SingrSegmenter(ModelVariants):
    """One replica. Its (async) constructor loads the model in a worker thread, so Serve routes
    requests to the replica only once it can answer them; a model that fails to load leaves
    the replica up to say why (/v1/health: 503) while ``check_health`` reports it unhealthy,
    and Serve restarts it."""

    async def __init__(self, **settings: Any):  # type: ignore[misc]
        self.settings = s = endpoint_settings(settings)
        self.max_bytes = int(float(s["max_upload_mb"]) * 1024 * 1024)
        self.max_file_bytes = int(float(s["max_file_mb"]) * 1024 * 1024)
        self.uploads = asyncio.Semaphore(int(s["max_concurrent_uploads"]))
        self.decodes = asyncio.Semaphore(int(s["max_concurrent_decodes"]))
        self.reading: dict[str, int] = {}  # client address -> uploads being read
        self.admission = Admission(float(s["compute_budget_mvox"]) * 1e6, float(s["max_queued_mvox"]) * 1e6,
                                   heavy=float(s["heavy_mvox"]) * 1e6)
        self.jobs = JobStore(s["jobs_dir"] or default_jobs_dir(), float(s["job_ttl_s"]), float(s["job_stale_s"]),
                             owner=f"{socket.gethostname()}:{os.getpid()}")
        self.my_jobs: dict[str, Ticket] = {}  # jobs this replica runs -> their tickets
        self._infer.set_max_batch_size(int(s["max_batch_size"]))  # type: ignore[attr-defined]
        self._infer.set_batch_wait_timeout_s(float(s["batch_wait_timeout_s"]))  # type: ignore
        self.loaded: Any = None
        self.load_error: str | None = None
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "abandoned": 0, "jobs": 0}
        if s["num_threads"]:
            import torch

            torch.set_num_threads(int(s["num_threads"]))
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
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
            return json_problem(503, "model failed to load", self.load_error)
        return json_problem(503, "loading", "the model is loading", {"Retry-After": "2"})

    def _authorize(self, request: Request) -> None:
        key = self.settings["api_key"]
        if not key:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), str(key).encode()):
            raise HTTPProblem(401, "unauthorized", "missing or wrong API key; send it in the X-API-Key header",
                              headers={"WWW-Authenticate": "X-API-Key"})

    # ------------------------------------------------------------------ the work

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05, max_concurrent_batches=2)
    async def _infer(self, jobs: list[tuple[np.ndarray, Optional[str], bool, bool, Ticket, Any]]) -> list[Any]:
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        out: list[Any] = [None] * len(jobs)
        groups: dict[tuple[int, bool, bool], list[int]] = {}
        for i, j in enumerate(jobs):  # requests for the same model (champion or variant), same settings: together
            groups.setdefault((id(j[5]), j[2], j[3]), []).append(i)
        for (_, tta, post), idx in groups.items():
            pred = jobs[idx[0]][5]
            same = tta == pred.settings.tta and post == pred.settings.postprocess
            p = pred if same else pred.with_settings(tta=tta, postprocess=post)
            res = await asyncio.to_thread(p.predict_batch, [jobs[i][0] for i in idx], [jobs[i][1] for i in idx],
                                          watch_all([jobs[i][4] for i in idx]))
            for i, r in zip(idx, res):
                out[i] = r
        return out

    async def _receive(self, request: Request) -> tuple[Any, dict[str, str]]:
        """Read (reading slots, per-client limit) and split the upload: (files, names)."""
        client = request.client.host if request.client else "unknown"
        if self.reading.get(client, 0) >= int(self.settings["max_uploads_per_client"]):
            raise HTTPProblem(429, "too many requests", f"{self.reading[client]} uploads from your address are being "
                              "read already (max_uploads_per_client); send them at network speed, then the next",
                              headers={"Retry-After": "5"})
        if self.uploads.locked():
            raise HTTPProblem(503, "busy", "this replica is reading as many uploads as it allows; retry shortly",
                              headers={"Retry-After": "2"})
        s = self.settings
        self.reading[client] = self.reading.get(client, 0) + 1
        try:
            async with self.uploads:  # reading slots: a slow client holds one for the rate grace at most
                body = await read_body(request, self.max_bytes, float(s["upload_timeout_s"]), float(s["upload_idle_s"]),
                                       float(s["upload_min_rate_kbps"]), float(s["upload_rate_grace_s"]))
            return await parse_upload(request.headers, body)
        except Exception as e:  # noqa: BLE001 - every reading problem is a 4xx
            raise problem_from(e) from None
        finally:
            self.reading[client] -= 1
            if not self.reading[client]:
                del self.reading[client]

    def _price(self, files: Any, names: dict[str, str], tta: bool, loaded: Any) -> float:
        """The request's cost in voxel-passes, from its headers (413 over ``max_voxels``)."""
        try:
            voxels = upload_voxels(files, names, int(self.settings["max_voxels"]), 4 * int(self.max_bytes))
        except Exception as e:  # noqa: BLE001 - a header problem is a 4xx
            raise problem_from(e) from None
        return request_cost(voxels, len(loaded.predictor.members), tta)

    async def _decode(self, files: Any, names: dict[str, str], force: bool, label_convention: Optional[str],
                      loaded: Any, output: str = "nifti", dicom_map: Optional[list[str]] = None
                      ) -> tuple[Any, Any, list[str], Any]:
        """(case, input profile, warnings, DICOM series or None): the checked case, 422 for input
        that is not BraTS-space brain MR unless ``force`` (then its findings are the warnings), and
        for ``?output=dicom-seg`` or ``?dicom_map`` without DICOM input."""
        from singr.data.input_check import check_input, profile_input
        from singr.data.readers import load_case_from_bytes

        from .dicom_upload import DicomUpload, decode_dicom

        pred = loaded.predictor
        is_dicom = isinstance(files, DicomUpload)
        if not is_dicom and (output == "dicom-seg" or dicom_map):
            what = "?output=dicom-seg" if output == "dicom-seg" else "?dicom_map"
            raise HTTPProblem(422, "invalid input", f"{what} needs DICOM input (a zip of the case's DICOM series); "
                              "this upload is NIfTI")
        dicom = None
        async with self.decodes:  # decoding slots, never held by a reader
            try:
                mods = loaded.identity["modalities"] or None
                if is_dicom:
                    case, dicom = await asyncio.to_thread(decode_dicom, files, dicom_map, mods, 4 * int(self.max_bytes))
                else:
                    case = await asyncio.to_thread(load_case_from_bytes, files, names=names,
                                                   max_size=self.max_file_bytes,
                                                   max_voxels=int(self.settings["max_voxels"]),
                                                   **({"modalities": mods} if mods else {}))
                pred.check_channels(case.image)
                regions = pred.region_names
                if label_convention == "binary" and len(regions) != 1 or \
                        label_convention in ("brats2020", "brats2023") and len(regions) != 3:
                    raise HTTPProblem(422, "invalid input", f"label_convention {label_convention!r} does not fit the "
                                      f"model's regions {list(regions)}")
                profile = await asyncio.to_thread(profile_input, case.image, case.spacing)
            except Exception as e:  # noqa: BLE001 - every content problem is a 4xx
                raise problem_from(e) from None
        findings = check_input(profile, case.modalities, pred.meta.spacing if pred.meta is not None else None) \
            if self.settings["check_input"] else []
        if findings and not force:
            raise HTTPProblem(422, "not brain-like input", "the input does not look like BraTS-space brain MR "
                              f"(co-registered, skull-stripped, the model's voxel size): {'; '.join(findings)}; send "
                              "?force=true to segment it anyway", case=case.case_id)
        return case, profile, findings, dicom

    def _options(self, tta: Optional[bool], postprocess: Optional[bool], loaded: Any) -> tuple[bool, bool]:
        pred = loaded.predictor
        return (bool(pred.settings.tta if tta is None else tta),
                bool(pred.settings.postprocess if postprocess is None else postprocess))

    # ------------------------------------------------------------------ routes
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
        adm = self.admission
        return {"status": "ready", "model": ident.get("name"), "version": ident.get("version"), **self.stats,
                "admission": {**adm.stats, "in_flight_mvox": round(adm.in_flight / 1e6, 3),
                              "queued_mvox": round(adm.queued / 1e6, 3), "running": adm.running}}

    @api.get("/v1/model", tags=["v1"], summary="The loaded model's card: identity, settings, metrics",
             responses={401: {"description": "missing or wrong API key"},
                        503: {"description": "the model is not loaded yet"}})
    async def model(self, request: Request) -> Any:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        from singr.data.readers.base import modality_list

        ident = dict((await self.model_for(request)).identity)
        ident["modalities_brats2023"] = modality_list(ident["modalities"], "brats2023")
        ident["limits"] = {k: self.settings[k] for k in ("max_upload_mb", "max_file_mb", "max_voxels",
                                                          "upload_timeout_s", "compute_budget_mvox",
                                                          "compute_deadline_s", "max_jobs", "check_input")}
        ident["api_version"] = API_VERSION
        return ident

    @api.get("/v1/models", tags=["v1"], summary="The champion and the model variants this replica holds; "
             "?model=<alias or version> (or the serve_multiplexed_model_id header) picks one on /v1/segment, "
             "/v1/jobs and /v1/model", responses={401: {"description": "missing or wrong API key"},
                                                   503: {"description": "the model is not loaded yet"}})
    async def models(self, request: Request) -> Any:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        return self.variants_listing()

    @api.post("/v1/segment", tags=["v1"], summary="Segment one case", openapi_extra=_SEGMENT_BODY,
              response_class=Response)
    async def segment(self, request: Request, output: _Output = _OUTPUT_Q, label_convention: _Convention = _CONV_Q,
                      tta: Optional[bool] = _TTA_Q, postprocess: Optional[bool] = _POST_Q,
                      force: bool = _FORCE_Q, dicom_map: Optional[list[str]] = _MAP_Q) -> Response:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        loaded = await self.model_for(request)  # the champion, or the variant ?model= / the header names
        t0 = time.perf_counter()
        marks = [("read", t0)]  # Server-Timing: where the request's time went
        files, names = await self._receive(request)
        use_tta, use_post = self._options(tta, postprocess, loaded)
        cost = self._price(files, names, use_tta, loaded)
        ticket = Ticket(cost, float(self.settings["compute_deadline_s"]))
        marks.append(("queue", time.perf_counter()))
        try:
            async with self.admission.admit(cost):
                marks.append(("decode", time.perf_counter()))
                case, profile, warnings, dicom = await self._decode(files, names, force, label_convention, loaded,
                                                                    output, dicom_map)
                del files
                conv = label_convention or (case.label_convention if len(loaded.predictor.region_names) == 3
                                            else None)
                image, case.image = case.image, None  # free the upload's copy
                t1 = time.perf_counter()
                marks.append(("infer", t1))
                if self.admission.is_heavy(cost):  # alone, outside the batches: plain cases never wait for it
                    pred = loaded.predictor.with_settings(tta=use_tta, postprocess=use_post)
                    p = await asyncio.to_thread(pred.predict, image, conv, case.case_id, False, ticket.watch)
                else:
                    p = await self._infer((image, conv, use_tta, use_post, ticket, loaded.predictor))
                del image
                self.admission.observe(cost, time.perf_counter() - t1)
        except Busy as e:
            raise HTTPProblem(503, "busy", e.detail, headers={"Retry-After": str(e.retry_after_s)}) from None
        except Abandoned as e:
            self.stats["abandoned"] += 1
            raise HTTPProblem(504, "compute deadline", f"segmentation ended: {e} (compute_deadline_s); submit long "
                              "cases as a job (POST /v1/jobs)") from None
        except asyncio.CancelledError:  # the client went away: the batch stops once nobody in it waits
            ticket.cancel()
            raise
        from singr.data.input_check import check_prediction

        self.stats["requests"] += 1
        applied = use_post and loaded.predictor.postprocess is not None
        warnings = warnings + check_prediction(p.region_names, p.regions, profile)
        marks.append(("render", time.perf_counter()))
        headers, summary, data, name = await asyncio.to_thread(render, case, p, output, use_tta, applied,
                                                               loaded.identity, warnings, dicom)
        marks.append(("", time.perf_counter()))
        headers["Server-Timing"] = ", ".join(f"{a};dur={1000 * (tb - ta):.0f}" for (a, ta), (_, tb)
                                             in zip(marks, marks[1:]))
        log.info("segment %s in %.2f s (%s)", output, time.perf_counter() - t0, headers["Server-Timing"])
        return as_response(headers, summary, data, name)

    @api.post("/v1/scan", tags=["v1"], openapi_extra=_SCAN_BODY, response_class=Response,
              summary="The case as this endpoint reads it, not segmented: one 4-D NIfTI on the label map's grid")
    async def scan(self, request: Request, dicom_map: Optional[list[str]] = _MAP_Q) -> Response:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        loaded = await self.model_for(request)
        files, names = await self._receive(request)
        self._price(files, names, False, loaded)  # 413 over max_voxels before anything is decoded
        case, _, warnings, _ = await self._decode(files, names, True, None, loaded, "nifti", dicom_map)
        headers, data = await asyncio.to_thread(scan_bytes, case, warnings)
        return as_response(headers, {}, data, "scan.nii.gz")

    @api.post("/v1/jobs", tags=["v1"], status_code=202, openapi_extra=_SEGMENT_BODY,
              summary="Segment one case as a job: 202 with the job's id at once; poll GET /v1/jobs/{id}",
              responses={202: {"description": "the job's record: id, status, status_url, result_url"}})
    async def submit_job(self, request: Request, output: _Output = _OUTPUT_Q, label_convention: _Convention = _CONV_Q,
                         tta: Optional[bool] = _TTA_Q, postprocess: Optional[bool] = _POST_Q,
                         force: bool = _FORCE_Q, dicom_map: Optional[list[str]] = _MAP_Q) -> Any:
        self._authorize(request)
        if self.loaded is None:
            return self._not_ready()
        loaded = await self.model_for(request)
        self.jobs.expire()
        if self.jobs.active() >= int(self.settings["max_jobs"]):
            raise HTTPProblem(503, "busy", f"{self.settings['max_jobs']} jobs are queued or running (max_jobs); "
                              "retry later", headers={"Retry-After": "30"})
        files, names = await self._receive(request)
        use_tta, use_post = self._options(tta, postprocess, loaded)
        cost = self._price(files, names, use_tta, loaded)
        case, profile, warnings, dicom = await self._decode(files, names, force, label_convention, loaded, output,
                                                            dicom_map)  # 4xx now
        del files
        ident = loaded.identity
        record = self.jobs.create(output, {"tta": use_tta, "postprocess": use_post, "label_convention":
                                           label_convention, "force": force},
                                  {k: ident.get(k) for k in ("name", "version", "alias")}, cost)
        ticket = Ticket(cost, float(self.settings["job_deadline_s"]))
        self.my_jobs[record["id"]] = ticket
        self.stats["jobs"] += 1
        asyncio.get_running_loop().create_task(
            self._run_job(record["id"], case, profile, warnings, label_convention, use_tta, use_post, output, ticket,
                          loaded, dicom))
        return JSONResponse(record, status_code=202, headers={"Location": record["status_url"]})

    async def _run_job(self, job_id: str, case: Any, profile: Any, warnings: list[str], label_convention: Any,
                       tta: bool, post: bool, output: str, ticket: Ticket, loaded: Any, dicom: Any = None) -> None:
        from singr.data.input_check import check_prediction

        try:
            async with self.admission.admit(ticket.cost, wait_unbounded=True):
                if ticket.cancelled:
                    raise Abandoned("cancelled before it started")
                self.jobs.update(job_id, status="running", started=time.time())
                pred = loaded.predictor.with_settings(tta=tta, postprocess=post)
                conv = label_convention or (case.label_convention if len(pred.region_names) == 3 else None)
                t1 = time.perf_counter()
                p = await asyncio.to_thread(pred.predict, case.image, conv, case.case_id, False, ticket.watch)
                self.admission.observe(ticket.cost, time.perf_counter() - t1)
            warnings = warnings + check_prediction(p.region_names, p.regions, profile)
            applied = post and pred.postprocess is not None
            headers, summary, data, name = await asyncio.to_thread(render, case, p, output, tta, applied,
                                                                   loaded.identity, warnings, dicom)
            if data is not None and name:
                self.jobs.write_result(job_id, name, data)
            self.jobs.write_result(job_id, "result.json", json.dumps({"headers": headers, "summary": summary,
                                                                      "file": name}).encode())
            self.jobs.update(job_id, status="done", progress=1.0, finished=time.time(),
                             volumes_ml=summary["volumes_ml"], warnings=warnings)
        except Abandoned as e:
            self.jobs.update(job_id, status="cancelled" if ticket.cancelled else "failed", finished=time.time(),
                             error=str(e), progress=round(ticket.progress, 3))
        except Exception as e:  # noqa: BLE001 - the job's record says why
            log.exception("job %s failed", job_id)
            self.jobs.update(job_id, status="failed", finished=time.time(), error=f"{type(e).__name__}: {e}")
        finally:
            self.my_jobs.pop(job_id, None)

    async def _heartbeat(self) -> None:
        """Every 2 s: each running job's progress and heartbeat to its record, and its cancel flag
        (a DELETE may reach another replica) to its ticket. All job writes happen on this loop."""
        while True:
            await asyncio.sleep(2.0)
            for job_id, ticket in list(self.my_jobs.items()):
                try:
                    if self.jobs.update(job_id, progress=round(ticket.progress, 3)).get("cancel"):
                        ticket.cancel()
                except Exception as e:  # noqa: BLE001 - a deleted job: nobody waits for it
                    log.warning("job %s: %s", job_id, e)
                    ticket.cancel()

    @api.get("/v1/jobs/{job_id}", tags=["v1"], summary="A job's state: queued, running (with progress), done, "
             "failed or cancelled", responses={404: {"description": "no such job (or expired)"}})
    async def job(self, request: Request, job_id: str) -> Any:
        self._authorize(request)
        return self.jobs.public(self.jobs.get(job_id))

    @api.delete("/v1/jobs/{job_id}", tags=["v1"], status_code=202, summary="Cancel a job (it ends at its next "
                "network call)")
    async def cancel_job(self, request: Request, job_id: str) -> Any:
        self._authorize(request)
        record = self.jobs.cancel(job_id)
        if job_id in self.my_jobs:
            self.my_jobs[job_id].cancel()
        return JSONResponse(self.jobs.public(record), status_code=202)

    @api.get("/v1/jobs/{job_id}/result", tags=["v1"], response_class=Response,
             summary="A finished job's answer: the file of its output, or JSON (?output=json)",
             responses={409: {"description": "the job has not finished, or failed"}})
    async def job_result(self, request: Request, job_id: str,
                         output: Optional[Literal["file", "json"]] = Query(
                             None, description="file (the job's output) or json (volumes and model)")) -> Response:
        self._authorize(request)
        record = self.jobs.get(job_id)
        if record["status"] != "done":
            why = f": {record['error']}" if record.get("error") else f" ({record['progress']:.0%} done)"
            raise HTTPProblem(409, f"job {record['status']}", f"job {job_id} is {record['status']}{why}")
        res = json.loads(self.jobs.result_path(job_id, "result.json").read_text())
        if output == "json" or not res["file"]:
            return JSONResponse(res["summary"], headers=res["headers"])
        return FileResponse(self.jobs.result_path(job_id, res["file"]), media_type=media_type(res["file"]),
                            filename=res["file"], headers=res["headers"])


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
