/* SiNGR viewer: posts a case to the endpoint of this page's own origin and shows the result
 * with NiiVue (vendored in static/niivue/, no CDN, no build step).
 *
 *   files (4 modalities or one 4-D NIfTI) --POST v1/segment--> label map .nii.gz (+ X-Volumes-ml)
 *   a zip of DICOM series              the same, and --POST v1/scan--> the scan as the endpoint read it
 *                                      (4-D NIfTI): NiiVue reads no DICOM here, the endpoint converts
 *   signed toggle / download        --POST v1/segment?output=signed--> 4-D signed maps (TC, WT, ET)
 *   page load / API key change      --GET  v1/model--> name, version, lambda, delta, gamma
 *
 * Every URL is relative, so the page works wherever the endpoint is served from.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const el = {
    files: $("files"), drop: $("drop"), fileList: $("file-list"), tta: $("tta"), apiKey: $("api-key"),
    segment: $("segment"), status: $("status"), volumes: $("volumes"), legend: $("legend"), model: $("model"),
    resultMeta: $("result-meta"), view: $("view"), opacity: $("opacity"), opacityValue: $("opacity-value"),
    signedToggle: $("signed-toggle"), signedRegion: $("signed-region"), signedLegend: $("signed-legend"),
    downloadLabels: $("download-labels"), downloadSigned: $("download-signed"), canvas: $("canvas"),
    location: $("location"),
  };

  // Region colours of the project (singr/viz.py): TC red, WT lime, ET yellow.
  const COLOURS = { TC: [255, 0, 0], WT: [0, 255, 0], ET: [255, 255, 0], FG: [0, 255, 0] };
  // Label map values -> colour: 1 necrosis (TC only) red, 2 oedema (WT only) lime,
  // 4 (BraTS 2020) or 3 (BraTS 2023) enhancing tumour (ET) yellow.
  const LABEL_LUT = {
    R: [0, 255, 0, 255, 255], G: [0, 0, 255, 255, 255], B: [0, 0, 0, 0, 0], A: [0, 255, 255, 255, 255],
    I: [0, 1, 2, 3, 4], labels: ["", "necrosis (TC)", "oedema (WT)", "enhancing (ET)", "enhancing (ET)"],
  };
  const BINARY_LUT = { R: [0, 0], G: [0, 255], B: [0, 0], A: [0, 255], I: [0, 1], labels: ["", "tumour"] };
  // Signed maps in [-1, 1]: far outside transparent, outside blue, the uncertain border (0)
  // white, inside orange to dark red. cal_min/cal_max = -1/1 map onto I = 0..255.
  const SIGNED_CMAP = {
    R: [0, 0, 255, 255, 200], G: [60, 120, 255, 150, 0], B: [255, 255, 255, 0, 0],
    A: [0, 110, 255, 220, 230], I: [0, 77, 128, 179, 255],
  };
  const ALIASES = {
    flair: "flair", t1: "t1", t1ce: "t1ce", t2: "t2", t2f: "flair", t1n: "t1", t1c: "t1ce", t2w: "t2",
    t2flair: "flair", t2_flair: "flair", "t2-flair": "flair", fla: "flair", t1w: "t1", t1native: "t1",
    native: "t1", t1gd: "t1ce", t1post: "t1ce", t1contrast: "t1ce", t1wce: "t1ce", t2weighted: "t2",
  };

  const state = {
    files: [],          // [{file, key, canonical}]
    model: null,        // /v1/model JSON
    nv: null,           // Niivue instance (null when WebGL2 is missing)
    result: null,       // {labels: ArrayBuffer, volumes, convention, regions, tta, form, caseName, ...}
    signed: null,       // ArrayBuffer of the 4-D signed maps for state.result
    volLabels: null, volSigned: null,
    busy: false,
  };

  // ------------------------------------------------------------------ messages

  function setStatus(text, kind) {
    el.status.textContent = text;
    el.status.className = "status" + (kind ? " " + kind : "");
    el.status.dataset.kind = kind || "";
  }

  /** A readable message for a non-2xx answer: the endpoint's JSON {error, detail, file, case}. */
  async function problemMessage(resp) {
    let body = null;
    try { body = await resp.clone().json(); } catch (_) { /* not JSON */ }
    let msg = `${resp.status} ${resp.statusText || ""}`.trim();
    if (body && typeof body === "object") {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      msg = `${resp.status} ${body.error || resp.statusText || "error"}: ${detail}`;
      if (body.file) msg += ` (file: ${body.file})`;
      if (body.case) msg += ` (case: ${body.case})`;
    } else {
      try { const t = (await resp.text()).trim(); if (t) msg += `: ${t.slice(0, 300)}`; } catch (_) { /* ignore */ }
    }
    if (resp.status === 401) msg += "\nEnter the endpoint's API key above and try again.";
    else if (resp.status === 503) msg += `\nThe endpoint is busy or loading; retry in ${resp.headers.get("Retry-After") || "a few"} s.`;
    else if (resp.status === 413) msg += "\nThe upload is over the endpoint's size limit.";
    else if (resp.status === 408) msg += "\nThe upload was too slow; check the connection and retry.";
    return msg;
  }

  function headers() {
    const h = {};
    const key = el.apiKey.value.trim();
    if (key) h["X-API-Key"] = key;
    return h;
  }

  // ------------------------------------------------------------------ model identity

  const fmt = (v) => (v === null || v === undefined ? "?" : String(v));

  async function loadModel() {
    try {
      const r = await fetch("v1/model", { headers: headers(), cache: "no-store" });
      if (r.status === 503 && r.headers.get("Retry-After")) {  // still loading: ask again
        el.model.textContent = "model: the endpoint is loading it\u2026";
        el.model.dataset.state = "loading";
        setTimeout(loadModel, 1000 * (Number(r.headers.get("Retry-After")) || 2));
        return;
      }
      if (!r.ok) {
        el.model.textContent = "model: " + (r.status === 401 ? "enter the API key to see it" : await problemMessage(r));
        el.model.dataset.state = "error";
        return;
      }
      const m = await r.json();
      state.model = m;
      el.model.dataset.state = "ok";
      el.model.dataset.name = fmt(m.name);
      el.model.dataset.version = fmt(m.version);
      el.model.innerHTML = "";
      const parts = [
        ["model", m.name], ["version", m.version + (m.alias ? ` (@${m.alias})` : "")], ["architecture", m.architecture],
        ["\u03bb", m.lambda], ["\u03b4", m.delta], ["\u03b3", m.gamma],
      ];
      parts.forEach(([k, v], i) => {
        if (i) el.model.append(" \u00b7 ");
        const span = document.createElement("span");
        span.className = "model-" + (["name", "version", "architecture", "lambda", "delta", "gamma"][i]);
        span.append(k + " ");
        const b = document.createElement("b");
        b.textContent = fmt(v);
        span.append(b);
        el.model.append(span);
      });
      if (m.inference && typeof m.inference.tta === "boolean" && !el.tta.dataset.touched) el.tta.checked = m.inference.tta;
      const regions = m.region_names || ["TC", "WT", "ET"];
      el.signedRegion.innerHTML = "";
      regions.forEach((n, i) => {
        const o = document.createElement("option");
        o.value = String(i);
        o.textContent = n;
        el.signedRegion.append(o);
      });
      for (const li of el.legend.querySelectorAll("li")) li.hidden = !regions.includes(li.dataset.region);
    } catch (e) {
      el.model.textContent = "model: the endpoint cannot be reached (" + e.message + ")";
      el.model.dataset.state = "error";
    }
  }

  // ------------------------------------------------------------------ files

  function modalityOf(name) {
    const canon = (k) => {
      k = k.trim().toLowerCase();
      return ALIASES[k] || ALIASES[k.replace(/[^a-z0-9]/g, "")] || null;
    };
    const base = name.split(/[\\/]/).pop();
    const stem = base.replace(/\.(nii(\.gz)?|gz)$/i, "");
    for (const c of [stem, stem.split(/[-_.\s]/).pop()]) {
      const m = canon(c);
      if (m) return { key: c.toLowerCase(), canonical: m };
    }
    return { key: null, canonical: null };
  }

  const isZip = (name) => /\.zip$/i.test(name);

  function caseName(files) {
    const f = files[0] && files[0].file.name.replace(/\.(nii(\.gz)?|gz|zip)$/i, "");
    if (!f) return "case";
    const trimmed = files[0].key ? f.replace(new RegExp("[-_.]?" + files[0].key + "$", "i"), "") : f;
    return trimmed || "case";
  }

  function setFiles(list) {
    state.files = Array.from(list).map((file) => ({ file, ...modalityOf(file.name) }));
    el.fileList.innerHTML = "";
    for (const f of state.files) {
      const li = document.createElement("li");
      const n = document.createElement("span");
      n.textContent = f.file.name;
      const m = document.createElement("span");
      m.className = "mod" + (f.canonical ? "" : state.files.length === 1 ? "" : " unknown");
      m.textContent = f.canonical || (state.files.length === 1
        ? (isZip(f.file.name) ? "DICOM series (zip)" : "4-D (all modalities)") : "unknown modality");
      li.append(n, m);
      el.fileList.append(li);
    }
    el.segment.disabled = state.files.length === 0 || state.busy;
    if (state.files.length) {
      const unknown = state.files.length > 1 && state.files.some((f) => !f.canonical);
      setStatus(unknown ? "Some file names do not name a modality (flair/t1/t1ce/t2 or t2f/t1n/t1c/t2w); "
                          + "the endpoint will say which." : `${state.files.length} file(s) ready: press Segment.`,
                unknown ? "" : "");
    }
  }

  function formData() {
    const fd = new FormData();
    const single = state.files.length === 1 && !state.files[0].canonical;
    state.files.forEach((f, i) => fd.append(f.key || (single ? "image" : `file${i}`), f.file, f.file.name));
    return fd;
  }

  // ------------------------------------------------------------------ viewer

  async function initViewer() {
    if (!window.niivue || !window.niivue.Niivue) {
      setStatus("The viewer library (static/niivue/niivue.umd.js) did not load; results are still shown as numbers.", "error");
      return;
    }
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) {
      setStatus("This browser has no WebGL2, so the images cannot be shown; volumes and downloads still work.", "error");
      return;
    }
    const nv = new window.niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.6, 1.0, 0.6], crosshairWidth: 0.4, crosshairWidthUnit: "percent",
      show3Dcrosshair: false,
      dragAndDropEnabled: false, isColorbar: false, showLegend: false, isOrientCube: false,
      multiplanarShowRender: 0 /* never: three 2-D views */, multiplanarLayout: 0, isRadiologicalConvention: false,
      logLevel: "warn", loadingText: "drop a case on the left",
    });
    await nv.attachToCanvas(el.canvas);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.addColormap("singr-signed", SIGNED_CMAP);
    nv.onLocationChange = (d) => { el.location.textContent = d && d.string ? d.string : ""; };
    state.nv = nv;
  }

  const frame = () => new Promise((res) => requestAnimationFrame(() => requestAnimationFrame(res)));

  function clearVolumes() {
    const nv = state.nv;
    if (!nv) return;
    while (nv.volumes.length) nv.removeVolume(nv.volumes[nv.volumes.length - 1]);
    state.volLabels = state.volSigned = null;
  }

  async function showResult(res) {
    const nv = state.nv;
    if (!nv) return;
    el.canvas.dataset.overlay = "";
    clearVolumes();
    const NVImage = window.niivue.NVImage;
    let bg;
    if (res.scan) {  // a DICOM zip: the scan as the endpoint read it, its FLAIR channel
      const mods = res.scan.modalities;
      bg = await NVImage.loadFromFile({ file: new File([res.scan.buf], "scan.nii.gz"), colormap: "gray", opacity: 1,
                                        frame4D: Math.max(0, mods.indexOf("flair")) });
    } else {
      const bgFile = (state.files.find((f) => f.canonical === "flair") || state.files[0]).file;
      // a 4-D upload shows its first channel (FLAIR by the endpoint's order)
      bg = await NVImage.loadFromFile({ file: bgFile, colormap: "gray", opacity: 1 });
    }
    nv.addVolume(bg);
    const lab = await NVImage.loadFromFile({ file: new File([res.labels], "seg.nii.gz"), opacity: overlayOpacity() });
    lab.setColormapLabel(res.regions.length === 1 ? BINARY_LUT : LABEL_LUT);
    nv.addVolume(lab);
    state.volLabels = lab;
    nv.setInterpolation(true);  // nearest neighbour: label edges stay crisp, voxels stay visible
    setSliceType();
    nv.updateGLVolume();
    await frame();
    el.canvas.dataset.overlay = "labels";
  }

  async function showSigned(on) {
    const nv = state.nv;
    el.signedLegend.hidden = !on;
    if (!nv || !state.volLabels) return;
    const region = Number(el.signedRegion.value || 0);
    if (on) {
      if (!state.volSigned) {
        const buf = await fetchSigned();
        if (!buf || !el.signedToggle.checked) return;
        const vol = await window.niivue.NVImage.loadFromFile({
          file: new File([buf], "signed.nii.gz"), colormap: "singr-signed", opacity: overlayOpacity(),
          cal_min: -1, cal_max: 1, trustCalMinMax: true, frame4D: region,
        });
        vol.cal_min = -1; vol.cal_max = 1;
        nv.addVolume(vol);
        state.volSigned = vol;
      }
      nv.setFrame4D(state.volSigned.id, region);
      nv.setOpacity(nv.volumes.indexOf(state.volSigned), overlayOpacity());
      nv.setOpacity(nv.volumes.indexOf(state.volLabels), 0);
      el.canvas.dataset.overlay = "signed-" + el.signedRegion.selectedOptions[0].textContent;
    } else {
      if (state.volSigned) nv.setOpacity(nv.volumes.indexOf(state.volSigned), 0);
      nv.setOpacity(nv.volumes.indexOf(state.volLabels), overlayOpacity());
      el.canvas.dataset.overlay = "labels";
    }
    nv.updateGLVolume();
    await frame();
  }

  const overlayOpacity = () => Number(el.opacity.value);

  function setSliceType() {
    if (state.nv) state.nv.setSliceType(Number(el.view.value));
  }

  // ------------------------------------------------------------------ requests

  function showVolumes(vols, regions) {
    const tbody = el.volumes.tBodies[0];
    tbody.innerHTML = "";
    for (const n of regions) {
      const tr = document.createElement("tr");
      tr.dataset.region = n;
      const c = COLOURS[n] || [0, 255, 255];
      const name = document.createElement("td");
      name.innerHTML = `<span class="swatch" style="background:rgb(${c.join(",")})"></span> `;
      name.append(n);
      const ml = document.createElement("td");
      ml.className = "ml";
      ml.dataset.ml = String(vols[n]);
      ml.textContent = Number(vols[n]).toFixed(2);
      tr.append(name, ml);
      tbody.append(tr);
    }
  }

  async function segment() {
    if (!state.files.length || state.busy) return;
    state.busy = true;
    el.segment.disabled = true;
    el.downloadLabels.disabled = el.downloadSigned.disabled = true;
    el.signedToggle.disabled = el.signedRegion.disabled = true;
    el.signedToggle.checked = false;
    el.signedLegend.hidden = true;
    el.volumes.tBodies[0].innerHTML = "";
    el.resultMeta.textContent = "";
    el.canvas.dataset.overlay = "";
    state.result = state.signed = null;
    const tta = el.tta.checked;
    const t0 = performance.now();
    setStatus(`Uploading ${state.files.length} file(s) and segmenting${tta ? " with mirroring" : ""}\u2026`, "busy");
    try {
      let r;
      try {
        r = await runJob(`tta=${tta}`, formData(), `Segmenting${tta ? " with mirroring" : ""}`);
      } catch (e) {
        setStatus("Could not reach the endpoint: " + e.message, "error");
        return;
      }
      if (typeof r === "string") {
        setStatus(r, "error");
        return;
      }
      const labels = await r.arrayBuffer();
      const vols = JSON.parse(r.headers.get("X-Volumes-ml") || "{}");
      const regions = (r.headers.get("X-Region-Names") || Object.keys(vols).join(",")).split(",").filter(Boolean);
      state.result = {
        labels, volumes: vols, regions, tta, caseName: caseName(state.files),
        convention: r.headers.get("X-Label-Convention"), modelName: r.headers.get("X-Model-Name"),
        modelVersion: r.headers.get("X-Model-Version"), files: state.files.slice(),
      };
      showVolumes(vols, regions);
      el.resultMeta.textContent = `labels: ${state.result.convention || "?"} \u00b7 model ${state.result.modelName} `
        + `v${state.result.modelVersion} \u00b7 mirroring ${tta ? "on" : "off"} \u00b7 ${((performance.now() - t0) / 1000).toFixed(1)} s`;
      el.downloadLabels.disabled = el.downloadSigned.disabled = false;
      el.signedToggle.disabled = el.signedRegion.disabled = !state.nv;
      if (state.files.length === 1 && isZip(state.files[0].file.name) && state.nv) {
        setStatus("Fetching the scan the endpoint read from the DICOM series\u2026", "busy");
        const s = await fetch("v1/scan", { method: "POST", body: formData(), headers: headers() });
        if (!s.ok) {
          setStatus("Segmented (volumes above), but the scan could not be fetched: " + await problemMessage(s), "error");
          return;
        }
        state.result.scan = { buf: await s.arrayBuffer(),
                              modalities: (s.headers.get("X-Modalities") || "").split(",").filter(Boolean) };
      }
      setStatus("Drawing\u2026", "busy");
      try {
        await showResult(state.result);
      } catch (e) {
        setStatus("Segmented, but the viewer could not show it: " + e.message, "error");
        return;
      }
      setStatus(state.nv ? "Done: the label map is overlaid on the scan." : "Done (no WebGL2: volumes only).", "ok");
    } finally {
      state.busy = false;
      el.segment.disabled = state.files.length === 0;
    }
  }

  /** Segment as a job: POST v1/jobs (answered at once), poll its state with the progress in the
   *  status line, then fetch its result. A CPU case with mirroring takes minutes, longer than a
   *  browser or a proxy waits on one request. Returns the result's response, or an error message. */
  async function runJob(query, body, label) {
    const rel = (url) => url.replace(/^\//, "");  // relative: the page may live under a route prefix
    const r = await fetch(`v1/jobs?${query}`, { method: "POST", body, headers: headers() });
    if (!r.ok) return await problemMessage(r);
    let job = await r.json();
    while (job.status === "queued" || job.status === "running") {
      const pct = job.status === "running" ? ` ${Math.round(100 * job.progress)} %` : " (queued)";
      setStatus(`${label}${pct}\u2026`, "busy");
      await new Promise((done) => setTimeout(done, 500));
      const s = await fetch(rel(job.status_url), { headers: headers(), cache: "no-store" });
      if (!s.ok) return await problemMessage(s);
      job = await s.json();
    }
    if (job.status !== "done") return `The job ${job.status}: ${job.error || "no reason given"}`;
    const res = await fetch(rel(job.result_url), { headers: headers(), cache: "no-store" });
    return res.ok ? res : await problemMessage(res);
  }

  /** The signed maps of the current result (fetched once, with the same files and mirroring). */
  async function fetchSigned() {
    if (state.signed) return state.signed;
    const res = state.result;
    if (!res) return null;
    setStatus("Fetching the signed maps\u2026", "busy");
    const fd = new FormData();
    const single = res.files.length === 1 && !res.files[0].canonical;
    res.files.forEach((f, i) => fd.append(f.key || (single ? "image" : `file${i}`), f.file, f.file.name));
    let r;
    try {
      r = await runJob(`output=signed&tta=${res.tta}`, fd, "Computing the signed maps");
    } catch (e) {
      setStatus("Could not reach the endpoint: " + e.message, "error");
      return null;
    }
    if (typeof r === "string") {
      setStatus(r, "error");
      return null;
    }
    if (state.result !== res) return null;
    state.signed = await r.arrayBuffer();
    setStatus("Signed maps: near 0 (white) is the model's uncertain border.", "ok");
    return state.signed;
  }

  function download(buf, name) {
    const url = URL.createObjectURL(new Blob([buf], { type: "application/gzip" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ------------------------------------------------------------------ wiring

  el.files.addEventListener("change", () => setFiles(el.files.files));
  for (const t of [el.drop, document.getElementById("viewer")]) {
    t.addEventListener("dragover", (e) => { e.preventDefault(); el.drop.classList.add("over"); });
    t.addEventListener("dragleave", () => el.drop.classList.remove("over"));
    t.addEventListener("drop", (e) => {
      e.preventDefault();
      el.drop.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files.length) setFiles(e.dataTransfer.files);
    });
  }
  // a file dropped elsewhere must not navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  el.drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") el.files.click(); });

  el.segment.addEventListener("click", segment);
  el.tta.addEventListener("change", () => { el.tta.dataset.touched = "1"; });
  el.apiKey.addEventListener("change", loadModel);
  el.view.addEventListener("change", setSliceType);
  el.opacity.addEventListener("input", () => {
    el.opacityValue.textContent = overlayOpacity().toFixed(2);
    const nv = state.nv;
    if (!nv) return;
    const vol = el.signedToggle.checked ? state.volSigned : state.volLabels;
    if (vol) nv.setOpacity(nv.volumes.indexOf(vol), overlayOpacity());
  });
  el.signedToggle.addEventListener("change", () => showSigned(el.signedToggle.checked).catch(
    (e) => setStatus("Could not show the signed map: " + e.message, "error")));
  el.signedRegion.addEventListener("change", () => {
    if (el.signedToggle.checked) showSigned(true).catch((e) => setStatus("Could not show the signed map: " + e.message, "error"));
  });
  el.downloadLabels.addEventListener("click", () => {
    if (state.result) download(state.result.labels, `${state.result.caseName}_seg.nii.gz`);
  });
  el.downloadSigned.addEventListener("click", async () => {
    const res = state.result;
    const buf = await fetchSigned();
    if (buf && res) download(buf, `${res.caseName}_signed.nii.gz`);
  });

  window.singrViewer = state;  // for debugging in the browser console
  initViewer().catch((e) => setStatus("The viewer could not start: " + e.message, "error"))
    .finally(() => { document.body.dataset.ready = "1"; });
  loadModel();
})();
