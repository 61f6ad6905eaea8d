// ccn/native/cuda/check.h: every CUDA call and every kernel launch is checked.
//
//   CCN_CUDA_CHECK(cudaMemcpyAsync(...));   // a failing call -> ccn::Error (runtime kind)
//   kernel<<<g, b, 0, cx.stream>>>(...);
//   CCN_CUDA_LAUNCHED();                      // launch errors (bad config, no kernel image)
//
// The error names the file and line and the call that failed, and the CUDA error's name
// and description, e.g. "CUDA error at native/cuda/pool.cu:88: pool_max_fprop launch:
// cudaErrorInvalidConfiguration (invalid configuration argument)." Errors that happen
// inside a running kernel surface at the next checked call on that stream.
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

#define CCN_CUDA_LAUNCHED() CCN_CUDA_CHECK(cudaGetLastError())

namespace ccn::cuda {

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(b, 65536));
}

}  // namespace ccn::cuda
