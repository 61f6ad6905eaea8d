// ccn/native/core/simd_avx2.cpp: the avx2 build of the kernels in simd_kernels.inc (see simd.h;
// its compile flags are set in CMakeLists.txt).
#define CCN_SIMD_NS avx2
#define CCN_SIMD_NAME "avx2"
#include "core/simd_kernels.inc"
