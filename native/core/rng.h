// ccn/native/core/rng.h: counter-based random numbers shared by the CPU and CUDA backends.
//
// No hidden state: a number is a pure function of (seed, stream, idx), so every thread
// count and both backends draw identical values (dropout masks agree bit for bit). The
// functions are __host__ __device__ when compiled by nvcc and plain inline C++ otherwise.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define CCN_HD __host__ __device__ __forceinline__
#else
#define CCN_HD inline
#endif

namespace ccn {

CCN_HD uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float32).
CCN_HD float uniform01(uint64_t seed, uint64_t stream, uint64_t idx) {
  uint64_t h = mix64(seed ^ mix64(stream ^ mix64(idx)));
  return (float)((h >> 40) * (1.0 / 16777216.0));
}

}  // namespace ccn
