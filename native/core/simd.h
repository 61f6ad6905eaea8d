// ccn/native/core/simd.h: the plain inner loops of the element-wise, neuron, pool and norm
// layers, compiled three times (simd_kernels.inc in simd_portable.cpp, simd_avx2.cpp,
// simd_avx512.cpp; CMakeLists.txt gives each its -m flags) and chosen once per process:
// the widest the CPU supports (__builtin_cpu_supports), or CCN_SIMD=portable|avx2|avx512
// (read once, at the first use; a path the CPU lacks falls back to the best it has).
//
// Every path gives bitwise the portable path's results: the loops are element-wise (no
// reductions that a wider vector would reassociate), all three files are compiled with
// -ffp-contract=off (no FMA contraction of a*b + c) and the same -fno-math-errno, and sqrt,
// division, min/max and compares are exactly rounded in every instruction set. Transcendental
// functions are not here (libm's scalar results are the reference).
//
// The kernels are single-threaded; callers split work across OpenMP threads.
#pragma once
#include <cstdint>

namespace ccn::simd {

// One pool layer's geometry (layers/pool.cpp): S x S input planes, O x O outputs, windows of
// size x size from start + o*stride; [ia, ib) the outputs whose windows lie inside a row;
// max (max or maxabs backward) or avg; relu fused into max.
struct PoolGeom {
  int S = 0, O = 0, size = 0, stride = 1, start = 0, ia = 0, ib = 0;
  bool max = true, relu = false;
};

// Floats in each of pool_bwd_plane's scratch buffers me and ge: size*S rows of spread
// windows, or for stride 2 with sizeX 3 the O padded rows of W = S + 2|start| + 4 floats
// that the backward interleaves a plane's outputs into (core/simd_pool.inc).
inline int64_t pool_bwd_scratch(const PoolGeom& g) {
  const int64_t a = g.start < 0 ? -g.start : g.start;
  const int64_t spread = (int64_t)g.size * g.S, inter = (int64_t)g.O * (g.S + 2 * a + 4);
  return spread > inter ? spread : inter;
}

struct Kernels {
  const char* name;
  // out[i] = 0.f + sum_{k < taps} a[i + k*step], the terms added in k order (i < n).
  void (*box_sum)(const float* a, float* out, int64_t n, int taps, int64_t step);
  // out[i] = x[i] * x[i]
  void (*square)(const float* x, float* out, int64_t n);
  // den[i] = k + alpha * den[i]; dp[i] = den[i]^(-pow); y[i] = x[i] * dp[i]
  void (*norm_fwd)(float* den, float* dp, float* y, const float* x, int64_t n, float k, float alpha, double pow);
  // out[i] = d[i]^(-b) (exact fast paths for b = 0.75, 0.5, 1; powf otherwise)
  void (*inv_pow)(const float* d, float* out, int64_t n, double b);
  // t[i] = g[i] * y[i] / den[i]
  void (*norm_t)(const float* g, const float* y, const float* den, float* t, int64_t n);
  // d[i] (+)= g[i]*dp[i] + f*x[i]*s[i]   (assign: d[i] = 0.f + that)
  void (*norm_bwd)(float* d, const float* g, const float* dp, const float* x, const float* s, float f, int64_t n,
                   bool assign);
  // d[i] += a[i] * b[i]
  void (*add_mul)(float* d, const float* a, const float* b, int64_t n);
  // d[i] += f * x[i] * t[i]
  void (*add_fmul)(float* d, float f, const float* x, const float* t, int64_t n);
  // y[i] = x[i] > 0 ? x[i] : 0
  void (*relu_fwd)(const float* x, float* y, int64_t n);
  // d[i] (+)= g[i] * (v[i] > 0 ? 1 : 0)   (assign: d[i] = 0.f + that)
  void (*relu_bwd)(const float* v, const float* g, float* d, int64_t n, bool assign);
  // One pool plane forward (max or avg; rb: O*S floats of scratch, hb: S) and backward (max/maxabs
  // or avg; me, ge: pool_bwd_scratch(g) floats, zero-filled by the caller once per thread (for
  // one geometry); assign: d is
  // overwritten). Bitwise layers/pool.cpp's definitions.
  void (*pool_fwd_plane)(const PoolGeom& g, const float* x, float* y, float* rb, float* hb);
  void (*pool_bwd_plane)(const PoolGeom& g, const float* x, const float* y, const float* go, float* d, float* me,
                         float* ge, bool assign);
};

// The kernels of the chosen path.
const Kernels& k();
// A given path's kernels ("portable", "avx2", "avx512"); null when not compiled in or the CPU
// lacks it. For tests and benchmarks.
const Kernels* path_kernels(const char* name);

}  // namespace ccn::simd
