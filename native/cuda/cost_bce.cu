// ccn/native/cuda/cost_bce.cu: type=cost.bce and type=cost.dce, as native/layers/cost_bce.cpp.
// Layout: labels t, outputs y and dy: N x K, rows = cases.
// Forward: one thread per case writes three doubles into per-case slots (scratch):
//   [3n]   -sum_k (posWeight * t * safelog(y) + (1 - t) * safelog(1 - y))
//   [3n+1] number of k with [(y > 0.5) != t]
//   [3n+2] 1 - sum_k t * [y == max_k y] / #ties
// and, for cost.dce, one thread per class k walks the cases in order (column k):
//   [3k] sum_n [y > 0.5], [3k+1] sum_n t, [3k+2] sum_n t * [(y > 0.5) == t].
// The host adds the per-case slots in case order. safelog(x) = log x, or -50 for x <= 0,
// in double as on the CPU.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__device__ __forceinline__ double safelog_b(double x) { return x > 0 ? log(x) : -50.0; }

__global__ void bce_case_kernel(const float* labels, const float* y, int N, int K, double pw, double* out) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float* tr = labels + (int64_t)n * K;
  const float* yr = y + (int64_t)n * K;
  float mx = yr[0];
  double s = 0;
  int64_t bits = 0;
  for (int k = 0; k < K; ++k) {
    const double tv = tr[k], yv = yr[k];
    s += pw * tv * safelog_b(yv) + (1.0 - tv) * safelog_b(1.0 - yv);
    bits += (yr[k] > 0.5f ? 1.f : 0.f) != tr[k];
    mx = mx < yr[k] ? yr[k] : mx;  // std::max's rule, as the CPU layer
  }
  int ties = 0;
  double hit = 0;
  for (int k = 0; k < K; ++k)
    if (yr[k] == mx) {
      ++ties;
      hit += tr[k];
    }
  out[3 * n] = -s;
  out[3 * n + 1] = (double)bits;
  out[3 * n + 2] = 1.0 - hit / ties;
}

// One thread per class k (column k of the N x K matrices), cases in order.
__global__ void dce_class_kernel(const float* labels, const float* y, int N, int K, double* out) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= K) return;
  double dcl = 0, pos = 0, tp = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float tv = labels[n * K + k];
    const float dec = y[n * K + k] > 0.5f ? 1.f : 0.f;
    dcl += dec;
    pos += tv;
    tp += tv * (dec == tv ? 1.0 : 0.0);
  }
  out[3 * k] = dcl;
  out[3 * k + 1] = pos;
  out[3 * k + 2] = tp;
}

// One thread per element k of the flat N*K arrays.
__global__ void bce_bprop_kernel(const float* t, const float* y, float* d, int64_t n, float c, float pw) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    // d - c * (...) rounded as the CPU does (nvcc would fuse the multiply and the subtraction)
    d[k] = __fsub_rn(d[k], __fmul_rn(c, pw * t[k] / cpu_max(y[k], 1e-38f) - (1.f - t[k]) / cpu_max(1.f - y[k], 1e-38f)));
}
// t, y, d: n floats, element-wise; d += the fused gradient, rounded step by step as the CPU.
__global__ void bce_logistic_bprop_kernel(const float* t, const float* y, float* d, int64_t n, float c, float pw) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const float a = __fmul_rn(__fsub_rn(1.f, t[k]), y[k]);
    const float b = __fmul_rn(__fmul_rn(pw, t[k]), __fsub_rn(1.f, y[k]));
    d[k] = __fadd_rn(d[k], __fmul_rn(c, __fsub_rn(a, b)));
  }
}
}  // namespace

void bce_fprop(CudaCtx& cx, const float* labels, const float* y, int N, int K, double pos_weight, double sums[3],
               double* per_class) {
  sums[0] = sums[1] = sums[2] = 0;
  if (per_class)
    for (int k = 0; k < 3 * K; ++k) per_class[k] = 0;
  if (N <= 0 || K <= 0) return;
  const int64_t slots = 3 * (int64_t)N + (per_class ? 3 * (int64_t)K : 0);  // doubles
  double* d = (double*)cx.scratch((size_t)(2 * slots));
  cudaStream_t st = (cudaStream_t)cx.stream;
  bce_case_kernel<<<(N + 127) / 128, 128, 0, st>>>(labels, y, N, K, pos_weight, d);
  CCN_CUDA_LAUNCHED();
  if (per_class) {
    dce_class_kernel<<<(K + 127) / 128, 128, 0, st>>>(labels, y, N, K, d + 3 * (int64_t)N);
    CCN_CUDA_LAUNCHED();
  }
  double* h = (double*)cx.host_scratch(sizeof(double) * slots);
  CCN_CUDA_CHECK(cudaMemcpyAsync(h, d, sizeof(double) * slots, cudaMemcpyDeviceToHost, st));
  cx.sync();
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < 3; ++i) sums[i] += h[3 * n + i];
  if (per_class)
    for (int k = 0; k < 3 * K; ++k) per_class[k] = h[3 * (int64_t)N + k];
}

void bce_logistic_bprop(CudaCtx& cx, const float* labels, const float* y, float* dx, int64_t n, float coeff,
                        float pos_weight) {
  if (n <= 0 || !dx) return;
  bce_logistic_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(labels, y, dx, n, coeff, pos_weight);
  CCN_CUDA_LAUNCHED();
}

void bce_bprop(CudaCtx& cx, const float* labels, const float* y, float* dy, int64_t n, float coeff, float pos_weight) {
  if (n <= 0 || !dy) return;
  bce_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(labels, y, dy, n, coeff, pos_weight);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
