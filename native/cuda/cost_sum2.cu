// ccn/native/cuda/cost_sum2.cu: type=cost.sum2. Value sum x^2 (double); din += 2*coeff*x.
// Layout: x, din N x D flat.
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

double sum2_fprop(CudaCtx& cx, const float* x, int64_t n) { return sum_to_host(cx, x, n, true); }

void sum2_bprop(CudaCtx& cx, const float* x, float* din, int64_t n, float coeff) { axpy(cx, x, din, n, 2.f * coeff); }

}  // namespace ccn::cuda
