// ccn/native/cuda/fastdiv.cuh: division by a divisor fixed at launch, by multiply and shift.
//
// A 32-bit integer division is emulated on NVIDIA GPUs (~20 instructions). The row kernels of
// conv.cu split every element's index into (case, module, pixel) parts, several divisions
// each, and on an H100 those divisions took most of their time (AlexNet's conv2 unfold: ~0.6
// GB written in 1.30 ms, 0.42 ms with FastDiv; tools/perf-notes.md gpu-5). FastDiv does one
// in ~3 instructions.
//
// For a divisor d >= 1 let l = ceil(log2 d), p = 31 + l and mul = ceil(2^p / d), which fits in
// 32 bits. Then for every 0 <= n < 2^31:  n / d == (n * mul) >> p  (64-bit product).
// Proof (Granlund and Montgomery, 1994): mul = (2^p + e) / d with 0 <= e < d <= 2^l, so
// n * mul / 2^p = n/d + n*e / (d * 2^p), and n*e < 2^31 * 2^l = 2^p makes the second term
// less than 1/d, too small to carry floor(n/d) past the next integer.
// tests/cuda/test_cuda_review.py (test_fastdiv_divides_exactly_below_2_31) checks it against
// C++ '/' and '%' on every n of windows at its quotients' edges and below 2^31.
#pragma once

#include <cstdint>

namespace ccn::cuda {

struct FastDiv {
  uint32_t d = 1, mul = 1u << 31, shift = 31;

  FastDiv() = default;
  // d in [1, 2^31) (callers check their sizes; a conv's M*M, S*S, K and so on).
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    uint32_t l = 0;
    while (l < 32 && (uint64_t(1) << l) < divisor) ++l;
    shift = 31 + l;
    mul = (uint32_t)(((uint64_t(1) << shift) + divisor - 1) / divisor);
  }

  // n / d, for 0 <= n < 2^31
  __host__ __device__ __forceinline__ int div(int n) const {
    return (int)(((uint64_t)(uint32_t)n * mul) >> shift);
  }
  // q = n / d, r = n - q * d
  __host__ __device__ __forceinline__ void divmod(int n, int& q, int& r) const {
    q = div(n);
    r = n - q * (int)d;
  }
};

}  // namespace ccn::cuda
