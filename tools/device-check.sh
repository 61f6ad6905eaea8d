#!/usr/bin/env bash
# GPU check of the CUDA backend, in one call on a lent GPU machine (no network there).
#
#   1. Here (with network), once:   tools/device-check.sh --prepare
#      downloads the scipy-openblas32 wheel (the BLAS the build links) into .whl/ and adds
#      /.whl/ to .git/info/exclude.
#   2. On the device, one call:     run(command="tools/device-check.sh", carry=[".whl"], timeout_s=540)
#      builds ccn in place for sm_90 (-j16), prints `ccn info`, runs the whole test suite
#      (tests/cuda included: each kernel against NumPy/finite differences, nets on both
#      backends), then tools/bench_gpu.py (AlexNet-like step at minibatch 128, ccn vs PyTorch,
#      and the conv kernels vs cuDNN), and ends with a short table. Logs go to $OUT.
# Budget: build ~2-3 min, tests ~1 min, bench ~1 min; each stage has its own timeout so the
# table always prints within 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ccn-device-check}
mkdir -p "$OUT"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .whl
  grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
    echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl scipy-openblas32
  ls -la .whl
  exit 0
fi

T0=$(date +%s)
stage() { echo; echo "=== $1 ($(( $(date +%s) - T0 )) s)"; }
export PATH="/usr/local/cuda/bin:$PATH" PYTHONUNBUFFERED=1
declare -A R

stage "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -1
python3 -c "import numpy, torch; print('numpy', numpy.__version__, 'torch', torch.__version__)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  BLAS_ARGS=""
else
  echo "no .whl/ carried: trying the system BLAS (-DCCN_BLAS=system)"
  BLAS_ARGS="-DCCN_BLAS=system"
fi

stage "build (sm_90)"
rm -rf build/device
if CCN_BUILD_DIR=build/device CCN_JOBS=16 timeout 300 tools/dev-build.sh -DCMAKE_CUDA_ARCHITECTURES=90 $BLAS_ARGS \
    > "$OUT/build.log" 2>&1; then
  R[build]="ok ($(grep -ci 'warning' "$OUT/build.log") warning lines)"
else
  R[build]="FAILED"
  tail -40 "$OUT/build.log"
fi
tail -3 "$OUT/build.log"
export PYTHONPATH=".:${PYTHONPATH:-}"

stage "ccn info"
python3 -c "from ccn.cli.main import main; main()" info 2>&1 | tee "$OUT/info.txt"

stage "tests"
if [ "${R[build]}" != "FAILED" ]; then
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/cuda -rs 2>&1 | tee "$OUT/tests-cuda.log" | tail -40
  R[tests_cuda]=$(tail -1 "$OUT/tests-cuda.log")
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests --ignore=tests/cuda > "$OUT/tests-rest.log" 2>&1
  R[tests_rest]=$(tail -1 "$OUT/tests-rest.log")
fi

stage "benchmark"
if [ "${R[build]}" != "FAILED" ]; then
  timeout 150 python3 tools/bench_gpu.py --mini 128 --steps 10 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
fi

stage "summary"
printf '%-12s %s\n' build "${R[build]}" tests/cuda "${R[tests_cuda]:-not run}" "other tests" "${R[tests_rest]:-not run}"
[ -f "$OUT/bench.log" ] && sed -n '/^Training step/,$p' "$OUT/bench.log"
echo "total $(( $(date +%s) - T0 )) s; logs in $OUT"
