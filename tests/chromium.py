"""The headless Chromium the browser checks drive (no pytest here: benchmarks/viewer_picture.py
imports it too): Debian's /usr/bin/chromium or $SINGR_CHROMIUM, and the flags that give it
software WebGL2 (NiiVue needs it) with no GPU and no network of its own."""
from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("SINGR_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # software WebGL2 (NiiVue needs it) from SwiftShader through ANGLE, with no GPU
    "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
]
