// ccn/native/cuda/cost_logreg.cu: type=cost.logreg, as native/layers/cost_logreg.cpp.
// Layout: labels N x 1 (class index as float), probs, logits, dprobs and dx N x K (rows = cases).
// Forward: one thread per case writes (-log p[label], top-1 wrong, top-k wrong) into
// per-case slots; the host adds the N triples in double, in case order (deterministic, and
// the same sums the CPU forms). A bad label writes -1 into its top-1 slot (a count of 0..1
// otherwise) and is reported; a NaN cost stays a NaN sum, as on the CPU, for the trainer's
// check of non-finite costs.
#include <cmath>
#include <vector>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

// Share of credit for a label that `greater` classes beat and `equal` classes tie with.
__device__ double credit(int greater, int equal, int k) {
  if (greater >= k) return 0.0;
  int slots = k - greater;
  return slots >= equal ? 1.0 : (double)slots / equal;
}

__global__ void logreg_fprop_kernel(const float* labels, const float* probs, const float* logits, int N, int K,
                                    int topk, double* out) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float v = labels[n];
  int y = (int)v;
  if (v != (float)y || y < 0 || y >= K) {
    out[3 * n] = out[3 * n + 2] = 0.0;
    out[3 * n + 1] = -1.0;
    return;
  }
  const float* pr = probs + (int64_t)n * K;
  float py = pr[y];
  int greater = 0, equal = 0;
  for (int j = 0; j < K; ++j) {
    greater += pr[j] > py;
    equal += pr[j] == py;
  }
  if (logits) {  // -log p from the logits: log sum_j exp(x_j - m) - (x_y - m), as the CPU layer
    const float* x = logits + (int64_t)n * K;
    float m = x[0];
    for (int j = 1; j < K; ++j) m = cpu_max(m, x[j]);
    double s = 0;
    for (int j = 0; j < K; ++j) s += exp((double)x[j] - (double)m);
    out[3 * n] = log(s) - ((double)x[y] - (double)m);
  } else {
    out[3 * n] = -(double)logf(cpu_max(py, 1e-38f));
  }
  out[3 * n + 1] = 1.0 - credit(greater, equal, 1);
  out[3 * n + 2] = 1.0 - credit(greater, equal, topk);
}

int64_t logreg_fprop(CudaCtx& cx, const float* labels, const float* probs, const float* logits, int N, int K, int topk,
                     double sums[3]) {
  sums[0] = sums[1] = sums[2] = 0;
  if (N <= 0) return -1;
  double* d = (double*)cx.scratch((size_t)6 * N);
  logreg_fprop_kernel<<<(N + 127) / 128, 128, 0, (cudaStream_t)cx.stream>>>(labels, probs, logits, N, K, topk, d);
  CCN_CUDA_LAUNCHED();
  double* h = (double*)cx.host_scratch(sizeof(double) * 3 * N);
  CCN_CUDA_CHECK(cudaMemcpyAsync(h, d, sizeof(double) * 3 * N, cudaMemcpyDeviceToHost, (cudaStream_t)cx.stream));
  cx.sync();
  for (int n = 0; n < N; ++n) {
    if (h[3 * n + 1] < 0) return n;
    for (int i = 0; i < 3; ++i) sums[i] += h[3 * n + i];
  }
  return -1;
}

// One thread per case: dprobs[n, label] += (float)(-coeff / max(p, 1e-38)) in double, as the
// CPU layer. Labels were checked by the forward pass; out-of-range ones are skipped here.
__global__ void logreg_bprop_kernel(const float* labels, const float* probs, float* d, int N, int K, double coeff) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  int y = (int)labels[n];
  if (y < 0 || y >= K) return;
  int64_t k = (int64_t)n * K + y;
  d[k] += (float)(-coeff / (double)cpu_max(probs[k], 1e-38f));
}

void logreg_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dprobs, int N, int K, double coeff) {
  if (N <= 0) return;
  logreg_bprop_kernel<<<(N + 127) / 128, 128, 0, (cudaStream_t)cx.stream>>>(labels, probs, dprobs, N, K, coeff);
  CCN_CUDA_LAUNCHED();
}

// One thread per element (n, j) of dx (N x K, rows = cases): dx += coeff * (p - [j == label]).
__global__ void logreg_softmax_bprop_kernel(const float* labels, const float* probs, float* dx, int N, int K,
                                            double coeff) {
  const int64_t total = (int64_t)N * K;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int n = (int)(e / K), j = (int)(e - (int64_t)n * K);
    const int y = (int)labels[n];
    dx[e] += (float)(coeff * ((double)probs[e] - (j == y ? 1.0 : 0.0)));
  }
}

void logreg_softmax_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dx, int N, int K, double coeff) {
  const int64_t total = (int64_t)N * K;
  if (total <= 0) return;
  logreg_softmax_bprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(labels, probs, dx, N, K, coeff);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
