// ccn/native/core/simd_portable.cpp: the portable build of the kernels in simd_kernels.inc (see simd.h;
// its compile flags are set in CMakeLists.txt).
#define CCN_SIMD_NS portable
#define CCN_SIMD_NAME "portable"
#include "core/simd_kernels.inc"
