// ccn/native/cuda/cnorm.cu: type=cnorm, contrast normalisation within each map.
// Layouts: x, y, dout, din, and the two halves of `state` (d, then u): N x (C*S*S)
// [n][c][y][x]. W(p) is the clipped 2-D window of norm_common.cuh, n_p = |W(p)|.
//   m_p = (1/n_p) sum_{r in W(p)} x_r         (clipped window mean)
//   u_p = x_p - m_p
//   d_p = minDiv + a * sum_{r in W(p)} u_r^2  (a = scale / size^2)
//   y_p = x_p * d_p^-pow                      (the numerator is the raw x)
// Exact gradient (the mean depends on x too), with f2 = -2 a pow:
//   t_p = dout_p y_p / d_p
//   v_r = f2 u_r * sum_{p: r in W(p)} t_p
//   din_s += dout_s d_s^-pow + v_s - sum_{r: s in W(r)} v_r / n_r
// The float operations are the CPU layer's (native/layers/cnorm.cpp), in its order and
// without fused multiply-adds (1/n_r as a reciprocal multiplied, window sums row by row).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"
#include "cuda/norm_common.cuh"

namespace ccn::cuda {

namespace {
// 1 / (number of window pixels of q inside the image), as the CPU's inverse_counts.
__device__ __forceinline__ float inv_count(const NormGeom& g, const MapPixel& q) {
  const Box b = window_box(g, q);
  return 1.f / (float)((b.y1 - b.y0) * (b.x1 - b.x0));
}

// u = x - window sum * (1 / count); one thread per element.
__global__ void cnorm_mean_kernel(NormGeom g, const float* x, float* u) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    const MapPixel q = map_pixel(e, g.S);
    u[e] = x[e] - rn_mul(window_sum<false>(x, g, q), inv_count(g, q));
  }
}

// d and y; one thread per element.
__global__ void cnorm_fprop_kernel(NormGeom g, const float* x, const float* u, float* d, float* y) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    normalise(g, window_sum<true>(u, g, map_pixel(e, g.S)), x, y, d, e);
  }
}

// (t = dout y / d, the CPU's T: ratio_kernel, norm_common.cuh)

// v_r = f2 * u_r * (sum over holders p of r of t_p)   (the CPU's U)
__global__ void cnorm_v_kernel(NormGeom g, const float* t, const float* u, float* v) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    v[e] = rn_mul(rn_mul(g.f2, u[e]), holders_sum<false>(t, g, map_pixel(e, g.S)));
  }
}

// w_r = v_r / n_r, as the CPU's U * inv_n (multiplied by the reciprocal)
__global__ void cnorm_w_kernel(NormGeom g, const float* v, float* w) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) w[e] = rn_mul(v[e], inv_count(g, map_pixel(e, g.S)));
}

// din_s = (din_s + (dout_s d_s^-pow + v_s)) - sum over holders r of s of w_r   (the CPU's order)
__global__ void cnorm_din_kernel(NormGeom g, const float* dout, const float* d, const float* v, const float* w,
                                 float* din) {
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * g.S * g.S) {
    const float acc = rn_add(din[e], rn_add(direct_grad(g, dout, d, e), v[e]));
    din[e] = acc - holders_sum<false>(w, g, map_pixel(e, g.S));
  }
}
}  // namespace

void cnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* state) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0) return;
  float* d = state;
  float* u = state + n;
  cudaStream_t st = (cudaStream_t)cx.stream;
  cnorm_mean_kernel<<<grid_for(n), 256, 0, st>>>(g, x, u);
  CCN_CUDA_LAUNCHED();
  cnorm_fprop_kernel<<<grid_for(n), 256, 0, st>>>(g, x, u, d, y);
  CCN_CUDA_LAUNCHED();
}

void cnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* state,
                 const float* dout, float* din) {
  const int64_t n = (int64_t)g.N * g.C * g.S * g.S;
  if (n <= 0 || !din) return;
  const float* d = state;
  const float* u = state + n;
  float* t = cx.scratch((size_t)(3 * n));
  float* v = t + n;
  float* w = v + n;
  cudaStream_t st = (cudaStream_t)cx.stream;
  ratio_kernel<<<grid_for(n), 256, 0, st>>>(dout, y, d, t, n);
  CCN_CUDA_LAUNCHED();
  cnorm_v_kernel<<<grid_for(n), 256, 0, st>>>(g, t, u, v);
  CCN_CUDA_LAUNCHED();
  cnorm_w_kernel<<<grid_for(n), 256, 0, st>>>(g, v, w);
  CCN_CUDA_LAUNCHED();
  cnorm_din_kernel<<<grid_for(n), 256, 0, st>>>(g, dout, d, v, w, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
