#!/usr/bin/env bash
# Developer build: configure once into build/dev and build the extension in place
# (ccn/_core*.so), so `PYTHONPATH=. pytest` runs without reinstalling. Needs the build
# tools importable by this python (pip install scikit-build-core pybind11 scipy-openblas32).
# Usage: tools/dev-build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=${CCN_BUILD_DIR:-build/dev}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/ccn" "$@"
fi
cmake --build "$BUILD" -j"${CCN_JOBS:-2}"
