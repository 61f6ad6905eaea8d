#!/usr/bin/env bash
# Build ccn's CUDA backend for the CPU simulator (tools/cudasim/README.md) into
# $CCNSIM_BUILD_DIR (default build/sim): lib/_core*.so (the extension) and lib/libccnsim_rt.so.
# Needs cmake and ninja, and pybind11 and scipy-openblas32 importable by $PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${CCNSIM_BUILD_DIR:-build/sim}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCCN_CUDA=SIM \
    -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$BUILD/lib" >/dev/null
fi
cmake --build "$BUILD" -j"${CCN_JOBS:-2}" | { grep -v '^\[' || true; }
test -f "$BUILD/lib/libccnsim_rt.so" && ls "$BUILD"/lib/_core*.so >/dev/null
