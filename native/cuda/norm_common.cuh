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

// D^-pow as layers/norm.h inv_pow computes it (exact paths for the common exponents).
// Division and sqrtf are IEEE-rounded without --use_fast_math, as on the CPU.
__device__ __forceinline__ float inv_pow(float d, int pow_case, float pow) {
  switch (pow_case) {
    case 1: {
      const float r = 1.f / sqrtf(d);
      return __fmul_rn(r, sqrtf(r));
    }
    case 2: return 1.f / sqrtf(d);
    case 3: return 1.f / d;
    default: return powf(d, -pow);
  }
}

// The CPU's float operations without contraction into fused multiply-adds (nvcc contracts
// a * b + c by default; the CPU build does not): den = minDiv + a * sum, acc + p * q.
__device__ __forceinline__ float rn_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float rn_add(float a, float b) { return __fadd_rn(a, b); }

// Sum over the clipped 2-D window rows [y0, y1) x columns [x0, x1) of the plane p (S wide):
// each row summed left to right from 0, the row sums added top to bottom from 0, as
// layers/norm.h box_sum_2d (a horizontal pass, then a vertical one). `sq` squares each value.
template <bool sq>
__device__ __forceinline__ float box_sum(const float* p, int S, int y0, int y1, int x0, int x1) {
  float s = 0.f;
  for (int y = y0; y < y1; ++y) {
    float r = 0.f;
    for (int x = x0; x < x1; ++x) {
      const float v = p[y * S + x];
      r = rn_add(r, sq ? rn_mul(v, v) : v);
    }
    s = rn_add(s, r);
  }
  return s;
}

}  // namespace ccn::cuda
