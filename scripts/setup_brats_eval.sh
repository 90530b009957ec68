#!/usr/bin/env bash
# The BraTS challenges' own metrics package (brats-evaluation, on panoptica) in a virtual
# environment of its own, .venv-brats-eval: its pins (numpy < 2.3, pandas < 3, rich < 14) clash
# with this project's, so it never enters .venv. Used by benchmarks/brats_eval_compare.py and its
# test to compare singr's metrics with the official ones. A second run only checks (stamp).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRATS_EVAL_VENV:-$ROOT/.venv-brats-eval}"
SPEC="brats-evaluation==0.0.10 nibabel SimpleITK"
STAMP="$VENV/.singr-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" ]]; then
  exit 0
fi
echo "[setup-brats-eval] creating $VENV ($SPEC)"
PY="${PYTHON:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-compile --disable-pip-version-check $SPEC 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import brats_evaluation, panoptica" 
echo "$SPEC" > "$STAMP"
echo "[setup-brats-eval] done: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("brats-evaluation", m.version("BraTS_evaluation"), "panoptica", m.version("panoptica"))')"
