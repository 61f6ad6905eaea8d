// ccn/native/core/tensor.cpp: the large copies of the core.
#include "core/tensor.h"

#include "core/omp.h"

#include <algorithm>

namespace ccn {

void copy_bytes(void* dst, const void* src, size_t bytes) {
  // One thread copies a few GB/s; a 128-image AlexNet minibatch is 77 MB. Large copies are cut
  // into 1 MB pieces shared by the OpenMP threads; small ones are not worth waking them.
  constexpr size_t kPiece = 1 << 20, kParallelFrom = 8 << 20;
  if (bytes < kParallelFrom || omp_get_max_threads() == 1 || omp_in_parallel()) {
    if (bytes) std::memcpy(dst, src, bytes);
    return;
  }
  const int64_t pieces = (int64_t)((bytes + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t off = (size_t)p * kPiece;
    std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, std::min(kPiece, bytes - off));
  }
}

}  // namespace ccn
