"""The HTTP inference endpoint (serve/): real HTTP on loopback against a Ray Serve app.

CPU only. The session's tiny smoke checkpoint (tests/serve/conftest.py); the application is started
once per module on a free port of 127.0.0.1 in a Ray instance of its own (never
``ray stop``), and shut down at the end. The real BraTS case is read from
$SINGR_BRATS_CASE (default <repo>/../shared/data/brats-case); with $CI set a missing
case fails the test instead of skipping it.
"""
from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import os
import statistics
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.serve.conftest import trained_smoke
from tune.nodes import free_port

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[2]
CASE_DIR = Path(os.environ.get("SINGR_BRATS_CASE") or REPO.parent / "shared" / "data" / "brats-case")
MODS_2020 = ("flair", "t1", "t1ce", "t2")
MODS_2023 = ("t2f", "t1n", "t1c", "t2w")
BRATS_LABELS = {"brats2020": {0, 1, 2, 4}, "brats2023": {0, 1, 2, 3}}
UPLOAD_LIMIT_MB = 16

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]



@pytest.fixture(scope="module")
def trained(request) -> dict:
    """A smoke checkpoint (the session's, tests/serve/conftest.py), and one small synthetic case of its data set."""
    return trained_smoke(request)


@pytest.fixture(scope="module")
def server(trained):
    """Base URL of the running application (checkpoint model)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import serve

    from serve.app import make_app

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="singr-serve-test")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = make_app(
            {"model": str(trained["checkpoint"]), "max_upload_mb": UPLOAD_LIMIT_MB, "max_batch_size": 8,
             "batch_wait_timeout_s": 0.1, "roi_size": [256, 256, 160], "num_threads": 2,
             "max_uploads_per_client": 8},  # the load test's 8 clients share one address (127.0.0.1)
            {"num_replicas": 1, "max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 0.5}})
        serve.run(app, name="singr", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        seen = []
        deadline = time.time() + 120
        with httpx.Client(timeout=30) as c:
            while time.time() < deadline:
                r = c.get(base + "/v1/health")
                seen.append(r.status_code)
                if r.status_code == 200:
                    break
                time.sleep(0.3)
        assert seen and seen[-1] == 200, f"never ready: {seen}"
        assert set(seen) <= {200, 503}, seen
        yield {"base": base, "port": port, "trained": trained}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _post(base: str, files, params=None, timeout=300, endpoint: str = "/v1/segment", **kw) -> httpx.Response:
    return httpx.post(base + endpoint, files=files, params=params, timeout=timeout, **kw)


def _as_files(mapping: dict[str, bytes], names: dict[str, str] | None = None):
    """httpx multipart list: field = modality, file name = names[m] or '<m>.nii.gz'."""
    return [(m, ((names or {}).get(m, f"{m}.nii.gz"), data, "application/gzip")) for m, data in mapping.items()]


def _nii_bytes(array: np.ndarray, affine: np.ndarray | None = None, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def _load_nii(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def _check_label_map(r: httpx.Response, shape, affine, convention: str) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    img = _load_nii(r.content)
    arr = np.asarray(img.dataobj)
    assert arr.shape == tuple(shape)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert set(np.unique(arr).tolist()) <= BRATS_LABELS[convention]
    vols = json.loads(r.headers["x-volumes-ml"])
    assert set(vols) == {"TC", "WT", "ET"}
    for n, v in vols.items():
        assert float(r.headers[f"x-volume-{n.lower()}-ml"]) == pytest.approx(v, abs=1e-3)
        assert v >= 0
    return arr


# --------------------------------------------------------------------------- good requests

def _real_case() -> Path:
    if not all((CASE_DIR / f"{m}.nii.gz").is_file() for m in MODS_2023):
        msg = f"real BraTS case not found in {CASE_DIR} (set SINGR_BRATS_CASE)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CASE_DIR


@pytest.mark.realdata
def test_segment_real_case(server):
    case = _real_case()
    files = [(f"upload{i}", (f"{m}.nii.gz", (case / f"{m}.nii.gz").read_bytes(), "application/gzip"))
             for i, m in enumerate(MODS_2023)]  # modality from the file name (BraTS 2023 names)
    ref = nib.load(str(case / "t1n.nii.gz"))
    t0 = time.perf_counter()
    r = _post(server["base"], files, params={"label_convention": "brats2023"})
    dt = time.perf_counter() - t0
    arr = _check_label_map(r, ref.shape, ref.affine, "brats2023")
    assert r.headers["x-label-convention"] == "brats2023"
    img = _load_nii(r.content)
    assert img.header.get_zooms()[:3] == pytest.approx(ref.header.get_zooms()[:3])
    print(f"\n[serve] full-size case {ref.shape}: {dt:.2f} s end to end; labels {np.unique(arr).tolist()}; "
          f"volumes {r.headers['x-volumes-ml']}")


def test_json_and_signed_outputs(server):
    small = server["trained"]["small"]
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
    r = _post(server["base"], _as_files(small), params={"output": "json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["volumes_ml"]) == {"TC", "WT", "ET"}
    assert body["shape"] == list(ref.shape)
    assert body["model"]["name"] == "best" and body["model"]["architecture"] == "unet3d"
    assert body["model"]["lambda"] == pytest.approx(0.5)

    r = _post(server["base"], _as_files(small), params={"output": "signed"})
    assert r.status_code == 200, r.text
    img = _load_nii(r.content)
    sig = np.asarray(img.dataobj)
    assert sig.shape == tuple(ref.shape) + (3,)
    assert np.isfinite(sig).all() and sig.min() >= -1 and sig.max() <= 1
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)

    # the label map agrees with the signed maps (region = signed >= 0), BraTS 2020 labels
    r = _post(server["base"], _as_files(small))
    lab = _check_label_map(r, ref.shape, ref.affine, "brats2020")
    assert ((lab > 0) == (sig >= 0).any(-1)).mean() > 0.999


def test_one_4d_file_and_2023_names(server):
    small = server["trained"]["small"]
    arrays = [np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(small[m])).dataobj) for m in MODS_2020]
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
    four = _nii_bytes(np.stack(arrays, -1).astype(np.float32), ref.affine)
    r = _post(server["base"], [("image", ("case.nii.gz", four, "application/gzip"))])
    a = _check_label_map(r, ref.shape, ref.affine, "brats2020")
    # raw body, and the same scans under BraTS 2023 field names, give the same labels
    r2 = httpx.post(server["base"] + "/v1/segment", content=four, headers={"content-type": "application/gzip"},
                    timeout=120)
    np.testing.assert_array_equal(_check_label_map(r2, ref.shape, ref.affine, "brats2020"), a)
    # BraTS 2023 names: the labels come back in the 2023 convention (ET = 3), same regions
    r3 = _post(server["base"], [(m23, ("x.nii.gz", small[m], "application/gzip"))
                                for m, m23 in zip(MODS_2020, MODS_2023)])
    b = _check_label_map(r3, ref.shape, ref.affine, "brats2023")
    assert r3.headers["x-label-convention"] == "brats2023"
    np.testing.assert_array_equal(np.where(b == 3, 4, b), a)


def test_odd_but_valid_inputs(server):
    """Uncompressed .nii uploads, integer data and a volume smaller than the network's window."""
    rng = np.random.default_rng(1)
    aff = np.diag([0.9, 0.9, 2.5, 1.0])
    tiny = {m: _nii_bytes((rng.random((3, 5, 2)) * 100).astype(np.int16), aff, gz=False) for m in MODS_2020}
    files = [(m, (f"{m}.nii", d, "application/octet-stream")) for m, d in tiny.items()]
    # noise that fills the field of view at 2.5 mm is not BraTS-space input: refused, and segmented on request
    refused = _post(server["base"], files)
    assert refused.status_code == 422 and refused.json()["error"] == "not brain-like input", refused.text[:300]
    assert "skull-stripped" in refused.json()["detail"] and "force=true" in refused.json()["detail"]
    r = _post(server["base"], files, params={"force": "true"})
    _check_label_map(r, (3, 5, 2), aff, "brats2020")
    warned = json.loads(r.headers["x-input-warnings"])
    assert any("non-zero" in w for w in warned) and any("voxel size" in w for w in warned), warned


