#!/usr/bin/env bash
# Create .venv at the repository root and install everything the project needs.
# Idempotent: a second run only checks. Order matters (docs/dependencies.md):
#   1. torch first and explicit (the CPU build on this machine's disk; a plain `torch`
#      requirement would pull a multi-GB CUDA build),
#   2. FastGeodis from source against that torch (setuptools<82: its setup.py uses pkg_resources),
#   3. the project itself with its extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
TORCH_SPEC="${SINGR_TORCH_SPEC:-torch==2.13.0}"
FASTGEODIS_SPEC="FastGeodis==1.0.5"

if [ -L .venv ]; then
  # a .venv linked from another checkout (the README runner's copy links the repository's): installing here
  # would point that environment's editable install at this folder, so it is only checked
  if .venv/bin/python -c "import torch, FastGeodis, monai, singr" 2>/dev/null; then
    echo "[setup] .venv is linked to $(readlink -f .venv): checked, not changed (scripts/setup.sh there updates it)"
    exit 0
  fi
  echo "[setup] .venv is linked to $(readlink -f .venv) and cannot import the project: run scripts/setup.sh there" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# pip runs with -q; what it still prints is shown, except two harmless notices: a pip configuration
# naming an index or find-links folder that does not exist ("Location '...' is ignored", one line per
# package) and setuptools' notice on editable installs (its indented block, at most 10 lines).
pip_filter() {
  awk '/^WARNING: Location .* is ignored: it is neither a file nor a directory\.$/ {next}
       /BuildBackendWarning: Editable installation\./ {skip=10; next}
       skip > 0 && /^ / {skip--; next}
       {skip=0; print; fflush()}'
}
pip_q() { "$VPY" -m pip "$@" 2> >(pip_filter >&2); }

if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Debian's Chromium drives the viewer's browser test (Playwright uses it; no browser download)
  echo "[setup] installing Debian's chromium for the browser test"
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } \
    || echo "[setup] warning: could not install chromium; the viewer's browser test will fail"
fi
stamp=".venv/.singr-setup-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ] && "$VPY" -c "import torch, FastGeodis, monai, singr" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi

pip_q install -q --upgrade "pip<27" "setuptools<82" wheel ninja
if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  pip_q install -q "$TORCH_SPEC"
fi
if ! "$VPY" -c "import FastGeodis" 2>/dev/null; then
  echo "[setup] building $FASTGEODIS_SPEC from source against the installed torch (1-4 min)"
  MAX_JOBS="${MAX_JOBS:-2}" pip_q install -q --no-build-isolation "$FASTGEODIS_SPEC"
fi
echo "[setup] installing the project and its dependencies"
pip_q install -q -e ".[all,test]"
rm -f .venv/.singr-setup-*
touch "$stamp"
echo "[setup] done: $("$VPY" -c 'import torch, monai, FastGeodis; print("torch", torch.__version__, "monai", monai.__version__)')"
