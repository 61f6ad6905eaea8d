// ccn/native/cuda/dropout.cu: type=dropout and dropout2, training passes.
// Layout: x, y, dout, din: n floats, element k = case*D + j (N x D row-major).
// Mask m_k = uniform01(seed, stream, first + k) < keep (core/rng.h, the CPU backend's
// function; first = the global index of element 0, case_offset * D), so both backends draw
// the same mask. dropout: on = 1/keep; dropout2: on = 1.
// The backward pass recomputes the mask instead of storing it.
#include "core/rng.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__global__ void dropout_fprop_kernel(const float* x, float* y, int64_t n, uint64_t seed, uint64_t stream,
                                     uint64_t first, float keep, float on) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    y[k] = x[k] * (uniform01(seed, stream, first + (uint64_t)k) < keep ? on : 0.f);
}
__global__ void dropout_bprop_kernel(const float* g, float* d, int64_t n, uint64_t seed, uint64_t stream,
                                     uint64_t first, float keep, float on) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    d[k] += g[k] * (uniform01(seed, stream, first + (uint64_t)k) < keep ? on : 0.f);
}
}  // namespace

void dropout_fprop(CudaCtx& cx, const float* x, float* y, int64_t n, uint64_t seed, uint64_t stream, uint64_t first,
                   float keep, float on) {
  if (n <= 0) return;
  dropout_fprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(x, y, n, seed, stream, first, keep, on);
  CCN_CUDA_LAUNCHED();
}

void dropout_bprop(CudaCtx& cx, const float* dout, float* din, int64_t n, uint64_t seed, uint64_t stream,
                   uint64_t first, float keep, float on) {
  if (n <= 0 || !din) return;
  dropout_bprop_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(dout, din, n, seed, stream, first, keep, on);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