def test_health_model_and_docs(server):
    base = server["base"]
    h = httpx.get(base + "/v1/health", timeout=30)
    assert h.status_code == 200 and h.json()["status"] == "ready"
    m = httpx.get(base + "/v1/model", timeout=30).json()
    for key in ("name", "version", "lambda", "delta", "gamma", "architecture", "modalities", "spacing"):
        assert key in m, key
    assert m["modalities"] == list(MODS_2020) and m["modalities_brats2023"] == list(MODS_2023)
    assert m["architecture"] == "unet3d" and m["region_names"] == ["TC", "WT", "ET"]
    spec = httpx.get(base + "/openapi.json", timeout=30).json()
    assert {"/v1/segment", "/v1/scan", "/v1/health", "/v1/model"} <= set(spec["paths"])
    scan = spec["paths"]["/v1/scan"]["post"]
    assert "application/zip" in scan["requestBody"]["content"] and "X-Modalities" in scan["responses"]["200"]["headers"]
    assert httpx.get(base + "/docs", timeout=30).status_code == 200


def test_replica_is_ready_when_constructed_and_reports_a_failed_load(trained):
    """In-process (no Ray): the (async) constructor returns once the model is loaded, so Serve
    routes nothing to a loading replica; a model that cannot load is a 503 with the reason and
    an unhealthy replica for Serve's health check."""
    import serve.app as sa

    # the user class under Serve's ingress wrapper
    cls = next(c for c in sa.SingrSegmenter.func_or_class.__mro__ if "_load" in vars(c))
    assert inspect.iscoroutinefunction(cls.__init__)

    def build(**kw):
        obj = object.__new__(cls)
        asyncio.run(cls.__init__(obj, **kw))
        return obj

    obj = build(model=str(trained["checkpoint"]), device="cpu")
    assert obj.loaded is not None and asyncio.run(obj.health())["status"] == "ready"
    obj.check_health()
    bad = build(model=str(trained["work"] / "nope.safetensors"))
    r = asyncio.run(bad.health())
    assert r.status_code == 503 and "not found" in json.loads(r.body)["detail"]
    assert asyncio.run(bad.model(types.SimpleNamespace(headers={}))).status_code == 503
    with pytest.raises(RuntimeError, match="failed to load"):  # Serve's health check marks it unhealthy
        bad.check_health()


