#!/usr/bin/env bash
# Build ccn's CUDA backend for the CPU simulator and run the GPU tests on it (no GPU needed).
# See tools/cudasim/README.md for what the simulator checks and what it cannot.
# Usage: tools/cudasim/run.sh [pytest arguments; default: tests/cuda]
#   CCNSIM_BUILD_DIR (default build/sim) holds the build; CCN_JOBS sets the parallel jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${CCNSIM_BUILD_DIR:-build/sim}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
tools/cudasim/build.sh
core=$(ls "$BUILD"/lib/_core*.so | head -1)
# CCNSIM_RUNTIME: tests/conftest.py checks the simulator's fault reports after each test (the
# runtime points ccn's cuBLAS loader, CCN_CUBLAS, at itself)
export CCN_CORE="$core" CCNSIM_RUNTIME="$BUILD/lib/libccnsim_rt.so"
[ $# -gt 0 ] || set -- tests/cuda
exec "$PY" -m pytest -p no:cacheprovider "$@"
