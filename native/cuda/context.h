// ccn/native/cuda/context.h: the per-net CUDA context handed to every kernel launcher.
//
// No global device state in ccn: the device index, the compute stream, the copy stream,
// the cuBLAS handle and the workspaces live here, one CudaCtx per net on the device. Every
// launcher takes a CudaCtx& and enqueues its work on cx.stream; launchers never
// synchronise unless they must return a value to the host (cost layers), and say so.
// Plain C++ header (no CUDA headers), so layer files compiled by the host compiler can
// hold a CudaCtx& and call the launchers declared in cuda/kernels.h.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <utility>

namespace ccn {

struct CudaCtx {
  // Makes `device` current, creates the streams (cuBLAS is loaded on first use).
  explicit CudaCtx(int device);
  ~CudaCtx();
  CudaCtx(const CudaCtx&) = delete;
  CudaCtx& operator=(const CudaCtx&) = delete;

  int device = 0;
  void* stream = nullptr;       // cudaStream_t: all compute
  void* copy_stream = nullptr;  // cudaStream_t: host -> device minibatch copies
  // cublasHandle_t bound to `stream`, created on first call; throws a runtime ccn::Error
  // naming where it looked when no cuBLAS library can be loaded.
  void* cublas();

  // Scratch memory for one launcher call: grow-only, contents undefined, valid until the
  // next scratch() call. Layers run one after another on `stream`, so one area serves all.
  float* scratch(size_t floats);
  // Persistent per-(layer, slot) device buffers (state kept from fprop to bprop, e.g. norm
  // denominators). Allocated on first use, reused every step, grown if a step is larger.
  float* buffer(int layer_id, int slot, size_t floats);
  // Small pinned host area for results a launcher returns (cost sums); grow-only.
  void* host_scratch(size_t bytes);

  void sync();  // waits for `stream`
  void make_current() const;
  size_t bytes_allocated() const { return bytes_; }

 private:
  void* cublas_ = nullptr;
  float* scratch_ = nullptr;
  size_t scratch_n_ = 0;
  void* host_ = nullptr;
  size_t host_n_ = 0;
  std::map<std::pair<int, int>, std::pair<float*, size_t>> buffers_;
  size_t bytes_ = 0;
};

// Device memory owned by a net's device state: allocated once, freed in the destructor.
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t floats) { resize(floats); }
  ~DeviceArray();
  DeviceArray(DeviceArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void resize(size_t floats);  // grow-only; contents are lost when it grows
  float* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

// Host memory the GPU can copy from asynchronously (cudaMallocHost); grow-only.
class PinnedArray {
 public:
  PinnedArray() = default;
  ~PinnedArray();
  PinnedArray(PinnedArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  void resize(size_t floats);
  float* data() const { return p_; }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace ccn
