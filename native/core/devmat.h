// ccn/native/core/devmat.h: a non-owning view of a matrix in GPU memory.
//
// Same layout as Mat (core/tensor.h): dense row-major float32, rows = cases for
// activations, cols = C*H*W with x fastest, then y, then channel. The memory belongs to
// the net's device state (native/net/net_cuda.cu); a DevMat never frees it. A null `p`
// means "not needed" where a layer's interface allows it (e.g. an input gradient).
#pragma once
#include <cstdint>

namespace ccn {

struct DevMat {
  float* p = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t size() const { return rows * cols; }
  explicit operator bool() const { return p != nullptr; }
  float* row(int64_t r) const { return p + r * cols; }
};

}  // namespace ccn
