#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: synthetic data -> train ->
# evaluate -> predict, on this machine's CPU. Results land under runs/synthetic/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export MPLBACKEND=Agg
SINGR=.venv/bin/singr
CFG="${SINGR_DEMO_CONFIG:-synthetic.yaml}"
start=$(date +%s)
$SINGR synth -c "$CFG"
$SINGR train -c "$CFG" "$@"
$SINGR evaluate -c "$CFG" --save-predictions
CASE=$(.venv/bin/python -c "import json,yaml,sys; from singr.config import load_config; c=load_config('$CFG'); print(c['data']['root']+'/'+json.load(open(c['output_dir']+'/split.json'))['test'][0])")
OUT=$(.venv/bin/python -c "from singr.config import load_config; print(load_config('$CFG')['output_dir'])")
$SINGR predict --checkpoint "$OUT/checkpoints/best.pt" --case "$CASE" --out "$OUT/predict" --signed --png
echo
echo "[demo] done in $(( $(date +%s) - start )) s. Results:"
echo "  checkpoints     $OUT/checkpoints/{best,last}.pt   (training log: $OUT/log.csv)"
echo "  test metrics    $OUT/eval/summary_test.md  (per case: $OUT/eval/metrics_test.csv)"
echo "  predictions     $OUT/eval/predictions/  and  $OUT/predict/"
