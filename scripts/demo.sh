#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: a synthetic data set, then the
# tuning service (local Ray, SQLite MLflow at ./mlflow.db): SiNG maps with Ray Data, an
# Optuna + ASHA sweep of Ray Train trials, the best model registered as
# singr-synthetic@champion; then the best model is evaluated on the test split and
# segments one case. Extra arguments are config overrides for the sweep (key=value);
# SINGR_DEMO_CONFIG picks another config (configs/smoke.yaml: a minute).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export MPLBACKEND=Agg RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
PY=.venv/bin/python
SINGR=.venv/bin/singr
CFG="${SINGR_DEMO_CONFIG:-configs/synthetic.yaml}"
start=$(date +%s)
$SINGR synth -c "$CFG"
$PY -m tune --config "$CFG" "$@"
read -r RESULTS SPLIT DATA OUT < <($PY - "$CFG" "$@" <<'PYEOF'
import sys
from tune.config import load_service_config
from tune.plan import make_plan
p = make_plan(load_service_config(sys.argv[1], sys.argv[2:]))
print(p.results_dir, p.split_file, p.cfg.data.root, p.cfg.output_dir)
PYEOF
)
BEST="$RESULTS/best_model"
$SINGR evaluate -c "$CFG" "data.split_file=$SPLIT" --model "$BEST" --out "$OUT/eval-best" -q
CASE="$DATA/$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['test'][0])" "$SPLIT")"
$SINGR predict --model "$BEST" --case "$CASE" --out "$OUT/predict" --signed --png
echo
echo "[demo] done in $(( $(date +%s) - start )) s. Where to look:"
echo "  sweep results   $RESULTS/  (trials.csv, sweep.png, summary.json, best_model/)"
echo "  test metrics    $OUT/eval-best/summary_test.md  (overlays: $OUT/eval-best/overlays/)"
echo "  one prediction  $OUT/predict/"
echo "  MLflow UI       .venv/bin/mlflow ui --backend-store-uri sqlite:///$ROOT/mlflow.db --host 127.0.0.1"
echo "  serve it        .venv/bin/singr serve   (the registered champion; README: Using it)"
