// ccn/native/cuda/concat.cu: type=concat. Layout: in/din N x Din, out/dout N x Dout
// (rows = cases); input i occupies columns [offset, offset + Din) of every row.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
// One thread per element of the input: out[n, offset + j] (=, or +=) in[n, j] and back.
__global__ void concat_copy_kernel(const float* in, float* out, int N, int Din, int Dout, int offset) {
  const int64_t total = (int64_t)N * Din;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
    out[(e / Din) * Dout + offset + e % Din] = in[e];
}
__global__ void concat_grad_kernel(const float* dout, float* din, int N, int Din, int Dout, int offset) {
  const int64_t total = (int64_t)N * Din;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
    din[e] += dout[(e / Din) * Dout + offset + e % Din];
}
}  // namespace

void concat_fprop(CudaCtx& cx, const float* in, float* out, int N, int Din, int Dout, int offset) {
  const int64_t total = (int64_t)N * Din;
  if (total <= 0) return;
  concat_copy_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(in, out, N, Din, Dout, offset);
  CCN_CUDA_LAUNCHED();
}

void concat_bprop(CudaCtx& cx, const float* dout, float* din, int N, int Din, int Dout, int offset) {
  const int64_t total = (int64_t)N * Din;
  if (total <= 0 || !din) return;
  concat_grad_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(dout, din, N, Din, Dout, offset);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
