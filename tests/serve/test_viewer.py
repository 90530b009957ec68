"""The viewer page (serve/static/index.html) in a real browser against the real endpoint.

The session's tiny smoke checkpoint (tests/serve/conftest.py) is served by Ray Serve on a free port
of 127.0.0.1, as in test_endpoint.py (the server fixture is copied, not imported). The system
Chromium (Debian's /usr/bin/chromium, or $SINGR_CHROMIUM) runs headless through Playwright
with software WebGL2 (SwiftShader), which NiiVue needs. With $CI set, a missing browser or
Playwright fails the test instead of skipping it.

The test uploads the small synthetic case through the page, checks that the label overlay
is drawn in the region colours, that the volumes shown equal those of the JSON API, that the
download is the API's label map, that the signed-map toggle draws, that a zip of DICOM series is
segmented and its scan drawn (from POST /v1/scan), that a 415 answer is
shown with its detail, that /docs works from local assets, and that the page asks nothing of
any other origin. The screenshot is kept in the test's tmp dir (the README's pictures are of the real case:
benchmarks/viewer_picture.py).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pytest

from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.serve.conftest import trained_smoke
from tune.nodes import free_port

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

MODS_2020 = ("flair", "t1", "t1ce", "t2")
# region colours of the project (singr/viz.py) and the label values the viewer paints in them
COLOURS = {"TC": (255, 0, 0), "WT": (0, 255, 0), "ET": (255, 255, 0)}
LABEL_OF = {"TC": {1}, "WT": {2}, "ET": {3, 4}}
SEGMENT_TIMEOUT_MS = 240_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _missing(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The browser binary; checked before the model is trained (fail under $CI, else skip)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright for Python is not installed (pip install playwright)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SINGR_CHROMIUM)")
    return CHROMIUM


# --------------------------------------------------------------------------- fixtures (as in test_endpoint.py)


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
             namespace="singr-viewer-test")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = make_app(
            {"model": str(trained["checkpoint"]), "max_upload_mb": 16, "roi_size": [256, 256, 160], "num_threads": 2},
            {"num_replicas": 1, "max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.5}})
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
        yield {"base": base, "port": port, "trained": trained}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture
def browser_context(chromium, tmp_path):
    """A headless Chromium with a new, empty profile; yields (context, requests seen, page errors)."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800}, accept_downloads=True)
        requests: list[str] = []
        errors: list[str] = []
        ctx.on("request", lambda r: requests.append(r.url))
        ctx.on("weberror", lambda e: errors.append(str(e.error)))
        try:
            yield ctx, requests, errors
        finally:
            ctx.close()


# --------------------------------------------------------------------------- helpers

