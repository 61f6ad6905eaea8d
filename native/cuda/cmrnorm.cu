// ccn/native/cuda/cmrnorm.cu: type=cmrnorm, response normalisation across maps.
// Layouts: x, y, dout, din, denoms: N x (C*S*S) [n][c][y][x].
//   d_(c,p) = minDiv + a * sum_{k in W(c)} x_(k,p)^2      (same pixel p, neighbouring maps)
//   W(c) = [c - size/2, c - size/2 + size) clipped to [0, C); blocked: the aligned block
//          [c - c%size, c - c%size + size) clipped
//   y = x * d^-pow;  din_c += dout_c d_c^-pow + f2 x_c * sum_{k: c in W(k)} dout_k y_k / d_k, f2 = -2 a pow
// `a` is the user's scale / size. The float operations are the CPU layer's
// (native/layers/cmrnorm.cpp), in its order and without fused multiply-adds.
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
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS);
    const int c = (int)((e / SS) % g.C);
    const float* xp = x + (e - (int64_t)c * SS - p) + p;  // channel 0 at this pixel
    int c0, c1;
    chan_window(g, c, c0, c1);
    float s = 0.f;  // the CPU: den = 0; den += xc * xc over the window's channels in order
    for (int k = c0; k < c1; ++k) {
      const float v = xp[(int64_t)k * SS];
      s = rn_add(s, rn_mul(v, v));
    }
    normalise(g, s, x, y, d, e);
  }
}

// One thread per element (n, c, p): gathers t = dout y / d (ratio_kernel, norm_common.cuh)
// over the channels whose window holds c.
__global__ void cmrnorm_bprop_kernel(NormGeom g, const float* x, const float* d, const float* dout, const float* t,
                                     float* din) {
  const int SS = g.S * g.S;
  CCN_NORM_FOR_ELEMENTS((int64_t)g.N * g.C * SS) {
    const int p = (int)(e % SS);
    const int c = (int)((e / SS) % g.C);
    const float* tp = t + (e - (int64_t)c * SS - p) + p;
    int k0, k1;
    chan_holders(g, c, k0, k1);
    // the CPU: d += g * dp; then d += f * x * t_k for each holder k in order
    float acc = rn_add(din[e], direct_grad(g, dout, d, e));
    const float fx = rn_mul(g.f2, x[e]);
    for (int k = k0; k < k1; ++k) acc = rn_add(acc, rn_mul(fx, tp[(int64_t)k * SS]));
    din[e] = acc;
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
