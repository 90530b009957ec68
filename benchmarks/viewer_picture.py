"""The README's viewer pictures (docs/viewer.png, docs/viewer-signed.png) from the real case.

    python benchmarks/viewer_picture.py --case ../shared/data/brats-case [--work runs/viewer-picture]
                                        [--skip-train] [--out docs]

1. **Data**: ``WORK/data`` holds the case (links, BraTS 2023 names) and its left-right mirror
   image (written); the split trains on the case and validates on the mirror. There is one
   real case on this machine, so the model has seen the case it is shown on: the pictures
   show what the viewer draws for a real 240 x 240 x 155 scan, not accuracy on unseen scans.
2. **Training**: ``singr train -c configs/viewer-picture.yaml`` (the paper's SiNG settings and
   Focal-L1; a network and schedule sized for 2 CPU cores), best checkpoint by validation Dice.
3. **Pictures**: the checkpoint is served by ``singr serve`` on a free loopback port, as a user
   starts it, and the viewer page is driven in headless Chromium as a user would: the four files
   uploaded, "Segment", the crosshair put on the tumour's centre, a screenshot with the label
   overlay, then "signed map of WT" on and a second screenshot (the model's signed map: near 0,
   the uncertain border band). The Dice of the label map the endpoint returned is printed (against the
   case's own segmentation; the last run: WT 0.92, TC 0.97, ET 0.90 after 18 min of training).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODS = ("t1c", "t1n", "t2w", "t2f")


def make_data(case: Path, work: Path) -> Path:
    """``work/data/{real,real-mirror}`` and ``work/split.json`` (train: real; val: its mirror)."""
    import nibabel as nib

    data = work / "data"
    for name in ("real", "real-mirror"):
        (data / name).mkdir(parents=True, exist_ok=True)
    for m in MODS + ("seg",):
        src = case / f"{m}.nii.gz"
        if not src.is_file():
            raise SystemExit(f"{src}: missing; expected the BraTS case folder (t1c, t1n, t2w, t2f, seg .nii.gz)")
        link = data / "real" / f"real-{m}.nii.gz"
        if not link.exists():
            link.symlink_to(src.resolve())
        mirror = data / "real-mirror" / f"real-mirror-{m}.nii.gz"
        if not mirror.exists():
            img = nib.load(str(src))
            arr = np.asarray(img.dataobj)[::-1].copy()  # left-right: the first voxel axis is x (R-L) in BraTS
            nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(mirror))
    split = work / "split.json"
    if not split.exists():
        split.write_text(json.dumps({"seed": 0, "ratios": [0.64, 0.16, 0.2], "train": ["real"],
                                     "val": ["real-mirror"], "test": []}, indent=2))
    return data


def train(work: Path, config: str) -> Path:
    """Train (resuming where a run stopped); the best checkpoint's path."""
    cmd = [sys.executable, "-m", "singr", "train", "-c", config, f"output_dir={work / 'model'}",
           f"data.root={work / 'data'}", f"data.split_file={work / 'split.json'}",
           f"data.cache_dir={work / 'cache'}"]
    print("[picture] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    best = work / "model" / "checkpoints" / "best.safetensors"
    if not best.exists():
        raise SystemExit(f"{best}: the training wrote no best checkpoint")
    return best


def tumour_centre(case: Path) -> tuple[float, float, float]:
    """The whole tumour's centre of mass as fractions of the volume along R, A, S (NiiVue's
    crosshair position: it shows volumes reoriented to RAS, so a flipped voxel axis counts from
    its other end)."""
    import nibabel as nib

    img = nib.load(str(case / "seg.nii.gz"))
    seg = np.asarray(img.dataobj) > 0
    frac = [(i + 0.5) / s for i, s in zip(np.argwhere(seg).mean(axis=0), seg.shape)]
    out = [0.0, 0.0, 0.0]
    for axis, (ras, sign) in enumerate(nib.orientations.io_orientation(img.affine)):
        out[int(ras)] = float(frac[axis] if sign > 0 else 1.0 - frac[axis])
    return out[0], out[1], out[2]


def _serve(checkpoint: Path) -> tuple[str, subprocess.Popen]:
    """``singr serve --model checkpoint`` on a free loopback port, as a user starts it; its URL once
    healthy, and the process (the caller ends it)."""
    import httpx

    from tune.nodes import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "singr", "serve", "--model", str(checkpoint), "--port", str(port),
                             "--replicas", "1"], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/v1/health", timeout=10).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"singr serve never became healthy (exit status {proc.poll()})")


