// ccn/native/cuda/check.h: every CUDA call and every kernel launch is checked.
//
//   CCN_CUDA_CHECK(cudaMemcpyAsync(...));   // a failing call -> ccn::Error (runtime kind)
//   kernel<<<g, b, 0, cx.stream>>>(...);
//   CCN_CUDA_LAUNCHED();                      // launch errors (bad config, no kernel image)
//
// The error names the file and line and the call that failed, and the CUDA error's name
// and description, e.g. "CUDA error at native/cuda/pool.cu:88: cudaGetLastError() failed:
// cudaErrorInvalidConfiguration (invalid configuration argument)." Errors that happen
// inside a running kernel surface at the next checked call on that stream (or at the
// launch itself with CCN_CUDA_SYNC_LAUNCHES=1, below).
// Only .cu files include this (it needs cuda_runtime.h).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"

namespace ccn {
[[noreturn]] void cuda_fail(cudaError_t e, const char* what, const char* file, int line);
}

#define CCN_CUDA_CHECK(call)                                                   \
  do {                                                                         \
    cudaError_t ccn_e_ = (call);                                               \
    if (ccn_e_ != cudaSuccess) ::ccn::cuda_fail(ccn_e_, #call, __FILE__, __LINE__); \
  } while (0)

// With the environment variable CCN_CUDA_SYNC_LAUNCHES=1 (read once), every launch is also
// waited for, so an error inside a kernel (an illegal address, say) is reported at the
// launch that caused it rather than at the next synchronising call. For debugging only:
// it serialises host and device.
#define CCN_CUDA_LAUNCHED()                                                      \
  do {                                                                           \
    CCN_CUDA_CHECK(cudaGetLastError());                                          \
    if (::ccn::cuda::sync_launches()) CCN_CUDA_CHECK(cudaDeviceSynchronize());   \
  } while (0)

namespace ccn::cuda {

bool sync_launches();  // CCN_CUDA_SYNC_LAUNCHES=1 (context.cu)

#ifdef __CUDACC__
// std::max(a, b)'s rule on the device, (a < b) ? b : a: a NaN in `a` survives as on the CPU,
// where fmaxf would drop it (a NaN probability would then read as 1e-38 and hide a diverged
// run from the cost check).
__device__ __forceinline__ float cpu_max(float a, float b) { return a < b ? b : a; }
#endif

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(b, 65536));
}

// Grid for a row kernel: blockIdx.y walks `rows` rows (with a grid-stride loop over y past
// 65535 rows) and the x blocks run a grid-stride loop over a row's `cols` columns, about
// `cols_per_thread` of them per thread. Each thread decodes its row once and its columns with
// 32-bit arithmetic (the caller checks that cols fits in an int), instead of splitting a
// 64-bit flat index with 64-bit divisions.
inline dim3 rows_grid(int64_t rows, int64_t cols, int threads = 256, int cols_per_thread = 1) {
  const int64_t per_block = (int64_t)threads * cols_per_thread;
  const int64_t bx = std::max<int64_t>(1, std::min<int64_t>((cols + per_block - 1) / per_block, 65535));
  const int64_t by = std::max<int64_t>(1, std::min<int64_t>(rows, 65535));
  return dim3((unsigned)bx, (unsigned)by);
}

}  // namespace ccn::cuda
