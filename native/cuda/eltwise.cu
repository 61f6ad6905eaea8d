// ccn/native/cuda/eltwise.cu: type=eltmax (eltsum is scale_copy + axpy, elementwise.cu).
// Layout: every input, out, dout, din: n floats, element-wise (any layout).
//   out = max_i in_i;   din_i += dout where in_i == out (ties all receive the gradient)
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__global__ void max_into_kernel(const float* a, float* out, int64_t n, bool first) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    out[k] = first ? a[k] : (out[k] < a[k] ? a[k] : out[k]);  // std::max(out, a) as the CPU (fmaxf drops NaNs)
}
__global__ void eltmax_bprop_kernel(const float* in, const float* out, const float* g, float* d, int64_t n) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    if (in[k] == out[k]) d[k] += g[k];
}
}  // namespace

void eltmax_fprop(CudaCtx& cx, const std::vector<const float*>& ins, float* out, int64_t n) {
  if (n <= 0) return;
  for (size_t i = 0; i < ins.size(); ++i) {
    max_into_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(ins[i], out, n, i == 0);
    CCN_CUDA_LAUNCHED();
  }
}

void eltmax_bprop(CudaCtx& cx, const float* in, const float* out, const float* dout, float* din, int64_t n) {
  if (n <= 0 || !din) return;
  eltmax_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(in, out, dout, din, n);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
