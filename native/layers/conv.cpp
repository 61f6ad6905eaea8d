// ccn/native/layers/conv.cpp: type=conv, convolution with weights shared over the image.
//
// Keys and shape rule: see conv_common.h (channels, filterSize, padding, stride, filters per
// group, groups, randSparse, filterChannels, modulesX, partialSum/sumWidth ignored) plus
//   sharedBiases (default 1): one bias per filter, or one per filter and module.
//
//   out[n, f, my, mx] = b + sum_i sum_{c, fy, fx} W_i[c*fs^2 + fy*fs + fx, f]
//                                               * in_i[n, vchan_i[g*Cf + c], my*st - pad + fy, mx*st - pad + fx]
// with g = f / (F / groups) and pixels outside the image 0.
// Weights W_i: (Cf * fs^2) x F, row c*fs^2 + fy*fs + fx (channel slowest), one column per
// filter, as in cuda-convnet. Biases: F x 1 (shared) or (F * modules) x 1 indexed f*modules + m.
// Layout: in_i N x (C_i*S_i*S_i), out N x (F*P), P = modulesX^2, NCHW per case.
//
// Kernels: a chunk of cases (column buffer <= ~64 MB) is unfolded image-major
// (col[b][k][m], see kernels/unfold.h) in parallel, then per case and group one GEMM
//   out_b[g-block] (Fg x P) += W_g^T (Fg x Kg) * col_b[g-block] (Kg x P)
// through the (threaded) BLAS. Backward per case and group:
//   dW_g (Kg x Fg)   += col_b[g] (Kg x P) * dout_b[g]^T (P x Fg)
//   dcol_b[g] (Kg x P) = W_g (Kg x Fg) * dout_b[g] (Fg x P),  then fold (adding) into din.
#include <algorithm>
#include <vector>

#include "core/blas.h"
#include "layers/conv_common.h"

namespace ccn {

class ConvLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    cs_ = parse_conv_setup(spec, ctx, "conv");
    shared_biases_ = spec.get_bool("sharedBiases", true);
    // cuda-convnet2's weight-contrast normalisation (layer-params keys); 0 means off.
    auto wmax = spec.get_float_list("wcNormMax", (int)ctx.in.size(), 0.0, Src::Params);
    auto wmin = spec.get_float_list("wcNormMin", (int)ctx.in.size(), 0.0, Src::Params);
    for (size_t i = 0; i < wmax.size(); ++i)
      if (wmax[i] != 0 || wmin[i] != 0)
        spec.fail("wcNormMax", "weight-contrast normalisation (wcNormMin/wcNormMax) is not implemented; set both to 0.",
                  Src::Params);
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& ig : cs_.in) shapes.push_back({ig.kg(), cs_.filters});
    const int64_t P = cs_.modules();
    setup_weight_params(spec, ctx, *this, shapes, shared_biases_ ? cs_.filters : cs_.filters * P, 1);
    check_weight_source_types(spec, ctx, *this);
    out = Shape{cs_.filters, cs_.modules_x, cs_.modules_x};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int N = (int)o.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    const float* bias = biases->w.data();
    const bool sb = shared_biases_;
    // out[n][f*P + m] = bias
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; ++n)
      for (int f = 0; f < F; ++f) {
        float* d = o.row(n) + (int64_t)f * P;
        for (int64_t m = 0; m < P; ++m) d[m] = sb ? bias[f] : bias[(int64_t)f * P + m];
      }
    const int B = chunk(N);
    for (int n0 = 0; n0 < N; n0 += B) {
      const int nb = std::min(B, N - n0);
      for (size_t i = 0; i < in.size(); ++i) {
        const ConvInputGeom& ig = cs_.in[i];
        const int64_t K = ig.g.rows(), Kg = ig.kg();
        const int G = ig.groups, Fg = F / G;
        col_.resize((int64_t)nb * K, P);
        unfold_image_major(ig.g, in[i]->row(n0), in[i]->cols(), nb, col_.data());
        const float* W = weights[i]->w.data();
        for (int b = 0; b < nb; ++b)
          for (int g = 0; g < G; ++g)
            sgemm(true, false, Fg, (int)P, (int)Kg, 1.f, W + (int64_t)g * Fg, F,
                  col_.data() + ((int64_t)b * K + g * Kg) * P, (int)P, 1.f, o.row(n0 + b) + (int64_t)g * Fg * P,
                  (int)P);
      }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int N = (int)dout.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    // Bias gradients, summed over cases (and modules when shared) in double.
    float* db = biases->grad.data();
    if (shared_biases_) {
#pragma omp parallel for schedule(static)
      for (int f = 0; f < F; ++f) {
        double s = 0;
        for (int n = 0; n < N; ++n) {
          const float* g = dout.row(n) + (int64_t)f * P;
          for (int64_t m = 0; m < P; ++m) s += g[m];
        }
        db[f] += (float)s;
      }
    } else {
      const int64_t FP = (int64_t)F * P;
#pragma omp parallel for schedule(static)
      for (int64_t j = 0; j < FP; ++j) {
        double s = 0;
        for (int n = 0; n < N; ++n) s += dout.row(n)[j];
        db[j] += (float)s;
      }
    }
    const int B = chunk(N);
    for (int n0 = 0; n0 < N; n0 += B) {
      const int nb = std::min(B, N - n0);
      for (size_t i = 0; i < in.size(); ++i) {
        const ConvInputGeom& ig = cs_.in[i];
        const int64_t K = ig.g.rows(), Kg = ig.kg();
        const int G = ig.groups, Fg = F / G;
        const float* W = weights[i]->w.data();
        float* dW = weights[i]->grad.data();
        col_.resize((int64_t)nb * K, P);
        unfold_image_major(ig.g, in[i]->row(n0), in[i]->cols(), nb, col_.data());
        for (int b = 0; b < nb; ++b)
          for (int g = 0; g < G; ++g)
            sgemm(false, true, (int)Kg, Fg, (int)P, 1.f, col_.data() + ((int64_t)b * K + g * Kg) * P, (int)P,
                  dout.row(n0 + b) + (int64_t)g * Fg * P, (int)P, 1.f, dW + (int64_t)g * Fg, F);
        if (!din[i]) continue;
        for (int b = 0; b < nb; ++b)
          for (int g = 0; g < G; ++g)
            sgemm(false, false, (int)Kg, (int)P, Fg, 1.f, W + (int64_t)g * Fg, F,
                  dout.row(n0 + b) + (int64_t)g * Fg * P, (int)P, 0.f, col_.data() + ((int64_t)b * K + g * Kg) * P,
                  (int)P);
        fold_image_major(ig.g, col_.data(), nb, din[i]->row(n0), din[i]->cols());
      }
    }
  }

  void reload_params(LayerSpec& spec) override {
    reload_weight_params(spec, *this);
    spec.allow("wcNormMax", Src::Params);
    spec.allow("wcNormMin", Src::Params);
  }

  double flops_per_case() const override {
    double f = 0;
    for (const auto& ig : cs_.in) f += (double)cs_.modules() * cs_.filters * ig.kg();
    return f;
  }

 private:
  int chunk(int n) const {
    int64_t per_case = 0;
    for (const auto& ig : cs_.in) per_case = std::max<int64_t>(per_case, ig.g.rows() * cs_.modules() * 4);
    return conv_chunk(n, per_case);
  }

  ConvSetup cs_;
  bool shared_biases_ = true;
  Mat col_;  // unfolded chunk, image-major: (cases * K) x P
};
CCN_REGISTER_LAYER("conv", ConvLayer);

}  // namespace ccn
