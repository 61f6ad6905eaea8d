// ccn/native/cuda/rnorm.cu: type=rnorm, response normalisation within each map.
// Layouts: x, y, dout, din, denoms: N x (C*S*S) [n][c][y][x], element-wise positions.
//   d_p = minDiv + a * sum_{r in W(p)} x_r^2,   W(p) = 2-D window (norm_common.cuh)
//   y_p = x_p * d_p^-pow
//   din_p += dout_p d_p^-pow + f2 x_p * sum_{q: p in W(q)} dout_q y_q / d_q,  f2 = -2 a pow
// `a` is the user's scale / size^2 (no renormalisation for clipped windows). The float
// operations are the CPU layer's (native/layers/rnorm.cpp), in its order and without fused
// multiply-adds: window sums row by row, d^-pow by inv_pow (norm_common.cuh).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"
#include "cuda/norm_common.cuh"

namespace ccn::cuda {

namespace {
// One thread per element.
__global__ void rnorm_fprop_kernel(NormGeom g, const float* x, float* y, float* d) {
  const int SS = g.S * g.S;
  const int64_t total = (int64_t)g.N * g.C * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    window_of(py, g.size, g.S, y0, y1);
    window_of(px, g.size, g.S, x0, x1);
    const float den = rn_add(g.minDiv, rn_mul(g.a, box_sum<true>(x + (e - p), g.S, y0, y1, x0, x1)));
    d[e] = den;
    y[e] = rn_mul(x[e], inv_pow(den, g.pow_case, g.pow));
  }
}

// t_q = dout_q * y_q / d_q, one thread per element.
__global__ void ratio_kernel(const float* g, const float* y, const float* d, float* t, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    t[e] = rn_mul(g[e], y[e]) / d[e];
}

// One thread per element p: gathers t over the positions whose window holds p.
__global__ void rnorm_bprop_kernel(NormGeom g, const float* x, const float* d, const float* dout, const float* t,
                                   float* din) {
  const int SS = g.S * g.S;
  const int64_t total = (int64_t)g.N * g.C * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    holders_of(py, g.size, g.S, y0, y1);
    holders_of(px, g.size, g.S, x0, x1);
    const float s = box_sum<false>(t + (e - p), g.S, y0, y1, x0, x1);
    // the CPU: d += g * dp + f * x * s
    din[e] = rn_add(din[e], rn_add(rn_mul(dout[e], inv_pow(d[e], g.pow_case, g.pow)), rn_mul(rn_mul(g.f2, x[e]), s)));
  }
}
}  // namespace

void rnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* denoms) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0) return;
  rnorm_fprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(g, x, y, denoms);
  CCN_CUDA_LAUNCHED();
}

void rnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* denoms,
                 const float* dout, float* din) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0 || !din) return;
  float* t = cx.scratch((size_t)n);
  ratio_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(dout, y, denoms, t, n);
  CCN_CUDA_LAUNCHED();
  rnorm_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(g, x, denoms, dout, t, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
