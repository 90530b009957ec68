#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export SINGR_BRATS_CASE="${SINGR_BRATS_CASE:-$(cd "$ROOT/.." && pwd)/shared/data/brats-case}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # keep any Ray the tests start on 127.0.0.1
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