def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels within ``tol`` of ``rgb`` in every channel."""
    return int((np.abs(img - np.asarray(rgb, np.int16)) <= tol).all(-1).sum())


def _page_volumes(page) -> dict[str, tuple[float, str]]:
    rows = page.locator("#volumes tbody tr[data-region]")
    out = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        cell = row.locator("td.ml")
        out[row.get_attribute("data-region")] = (float(cell.get_attribute("data-ml")), cell.inner_text().strip())
    return out


def _wait_done(page, timeout: int = SEGMENT_TIMEOUT_MS) -> str:
    page.wait_for_function("() => ['ok', 'error'].includes(document.getElementById('status').dataset.kind)",
                           timeout=timeout)
    return page.locator("#status").inner_text()


# --------------------------------------------------------------------------- the test

def test_viewer_in_browser(chromium, server, browser_context, tmp_path):
    base = server["base"]
    trained = server["trained"]
    ctx, requests, errors = browser_context
    page = ctx.new_page()
    page.set_default_timeout(60_000)

    # -- the page, the viewer library and the model's identity
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']")
    gl = page.evaluate("""() => { const gl = document.createElement('canvas').getContext('webgl2');
        if (!gl) return null; const e = gl.getExtension('WEBGL_debug_renderer_info');
        return e ? gl.getParameter(e.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); }""")
    assert gl, "no WebGL2 in headless Chromium: NiiVue cannot draw (flags: %s)" % " ".join(CHROMIUM_ARGS)
    print(f"\n[viewer] WebGL2 renderer: {gl}")
    assert page.evaluate("() => !!(window.singrViewer && window.singrViewer.nv)"), page.locator("#status").inner_text()
    page.wait_for_selector("#model[data-state='ok']")
    card = httpx.get(base + "/v1/model", timeout=30).json()
    model_text = page.locator("#model").inner_text()
    for key in ("name", "version", "architecture", "lambda", "delta", "gamma"):
        shown = page.locator(f"#model .model-{key} b").inner_text()
        if isinstance(card[key], (int, float)):
            assert float(shown) == pytest.approx(card[key]), (key, model_text)
        else:
            assert shown.startswith(str(card[key])), (key, model_text)
    legend = page.locator("#legend").inner_text()
    assert all(n in legend for n in ("TC", "WT", "ET")), legend

    # -- upload the case's four files and wait for the overlay
    page.set_input_files("#files", [str(trained["paths"][m]) for m in MODS_2020])
    assert page.locator("#file-list li").count() == 4
    tta = page.locator("#tta").is_checked()
    page.click("#segment")
    status = _wait_done(page)
    assert page.locator("#status").get_attribute("data-kind") == "ok", status
    page.wait_for_selector("#canvas[data-overlay='labels']")
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot))  # the whole page at the default opacity

    # -- the volumes shown are those of the JSON API for the same upload
    files = [(m, (trained["paths"][m].name, trained["small"][m], "application/gzip")) for m in MODS_2020]
    ref = httpx.post(base + "/v1/segment", files=files, params={"output": "json", "tta": str(tta).lower()},
                     timeout=300)
    assert ref.status_code == 200, ref.text
    body = ref.json()
    shown = _page_volumes(page)
    assert set(shown) == set(body["volumes_ml"]) == {"TC", "WT", "ET"}
    for n, v in body["volumes_ml"].items():
        assert shown[n][0] == pytest.approx(v, abs=1e-4), (n, shown[n], v)
        assert shown[n][1] == f"{v:.2f}", (n, shown[n], v)

    # -- the overlay is drawn: at full opacity the canvas holds pixels of the region colours
    page.locator("#opacity").fill("1")
    page.wait_for_timeout(300)
    canvas = _png(page.locator("#canvas").screenshot(path=str(tmp_path / "canvas_labels.png")))
    present = {int(k) for k, c in body["label_counts"].items() if int(k) > 0 and c > 0}
    counts = {n: _near(canvas, rgb) for n, rgb in COLOURS.items()}
    print(f"[viewer] label pixels in the canvas {counts}; label counts {body['label_counts']}")
    assert present, f"the smoke model found no tumour: {body}"
    assert sum(counts[n] for n in COLOURS if LABEL_OF[n] & present) > 500, counts
    for n in COLOURS:  # no colour of a label that is not in the map (the crosshair is blue)
        if not LABEL_OF[n] & present:
            assert counts[n] < 20, (n, counts)
    background = int((canvas.max(-1) - canvas.min(-1) < 10).sum())  # grey scan + black
    assert background > canvas.shape[0] * canvas.shape[1] * 0.3

    # -- the label map download is the API's label map
    with page.expect_download() as dl:
        page.click("#download-labels")
    labels_page = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(Path(dl.value.path()).read_bytes())).dataobj)
    r = httpx.post(base + "/v1/segment", files=files, params={"tta": str(tta).lower()}, timeout=300)
    assert r.status_code == 200
    labels_api = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(r.content)).dataobj)
    np.testing.assert_array_equal(labels_page, labels_api)
    assert dl.value.suggested_filename.endswith("_seg.nii.gz")

    # -- the signed map of a region as a heat map (fetched with ?output=signed)
    page.check("#signed-toggle")
    page.wait_for_selector("#canvas[data-overlay='signed-TC']", timeout=SEGMENT_TIMEOUT_MS)
    assert any("/v1/jobs?output=signed" in u for u in requests)
    signed = _png(page.locator("#canvas").screenshot(path=str(tmp_path / "canvas_signed.png")))
    assert (np.abs(signed - canvas).max(-1) > 30).mean() > 0.01, "the signed map did not change the picture"
    blue = int(((signed[..., 2] > 180) & (signed[..., 0] < 90) & (signed[..., 1] > 60)).sum())
    assert blue > 50, f"no outside (blue) pixels in the signed heat map ({blue})"
    page.select_option("#signed-region", label="WT")
    page.wait_for_selector("#canvas[data-overlay='signed-WT']")
    page.uncheck("#signed-toggle")
    page.wait_for_selector("#canvas[data-overlay='labels']")

    # -- one 4-D file (first channel shown), with mirroring: the volumes of the JSON API again
    arrays = [np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(trained["small"][m])).dataobj) for m in MODS_2020]
    ref_img = nib.Nifti1Image.from_bytes(gzip.decompress(trained["small"]["flair"]))
    four = tmp_path / "case4d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack(arrays, -1).astype(np.float32), ref_img.affine), str(four))
    page.set_input_files("#files", [str(four)])
    assert "4-D" in page.locator("#file-list").inner_text()
    page.check("#tta")
    page.click("#segment")
    status = _wait_done(page)
    assert page.locator("#status").get_attribute("data-kind") == "ok", status
    page.wait_for_selector("#canvas[data-overlay='labels']")
    assert any("/v1/jobs?tta=true" in u for u in requests)  # the viewer segments through jobs
    assert any("/v1/jobs/" in u and u.endswith("/result") for u in requests)
    r = httpx.post(base + "/v1/segment", files=[("image", (four.name, four.read_bytes(), "application/gzip"))],
                   params={"output": "json", "tta": "true"}, timeout=300)
    assert r.status_code == 200 and r.json()["tta"] is True, r.text
    shown = _page_volumes(page)
    for n, v in r.json()["volumes_ml"].items():
        assert shown[n][0] == pytest.approx(v, abs=1e-4), (n, shown[n], v)
    shot4d = _png(page.locator("#canvas").screenshot(path=str(tmp_path / "canvas_4d_tta.png")))
    assert sum(_near(shot4d, rgb) for rgb in COLOURS.values()) > 500
    page.uncheck("#tta")

    # -- a zip of the case's DICOM series: segmented, and the scan drawn from POST /v1/scan (NiiVue reads no DICOM)
    import zipfile

    from singr.io.dicom_write import write_dicom_case

    write_dicom_case(np.stack(arrays).astype(np.float32), ref_img.affine, MODS_2020, tmp_path / "dicom")
    study = tmp_path / "case_dicom.zip"
    with zipfile.ZipFile(study, "w") as zf:
        for p in sorted((tmp_path / "dicom").rglob("*.dcm")):
            zf.write(p, p.relative_to(tmp_path / "dicom").as_posix())
    page.set_input_files("#files", [str(study)])
    assert "DICOM series (zip)" in page.locator("#file-list").inner_text()
    page.click("#segment")
    status = _wait_done(page)
    assert page.locator("#status").get_attribute("data-kind") == "ok", status
    page.wait_for_selector("#canvas[data-overlay='labels']")
    assert any(u.endswith("/v1/scan") for u in requests)
    r = httpx.post(base + "/v1/segment", content=study.read_bytes(), headers={"content-type": "application/zip"},
                   params={"output": "json", "tta": "false"}, timeout=300)
    assert r.status_code == 200, r.text
    shown = _page_volumes(page)
    for n, v in r.json()["volumes_ml"].items():
        assert shown[n][0] == pytest.approx(v, abs=1e-4), (n, shown[n], v)
    shotzip = _png(page.locator("#canvas").screenshot(path=str(tmp_path / "canvas_dicom_zip.png")))
    assert sum(_near(shotzip, rgb) for rgb in COLOURS.values()) > 500
    grey = (shotzip.max(-1) - shotzip.min(-1) < 10) & (shotzip.max(-1) > 30)  # the scan itself, not black
    assert grey.sum() > 2000, int(grey.sum())

    # -- a 4xx answer is shown with the endpoint's detail (a t2 that is not a NIfTI file)
    bad = tmp_path / "bad"
    bad.mkdir()
    paths = []
    for m in MODS_2020:
        p = bad / f"case_{m}.nii.gz"
        p.write_bytes(trained["small"][m] if m != "t2" else b"this is not an image" * 100)
        paths.append(p)
    page.set_input_files("#files", [str(p) for p in paths])
    page.click("#segment")
    status = _wait_done(page)
    r = httpx.post(base + "/v1/segment", files=[(m, (p.name, p.read_bytes(), "application/gzip"))
                                                for m, p in zip(MODS_2020, paths)], timeout=300)
    assert r.status_code == 415, r.text
    assert page.locator("#status").get_attribute("data-kind") == "error"
    assert "415" in status and r.json()["detail"] in status, (status, r.text)
    print(f"[viewer] 415 shown as: {status!r}")
    assert page.locator("#volumes tbody tr").count() == 0

    # -- /docs renders from local assets only
    docs = ctx.new_page()
    docs.goto(base + "/docs")
    docs.wait_for_selector("#swagger-ui .opblock", timeout=60_000)
    html = httpx.get(base + "/docs", timeout=30).text
    assets = ["/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css",
              "/static/swagger/favicon-32x32.png"]
    for a in assets:
        assert a in html, a
        g = httpx.get(base + a, timeout=30)
        assert g.status_code == 200 and len(g.content) > 100, (a, g.status_code)
    assert "/v1/segment" in docs.locator("#swagger-ui").inner_text()
    for a in ("/static/niivue/niivue.umd.js", "/static/viewer.js", "/static/viewer.css"):
        assert httpx.get(base + a, timeout=30).status_code == 200, a

    # -- nothing was asked of another origin; no script errors
    origin = urlsplit(base)
    outside = [u for u in requests if urlsplit(u).scheme not in ("data", "blob")
               and (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)]
    assert not outside, outside
    assert any(u.endswith("/static/niivue/niivue.umd.js") for u in requests)
    assert not errors, errors
    print(f"[viewer] {len(requests)} requests, all to {base}; screenshot {shot}; "
          f"volumes {json.dumps(body['volumes_ml'])}")
