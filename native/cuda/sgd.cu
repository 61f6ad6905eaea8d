// ccn/native/cuda/sgd.cu: the parameter update, as Net::update on the CPU.
// Layout: w, inc, grad: one parameter matrix, rows x cols row-major (n = rows*cols).
//   inc = mom*inc - scale*grad - decay*w;  w += inc;  grad = 0
//   wball: columns whose L2 norm exceeds wball (hard: every nonzero column) are rescaled to norm wball.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__global__ void sgd_kernel(float* w, float* inc, float* g, int64_t n, float mom, float scale, float decay) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    // Net::update's float operations in its order, without fused multiply-adds (nvcc
    // would contract them; the CPU build does not): the same bits as the CPU update.
    const float i = __fsub_rn(__fsub_rn(__fmul_rn(mom, inc[k]), __fmul_rn(scale, g[k])), __fmul_rn(decay, w[k]));
    inc[k] = i;
    w[k] = __fadd_rn(w[k], i);
    g[k] = 0.f;
  }
}
// One thread per column: norm in double over the rows, then rescale that column.
__global__ void wball_kernel(float* w, int64_t rows, int64_t cols, float wball, bool hard) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += (double)w[r * cols + c] * w[r * cols + c];
    double nrm = sqrt(s);
    if (nrm > wball || (hard && nrm > 0)) {
      float f = (float)(wball / nrm);
      for (int64_t r = 0; r < rows; ++r) w[r * cols + c] *= f;
    }
  }
}
// One thread per column: mean and squared deviations in double, s = sqrt(ss) / rows, then the
// column is scaled by wmin / s or wmax / s where s is outside [wmin, wmax] (s = 0: unchanged).
__global__ void wc_norm_kernel(float* w, int64_t rows, int64_t cols, float wmin, float wmax) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
    double sum = 0, ss = 0;
    for (int64_t r = 0; r < rows; ++r) sum += w[r * cols + c];
    const double mean = sum / (double)rows;
    for (int64_t r = 0; r < rows; ++r) ss += (w[r * cols + c] - mean) * (w[r * cols + c] - mean);
    const double s = sqrt(ss) / (double)rows;
    const double f = s < wmin ? wmin / s : s > wmax ? wmax / s : 1.0;
    if (f != 1.0 && isfinite(f))
      for (int64_t r = 0; r < rows; ++r) w[r * cols + c] *= (float)f;
  }
}
}  // namespace

void wc_norm(CudaCtx& cx, float* w, int64_t rows, int64_t cols, float wmin, float wmax) {
  if (cols <= 0) return;
  wc_norm_kernel<<<grid_for(cols, 128), 128, 0, (cudaStream_t)cx.stream>>>(w, rows, cols, wmin, wmax);
  CCN_CUDA_LAUNCHED();
}

void sgd_update(CudaCtx& cx, float* w, float* inc, float* grad, int64_t n, float mom, float scale, float decay) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n), 256, 0, (cudaStream_t)cx.stream>>>(w, inc, grad, n, mom, scale, decay);
  CCN_CUDA_LAUNCHED();
}

void wball_constrain(CudaCtx& cx, float* w, int64_t rows, int64_t cols, float wball, bool hard) {
  if (cols <= 0) return;
  wball_kernel<<<grid_for(cols, 128), 128, 0, (cudaStream_t)cx.stream>>>(w, rows, cols, wball, hard);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
