// ccn/native/cuda/cost_crossent.cu: type=cost.crossent, as native/layers/cost_crossent.cpp.
// Layout: labels t, probs p and dprobs: N x K, rows = cases.
// Forward: one thread per case writes (-sum_k t * safelog(p), 1 - credit) into per-case
// slots (doubles, in scratch); the host adds them in case order. credit = 1/#ties when a
// class tying for the case's maximum p has t > 0, else 0. safelog(x) = log x, or -50 for
// x <= 0 (cuda-convnet2's), in double as on the CPU.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__device__ __forceinline__ double safelog_d(double x) { return x > 0 ? log(x) : -50.0; }

__global__ void crossent_fprop_kernel(const float* labels, const float* probs, int N, int K, double* out) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float* tr = labels + (int64_t)n * K;
  const float* pr = probs + (int64_t)n * K;
  float mx = pr[0];
  for (int k = 1; k < K; ++k) mx = mx < pr[k] ? pr[k] : mx;  // std::max's rule, as the CPU layer
  int nmax = 0;
  bool hit = false;
  double s = 0;
  for (int k = 0; k < K; ++k) {
    nmax += pr[k] == mx;
    hit = hit || (pr[k] == mx && tr[k] > 0.f);
    s += (double)tr[k] * safelog_d((double)pr[k]);
  }
  out[2 * n] = -s;
  out[2 * n + 1] = 1.0 - (hit ? 1.0 / nmax : 0.0);
}

// One thread per element k of the flat N*K arrays.
__global__ void crossent_bprop_kernel(const float* t, const float* p, float* d, int64_t n, float coeff) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    if (t[k] != 0.f) d[k] -= coeff * t[k] / cpu_max(p[k], 1e-38f);
}
}  // namespace

void crossent_fprop(CudaCtx& cx, const float* labels, const float* probs, int N, int K, double sums[2]) {
  sums[0] = sums[1] = 0;
  if (N <= 0 || K <= 0) return;
  double* d = (double*)cx.scratch((size_t)4 * N);  // 2 doubles per case
  crossent_fprop_kernel<<<(N + 127) / 128, 128, 0, (cudaStream_t)cx.stream>>>(labels, probs, N, K, d);
  CCN_CUDA_LAUNCHED();
  double* h = (double*)cx.host_scratch(sizeof(double) * 2 * N);
  CCN_CUDA_CHECK(cudaMemcpyAsync(h, d, sizeof(double) * 2 * N, cudaMemcpyDeviceToHost, (cudaStream_t)cx.stream));
  cx.sync();
  for (int n = 0; n < N; ++n) {
    sums[0] += h[2 * n];
    sums[1] += h[2 * n + 1];
  }
}

void crossent_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dprobs, int64_t n, float coeff) {
  if (n <= 0 || !dprobs) return;
  crossent_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(labels, probs, dprobs, n, coeff);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
