// ccn/native/cuda/sum.cu: type=sum, sums of groups of `stride` adjacent channels, as
// native/layers/sum.cpp. Layouts: in/din N x (Cin*HW) [n][c][p], Cin = Cout*stride;
// out/dout N x (Cout*HW) [n][c][p].
//   out[n, c*HW + p] = sum_{k < stride} in[n, (c*stride + k)*HW + p]   (k in order)
//   din[n, j*HW + p] += dout[n, (j / stride)*HW + p]
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
// One thread per output element e = (n*Cout + c)*HW + p.
__global__ void chansum_fprop_kernel(const float* in, float* out, int64_t N, int64_t Cout, int64_t HW, int stride) {
  const int64_t total = N * Cout * HW;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = e % HW;
    const int64_t c = (e / HW) % Cout;
    const int64_t n = e / (HW * Cout);
    const float* x = in + (n * Cout * stride + c * stride) * HW + p;  // x[k*HW] = in[n, c*stride + k, p]
    float s = x[0];
    for (int k = 1; k < stride; ++k) s += x[k * HW];
    out[e] = s;
  }
}
// One thread per input element e = (n*Cin + j)*HW + p, Cin = Cout*stride.
__global__ void chansum_bprop_kernel(const float* dout, float* din, int64_t N, int64_t Cout, int64_t HW, int stride) {
  const int64_t Cin = Cout * stride, total = N * Cin * HW;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = e % HW;
    const int64_t j = (e / HW) % Cin;
    const int64_t n = e / (HW * Cin);
    din[e] += dout[(n * Cout + j / stride) * HW + p];
  }
}
}  // namespace

void chansum_fprop(CudaCtx& cx, const float* in, float* out, int64_t N, int64_t Cout, int64_t HW, int stride) {
  CCN_CHECK(stride > 0 && HW > 0);
  const int64_t total = N * Cout * HW;
  if (total <= 0) return;
  chansum_fprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(in, out, N, Cout, HW, stride);
  CCN_CUDA_LAUNCHED();
}

void chansum_bprop(CudaCtx& cx, const float* dout, float* din, int64_t N, int64_t Cout, int64_t HW, int stride) {
  CCN_CHECK(stride > 0 && HW > 0);
  const int64_t total = N * Cout * stride * HW;
  if (total <= 0 || !din) return;
  chansum_bprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(dout, din, N, Cout, HW, stride);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
