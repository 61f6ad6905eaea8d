#!/usr/bin/env bash
# Developer build: configure once into build/dev and build the extension in place
# (ccn/_core*.so), so `PYTHONPATH=. pytest` runs without reinstalling. Needs cmake and ninja,
# and the build tools importable by this python (pip install scikit-build-core pybind11
# scipy-openblas32).
# Usage: tools/dev-build.sh [extra cmake args, e.g. -DCCN_CUDA=OFF]
#   Extra arguments are given to cmake on every run, so they also change an existing build
#   folder (CCN_BUILD_DIR, default build/dev); without them an existing folder keeps its
#   settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=${CCN_BUILD_DIR:-build/dev}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/ccn" "$@"
elif [ $# -gt 0 ]; then
  cmake -S . -B "$BUILD" "$@"
fi
cmake --build "$BUILD" -j"${CCN_JOBS:-2}"
