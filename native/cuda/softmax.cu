// ccn/native/cuda/softmax.cu: type=softmax over each case's K values.
//   y[n, j] = exp(x[n, j] - max_j x[n, :]) / sum_j exp(...)
//   din[n, j] += y[n, j] * (dout[n, j] - sum_k dout[n, k] * y[n, k])
// Layout: x, y, dout, din: N x K row-major (rows = cases). One block per case; the block
// reduces the row's max (float) and sums (double, like the CPU layer).
#include <cfloat>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

constexpr int kThreads = 256;

template <class T, class Op>
__device__ T block_reduce(T v, T* sh, Op op) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) sh[threadIdx.x] = op(sh[threadIdx.x], sh[threadIdx.x + h]);
    __syncthreads();
  }
  T r = sh[0];
  __syncthreads();  // sh may be reused right after
  return r;
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct AddOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

__global__ void softmax_fprop_kernel(const float* x, float* y, int K) {
  __shared__ float shf[kThreads];
  __shared__ double shd[kThreads];
  const float* xr = x + (int64_t)blockIdx.x * K;
  float* yr = y + (int64_t)blockIdx.x * K;
  float mx = -FLT_MAX;
  for (int j = threadIdx.x; j < K; j += blockDim.x) mx = fmaxf(mx, xr[j]);
  mx = block_reduce(mx, shf, MaxOp());
  double s = 0;
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    float e = expf(xr[j] - mx);
    yr[j] = e;
    s += e;
  }
  s = block_reduce(s, shd, AddOp());
  const float inv = (float)(1.0 / s);
  for (int j = threadIdx.x; j < K; j += blockDim.x) yr[j] *= inv;
}

__global__ void softmax_bprop_kernel(const float* y, const float* g, float* d, int K) {
  __shared__ double shd[kThreads];
  const int64_t off = (int64_t)blockIdx.x * K;
  double dot = 0;
  for (int j = threadIdx.x; j < K; j += blockDim.x) dot += (double)g[off + j] * y[off + j];
  dot = block_reduce(dot, shd, AddOp());
  const float fdot = (float)dot;
  for (int j = threadIdx.x; j < K; j += blockDim.x) d[off + j] += y[off + j] * (g[off + j] - fdot);
}

void softmax_fprop(CudaCtx& cx, const float* x, float* y, int N, int K) {
  if (N <= 0 || K <= 0) return;
  softmax_fprop_kernel<<<N, kThreads, 0, (cudaStream_t)cx.stream>>>(x, y, K);
  CCN_CUDA_LAUNCHED();
}

void softmax_bprop(CudaCtx& cx, const float* y, const float* dout, float* din, int N, int K) {
  if (N <= 0 || K <= 0) return;
  softmax_bprop_kernel<<<N, kThreads, 0, (cudaStream_t)cx.stream>>>(y, dout, din, K);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
