// ccn/native/cuda/norm_common.cuh: window arithmetic and the shared pieces of the
// response / contrast normalisation kernels (rnorm.cu, cmrnorm.cu, cnorm.cu).
// A window of size N around p is [p - N/2, p - N/2 + N), clipped to [0, L).
// The positions q whose window holds p are [p + N/2 - N + 1, p + N/2], clipped to [0, L).
#pragma once
#include "cuda/kernels.h"

namespace ccn::cuda {

// The grid-stride loop over the elements e in [0, total) (one thread per element).
#define CCN_NORM_FOR_ELEMENTS(total) \
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (total); e += (int64_t)gridDim.x * blockDim.x)

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

// Element e of an N x C x S x S tensor [n][c][y][x]: its pixel p = (py, px) within its map
// and `map`, the offset e - p of that map's first element.
struct MapPixel {
  int p, py, px;
  int64_t map;
};
__device__ __forceinline__ MapPixel map_pixel(int64_t e, int S) {
  const int SS = S * S;
  MapPixel q;
  q.p = (int)(e % SS);
  q.py = q.p / S;
  q.px = q.p % S;
  q.map = e - q.p;
  return q;
}

// The clipped 2-D window of q's pixel (rows [y0, y1) x columns [x0, x1)), and its transpose:
// the pixels whose window holds q's.
struct Box {
  int y0, y1, x0, x1;
};
__device__ __forceinline__ Box window_box(const NormGeom& g, const MapPixel& q) {
  Box b;
  window_of(q.py, g.size, g.S, b.y0, b.y1);
  window_of(q.px, g.size, g.S, b.x0, b.x1);
  return b;
}
__device__ __forceinline__ Box holders_box(const NormGeom& g, const MapPixel& q) {
  Box b;
  holders_of(q.py, g.size, g.S, b.y0, b.y1);
  holders_of(q.px, g.size, g.S, b.x0, b.x1);
  return b;
}

// box_sum of a (a whole N x C x S x S tensor) over the window of q / over its holders, in q's map.
template <bool sq>
__device__ __forceinline__ float window_sum(const float* a, const NormGeom& g, const MapPixel& q) {
  const Box b = window_box(g, q);
  return box_sum<sq>(a + q.map, g.S, b.y0, b.y1, b.x0, b.x1);
}
template <bool sq>
__device__ __forceinline__ float holders_sum(const float* a, const NormGeom& g, const MapPixel& q) {
  const Box b = holders_box(g, q);
  return box_sum<sq>(a + q.map, g.S, b.y0, b.y1, b.x0, b.x1);
}

// The forward step of element e from its window sum s, as the CPU layers:
// d = minDiv + a * s, y = x * d^-pow.
__device__ __forceinline__ void normalise(const NormGeom& g, float s, const float* x, float* y, float* d, int64_t e) {
  const float den = rn_add(g.minDiv, rn_mul(g.a, s));
  d[e] = den;
  y[e] = rn_mul(x[e], inv_pow(den, g.pow_case, g.pow));
}

// The gradient's direct term dout_e * d_e^-pow.
__device__ __forceinline__ float direct_grad(const NormGeom& g, const float* dout, const float* d, int64_t e) {
  return rn_mul(dout[e], inv_pow(d[e], g.pow_case, g.pow));
}

namespace {
// t = dout * y / d, one thread per element (the CPU layers' ratio; cnorm's T).
// Layouts: dout, y, d, t: n floats, element-wise.
__global__ void ratio_kernel(const float* dout, const float* y, const float* d, float* t, int64_t n) {
  CCN_NORM_FOR_ELEMENTS(n) t[e] = rn_mul(dout[e], y[e]) / d[e];
}
}  // namespace

}  // namespace ccn::cuda