def test_postprocess_query_switches_a_bundles_rules_off(server, tmp_path):
    """A model folder whose rules remove every tumour component: applied by default (the model's
    infer.postprocess), skipped with ?postprocess=false, which gives the bare checkpoint's labels."""
    from ray import serve

    from serve.app import make_app
    from singr.engine.bundle import write_bundle

    trained = server["trained"]
    wipe = {"min_component_voxels": {"WT": 10**9}, "et_min_voxels": 0}
    bundle = write_bundle(tmp_path / "wipe", [trained["checkpoint"]], postprocess=wipe)
    base = server["base"] + "/rules"
    serve.run(make_app({"model": str(bundle), "roi_size": [256, 256, 160], "num_threads": 1},
                       {"ray_actor_options": {"num_cpus": 0.5}}), name="rules", route_prefix="/rules")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and httpx.get(base + "/v1/health", timeout=30).status_code != 200:
            time.sleep(0.3)
        assert httpx.get(base + "/v1/model", timeout=30).json()["postprocess"]["min_component_voxels"] == {"WT": 10**9}
        small = trained["small"]
        ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
        plain = _post(server["base"], _as_files(small), params={"output": "json"}).json()  # checkpoint: no rules
        assert plain["postprocess"] is False and plain["volumes_ml"]["WT"] > 0  # something for the rules to remove
        ruled = _post(base, _as_files(small), params={"output": "json"})
        assert ruled.status_code == 200, ruled.text
        assert ruled.json()["postprocess"] is True and ruled.headers["x-postprocess"] == "true"
        assert ruled.json()["volumes_ml"] == {"TC": 0.0, "WT": 0.0, "ET": 0.0}
        raw = _post(base, _as_files(small), params={"output": "json", "postprocess": "false"})
        assert raw.json()["postprocess"] is False and raw.headers["x-postprocess"] == "false"
        assert raw.json()["volumes_ml"] == plain["volumes_ml"]
        # the label maps: all background with the rules, the checkpoint's without
        r = _post(base, _as_files(small))
        assert not _check_label_map(r, ref.shape, ref.affine, "brats2020").any()
        r = _post(base, _as_files(small), params={"postprocess": "false", "tta": "false"})
        np.testing.assert_array_equal(_check_label_map(r, ref.shape, ref.affine, "brats2020"),
                                      _load_nii(_post(server["base"], _as_files(small)).content).dataobj)
        bad = _post(base, _as_files(small), params={"postprocess": "maybe"})
        assert bad.status_code == 422 and "postprocess" in bad.json()["detail"]
    finally:
        serve.delete("rules")


# --------------------------------------------------------------------------- bad requests

