#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), check the code (ruff, mypy) and run the test suite.
#   bash scripts/test.sh            everything (what CI runs: .ci/run)
#   bash scripts/test.sh --fast     lint, types and the fast tests (no Ray, no training; under 3 minutes)
# Other arguments go to pytest (e.g. tests/singr -k config).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
FAST=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then FAST=1; else ARGS+=("$a"); fi
done
export SINGR_BRATS_CASE="${SINGR_BRATS_CASE:-$(cd "$ROOT/.." && pwd)/shared/data/brats-case}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # keep any Ray the tests start on 127.0.0.1
export MPLBACKEND=Agg
echo "[test] ruff"
.venv/bin/ruff check singr tune serve tests benchmarks
echo "[test] mypy"
.venv/bin/mypy
if [ "$FAST" = 1 ]; then
  exec .venv/bin/python -m pytest -q -m "not slow" ${ARGS[@]+"${ARGS[@]}"}
fi
exec .venv/bin/python -m pytest -q ${ARGS[@]+"${ARGS[@]}"}
