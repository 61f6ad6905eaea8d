// ccn/native/layers/blur.cpp: type=blur, cuda-convnet2's Gaussian blur layer
// (GaussianBlurLayerParser in layer.py, kGaussianBlur in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): channels (>= 1), filterSize (one of 3, 5, 7, 9),
// stdev (> 0; spelled `stdev` as in the original parser).
// Filter: f[i] = exp(-(filterSize//2 - i)^2 / (2 stdev^2)), i = 0..filterSize-1, divided by
// its sum (symmetric). Applied along x, then along y, with zero padding:
//   t[c, y, x]   = sum_k f[k] * in[c, y, x + k - r]        (r = filterSize // 2)
//   out[c, y, x] = sum_k f[k] * t[c, y + k - r, x]
// Shape: out = in = channels x S x S; the original rejects filterSize > S.
// Gradient: the original back-propagates by blurring the gradient (the operator is its own
// transpose, since f is symmetric); we apply the exact transpose (reversed filter, y then x).
// Layout: rows = cases, each row C*S*S with x fastest; parallel over (case, channel).
#include <algorithm>
#include <cmath>
#include <vector>

#include "layers/imgops.h"

namespace ccn {

class BlurLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "blur");
    int channels = spec.get_int("channels");
    if (channels < 1) spec.fail("channels", cat("must be at least 1, found ", channels, "."));
    int fs = spec.get_int("filterSize");
    if (fs != 3 && fs != 5 && fs != 7 && fs != 9)
      spec.fail("filterSize", cat("must be one of 3, 5, 7, 9, found ", fs, "."));
    if (!spec.has("stdev") && spec.has("stddev"))
      spec.fail("stddev", "not a key of layer type 'blur'; cuda-convnet2 spells the standard deviation 'stdev'.");
    double sd = spec.get_float("stdev");
    if (!(sd > 0) || !std::isfinite(sd)) spec.fail("stdev", cat("must be a positive number, found ", sd, "."));
    Shape s = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
    if (fs > s.h)
      spec.fail("filterSize", cat("the filter (", fs, ") must not be larger than the ", s.h, "x", s.h, " input images."));
    std::vector<double> f(fs);
    double sum = 0;
    for (int i = 0; i < fs; ++i) {
      double d = fs / 2 - i;
      f[i] = std::exp(-d * d / (2 * sd * sd));
      sum += f[i];
    }
    filter_.resize(fs);
    for (int i = 0; i < fs; ++i) filter_[i] = (float)(f[i] / sum);
    out = s;
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    run(*in[0], o, false, false);
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (din[0]) run(dout, *din[0], true, true);
  }

  // two passes (x, then y) of filterSize multiply-adds per value
  double flops_per_case() const override { return 4.0 * filter_.size() * out.size(); }

 private:
  // dst (=, or += when add) = blur(src); transpose=true applies the adjoint: the reversed filter
  // along y first, then along x.
  void run(const Mat& src, Mat& dst, bool transpose, bool add) const {
    const int64_t N = src.rows();
    const int C = out.c, S = out.h, fs = (int)filter_.size(), r = fs / 2;
    std::vector<float> f(filter_);
    if (transpose) f.assign(filter_.rbegin(), filter_.rend());
    const int64_t jobs = N * C;
#pragma omp parallel
    {
      std::vector<float> t((size_t)S * S), u((size_t)S * S);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < jobs; ++j) {
        const int64_t n = j / C, c = j % C;
        const float* x = src.row(n) + c * (int64_t)S * S;
        float* y = dst.row(n) + c * (int64_t)S * S;
        // pass 1: along x (forward) or along y (transpose), into t
        for (int yy = 0; yy < S; ++yy)
          for (int xx = 0; xx < S; ++xx) {
            const int pos = transpose ? yy : xx;  // taps k with 0 <= pos + k - r < S
            const int k0 = std::max(0, r - pos), k1 = std::min(fs, S - pos + r);
            float acc = 0;
            if (transpose)
              for (int k = k0; k < k1; ++k) acc += f[k] * x[(pos + k - r) * S + xx];
            else
              for (int k = k0; k < k1; ++k) acc += f[k] * x[yy * S + pos + k - r];
            t[yy * S + xx] = acc;
          }
        // pass 2: along y (forward) or along x (transpose)
        for (int yy = 0; yy < S; ++yy)
          for (int xx = 0; xx < S; ++xx) {
            const int pos = transpose ? xx : yy;
            const int k0 = std::max(0, r - pos), k1 = std::min(fs, S - pos + r);
            float acc = 0;
            if (transpose)
              for (int k = k0; k < k1; ++k) acc += f[k] * t[yy * S + pos + k - r];
            else
              for (int k = k0; k < k1; ++k) acc += f[k] * t[(pos + k - r) * S + xx];
            u[yy * S + xx] = acc;
          }
        if (add)
          for (int64_t k = 0; k < (int64_t)S * S; ++k) y[k] += u[k];
        else
          for (int64_t k = 0; k < (int64_t)S * S; ++k) y[k] = u[k];
      }
    }
  }

  std::vector<float> filter_;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu (blur_apply): the same two 1-D passes; bprop with the reversed
  // filter and the passes swapped (the exact transpose), added into din. Same layout.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::blur_apply(cx, filter(false), in[0].p, o.p, o.rows * out.c, out.h, false, false);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::blur_apply(cx, filter(true), dout.p, din[0].p, dout.rows * out.c, out.h, true, true);
  }

 private:
  cuda::BlurFilter filter(bool reversed) const {
    cuda::BlurFilter f;
    f.fs = (int)filter_.size();
    for (int k = 0; k < f.fs; ++k) f.f[k] = reversed ? filter_[f.fs - 1 - k] : filter_[k];
    return f;
  }
#endif
};
CCN_REGISTER_LAYER("blur", BlurLayer);

}  // namespace ccn
