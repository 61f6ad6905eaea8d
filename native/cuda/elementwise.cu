// ccn/native/cuda/elementwise.cu: fills, axpy, bias rows, column sums, reductions.
// Layouts: flat arrays of n floats, or row-major rows x cols matrices (rows = cases).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

#define STREAM ((cudaStream_t)cx.stream)

__global__ void fill_kernel(float* x, int64_t n, float v) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    x[k] = v;
}
void fill(CudaCtx& cx, float* x, int64_t n, float v) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), 256, 0, STREAM>>>(x, n, v);
  CCN_CUDA_LAUNCHED();
}

__global__ void scale_copy_kernel(const float* x, float* y, int64_t n, float a) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    y[k] = a * x[k];
}
void scale_copy(CudaCtx& cx, const float* x, float* y, int64_t n, float a) {
  if (n <= 0) return;
  scale_copy_kernel<<<grid_for(n), 256, 0, STREAM>>>(x, y, n, a);
  CCN_CUDA_LAUNCHED();
}

// y + a*x rounded twice (no fused multiply-add), as the CPU layers compute it (eltsum,
// dropout's test pass, cost.sum2): the same bits as the CPU.
__global__ void axpy_kernel(const float* x, float* y, int64_t n, float a) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    y[k] = __fadd_rn(y[k], __fmul_rn(a, x[k]));
}
void axpy(CudaCtx& cx, const float* x, float* y, int64_t n, float a) {
  if (n <= 0) return;
  axpy_kernel<<<grid_for(n), 256, 0, STREAM>>>(x, y, n, a);
  CCN_CUDA_LAUNCHED();
}

// y: rows x cols row-major; b: cols. One thread per element.
__global__ void add_row_vector_kernel(float* y, const float* b, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    y[k] += b[k % cols];
}
void add_row_vector(CudaCtx& cx, float* y, const float* b, int64_t rows, int64_t cols) {
  if (rows * cols <= 0) return;
  add_row_vector_kernel<<<grid_for(rows * cols), 256, 0, STREAM>>>(y, b, rows, cols);
  CCN_CUDA_LAUNCHED();
}

// g: rows x cols row-major. One thread per column walks the rows (coalesced across the
// warp: neighbouring threads read neighbouring columns), summing in double.
__global__ void add_col_sums_kernel(const float* g, float* db, int64_t rows, int64_t cols) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += g[r * cols + c];
    db[c] += (float)s;
  }
}
void add_col_sums(CudaCtx& cx, const float* g, float* db, int64_t rows, int64_t cols) {
  if (cols <= 0) return;
  add_col_sums_kernel<<<grid_for(cols), 256, 0, STREAM>>>(g, db, rows, cols);
  CCN_CUDA_LAUNCHED();
}

// Deterministic two-pass sum: each of `blocks` blocks writes its partial (double) sum of a
// grid-stride share of x; one block then adds the partials in a fixed order.
constexpr int kSumThreads = 256, kSumBlocks = 256;
__global__ void partial_sums_kernel(const float* x, int64_t n, bool squares, double* partial) {
  __shared__ double sh[kSumThreads];
  double s = 0;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    double v = x[k];
    s += squares ? v * v : v;
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}
__global__ void final_sum_kernel(double* partial, int parts) {
  __shared__ double sh[kSumThreads];
  double s = 0;
  for (int k = threadIdx.x; k < parts; k += blockDim.x) s += partial[k];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[0] = sh[0];
}
void copy_to_device(CudaCtx& cx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CCN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, STREAM));
}
double sum_to_host(CudaCtx& cx, const float* x, int64_t n, bool squares) {
  if (n <= 0) return 0.0;
  double* partial = (double*)cx.scratch(2 * kSumBlocks);
  const int blocks = (int)std::min<int64_t>(kSumBlocks, (n + kSumThreads - 1) / kSumThreads);
  partial_sums_kernel<<<blocks, kSumThreads, 0, STREAM>>>(x, n, squares, partial);
  CCN_CUDA_LAUNCHED();
  final_sum_kernel<<<1, kSumThreads, 0, STREAM>>>(partial, blocks);
  CCN_CUDA_LAUNCHED();
  double* host = (double*)cx.host_scratch(sizeof(double));
  CCN_CUDA_CHECK(cudaMemcpyAsync(host, partial, sizeof(double), cudaMemcpyDeviceToHost, STREAM));
  cx.sync();
  return *host;
}

}  // namespace ccn::cuda
