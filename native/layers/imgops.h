// ccn/native/layers/imgops.h: helpers shared by the image-operation layers
// (blur, nailbed, resize, href, rscale, crop, rgb2yuv, rgb2lab).
//
// Layout: every image here is one channel of one case, a dense S x S block of floats with
// x fastest (row y starts at y*S), i.e. one channel slice of the NCHW row of a Mat whose
// rows are cases. The layers loop over (case, channel) pairs and call these per slice.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/context.h"
#include "cuda/kernels.h"
#endif

namespace ccn {
namespace imgops {

// The layer must have exactly one input (all image-operation layers of cuda-convnet2 do).
inline void require_one_input(LayerSpec& spec, const SetupCtx& ctx, const char* what) {
  if (ctx.in.size() != 1)
    spec.fail("inputs", cat("a ", what, " layer takes exactly one input, found ", ctx.in.size(), "."));
}

// One input of 3-channel square images, for the colour transforms (which have no channels key).
inline Shape rgb_shape(LayerSpec& spec, const SetupCtx& ctx, const char* what) {
  require_one_input(spec, ctx, what);
  const Shape& in = ctx.in[0];
  int64_t n = in.size();
  int64_t px = n / 3;
  int64_t s = (int64_t)std::llround(std::sqrt((double)px));
  if (n % 3 != 0 || s * s != px || s < 1)
    spec.fail("inputs", cat("a ", what, " layer needs 3-channel (RGB) square images, but input '", ctx.in_names[0], "' has ",
                            n, " values per case (", in.str(), "), which is not 3 x S x S."));
  return Shape{3, (int)s, (int)s};
}

// Bilinear resampling as cuda-convnet2's kResizeBilinear: target pixel p (of T) samples the
// source (of S) at  p*scale + S/2 - T/2*scale, clamped to [0, S - 1.01], so the 2x2 neighbours
// (floor, floor+1) are always inside the image (for S >= 2; for S = 1 the second neighbour has
// weight 0 and is clamped to the first). The same positions are used along x and y.
struct ResizePlan {
  int S = 0, T = 0;
  std::vector<int> lo, hi;        // neighbour indices per target index
  std::vector<float> u;           // weight of `lo` along x: 1 - (s - floor(s))
  std::vector<float> w;           // weight of `hi` along y: s - floor(s)
  ResizePlan() = default;
  ResizePlan(int S_, int T_, float scale) : S(S_), T(T_), lo(T_), hi(T_), u(T_), w(T_) {
    // computed in float as the original kernel does (centre offset in double, passed as float)
    const float centre = (float)((double)S * 0.5 - (double)T * 0.5 * (double)scale);
    const float top = (float)S - 1.01f;
    for (int p = 0; p < T; ++p) {
      float s = std::fmax(0.0f, std::fmin(top, (float)p * scale + centre));
      int l = (int)std::floor(s);
      lo[p] = l;
      hi[p] = std::min(l + 1, S - 1);
      // The original kernel takes floor(s + 1) - s here; in float, s + 1 rounds up to the next
      // integer when s lies within half an ulp below one (e.g. s = 4 - 2^-22 on an exact centre
      // sample), and the weight of `lo` jumps from ~0 to ~1. 1 - frac is the same weight
      // without that jump.
      w[p] = s - std::floor(s);
      u[p] = 1.0f - w[p];
    }
  }
};

// out (T x T) = bilinear samples of in (S x S).
inline void resize_fwd(const ResizePlan& P, const float* in, float* out) {
  const int S = P.S, T = P.T;
  for (int py = 0; py < T; ++py) {
    const float* r0 = in + (int64_t)P.lo[py] * S;
    const float* r1 = in + (int64_t)P.hi[py] * S;
    const float w = P.w[py];
    float* o = out + (int64_t)py * T;
    for (int px = 0; px < T; ++px) {
      const int l = P.lo[px], h = P.hi[px];
      const float u = P.u[px];
      const float c0 = u * (r0[l] - r0[h]) + r0[h];
      const float c1 = u * (r1[l] - r1[h]) + r1[h];
      o[px] = w * (c1 - c0) + c0;
    }
  }
}

// gin (S x S) += transpose of the resampling applied to gout (T x T): each target pixel hands
// its gradient to its four source neighbours with the bilinear weights.
inline void resize_bwd(const ResizePlan& P, const float* gout, float* gin) {
  const int S = P.S, T = P.T;
  for (int py = 0; py < T; ++py) {
    float* r0 = gin + (int64_t)P.lo[py] * S;
    float* r1 = gin + (int64_t)P.hi[py] * S;
    const float w = P.w[py];
    const float* g = gout + (int64_t)py * T;
    for (int px = 0; px < T; ++px) {
      const int l = P.lo[px], h = P.hi[px];
      const float u = P.u[px];
      const float g0 = (1.0f - w) * g[px], g1 = w * g[px];
      r0[l] += u * g0;
      r0[h] += (1.0f - u) * g0;
      r1[l] += u * g1;
      r1[h] += (1.0f - u) * g1;
    }
  }
}

// out (T x T) = in (S x S) rows [sy, sy+T), cols [sx, sx+T).
inline void crop_fwd(const float* in, int S, float* out, int T, int sy, int sx) {
  for (int y = 0; y < T; ++y) {
    const float* src = in + (int64_t)(sy + y) * S + sx;
    float* dst = out + (int64_t)y * T;
    for (int x = 0; x < T; ++x) dst[x] = src[x];
  }
}

// gin (S x S) += gout (T x T) placed at (sy, sx).
inline void crop_bwd(const float* gout, int T, float* gin, int S, int sy, int sx) {
  for (int y = 0; y < T; ++y) {
    const float* src = gout + (int64_t)y * T;
    float* dst = gin + (int64_t)(sy + y) * S + sx;
    for (int x = 0; x < T; ++x) dst[x] += src[x];
  }
}

#ifdef CCN_WITH_CUDA
// A resize plan's tables on the device: lo, hi, u, w (T entries each) in the persistent
// buffer (layer, slot), copied there when `upload` (every forward pass: a new device context
// may reuse the same addresses, so "already uploaded" cannot be told safely; the tables are
// tiny) and read by the backward pass that follows.
inline cuda::ResizeTables resize_tables(CudaCtx& cx, int layer, int slot, const ResizePlan& P, bool upload) {
  static_assert(sizeof(int) == sizeof(float), "the index tables share a float buffer");
  const size_t T = (size_t)P.T;
  float* b = cx.buffer(layer, slot, 4 * T);
  if (upload) {
    cuda::copy_to_device(cx, b, P.lo.data(), T * sizeof(int));
    cuda::copy_to_device(cx, b + T, P.hi.data(), T * sizeof(int));
    cuda::copy_to_device(cx, b + 2 * T, P.u.data(), T * sizeof(float));
    cuda::copy_to_device(cx, b + 3 * T, P.w.data(), T * sizeof(float));
  }
  cuda::ResizeTables t;
  t.S = P.S, t.T = P.T;
  t.lo = reinterpret_cast<const int*>(b);
  t.hi = reinterpret_cast<const int*>(b + T);
  t.u = b + 2 * T;
  t.w = b + 3 * T;
  return t;
}
#endif

}  // namespace imgops
}  // namespace ccn
