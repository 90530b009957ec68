#!/usr/bin/env bash
# An offline bundle for benchmarks/gpu_check.sh --bundle: everything the service needs beyond a
# GPU machine's own Python packages, for a machine that reaches no package index. Made on a
# machine that does (Linux with python3 >= 3.11, pip, xz and strip; the target's Python version
# and packages named here).
#
#   bash benchmarks/gpu_bundle.sh OUT.tar.xz [PYTHON_VERSION] [HAVE_FILE]
#
# PYTHON_VERSION: the GPU machine's (default 3.12). HAVE_FILE: the packages the GPU machine already
# has, best its `pip freeze` (name==version lines; bare names or comma-separated names also do):
# they are left out, and their versions constrain what is downloaded (a bundled grpcio-reflection
# 1.85 refuses to import beside a machine's grpcio 1.84: seen on an H200 machine). torch, triton
# and the nvidia-* libraries are always left out. Ray's Java jars and RLlib are dropped and
# its binaries stripped (about 48 MB instead of 120); FastGeodis goes in as source (_sdist/): it is
# built there, against that machine's torch and CUDA.
set -euo pipefail
OUT="${1:?usage: gpu_bundle.sh OUT.tar.xz [PYTHON_VERSION] [HAVE_FILE]}"
PYV="${2:-3.12}"
HAVE="${3:-}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PLAT=(--python-version "$PYV" --implementation cp --only-binary=:all:)
for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 \
         manylinux1; do PLAT+=(--platform "${p}_x86_64"); done
# pyproject.toml's requirements (core, tune, serve) without torch; mlflow-skinny: the UI is not needed
python3 - "$ROOT/pyproject.toml" > "$WORK/req.txt" <<'EOF'
import re, sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = p["dependencies"] + p["optional-dependencies"]["tune"] + p["optional-dependencies"]["serve"]
for r in reqs:
    name = re.split(r"[<>=\[ ;]", r)[0].lower()
    if name == "torch":
        continue
    if name == "mlflow":
        r = r.replace("mlflow", "mlflow-skinny", 1) + "\nsqlalchemy>=2\nalembic"
    print(r.split("#")[0].strip())
EOF
grep -v '^monai' "$WORK/req.txt" > "$WORK/req-deps.txt"
: > "$WORK/constraints.txt"
if [ -n "$HAVE" ]; then grep -E '^[A-Za-z0-9._-]+==' "$HAVE" | grep -viE '^(torch|triton|nvidia-)' \
  > "$WORK/constraints.txt" || true; fi
echo "[bundle] downloading wheels for Python $PYV (linux x86_64; $(wc -l < "$WORK/constraints.txt") versions pinned)"
python3 -m pip download -q "${PLAT[@]}" -d "$WORK/w" -r "$WORK/req-deps.txt" -c "$WORK/constraints.txt"
# monai without its torch requirement; setuptools<82: FastGeodis' setup.py imports pkg_resources
python3 -m pip download -q "${PLAT[@]}" --no-deps -d "$WORK/w" "$(grep '^monai' "$WORK/req.txt")" "setuptools<82"
# pip prepares FastGeodis' metadata to download it, and its setup.py imports torch: a Python with torch
SDPY="${SDIST_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$SDPY" ] || SDPY=python3
"$SDPY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$WORK/sdist" FastGeodis==1.0.5
norm() { tr 'A-Z_.' 'a-z--' | sed 's/-\+/-/g'; }
: > "$WORK/have"
if [ -n "$HAVE" ]; then tr ',' '\n' < "$HAVE" | sed 's/[=<>~!; ].*//' | grep . | norm > "$WORK/have"; fi
keep=()
for w in "$WORK"/w/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | norm)
  case "$name" in torch|nvidia-*|triton) continue ;; esac
  if [ "$name" != setuptools ] && grep -qxF "$name" "$WORK/have"; then continue; fi
  keep+=("$w")
done
# pip keeps the wheels' file modes (Ray's gcs_server and raylet are executables)
python3 -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$WORK/site" "${keep[@]}"
rm -rf "$WORK/site/bin" "$WORK/site/ray/jars" "$WORK/site/ray/rllib"
for b in "$WORK/site/ray/_raylet.so" "$WORK/site/ray/core/src/ray/gcs/gcs_server" \
         "$WORK/site/ray/core/src/ray/raylet/raylet"; do
  if [ -f "$b" ]; then strip "$b"; fi
done
mkdir -p "$WORK/site/_sdist" && cp "$WORK"/sdist/* "$WORK/site/_sdist/"
echo "[bundle] ${#keep[@]} packages; compressing (xz -9: a few minutes)"
tar -C "$WORK/site" -cf - . | xz -9 -T0 > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "[bundle] $OUT: $(du -h "$OUT" | cut -f1)"