def shoot(case: Path, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Serve ``checkpoint``, segment ``case`` in the viewer, write the two screenshots into ``out``."""
    import shutil

    import httpx
    import nibabel as nib
    from playwright.sync_api import sync_playwright

    from singr.io.nifti import read_nifti_bytes
    from tests.chromium import CHROMIUM, CHROMIUM_ARGS

    shown = checkpoint.parents[2] / "singr-brats-case.safetensors"  # the viewer shows the file's stem as the name
    shutil.copyfile(checkpoint, shown)
    base, server = _serve(shown)
    try:
        files = [(m, (f"{m}.nii.gz", (case / f"{m}.nii.gz").read_bytes(), "application/gzip")) for m in MODS]
        r = httpx.post(base + "/v1/segment", files=files, timeout=900)
        r.raise_for_status()
        label = np.asarray(read_nifti_bytes(r.content)[0])
        dice = region_dice(label, np.asarray(nib.load(str(case / "seg.nii.gz")).dataobj))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/")
            page.wait_for_selector("#model[data-state='ok']", timeout=60_000)
            page.set_input_files("#files", [str(case / f"{m}.nii.gz") for m in MODS])
            t0 = time.time()
            page.click("#segment")
            page.wait_for_function("() => ['ok', 'error'].includes(document.getElementById('status').dataset.kind)",
                                   timeout=900_000)
            status = page.locator("#status").inner_text()
            if page.locator("#status").get_attribute("data-kind") != "ok":
                raise SystemExit(f"the viewer reported: {status}")
            seconds = time.time() - t0
            page.wait_for_selector("#canvas[data-overlay='labels']")
            centre = tumour_centre(case)
            page.evaluate("([x, y, z]) => { const nv = window.singrViewer.nv; nv.scene.crosshairPos = [x, y, z];"
                          " nv.updateGLVolume(); nv.drawScene(); }", list(centre))
            page.wait_for_timeout(500)
            out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out / "viewer.png"))
            page.select_option("#signed-region", label="WT")
            page.check("#signed-toggle")
            page.wait_for_selector("#canvas[data-overlay='signed-WT']", timeout=900_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "viewer-signed.png"))
            browser.close()
        return {"status": status, "viewer_seconds": round(seconds, 1), "dice_vs_seg": dice, "crosshair": centre}
    finally:
        server.send_signal(signal.SIGINT)  # singr serve shuts Serve and its Ray down on Ctrl-C
        server.wait(timeout=120)


def region_dice(label: np.ndarray, seg: np.ndarray) -> dict[str, float]:
    """Dice of the BraTS regions (2023 labels: WT = 1|2|3, TC = 1|3, ET = 3) of ``label`` against ``seg``."""
    from singr.metrics import dice
    from singr.regions import labels_to_regions, region_names

    pred, truth = labels_to_regions(label, "brats2023"), labels_to_regions(seg, "brats2023")
    return {n: round(dice(pred[i], truth[i]), 4) for i, n in enumerate(region_names("brats2023"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=os.environ.get("SINGR_BRATS_CASE", str(ROOT.parent / "shared/data/brats-case")))
    ap.add_argument("--work", default=str(ROOT / "runs" / "viewer-picture"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "viewer-picture.yaml"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--skip-train", action="store_true", help="use WORK/model/checkpoints/best.safetensors as it is")
    args = ap.parse_args(argv)
    case, work = Path(args.case).resolve(), Path(args.work).resolve()
    make_data(case, work)
    t0 = time.time()
    best = work / "model" / "checkpoints" / "best.safetensors" if args.skip_train else train(work, args.config)
    if not best.is_file():
        raise SystemExit(f"{best}: no checkpoint (run without --skip-train first)")
    train_s = time.time() - t0
    info = shoot(case, best, Path(args.out))
    info["train_seconds"] = round(train_s, 1)
    print("[picture] " + json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