def _bad_cases(small: dict[str, bytes]) -> list[tuple[str, dict, int, str]]:
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
    aff = ref.affine
    vol = np.asarray(ref.dataobj).astype(np.float32)
    nan = vol.copy()
    nan[1, 2, 3] = np.nan
    shifted = aff.copy()
    shifted[0, 3] += 5.0
    raw_nii = gzip.decompress(small["t2"])
    three = {m: small[m] for m in MODS_2020[:3]}

    def files(**over):
        d = dict(small)
        d.update(over)
        return {"files": _as_files({k: v for k, v in d.items() if v is not None})}

    return [
        ("not a NIfTI", {"files": _as_files({**three, "t2": b"this is not an image" * 100})}, 415, "NIfTI"),
        ("named .gz, not gzip", {"files": _as_files({**three, "t2": raw_nii})}, 415, "not gzip"),
        ("corrupt gzip", {"files": _as_files({**three, "t2": small["t2"][:200]})}, 415, "gzip"),
        ("gzip of text", {"files": _as_files({**three, "t2": gzip.compress(b"hello" * 200)})}, 415, "NIfTI"),
        ("missing modality", {"files": _as_files(three)}, 422, "missing modalities ['t2']"),
        ("extra unknown modality", files(dwi=small["t2"]), 422, "cannot tell which modality"),
        ("modality twice", files(t2f=small["flair"]), 422, "given twice"),
        ("shapes disagree", files(t2=_nii_bytes(vol[:, :, :-2], aff)), 422, "shape"),
        ("affines disagree", files(t2=_nii_bytes(vol, shifted)), 422, "affine"),
        ("2-D image", files(t2=_nii_bytes(vol[:, :, 0], aff)), 422, "2-D"),
        ("NaN voxels", files(t2=_nii_bytes(nan, aff)), 422, "NaN"),
        ("text field", {"files": _as_files(three), "data": {"t2": "hello"}}, 422, "not a file"),
        ("no files", {"content": b"--b--\r\n", "headers": {"content-type": "multipart/form-data; boundary=b"}},
         422, "no files"),
        ("wrong content type", {"json": {"flair": "x"}}, 415, "multipart"),
        ("4-D with 2 channels", {"files": [("image", ("x.nii.gz", _nii_bytes(np.stack([vol, vol], -1), aff),
                                                     "application/gzip"))]}, 422, "4-D with 4 channels"),
        ("over the size limit", {"files": _as_files({**three, "t2": os.urandom((UPLOAD_LIMIT_MB + 1) << 20)})},
         413, "limit"),
        ("bad output option", {"files": _as_files(small), "params": {"output": "png"}}, 422, "output"),
    ]


def test_bad_inputs_get_4xx_and_server_keeps_serving(server):
    small = server["trained"]["small"]
    for name, kw, status, text in _bad_cases(small):
        kw = dict(kw)
        files = kw.pop("files", None)
        params = kw.pop("params", None)
        r = httpx.post(server["base"] + "/v1/segment", files=files, params=params, timeout=120, **kw)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
        body = r.json()
        msg = json.dumps(body)
        assert text.lower() in msg.lower(), f"{name}: {msg}"
        if status != 422 or "detail" in body and isinstance(body["detail"], str):
            assert body.get("error") and body.get("detail"), f"{name}: {body}"
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
    _check_label_map(_post(server["base"], _as_files(small)), ref.shape, ref.affine, "brats2020")
    assert httpx.get(server["base"] + "/v1/health", timeout=30).status_code == 200


# --------------------------------------------------------------------------- load

def test_concurrent_load(server):
    """8 concurrent clients x 4 requests each of a small case: all 200 and correct."""
    small = server["trained"]["small"]
    ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
    expected = np.asarray(_load_nii(_post(server["base"], _as_files(small)).content).dataobj)
    before = httpx.get(server["base"] + "/v1/health", timeout=30).json()

    def client(_: int) -> list[float]:
        times = []
        with httpx.Client(timeout=300) as c:
            for _ in range(4):
                t0 = time.perf_counter()
                r = c.post(server["base"] + "/v1/segment", files=_as_files(small))
                times.append(time.perf_counter() - t0)
                arr = _check_label_map(r, ref.shape, ref.affine, "brats2020")
                np.testing.assert_array_equal(arr, expected)
        return times

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        lat = sorted(t for ts in pool.map(client, range(8)) for t in ts)
    wall = time.perf_counter() - t0
    after = httpx.get(server["base"] + "/v1/health", timeout=30).json()
    assert len(lat) == 32
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    print(f"\n[serve] load test 8 clients x 4 requests {ref.shape}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"wall {wall:.1f} s, {32 / wall:.1f} req/s; forward batches {after['batches'] - before['batches']}, "
          f"largest batch {after['largest_batch']}")


