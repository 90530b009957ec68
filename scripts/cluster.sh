#!/usr/bin/env bash
# A local multi-node Ray cluster on 127.0.0.1, plus an MLflow server; state under one folder.
#   bash scripts/cluster.sh up DIR [--workers 2 --cpus 1 --no-mlflow]
#   bash scripts/cluster.sh status DIR | env DIR | kill-node DIR worker1 | down DIR
# `down` stops only the processes `up` started (by PID), never `ray stop`. See tune/devcluster/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" >/dev/null
exec "$ROOT/.venv/bin/python" -m tune.devcluster "$@"
