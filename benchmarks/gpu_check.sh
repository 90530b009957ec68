#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): on a machine with a CUDA GPU, build what is missing,
# then run the service's CUDA paths (SiNG maps on GPU-share Ray Data actors, Ray Train trials with
# use_gpu and AMP, a GPU replica) on BraTS-size synthetic cases and write their figures into
# benchmarks/RESULTS.md. About 5 minutes on one recent GPU; CI never runs it.
#
#   bash benchmarks/gpu_check.sh [--bundle FILE.tar.xz] [gpu_check.py options, e.g. --out DIR]
#
# The Python is $PYTHON (default: python3), one whose torch was built with CUDA. What it lacks:
#   * with --bundle (a machine with no package index, e.g. an air-gapped hospital cluster): the
#     packages come from a bundle made beforehand by benchmarks/gpu_bundle.sh, unpacked into
#     $SINGR_GPU_SITE (default /tmp/singr-gpu-site) and put first on PYTHONPATH;
#   * otherwise: pip install -e ".[tune,serve]" (the installed torch is kept).
# FastGeodis is built from source with its CUDA kernels (FORCE_CUDA=1, for this GPU's compute
# capability only) when the installed one cannot run on a CUDA tensor.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
BUNDLE=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
t0=$(date +%s)
say() { echo "[gpu-check.sh +$(( $(date +%s) - t0 ))s] $*"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check.sh: $PY has no torch; install a CUDA build of PyTorch first (or set PYTHON)" >&2; exit 2
fi
TARGET=()
if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE" ] || { echo "gpu_check.sh: --bundle $BUNDLE: no such file" >&2; exit 2; }
  SITE="${SINGR_GPU_SITE:-/tmp/singr-gpu-site}"
  say "unpacking $BUNDLE into $SITE"
  rm -rf "$SITE" && mkdir -p "$SITE"
  if command -v xz >/dev/null; then tar -C "$SITE" -xJf "$BUNDLE"
  else "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" "$BUNDLE" "$SITE"; fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  TARGET=(--target "$SITE" --no-index --find-links "$SITE/_sdist")
  # singr itself, installed (configs/ is the package singr.configs only once installed), from a copy of
  # its sources: pip writes build/ and *.egg-info beside them
  STAGE="$(mktemp -d)"
  cp -r pyproject.toml README.md singr tune serve configs "$STAGE/"
  say "installing singr into $SITE"
  "$PY" -m pip install -q --no-deps --no-build-isolation "${TARGET[@]}" "$STAGE"
  rm -rf "$STAGE"
elif ! "$PY" -c "import ray, mlflow, optuna, monai, nibabel, blosc2, fastapi, singr" 2>/dev/null; then
  say "installing singr[tune,serve] into $PY's environment"
  "$PY" -m pip install -q -e ".[tune,serve]"
fi

DRY=0
for a in "${ARGS[@]+"${ARGS[@]}"}"; do [ "$a" = "--cpu-dry-run" ] && DRY=1; done
if [ "$DRY" = 0 ] && ! "$PY" - <<'EOF' 2>/dev/null
import torch, FastGeodis
x = torch.zeros(1, 1, 4, 4, 4, device="cuda")
FastGeodis.generalised_geodesic3d(x, torch.ones_like(x), [1.0, 1.0, 1.0], 1e10, 0.5, 1)
EOF
then
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>/dev/null || echo "")
  [ -n "$ARCH" ] || { echo "gpu_check.sh: torch sees no CUDA GPU (torch.cuda.is_available() is False)" >&2; exit 2; }
  if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
    CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")"; export CUDA_HOME
  fi
  say "building FastGeodis 1.0.5 with CUDA kernels for compute capability $ARCH"
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" \
    "$PY" -m pip install -q --no-build-isolation --no-deps "${TARGET[@]}" FastGeodis==1.0.5
fi
say "environment ready; running benchmarks/gpu_check.py"
"$PY" benchmarks/gpu_check.py "${ARGS[@]+"${ARGS[@]}"}"
say "done"
