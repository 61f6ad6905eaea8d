// ccn/native/cuda/cmpool.cu: type=cmpool, cross-map max pooling, as native/layers/cmpool.cpp.
// Layouts: in/din N x (C*SS) [n][c][p]; out/dout N x (O*SS) [n][o][p], p = y*S + x
// (SS pixels per map). Output map o pools input maps [start + o*stride, start + o*stride +
// size) clipped to [0, C), pixel by pixel. Backward gathers, per input element, every
// output map whose window holds its map: dout is added where in == out (ties all get it).
// No atomics: one writer per input element.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__device__ __forceinline__ int floor_div_cm(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int ceil_div_cm(int a, int b) { return -floor_div_cm(-a, b); }

// One thread per output element e = (n*O + o)*SS + p.
__global__ void cmpool_fprop_kernel(CmPoolGeom g, const float* in, float* out) {
  const int64_t total = (int64_t)g.N * g.O * g.SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = e % g.SS;
    const int o = (int)((e / g.SS) % g.O);
    const int64_t n = e / ((int64_t)g.SS * g.O);
    const int c0 = max(0, g.start + o * g.stride), c1 = min(g.C, g.start + o * g.stride + g.size);
    const float* x = in + n * g.C * g.SS + p;  // x[c*SS] = in[n, c, p]
    float r = x[(int64_t)c0 * g.SS];            // setup guarantees c0 < c1
    for (int c = c0 + 1; c < c1; ++c) {  // std::max's rule, as the CPU layer (fmaxf drops NaNs)
      const float v = x[(int64_t)c * g.SS];
      r = r < v ? v : r;
    }
    out[e] = r;
  }
}

// One thread per input element e = (n*C + c)*SS + p: outputs o with
// start + o*stride <= c < start + o*stride + size, in increasing o.
__global__ void cmpool_bprop_kernel(CmPoolGeom g, const float* in, const float* out, const float* dout, float* din) {
  const int64_t total = (int64_t)g.N * g.C * g.SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = e % g.SS;
    const int c = (int)((e / g.SS) % g.C);
    const int64_t n = e / ((int64_t)g.SS * g.C);
    const int o0 = max(0, ceil_div_cm(c - g.start - g.size + 1, g.stride));
    const int o1 = min(g.O - 1, floor_div_cm(c - g.start, g.stride));
    const float v = in[e];
    float s = din[e];  // added one by one in increasing o, as the CPU layer adds them
    for (int o = o0; o <= o1; ++o) {
      const int64_t k = (n * g.O + o) * g.SS + p;
      if (v == out[k]) s += dout[k];
    }
    din[e] = s;
  }
}

void check_cmpool(const CmPoolGeom& g) {
  CCN_CHECK(g.size > 0 && g.stride > 0 && g.O > 0 && g.C > 0 && g.SS > 0 && g.start <= 0);
}
}  // namespace

void cmpool_fprop(CudaCtx& cx, const CmPoolGeom& g, const float* in, float* out) {
  check_cmpool(g);
  const int64_t total = (int64_t)g.N * g.O * g.SS;
  if (total <= 0) return;
  cmpool_fprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(g, in, out);
  CCN_CUDA_LAUNCHED();
}

void cmpool_bprop(CudaCtx& cx, const CmPoolGeom& g, const float* in, const float* out, const float* dout, float* din) {
  check_cmpool(g);
  const int64_t total = (int64_t)g.N * g.C * g.SS;
  if (total <= 0 || !din) return;
  cmpool_bprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(g, in, out, dout, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