# --------------------------------------------------------------------------- MLflow registry

def test_load_from_mlflow_registry(server, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from ray import serve

    from serve.app import make_app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("serve-test", artifact_location=(tmp_path / "artifacts").as_uri())

        class Wrapper(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return model_input

        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(name="model", python_model=Wrapper(),
                                           artifacts={"checkpoint": str(server["trained"]["checkpoint"])},
                                           pip_requirements=["mlflow"], registered_model_name="singr-test")
        client = MlflowClient(tracking_uri=uri)
        version = info.registered_model_version or client.search_model_versions("name='singr-test'")[0].version
        client.set_registered_model_alias("singr-test", "champion", str(version))
    finally:
        mlflow.set_tracking_uri(None)

    base = server["base"] + "/registry"
    serve.run(make_app({"model": "singr-test@champion", "tracking_uri": uri}, {"ray_actor_options": {"num_cpus": 0.5}}),
              name="registry", route_prefix="/registry")
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            r = httpx.get(base + "/v1/health", timeout=30)
            if r.status_code == 200 or (r.status_code == 503 and r.json().get("error") == "model failed to load"):
                break
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        m = httpx.get(base + "/v1/model", timeout=30).json()
        assert m["source"] == "mlflow" and m["name"] == "singr-test" and m["alias"] == "champion"
        assert m["version"] == str(version) and m["architecture"] == "unet3d"
        small = server["trained"]["small"]
        ref = nib.Nifti1Image.from_bytes(gzip.decompress(small["flair"]))
        r = httpx.post(base + "/v1/segment", files=_as_files(small), timeout=120)
        _check_label_map(r, ref.shape, ref.affine, "brats2020")
        assert r.headers["x-model-name"] == "singr-test" and r.headers["x-model-version"] == str(version)
    finally:
        serve.delete("registry")


# --------------------------------------------------------------------------- DICOM in, DICOM SEG out

DICOM_CROP = (slice(60, 180), slice(60, 180), slice(50, 90))


def _dicom_study(tmp_path: Path) -> tuple[dict[str, bytes], Path, bytes]:
    """The cropped real case as NIfTI bytes (BraTS 2020 names) and as four DICOM MR series of one
    study (a folder, and its zip's bytes)."""
    import io
    import zipfile

    from singr.data.readers import load_case_from_files
    from singr.io.dicom_write import write_dicom_case

    case = _real_case()
    real = load_case_from_files({m: case / f"{m}.nii.gz" for m in MODS_2023}, case_id="real")
    image = real.image[(slice(None),) + DICOM_CROP]
    aff = real.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ [s.start for s in DICOM_CROP]
    nifti = {m: _nii_bytes(image[i], aff) for i, m in enumerate(real.modalities)}  # flair, t1, t1ce, t2
    folder = tmp_path / "dicom-case"
    write_dicom_case(image, aff, real.modalities, folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.dcm")):
            zf.write(p, p.relative_to(folder).as_posix())
    return nifti, folder, buf.getvalue()


@pytest.mark.realdata
def test_dicom_zip_in_and_dicom_seg_out_agree_with_the_nifti_answer(server, tmp_path):
    from singr.data.readers.dicom import read_dicom_case
    from singr.io.dicom_seg import read_dicom_seg

    base = server["base"]
    nifti, folder, study = _dicom_study(tmp_path)
    opts = {"force": "true", "label_convention": "brats2023"}  # the smoke model was trained at another scale
    ref_r = _post(base, _as_files(nifti), params=opts)
    ref_img = _load_nii(ref_r.content)
    ref = np.asarray(ref_img.dataobj)
    assert ref_r.status_code == 200 and ref.shape == (120, 120, 40)

    # the zip as the raw body: the NIfTI label map on the series' grid, voxel for voxel the NIfTI answer
    r = httpx.post(base + "/v1/segment", content=study, headers={"content-type": "application/zip"}, params=opts,
                   timeout=300)
    assert r.status_code == 200, r.text
    img = _load_nii(r.content)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ref)
    np.testing.assert_allclose(img.affine, ref_img.affine, atol=1e-4)

    # the scan as read, not segmented (POST /v1/scan: what the viewer shows for a zip), on the label map's grid
    s = httpx.post(base + "/v1/scan", content=study, headers={"content-type": "application/zip"}, timeout=120)
    assert s.status_code == 200, s.text
    assert s.headers["x-modalities"] == "flair,t1,t1ce,t2" and "x-volumes-ml" not in s.headers
    scan = _load_nii(s.content)
    assert scan.shape == (120, 120, 40, 4) and scan.get_data_dtype() == np.int16  # DICOM pixels: whole numbers
    np.testing.assert_allclose(scan.affine, ref_img.affine, atol=1e-4)
    read, _ = read_dicom_case(folder)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(scan.dataobj), -1, 0), read.image)
    s = _post(base, _as_files(nifti), endpoint="/v1/scan")  # NIfTI input: the same volumes (the real case is int16)
    assert s.status_code == 200 and s.headers["x-modalities"] == "flair,t1,t1ce,t2", s.text
    np.testing.assert_array_equal(np.asarray(_load_nii(s.content).dataobj),
                                  np.stack([np.asarray(_load_nii(nifti[m]).dataobj) for m in MODS_2020], -1))
    s = _post(base, _as_files(nifti), endpoint="/v1/scan", params={"dicom_map": "t1ce=3"})
    assert s.status_code == 422 and "needs DICOM input" in s.json()["detail"], s.text

    # the zip as the one file of a form, answered as a DICOM SEG that references the uploaded series
    r = _post(base, [("study", ("study.zip", study, "application/zip"))], params={**opts, "output": "dicom-seg"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom" and 'filename="seg.dcm"' in r.headers["content-disposition"]
    assert json.loads(r.headers["x-volumes-ml"]) == json.loads(ref_r.headers["x-volumes-ml"])
    (tmp_path / "seg.dcm").write_bytes(r.content)
    _, series = read_dicom_case(folder)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", series.datasets()), ref)

    # as a job: the same SEG from its result
    j = httpx.post(base + "/v1/jobs", content=study, headers={"content-type": "application/zip"},
                   params={**opts, "output": "dicom-seg"}, timeout=120)
    assert j.status_code == 202, j.text
    deadline = time.time() + 180
    while (rec := httpx.get(base + j.json()["status_url"], timeout=30).json())["status"] not in ("done", "failed"):
        assert time.time() < deadline, rec
        time.sleep(0.3)
    assert rec["status"] == "done", rec
    res = httpx.get(base + rec["result_url"], timeout=60)
    assert res.headers["content-type"] == "application/dicom"
    (tmp_path / "job.dcm").write_bytes(res.content)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "job.dcm", series.datasets()), ref)


