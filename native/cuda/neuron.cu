// ccn/native/cuda/neuron.cu: the neuron functions (layer type=neuron and neuron= on any
// layer), element-wise over n floats, any layout. Formulas exactly as native/layers/neuron.cpp.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

int neuron_code(const std::string& t) {
  static const char* names[] = {"ident", "logistic", "tanh", "relu", "brelu", "softrelu",
                                "abs",   "square",   "sqrt", "linear", "log", "drelu"};
  for (int i = 0; i < 12; ++i)
    if (t == names[i]) return i;
  return -1;
}

__device__ __forceinline__ float neuron_f(int code, float a, float b, float v) {
  switch (code) {
    case N_IDENT: return v;
    case N_LOGISTIC: return 1.f / (1.f + expf(-v));
    case N_TANH: return a * tanhf(b * v);
    case N_RELU: return v > 0.f ? v : 0.f;
    case N_BRELU: return fminf(a, fmaxf(0.f, v));
    case N_SOFTRELU: return v > 4.f ? v : log1pf(expf(v));
    case N_ABS: return fabsf(v);
    case N_SQUARE: return v * v;
    case N_SQRT: return sqrtf(v);
    case N_LINEAR: return __fadd_rn(__fmul_rn(a, v), b);  // no fused multiply-add: the CPU's bits
    case N_LOG: return logf(a + v);
    default: return v - a * tanhf(v / a);  // N_DRELU
  }
}

// Derivative from the input v and the output o = f(v).
__device__ __forceinline__ float neuron_df(int code, float a, float b, float v, float o) {
  switch (code) {
    case N_IDENT: return 1.f;
    case N_LOGISTIC: return o * (1.f - o);
    case N_TANH: return a * b * (1.f - (o / a) * (o / a));
    case N_RELU: return v > 0.f ? 1.f : 0.f;
    case N_BRELU: return (v > 0.f && v < a) ? 1.f : 0.f;
    case N_SOFTRELU: return o > 4.f ? 1.f : -expm1f(-o);
    case N_ABS: return v > 0.f ? 1.f : -1.f;
    case N_SQUARE: return 2.f * v;
    case N_SQRT: return 0.5f / o;
    case N_LINEAR: return a;
    case N_LOG: return 1.f / (a + v);
    default: { float t = tanhf(v / a); return t * t; }  // N_DRELU
  }
}

// x, y: n floats, element-wise.
__global__ void neuron_fprop_kernel(int code, float a, float b, const float* x, float* y, int64_t n) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    y[k] = neuron_f(code, a, b, x[k]);
}
// x, y, dout, din: n floats, element-wise.
__global__ void neuron_bprop_kernel(int code, float a, float b, const float* x, const float* y, const float* g,
                                    float* d, int64_t n, bool add) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    float v = g[k] * neuron_df(code, a, b, x[k], y[k]);
    d[k] = add ? d[k] + v : v;
  }
}

void neuron_fprop(CudaCtx& cx, int code, float a, float b, const float* x, float* y, int64_t n) {
  if (code < 0 || code > N_DRELU) runtime_error("CUDA neuron: unknown neuron code ", code, ".");
  if (n <= 0) return;
  neuron_fprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(code, a, b, x, y, n);
  CCN_CUDA_LAUNCHED();
}

void neuron_bprop(CudaCtx& cx, int code, float a, float b, const float* x, const float* y, const float* dout,
                  float* din, int64_t n, bool add) {
  if (code < 0 || code > N_DRELU) runtime_error("CUDA neuron: unknown neuron code ", code, ".");
  if (n <= 0) return;
  neuron_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(code, a, b, x, y, dout, din, n, add);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
