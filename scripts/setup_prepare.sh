#!/usr/bin/env bash
# brainles-preprocessing (co-registration, atlas registration, brain extraction) for
# `singr prepare`, in a virtual environment of its own, .venv-prepare: antspyx under it pins
# numpy < 2.4 and scipy < 1.16, which clash with this project's, so it never enters .venv.
# torch goes in first and explicitly (HD-BET and SynthStrip run on it; a plain `torch`
# requirement would pull the multi-GB CUDA build): the CPU build on this machine's disk, or
# $SINGR_TORCH_SPEC. A second run only checks (stamp). Weights and atlases are not installed
# here: brainles downloads them at first use (see `singr prepare --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SINGR_PREPARE_VENV:-$ROOT/.venv-prepare}"
TORCH_SPEC="${SINGR_TORCH_SPEC:-torch==2.13.0}"
SPEC="brainles-preprocessing[synthstrip]==0.6.14"
STAMP="$VENV/.singr-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$TORCH_SPEC $SPEC" ]]; then
  exit 0
fi
PY="${PYTHON:-python3}"
echo "[setup-prepare] creating $VENV ($TORCH_SPEC, $SPEC)"
"$PY" -m venv "$VENV"
pip_quiet() {  # pip's own errors pass; this machine's pip.conf notices about absent index folders do not
  "$VENV/bin/python" -m pip install -q --no-compile --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_quiet "$TORCH_SPEC"
pip_quiet "$SPEC"
"$VENV/bin/python" -W ignore -c "import ants, brainles_preprocessing.preprocessor, brainles_hd_bet, nipreps.synthstrip.model"
echo "$TORCH_SPEC $SPEC" > "$STAMP"
echo "[setup-prepare] done: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(*(p + " " + m.version(p) for p in ("brainles-preprocessing", "antspyx", "torch")))')"
