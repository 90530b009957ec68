#!/usr/bin/env bash
# Submit a sweep to a Ray cluster as a job, with the paths it needs made absolute:
#   bash scripts/submit.sh --address http://127.0.0.1:8265 -c configs/synthetic.yaml [key=value ...]
# See tune/submit.py (python -m tune.submit --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >/dev/null
exec "$ROOT/.venv/bin/python" -m tune.submit "$@"
