// ccn/native/core/simd_avx512.cpp: the avx512 build of the kernels in simd_kernels.inc (see simd.h;
// its compile flags are set in CMakeLists.txt).
#define CCN_SIMD_NS avx512
#define CCN_SIMD_NAME "avx512"
#include "core/simd_kernels.inc"
