// ccn/native/core/tensor.h: the one array type of the CPU core.
//
// A Mat is a dense row-major float32 matrix (rows x cols) in 64-byte aligned memory.
// Layout conventions used everywhere in ccn:
//   - activations and their gradients: rows = cases (the minibatch), cols = C*H*W with
//     x fastest, then y, then channel ("NCHW", case slowest);
//   - weights keep cuda-convnet's matrix shapes (see each layer file), so checkpoints and
//     NumPy views read the same way as in the original.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

#include <sys/mman.h>

#include "core/error.h"

namespace ccn {

// memcpy, spread over the OpenMP threads when it is large (tensor.cpp).
void copy_bytes(void* dst, const void* src, size_t bytes);

struct AlignedFree {
  bool owned = true;   // false for a Mat::borrow view, whose memory belongs to someone else
  size_t mapped = 0;   // bytes of an mmap'ed block (Mat::resize_zeroed), 0 for aligned_alloc
  void operator()(float* p) const {
    if (!owned) return;
    if (mapped) munmap(p, mapped);
    else std::free(p);
  }
};

class Mat {
 public:
  Mat() = default;
  Mat(int64_t rows, int64_t cols) { resize(rows, cols); }
  // A read-only view of rows x cols floats the caller owns and keeps alive while the view is
  // used (the minibatch a Python caller passes in, read without a copy). Only for const Mat
  // arguments: nothing may write through it. Any resize (so copy_from too) first gives it
  // memory of its own.
  static Mat borrow(const float* p, int64_t rows, int64_t cols) {
    Mat m;
    m.data_ = std::unique_ptr<float, AlignedFree>(const_cast<float*>(p), AlignedFree{false});
    m.rows_ = rows;
    m.cols_ = cols;
    m.capacity_ = rows * cols;
    return m;
  }

  void resize(int64_t rows, int64_t cols) {
    CCN_CHECK(rows >= 0 && cols >= 0);
    if (rows * cols > capacity_ || !data_.get_deleter().owned) {  // a view is never written through
      size_t bytes = ((size_t)(rows * cols) * sizeof(float) + 63) / 64 * 64;
      float* p = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
      if (!p) runtime_error("out of memory allocating ", bytes, " bytes");
      data_ = std::unique_ptr<float, AlignedFree>(p);  // owned, also when it replaces a view
      capacity_ = rows * cols;
    }
    rows_ = rows;
    cols_ = cols;
  }
  // resize() then zero(), but a large new block comes zeroed from the kernel (anonymous mmap,
  // page-aligned): its pages take memory only once written. Parameters are made this way, so
  // a net built only to be shown (ccn show-net) or checked for size before its weights are
  // drawn does not hold three copies of every weight.
  void resize_zeroed(int64_t rows, int64_t cols) {
    CCN_CHECK(rows >= 0 && cols >= 0);
    size_t bytes = (size_t)(rows * cols) * sizeof(float);
    if (bytes < ((size_t)1 << 20) || (rows * cols <= capacity_ && data_.get_deleter().owned)) {
      resize(rows, cols);
      zero();
      return;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) runtime_error("out of memory allocating ", bytes, " bytes");
    data_ = std::unique_ptr<float, AlignedFree>(static_cast<float*>(p), AlignedFree{true, bytes});
    capacity_ = rows * cols;
    rows_ = rows;
    cols_ = cols;
  }
  void zero() {
    if (size()) std::memset(data_.get(), 0, (size_t)size() * sizeof(float));
  }
  void fill(float v) {
    float* p = data();
    for (int64_t i = 0; i < size(); ++i) p[i] = v;
  }
  void copy_from(const Mat& o) {
    resize(o.rows(), o.cols());
    copy_bytes(data(), o.data(), (size_t)size() * sizeof(float));
  }

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float* row(int64_t r) { return data_.get() + r * cols_; }
  const float* row(int64_t r) const { return data_.get() + r * cols_; }
  float& at(int64_t r, int64_t c) { return data_.get()[r * cols_ + c]; }
  float at(int64_t r, int64_t c) const { return data_.get()[r * cols_ + c]; }

 private:
  std::unique_ptr<float, AlignedFree> data_;
  int64_t rows_ = 0, cols_ = 0, capacity_ = 0;
};

}  // namespace ccn
