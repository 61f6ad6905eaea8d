// ccn/native/cuda/context.cu: CudaCtx, device and pinned arrays, the error helper.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cublas.h"

#include <cstdlib>
#include <cstring>

namespace ccn {

namespace cuda {
bool sync_launches() {
  static const bool on = [] {
    const char* e = std::getenv("CCN_CUDA_SYNC_LAUNCHES");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return on;
}
}  // namespace cuda

void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so later calls can report their own
  runtime_error("CUDA error at ", file, ":", line, ": ", what, " failed: ", cudaGetErrorName(e), " (",
                cudaGetErrorString(e), ").");
}

CudaCtx::CudaCtx(int dev) : device(dev) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    runtime_error("no CUDA device is usable: ", cudaGetErrorString(e), ".");
  }
  if (dev < 0 || dev >= n)
    input_error("GPU ", dev, " does not exist; this machine has ", n, " CUDA device", n == 1 ? "" : "s",
                n ? cat(" (0..", n - 1, ")") : std::string(), ".");
  CCN_CUDA_CHECK(cudaSetDevice(dev));
  cudaStream_t s, c;
  CCN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  // A throwing constructor runs no destructor: release the first stream if the second fails.
  const cudaError_t ec = cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking);
  if (ec != cudaSuccess) {
    cudaStreamDestroy(s);
    cuda_fail(ec, "cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking)", __FILE__, __LINE__);
  }
  stream = s;
  copy_stream = c;
}

CudaCtx::~CudaCtx() {
  // Destructors must not throw: errors here are ignored (the context is going away).
  cudaSetDevice(device);
  if (stream) cudaStreamSynchronize((cudaStream_t)stream);
  if (copy_stream) cudaStreamSynchronize((cudaStream_t)copy_stream);
  cuda::cublas_destroy(cublas_);
  for (auto& kv : buffers_) cudaFree(kv.second.first);
  if (scratch_) cudaFree(scratch_);
  if (host_) cudaFreeHost(host_);
  if (stream) cudaStreamDestroy((cudaStream_t)stream);
  if (copy_stream) cudaStreamDestroy((cudaStream_t)copy_stream);
  cudaGetLastError();
}

void CudaCtx::make_current() const { CCN_CUDA_CHECK(cudaSetDevice(device)); }

void* CudaCtx::cublas() {
  if (!cublas_) cublas_ = cuda::cublas_create(stream);
  return cublas_;
}

float* CudaCtx::scratch(size_t n) {
  if (n > scratch_n_) {
    // The old area may still be read by queued kernels: wait before freeing it.
    CCN_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
    if (scratch_) CCN_CUDA_CHECK(cudaFree(scratch_));
    bytes_ -= scratch_n_ * sizeof(float);
    scratch_ = nullptr;
    scratch_n_ = 0;
    CCN_CUDA_CHECK(cudaMalloc(&scratch_, n * sizeof(float)));
    scratch_n_ = n;
    bytes_ += n * sizeof(float);
  }
  return scratch_;
}

float* CudaCtx::buffer(int layer_id, int slot, size_t n) {
  auto& b = buffers_[{layer_id, slot}];
  if (n > b.second) {
    CCN_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
    if (b.first) CCN_CUDA_CHECK(cudaFree(b.first));
    bytes_ -= b.second * sizeof(float);
    b = {nullptr, 0};
    CCN_CUDA_CHECK(cudaMalloc(&b.first, n * sizeof(float)));
    b.second = n;
    bytes_ += n * sizeof(float);
  }
  return b.first;
}

void* CudaCtx::host_scratch(size_t bytes) {
  if (bytes > host_n_) {
    CCN_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
    if (host_) CCN_CUDA_CHECK(cudaFreeHost(host_));
    host_ = nullptr;
    host_n_ = 0;
    CCN_CUDA_CHECK(cudaMallocHost(&host_, bytes));
    host_n_ = bytes;
  }
  return host_;
}

void CudaCtx::sync() { CCN_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream)); }

DeviceArray::~DeviceArray() {
  if (p_) cudaFree(p_);
}
DeviceArray& DeviceArray::operator=(DeviceArray&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}
void DeviceArray::resize(size_t n) {
  if (n <= n_) return;
  if (p_) CCN_CUDA_CHECK(cudaFree(p_));
  p_ = nullptr;
  n_ = 0;
  CCN_CUDA_CHECK(cudaMalloc(&p_, (n ? n : 1) * sizeof(float)));
  n_ = n;
}

PinnedArray::~PinnedArray() {
  if (p_) cudaFreeHost(p_);
}
void PinnedArray::resize(size_t n) {
  if (n <= n_) return;
  if (p_) CCN_CUDA_CHECK(cudaFreeHost(p_));
  p_ = nullptr;
  n_ = 0;
  CCN_CUDA_CHECK(cudaMallocHost(&p_, (n ? n : 1) * sizeof(float)));
  n_ = n;
}

}  // namespace ccn
