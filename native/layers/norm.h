// ccn/native/layers/norm.h: what the three normalisation layers share (rnorm.cpp, cmrnorm.cpp,
// cnorm.cpp hold their kernels): key rules, the scale convention and a 2-D box sum.
//
// Keys. Layer-definition file: channels, size (the older spelling sizeX is accepted too; give
// one of them), blocked (cmrnorm only, default 0). Layer-params file: scale, pow, minDiv
// (default 1), re-read on resume (reload_params). cuda-convnet2 and the 2012 release read
// scale/pow/minDiv from the layer-params file; pre-release 2012 layer files (e.g.
// layers-example.cfg) carry scale and pow in the definition file, so a value found only
// there is used; where both files give a key the layer-params file wins. Without any
// layer-params file (show-net) missing scale/pow default to 0.
//
// With N = size and user scale a: a' = a / N for cmrnorm and a / N^2 for rnorm and cnorm
// (layer.py NormLayerParser.add_params). Output: y = x * (minDiv + a' * sum_window v^2)^(-pow),
// with v = x (rnorm, cmrnorm) or v = x - local mean (cnorm).
//
// Windows (cudaconv3/src/conv_util.cu): position p (pixel row/column, or channel for cmrnorm)
// sees [p - N/2, p - N/2 + N) clipped to the image (so even N reach one further up/left);
// no renormalisation of a' for clipped windows. Blocked cmrnorm uses the aligned blocks
// [(c / N) * N, (c / N) * N + N) clipped to the channels.
#pragma once
#include <algorithm>
#include <cmath>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/context.h"
#include "cuda/kernels.h"
#endif

namespace ccn {

class NormLayerBase : public Layer {
 public:
  enum class Kind { Response, CrossMap, Contrast };
  explicit NormLayerBase(Kind k) : kind_(k) {}

  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1)
      spec.fail("inputs", cat("a ", spec.type(), " layer takes exactly one input, found ", ctx.in.size(), "."));
    C_ = spec.get_int("channels");
    Shape in = image_shape(spec, ctx.in[0], C_, ctx.in_names[0]);
    S_ = in.h;
    spec.allow("size");
    spec.allow("sizeX");
    if (spec.has("size") && spec.has("sizeX"))
      spec.fail("sizeX", "give the window size once, as size= (or the older spelling sizeX=), not both.");
    const char* skey = spec.has("sizeX") ? "sizeX" : "size";
    N_ = spec.get_int(skey);
    if (kind_ == Kind::CrossMap) {
      if (N_ < 1 || N_ > C_) spec.fail(skey, cat("must be between 1 and channels=", C_, ", found ", N_, "."));
    } else {
      if (N_ < 1 || N_ > S_)
        spec.fail(skey, cat("must be between 1 and the image size ", S_, " (input ", in.str(), "), found ", N_, "."));
    }
    blocked_ = spec.get_bool("blocked", false);
    if (blocked_ && kind_ != Kind::CrossMap)
      spec.fail("blocked", cat("blocked=1 applies only to cross-map normalisation (type=cmrnorm), not type=", spec.type(), "."));
    read_params(spec);
    out = Shape{C_, S_, S_};
  }

  void reload_params(LayerSpec& spec) override { read_params(spec); }

 protected:
  // One of scale / pow / minDiv: layer-params file first, then the definition file.
  double norm_key(LayerSpec& spec, const std::string& key, std::optional<double> dflt, Src& src) {
    spec.allow(key, Src::Def);
    spec.allow(key, Src::Params);
    if (spec.has(key, Src::Params)) return spec.get_float(key, {}, (src = Src::Params));
    if (spec.has(key, Src::Def)) return spec.get_float(key, {}, (src = Src::Def));
    src = Src::Params;
    if (dflt) return *dflt;
    if (!spec.params_given()) return 0.0;
    return spec.get_float(key, {}, Src::Params);  // reports the missing key in the layer-params file
  }

  void read_params(LayerSpec& spec) {
    Src s1, s2, s3;
    double scale = norm_key(spec, "scale", {}, s1);
    double pw = norm_key(spec, "pow", {}, s2);
    double md = norm_key(spec, "minDiv", 1.0, s3);
    if (scale < 0) spec.fail("scale", cat("must not be negative, found ", scale, "."), s1);
    if (!(md > 0)) spec.fail("minDiv", cat("must be positive (it keeps the denominator away from 0), found ", md, "."), s3);
    (void)s2;
    pow_ = pw;
    min_div_ = md;
    alpha_ = kind_ == Kind::CrossMap ? scale / N_ : scale / ((double)N_ * N_);
  }

  // First offset of the window of position p, relative to p (forward: p sees [p+lo, p+lo+N)).
  int lo() const { return -(N_ / 2); }
  // The transposed window: q is in the window of p exactly when p is in [q+lo_t, q+lo_t+N).
  int lo_t() const { return -(N_ - 1 - N_ / 2); }

  Kind kind_;
  int C_ = 0, S_ = 0, N_ = 1;
  bool blocked_ = false;
  double alpha_ = 0, pow_ = 0, min_div_ = 1;

#ifdef CCN_WITH_CUDA
  // The launchers' geometry (native/cuda/{rnorm,cmrnorm,cnorm}.cu): a = alpha_, the scale
  // already divided by size^2 (rnorm, cnorm) or size (cmrnorm) in read_params.
  cuda::NormGeom cuda_geom(int N) const { return cuda::norm_geom(N, C_, S_, N_, alpha_, pow_, min_div_, blocked_); }
#endif
};

// dst[y*S + x] = sum of src over rows [y+lo, y+lo+N) and columns [x+lo, x+lo+N) clipped to the
// S x S plane. tmp: S*S floats of scratch. Separable: a horizontal pass, then a vertical one;
// both inner loops run along contiguous x.
inline void box_sum_2d(const float* src, float* dst, float* tmp, int S, int lo, int N) {
  for (int y = 0; y < S; ++y) {
    const float* s = src + (int64_t)y * S;
    float* t = tmp + (int64_t)y * S;
    std::fill(t, t + S, 0.f);
    for (int k = 0; k < N; ++k) {
      const int off = lo + k;
      const int x0 = std::max(0, -off), x1 = std::min(S, S - off);
      for (int x = x0; x < x1; ++x) t[x] += s[x + off];
    }
  }
  for (int y = 0; y < S; ++y) {
    float* d = dst + (int64_t)y * S;
    std::fill(d, d + S, 0.f);
    const int y0 = std::max(0, y + lo), y1 = std::min(S, y + lo + N);
    for (int yy = y0; yy < y1; ++yy) {
      const float* t = tmp + (int64_t)yy * S;
      for (int x = 0; x < S; ++x) d[x] += t[x];
    }
  }
}

// Number of positions of [p+lo, p+lo+N) inside [0, S).
inline int clipped_count(int p, int lo, int N, int S) { return std::min(S, p + lo + N) - std::max(0, p + lo); }

}  // namespace ccn
