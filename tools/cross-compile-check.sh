#!/usr/bin/env bash
# Compiles ccn's C++ sources (not CUDA) for other CPUs and systems with zig's clang, to catch
# x86- or Linux-only code before a laptop user does: aarch64 Linux, Apple silicon and Intel
# macOS, without OpenMP (Apple's clang has none unless Homebrew's libomp is installed).
# Objects only (no linking, no running). Needs `pip install ziglang` (about 100 MB; the script
# makes a venv for it under build/zig-venv). Prints one line per target and exits 1 if any
# file fails. The scipy-openblas32 header here is the Linux wheel's, whose cblas.h uses
# cpu_set_t: on macOS targets blas.cpp is compiled against a small stand-in declaring the
# four functions ccn uses.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/build/zig-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q ziglang pybind11 || exit 1
fi
ZIG=("$VENV/bin/python" -m ziglang c++)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
OBL=$(python3 -c "import scipy_openblas32 as s; print(s.get_include_dir())")
PYINC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
PBI=$("$VENV/bin/python" -c "import pybind11; print(pybind11.get_include())")
mkdir -p "$OUT/mac-blas"
cat > "$OUT/mac-blas/cblas.h" <<'H'
#pragma once
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };
extern "C" {
void scipy_cblas_sgemm(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, int, int, int, float,
                       const float*, int, const float*, int, float, float*, int);
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
char* scipy_openblas_get_config(void);
}
H
status=0
for tgt in aarch64-linux-gnu aarch64-macos x86_64-macos; do
  blas_inc=$OBL
  [[ $tgt == *macos ]] && blas_inc=$OUT/mac-blas
  bad=()
  for f in native/core/*.cpp native/netdef/*.cpp native/layers/*.cpp native/net/*.cpp native/kernels/*.cpp \
           native/python/bindings.cpp; do
    [[ $f == *net_cuda* ]] && continue
    if ! (cd "$OUT" && "${ZIG[@]}" -target "$tgt" -std=c++17 -O1 -c -o x.o -I"$ROOT/native" \
          -I"$blas_inc" -I"$PYINC" -I"$PBI" -DCCN_BLAS_SCIPY_OPENBLAS=1 '-DCCN_BLAS_NAME="scipy-openblas32"' \
          -Wall -Wno-unknown-pragmas -Wno-unused-parameter "$ROOT/$f") > "$OUT/log" 2>&1; then
      bad+=("$f"); sed -n 1,6p "$OUT/log"
    fi
  done
  if ((${#bad[@]})); then echo "$tgt: ${#bad[@]} file(s) failed: ${bad[*]}"; status=1; else echo "$tgt: every file compiles"; fi
done
exit $status
