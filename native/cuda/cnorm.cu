// ccn/native/cuda/cnorm.cu: type=cnorm, contrast normalisation within each map.
// Layouts: x, y, dout, din, and the two halves of `state` (d, then u): N x (C*S*S)
// [n][c][y][x]. W(p) is the clipped 2-D window of norm_common.cuh, n_p = |W(p)|.
//   m_p = (1/n_p) sum_{r in W(p)} x_r         (clipped window mean)
//   u_p = x_p - m_p
//   d_p = minDiv + a * sum_{r in W(p)} u_r^2  (a = scale / size^2)
//   y_p = x_p * d_p^-pow                      (the numerator is the raw x)
// Exact gradient (the mean depends on x too):
//   t_p = -2 a pow dout_p y_p / d_p
//   v_r = u_r * sum_{p: r in W(p)} t_p
//   din_s += dout_s d_s^-pow + v_s - sum_{r: s in W(r)} v_r / n_r
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"
#include "cuda/norm_common.cuh"

namespace ccn::cuda {

namespace {
#define CCN_FOR_ELEMENTS(total) \
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (total); e += (int64_t)gridDim.x * blockDim.x)

// u = x - window mean; one thread per element.
__global__ void cnorm_mean_kernel(NormGeom g, const float* x, float* u) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    const float* img = x + (e - p);
    int y0, y1, x0, x1;
    window_of(py, g.size, g.S, y0, y1);
    window_of(px, g.size, g.S, x0, x1);
    float s = 0.f;
    for (int yy = y0; yy < y1; ++yy)
      for (int xx = x0; xx < x1; ++xx) s += img[yy * g.S + xx];
    u[e] = x[e] - s / (float)((y1 - y0) * (x1 - x0));
  }
}

// d and y; one thread per element.
__global__ void cnorm_fprop_kernel(NormGeom g, const float* x, const float* u, float* d, float* y) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    const float* up = u + (e - p);
    int y0, y1, x0, x1;
    window_of(py, g.size, g.S, y0, y1);
    window_of(px, g.size, g.S, x0, x1);
    float s = 0.f;
    for (int yy = y0; yy < y1; ++yy)
      for (int xx = x0; xx < x1; ++xx) {
        float v = up[yy * g.S + xx];
        s += v * v;
      }
    const float den = g.minDiv + g.a * s;
    d[e] = den;
    y[e] = x[e] * powf(den, -g.pow);
  }
}

// t = -2 a pow dout y / d
__global__ void cnorm_t_kernel(NormGeom g, const float* dout, const float* y, const float* d, float* t, int64_t n) {
  CCN_FOR_ELEMENTS(n) t[e] = -2.f * g.a * g.pow * dout[e] * y[e] / d[e];
}

// v_r = u_r * sum over holders p of r of t_p
__global__ void cnorm_v_kernel(NormGeom g, const float* t, const float* u, float* v) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    const float* tp = t + (e - p);
    int y0, y1, x0, x1;
    holders_of(py, g.size, g.S, y0, y1);
    holders_of(px, g.size, g.S, x0, x1);
    float s = 0.f;
    for (int qy = y0; qy < y1; ++qy)
      for (int qx = x0; qx < x1; ++qx) s += tp[qy * g.S + qx];
    v[e] = u[e] * s;
  }
}

// din_s += dout_s d_s^-pow + v_s - sum over holders r of s of v_r / n_r
__global__ void cnorm_din_kernel(NormGeom g, const float* dout, const float* d, const float* v, float* din) {
  const int SS = g.S * g.S;
  CCN_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS), py = p / g.S, px = p % g.S;
    const float* vp = v + (e - p);
    int y0, y1, x0, x1;
    holders_of(py, g.size, g.S, y0, y1);
    holders_of(px, g.size, g.S, x0, x1);
    float s = 0.f;
    for (int ry = y0; ry < y1; ++ry) {
      int a0, a1;
      window_of(ry, g.size, g.S, a0, a1);
      for (int rx = x0; rx < x1; ++rx) {
        int b0, b1;
        window_of(rx, g.size, g.S, b0, b1);
        s += vp[ry * g.S + rx] / (float)((a1 - a0) * (b1 - b0));
      }
    }
    din[e] += dout[e] * powf(d[e], -g.pow) + v[e] - s;
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
  float* t = cx.scratch((size_t)(2 * n));
  float* v = t + n;
  cudaStream_t st = (cudaStream_t)cx.stream;
  cnorm_t_kernel<<<grid_for(n), 256, 0, st>>>(g, dout, y, d, t, n);
  CCN_CUDA_LAUNCHED();
  cnorm_v_kernel<<<grid_for(n), 256, 0, st>>>(g, t, u, v);
  CCN_CUDA_LAUNCHED();
  cnorm_din_kernel<<<grid_for(n), 256, 0, st>>>(g, dout, d, v, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
