// ccn/native/cuda/cmrnorm.cu: type=cmrnorm, response normalisation across maps.
// Layouts: x, y, dout, din, denoms: N x (C*S*S) [n][c][y][x].
//   d_(c,p) = minDiv + a * sum_{k in W(c)} x_(k,p)^2      (same pixel p, neighbouring maps)
//   W(c) = [c - size/2, c - size/2 + size) clipped to [0, C); blocked: the aligned block
//          [c - c%size, c - c%size + size) clipped
//   y = x * d^-pow;  din_c += dout_c d_c^-pow - 2 a pow x_c * sum_{k: c in W(k)} dout_k y_k / d_k
// `a` is the user's scale / size.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"
#include "cuda/norm_common.cuh"

namespace ccn::cuda {

namespace {
__device__ __forceinline__ void chan_window(const NormGeom& g, int c, int& lo, int& hi) {
  if (g.blocked) {
    lo = c - c % g.size;
    hi = min(g.C, lo + g.size);
  } else {
    window_of(c, g.size, g.C, lo, hi);
  }
}
__device__ __forceinline__ void chan_holders(const NormGeom& g, int c, int& lo, int& hi) {
  if (g.blocked) {
    chan_window(g, c, lo, hi);  // a block holds exactly its own members
  } else {
    holders_of(c, g.size, g.C, lo, hi);
  }
}

// One thread per element (n, c, p).
__global__ void cmrnorm_fprop_kernel(NormGeom g, const float* x, float* y, float* d) {
  const int SS = g.S * g.S;
  const int64_t total = (int64_t)g.N * g.C * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS);
    const int c = (int)((e / SS) % g.C);
    const float* xp = x + (e - (int64_t)c * SS - p) + p;  // channel 0 at this pixel
    int c0, c1;
    chan_window(g, c, c0, c1);
    float s = 0.f;
    for (int k = c0; k < c1; ++k) {
      float v = xp[(int64_t)k * SS];
      s += v * v;
    }
    const float den = g.minDiv + g.a * s;
    d[e] = den;
    y[e] = x[e] * powf(den, -g.pow);
  }
}

__global__ void ratio_kernel(const float* g, const float* y, const float* d, float* t, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    t[e] = g[e] * y[e] / d[e];
}

__global__ void cmrnorm_bprop_kernel(NormGeom g, const float* x, const float* d, const float* dout, const float* t,
                                     float* din) {
  const int SS = g.S * g.S;
  const int64_t total = (int64_t)g.N * g.C * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS);
    const int c = (int)((e / SS) % g.C);
    const float* tp = t + (e - (int64_t)c * SS - p) + p;
    int k0, k1;
    chan_holders(g, c, k0, k1);
    float s = 0.f;
    for (int k = k0; k < k1; ++k) s += tp[(int64_t)k * SS];
    din[e] += dout[e] * powf(d[e], -g.pow) - 2.f * g.a * g.pow * x[e] * s;
  }
}
}  // namespace

void cmrnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* denoms) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0) return;
  cmrnorm_fprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(g, x, y, denoms);
  CCN_CUDA_LAUNCHED();
}

void cmrnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* denoms,
                   const float* dout, float* din) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0 || !din) return;
  float* t = cx.scratch((size_t)n);
  ratio_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(dout, y, denoms, t, n);
  CCN_CUDA_LAUNCHED();
  cmrnorm_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(g, x, denoms, dout, t, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
