// ccn/native/cuda/fc.cu: type=fc through cuBLAS (row-major wrappers in cublas.cu).
// Layout: in N x K, W K x O (cuda-convnet's inputs x outputs), out/dout N x O, din N x K.
//   out (+)= in W;   din += dout W^T;   dW += in^T dout   (sum over cases)
#include "cuda/context.h"
#include "cuda/cublas.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

void fc_fprop(CudaCtx& cx, const float* in, const float* W, float* out, int N, int K, int O, bool accumulate) {
  sgemm(cx, false, false, N, O, K, 1.f, in, K, W, O, accumulate ? 1.f : 0.f, out, O);
}

void fc_bprop(CudaCtx& cx, const float* in, const float* W, const float* dout, float* din, float* dW, int N, int K,
              int O) {
  if (din) sgemm(cx, false, true, N, K, O, 1.f, dout, O, W, O, 1.f, din, K);
  if (dW) sgemm(cx, true, false, K, O, N, 1.f, in, K, dout, O, 1.f, dW, O);
}

}  // namespace ccn::cuda
