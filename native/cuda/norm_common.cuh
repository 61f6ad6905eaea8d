// ccn/native/cuda/norm_common.cuh: window arithmetic shared by rnorm.cu and cnorm.cu.
// A window of size N around p is [p - N/2, p - N/2 + N), clipped to [0, L).
// The positions q whose window holds p are [p + N/2 - N + 1, p + N/2], clipped to [0, L).
#pragma once

namespace ccn::cuda {

__device__ __forceinline__ void window_of(int p, int N, int L, int& lo, int& hi) {  // [lo, hi)
  lo = max(0, p - N / 2);
  hi = min(L, p - N / 2 + N);
}
__device__ __forceinline__ void holders_of(int p, int N, int L, int& lo, int& hi) {  // [lo, hi)
  lo = max(0, p + N / 2 - N + 1);
  hi = min(L, p + N / 2 + 1);
}

}  // namespace ccn::cuda
