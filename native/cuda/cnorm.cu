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
#define CCN_FOR_ELEMENTS(total) \
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (total); e += (int64_t)gridDim.x * blockDim.x)

// 1 / (number of window pixels of (py, px) inside the image), as the CPU's inverse_counts.
__device__ __forceinline__ float inv_count(const NormGeom& g, int py, int px) {
  int y0, y1, x0, x1;
  window_of(py, g.size, g.S, y0, y1);
  window_of(px, g.size, g.S, x0, x1);
  return 1.f / (float)((y1 - y0) * (x1 - x0));
}

// u = x - window sum * (1 / count); one thread per element.
__global__ void cnorm_mean_kernel(NormGeom g, const float* x, float* u) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    window_of(py, g.size, g.S, y0, y1);
    window_of(px, g.size, g.S, x0, x1);
    const float s = box_sum<false>(x + (e - p), g.S, y0, y1, x0, x1);
    u[e] = x[e] - rn_mul(s, inv_count(g, py, px));
  }
}

// d and y; one thread per element.
__global__ void cnorm_fprop_kernel(NormGeom g, const float* x, const float* u, float* d, float* y) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    window_of(py, g.size, g.S, y0, y1);
    window_of(px, g.size, g.S, x0, x1);
    const float den = rn_add(g.minDiv, rn_mul(g.a, box_sum<true>(u + (e - p), g.S, y0, y1, x0, x1)));
    d[e] = den;
    y[e] = rn_mul(x[e], inv_pow(den, g.pow_case, g.pow));
  }
}

// t = dout y / d (the CPU's T)
__global__ void cnorm_t_kernel(const float* dout, const float* y, const float* d, float* t, int64_t n) {
  CCN_FOR_ELEMENTS(n) t[e] = rn_mul(dout[e], y[e]) / d[e];
}

// v_r = f2 * u_r * (sum over holders p of r of t_p)   (the CPU's U)
__global__ void cnorm_v_kernel(NormGeom g, const float* t, const float* u, float* v) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    holders_of(py, g.size, g.S, y0, y1);
    holders_of(px, g.size, g.S, x0, x1);
    v[e] = rn_mul(rn_mul(g.f2, u[e]), box_sum<false>(t + (e - p), g.S, y0, y1, x0, x1));
  }
}

// w_r = v_r / n_r, as the CPU's U * inv_n (multiplied by the reciprocal)
__global__ void cnorm_w_kernel(NormGeom g, const float* v, float* w) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS);
    w[e] = rn_mul(v[e], inv_count(g, p / g.S, p % g.S));
  }
}

// din_s = (din_s + (dout_s d_s^-pow + v_s)) - sum over holders r of s of w_r   (the CPU's order)
__global__ void cnorm_din_kernel(NormGeom g, const float* dout, const float* d, const float* v, const float* w,
                                 float* din) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    int y0, y1, x0, x1;
    holders_of(py, g.size, g.S, y0, y1);
    holders_of(px, g.size, g.S, x0, x1);
    const float acc = rn_add(din[e], rn_add(rn_mul(dout[e], inv_pow(d[e], g.pow_case, g.pow)), v[e]));
    din[e] = acc - box_sum<false>(w + (e - p), g.S, y0, y1, x0, x1);
  }
}
#undef CCN_FOR_ELEMENTS
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
  cnorm_t_kernel<<<grid_for(n), 256, 0, st>>>(dout, y, d, t, n);
  CCN_CUDA_LAUNCHED();
  cnorm_v_kernel<<<grid_for(n), 256, 0, st>>>(g, t, u, v);
  CCN_CUDA_LAUNCHED();
  cnorm_w_kernel<<<grid_for(n), 256, 0, st>>>(g, v, w);
  CCN_CUDA_LAUNCHED();
  cnorm_din_kernel<<<grid_for(n), 256, 0, st>>>(g, dout, d, v, w, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
