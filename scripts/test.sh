#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), check the code (ruff, mypy) and run the test suite.
#   bash scripts/test.sh                everything (what CI runs: .ci/run), with the 25 slowest tests listed
#   bash scripts/test.sh --fast         lint, types and the unit tier (under 3 minutes)
#   bash scripts/test.sh --unit         the unit tier only: no Ray, no training (tests not marked slow)
#   bash scripts/test.sh --integration  Ray on one node, training, the endpoint (slow tests outside the system tier)
#   bash scripts/test.sh --system       the local multi-node cluster (tests/cluster) and the README runner (tests/readme)
# Other arguments go to pytest (e.g. tests/singr -k config).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
TIER=all
LINT=1
ARGS=()
for a in "$@"; do
  case "$a" in
    --fast) TIER=unit ;;
    --unit) TIER=unit; LINT=0 ;;
    --integration) TIER=integration; LINT=0 ;;
    --system) TIER=system; LINT=0 ;;
    *) ARGS+=("$a") ;;
  esac
done
export SINGR_BRATS_CASE="${SINGR_BRATS_CASE:-$(cd "$ROOT/.." && pwd)/shared/data/brats-case}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # keep any Ray the tests start on 127.0.0.1
export MPLBACKEND=Agg
if [ "$LINT" = 1 ]; then
  echo "[test] ruff"
  .venv/bin/ruff check singr tune serve tests benchmarks
  echo "[test] mypy"
  .venv/bin/mypy
fi
PYTEST=(.venv/bin/python -m pytest -q --durations=25)
ALL=(-m "cluster or not cluster")   # pyproject's addopts leave the cluster tier out of a plain pytest
SYSTEM=(tests/cluster tests/readme)
case "$TIER" in
  unit) exec "${PYTEST[@]}" -m "not slow" ${ARGS[@]+"${ARGS[@]}"} ;;
  integration) exec "${PYTEST[@]}" -m slow --ignore=tests/cluster --ignore=tests/readme ${ARGS[@]+"${ARGS[@]}"} ;;
  system) exec "${PYTEST[@]}" "${ALL[@]}" "${SYSTEM[@]}" ${ARGS[@]+"${ARGS[@]}"} ;;
esac
exec "${PYTEST[@]}" "${ALL[@]}" ${ARGS[@]+"${ARGS[@]}"}
