// ccn/native/cuda/sfc.cu: type=sfc (split fully-connected) through cuBLAS, as
// native/layers/sfc.cpp: the same GEMMs per part, on column blocks of the row-major
// matrices (leading dimensions are the full widths).
// Layouts: in/din N x K [n][k]; W/dW K x O row-major; out/dout N x (O*parts) [n][p*O + j].
// Part p, Kp = K/parts: in_p = in[:, p*Kp .. p*Kp+Kp), W_p = W[p*Kp .. p*Kp+Kp, :],
// out_p = out[:, p*O .. p*O+O).
//   out_p (+)= in_p W_p;   din_p += dout_p W_p^T;   dW_p += in_p^T dout_p (sum over cases)
#include "core/error.h"
#include "cuda/context.h"
#include "cuda/cublas.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

void sfc_fprop(CudaCtx& cx, const float* in, const float* W, float* out, int N, int K, int O, int parts,
               bool accumulate) {
  CCN_CHECK(parts > 0 && K % parts == 0);
  const int Kp = K / parts, OP = O * parts;
  for (int p = 0; p < parts; ++p)
    sgemm(cx, false, false, N, O, Kp, 1.f, in + (int64_t)p * Kp, K, W + (int64_t)p * Kp * O, O,
          accumulate ? 1.f : 0.f, out + (int64_t)p * O, OP);
}

void sfc_bprop(CudaCtx& cx, const float* in, const float* W, const float* dout, float* din, float* dW, int N, int K,
               int O, int parts) {
  CCN_CHECK(parts > 0 && K % parts == 0);
  const int Kp = K / parts, OP = O * parts;
  for (int p = 0; p < parts; ++p) {
    const float* g = dout + (int64_t)p * O;  // N x O block, leading dimension OP
    if (din) sgemm(cx, false, true, N, Kp, O, 1.f, g, OP, W + (int64_t)p * Kp * O, O, 1.f, din + (int64_t)p * Kp, K);
    if (dW) sgemm(cx, true, false, Kp, O, N, 1.f, in + (int64_t)p * Kp, K, g, OP, 1.f, dW + (int64_t)p * Kp * O, O);
  }
}

}  // namespace ccn::cuda
