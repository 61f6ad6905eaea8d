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
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    normalise(g, window_sum<true>(x, g, map_pixel(e, g.S)), x, y, d, e);
  }
}

// One thread per element p: gathers t = dout y / d (ratio_kernel, norm_common.cuh) over the
// positions whose window holds p.
__global__ void rnorm_bprop_kernel(NormGeom g, const float* x, const float* d, const float* dout, const float* t,
                                   float* din) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    const float s = holders_sum<false>(t, g, map_pixel(e, g.S));
    // the CPU: d += g * dp + f * x * s
    din[e] = rn_add(din[e], rn_add(direct_grad(g, dout, d, e), rn_mul(rn_mul(g.f2, x[e]), s)));
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