@pytest.mark.realdata
def test_bad_dicom_uploads_get_4xx_naming_what_is_wrong(server, tmp_path):
    import io
    import zipfile

    base = server["base"]
    nifti, folder, study = _dicom_study(tmp_path)
    r = _post(base, _as_files(nifti), params={"output": "dicom-seg", "force": "true"})
    assert r.status_code == 422 and "needs DICOM input" in r.json()["detail"]
    r = _post(base, _as_files(nifti), params={"dicom_map": "t1ce=3", "force": "true"})
    assert r.status_code == 422 and "?dicom_map needs DICOM input" in r.json()["detail"]
    r = _post(base, [("study", ("study.zip", study, "application/zip")), *_as_files({"t2": nifti["t2"]})])
    assert r.status_code == 422 and "comes alone" in r.json()["detail"]
    buf = io.BytesIO()  # three of the four series
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.dcm")):
            if not p.parent.name.endswith("_flair"):  # write_dicom_case's folders: 1_flair, 2_t1, ...
                zf.write(p, p.relative_to(folder).as_posix())
    r = httpx.post(base + "/v1/segment", content=buf.getvalue(), headers={"content-type": "application/zip"},
                   params={"force": "true"}, timeout=120)
    body = r.json()
    assert r.status_code == 422 and "flair" in body["detail"].lower(), body
    assert "/tmp" not in json.dumps(body) and body["file"] == "upload.zip"  # no path of the server
    r = httpx.post(base + "/v1/segment", content=b"PK\x03\x04 not really a zip", timeout=60,
                   headers={"content-type": "application/zip"})
    assert r.status_code == 422 and "not a readable zip" in r.json()["detail"]
    assert httpx.get(base + "/v1/health", timeout=30).status_code == 200
