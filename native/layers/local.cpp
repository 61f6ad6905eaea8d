// ccn/native/layers/local.cpp: type=local, locally connected (unshared) filters.
//
// Keys and shape rule: see conv_common.h (the same as conv, without sharedBiases: the
// biases are always unshared, as in cuda-convnet's LocalUnsharedLayer). wball (layer-params)
// caps the norm of each filter within each module: rows m*Kg .. m*Kg + Kg - 1 of a column.
//
//   out[n, f, m] = b[f*P + m] + sum_i sum_{c, fy, fx} W_i[m*Kg + c*fs^2 + fy*fs + fx, f]
//                                               * in_i[n, vchan_i[g*Cf + c], my*st - pad + fy, mx*st - pad + fx]
// with m = my*modulesX + mx, P = modulesX^2, Kg = Cf*fs^2, g = f / (F / groups), pixels
// outside the image 0.
// Weights W_i: (P * Kg) x F, row m*Kg + c*fs^2 + fy*fs + fx (module slowest), as in
// cuda-convnet. Biases: (F * P) x 1 indexed f*P + m.
// Layout: in_i N x (C_i*S_i*S_i), out N x (F*P), NCHW per case.
//
// Kernels: a chunk of cases is unfolded module-major (col[m][b][k], kernels/unfold.h), then
// per module and group one GEMM over the chunk's cases:
//   tmp[m] (nb x Fg block)  = col[m][:, g-block] (nb x Kg) * W_m,g (Kg x Fg)
// and tmp[m][b][f] is scattered to out[b][f*P + m]. Backward, with dtmp[m][b][f] = dout:
//   dW_m,g (Kg x Fg)    += col[m][:, g]^T (Kg x nb) * dtmp[m][:, g] (nb x Fg)
//   dcol[m][:, g] (nb x Kg) = dtmp[m][:, g] (nb x Fg) * W_m,g^T (Fg x Kg), then fold (adding).
#include <algorithm>
#include <vector>

#include "core/blas.h"
#include "layers/conv_common.h"
#ifdef CCN_WITH_CUDA
#include "cuda/context.h"
#include "cuda/kernels.h"
#endif

namespace ccn {

class LocalLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    cs_ = parse_conv_setup(spec, ctx, "local");
    const int64_t P = cs_.modules();
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& ig : cs_.in) shapes.push_back({P * ig.kg(), cs_.filters});
    setup_weight_params(spec, ctx, *this, shapes, cs_.filters * P, 1);
    check_weight_source_types(spec, ctx, *this);
    // wball caps each filter's norm per module (cuda-convnet2's normalizeLocalWeights).
    for (size_t i = 0; i < weights.size(); ++i)
      if (weights[i]->layer == name) weights[i]->wball_rows = cs_.in[i].kg(), weights[i]->wball_hard = false;
    allow_conv_params(spec);
    out = Shape{cs_.filters, cs_.modules_x, cs_.modules_x};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int N = (int)o.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    const int B = chunk(N);
    const float* bias = biases->w.data();
    for (int n0 = 0; n0 < N; n0 += B) {
      const int nb = std::min(B, N - n0);
      tmp_.resize(P * nb, F);  // tmp[m][b][f]
      for (size_t i = 0; i < in.size(); ++i) {
        const ConvInputGeom& ig = cs_.in[i];
        const int64_t K = ig.g.rows(), Kg = ig.kg();
        const int G = ig.groups, Fg = F / G;
        col_.resize(P * nb, K);
        unfold_module_major(ig.g, in[i]->row(n0), in[i]->cols(), nb, col_.data());
        const float* W = weights[i]->w.data();
        for (int64_t m = 0; m < P; ++m)
          for (int g = 0; g < G; ++g)
            sgemm(false, false, nb, Fg, (int)Kg, 1.f, col_.data() + m * nb * K + g * Kg, (int)K,
                  W + (m * Kg) * F + (int64_t)g * Fg, F, i == 0 ? 0.f : 1.f, tmp_.data() + m * nb * F + (int64_t)g * Fg,
                  F);
      }
      // out[n0 + b][f*P + m] = tmp[m][b][f] + bias[f*P + m]
#pragma omp parallel for collapse(2) schedule(static)
      for (int b = 0; b < nb; ++b)
        for (int f = 0; f < F; ++f) {
          float* d = o.row(n0 + b) + (int64_t)f * P;
          const float* bf = bias + (int64_t)f * P;
          for (int64_t m = 0; m < P; ++m) d[m] = tmp_.data()[(m * nb + b) * F + f] + bf[m];
        }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int N = (int)dout.rows(), F = cs_.filters;
    const int64_t P = cs_.modules(), FP = (int64_t)F * P;
    float* db = biases->grad.data();
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < FP; ++j) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += dout.row(n)[j];
      db[j] += (float)s;
    }
    const int B = chunk(N);
    for (int n0 = 0; n0 < N; n0 += B) {
      const int nb = std::min(B, N - n0);
      tmp_.resize(P * nb, F);  // dtmp[m][b][f] = dout[n0 + b][f*P + m]
      float* dt = tmp_.data();
#pragma omp parallel for schedule(static)
      for (int64_t m = 0; m < P; ++m)
        for (int b = 0; b < nb; ++b) {
          const float* s = dout.row(n0 + b) + m;
          float* d = dt + (m * nb + b) * F;
          for (int f = 0; f < F; ++f) d[f] = s[(int64_t)f * P];
        }
      for (size_t i = 0; i < in.size(); ++i) {
        const ConvInputGeom& ig = cs_.in[i];
        const int64_t K = ig.g.rows(), Kg = ig.kg();
        const int G = ig.groups, Fg = F / G;
        const float* W = weights[i]->w.data();
        float* dW = weights[i]->grad.data();
        col_.resize(P * nb, K);
        unfold_module_major(ig.g, in[i]->row(n0), in[i]->cols(), nb, col_.data());
        for (int64_t m = 0; m < P; ++m)
          for (int g = 0; g < G; ++g)
            sgemm(true, false, (int)Kg, Fg, nb, 1.f, col_.data() + m * nb * K + g * Kg, (int)K,
                  dt + m * nb * F + (int64_t)g * Fg, F, 1.f, dW + (m * Kg) * F + (int64_t)g * Fg, F);
        if (!din[i]) continue;
        for (int64_t m = 0; m < P; ++m)
          for (int g = 0; g < G; ++g)
            sgemm(false, true, nb, (int)Kg, Fg, 1.f, dt + m * nb * F + (int64_t)g * Fg, F,
                  W + (m * Kg) * F + (int64_t)g * Fg, F, 0.f, col_.data() + m * nb * K + g * Kg, (int)K);
        fold_module_major(ig.g, col_.data(), nb, din[i]->row(n0), din[i]->cols());
      }
    }
  }

  void reload_params(LayerSpec& spec) override {
    reload_weight_params(spec, *this);
    allow_conv_params(spec);
  }

  double flops_per_case() const override {
    double f = 0;
    for (const auto& ig : cs_.in) f += 2.0 * cs_.modules() * cs_.filters * ig.kg();  // multiply-adds, 2 each
    return f;
  }

 private:
  // conv's layer-params keys wcNormMax/wcNormMin, which cuda-convnet2's local layer never read:
  // accepted (and ignored) so that a layer turned local by --conv-to-local keeps its params file.
  static void allow_conv_params(LayerSpec& spec) {
    spec.allow("wcNormMax", Src::Params);
    spec.allow("wcNormMin", Src::Params);
  }

  int chunk(int n) const {
    int64_t per_case = 0;
    for (const auto& ig : cs_.in) per_case = std::max<int64_t>(per_case, ig.g.rows());
    return conv_chunk(n, (per_case + cs_.filters) * cs_.modules() * 4);
  }

  ConvSetup cs_;
  Mat col_;  // unfolded chunk, module-major: (P * cases) x K
  Mat tmp_;  // outputs or output gradients of the chunk, module-major: (P * cases) x F

#ifdef CCN_WITH_CUDA
  // native/cuda/local.cu, one input at a time; same layouts. cs_.filters is already
  // filters * groups (all filters), the launchers' F. Biases are unshared (F*P x 1):
  // conv.cu's conv_add_bias / conv_bias_grad with shared = false.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      cuda::local_fprop(cx, cuda_geom(cx, i, (int)o.rows, true), in[i].p, weights[i]->dev.w, o.p, i > 0);
    cuda::conv_add_bias(cx, o.p, biases->dev.w, (int)o.rows, cs_.filters, (int)cs_.modules(), false);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      cuda::local_bprop(cx, cuda_geom(cx, i, (int)dout.rows, false), in[i].p, weights[i]->dev.w, dout.p, din[i].p,
                        weights[i]->dev.grad);
    cuda::conv_bias_grad(cx, dout.p, biases->dev.grad, (int)dout.rows, cs_.filters, (int)cs_.modules(), false);
  }

 private:
  // Input i's geometry, as ConvLayer::cuda_geom: plain groups pass no channel table; a
  // randSparse table lives in the persistent buffer (this layer's id, slot i), uploaded by
  // every forward pass and read by the backward pass that follows it.
  cuda::ConvGeom cuda_geom(CudaCtx& cx, size_t i, int N, bool upload) const {
    const ConvInputGeom& ig = cs_.in[i];
    cuda::ConvGeom g;
    g.N = N, g.C = ig.g.channels, g.S = ig.g.size;
    g.F = cs_.filters, g.groups = ig.groups, g.Cf = ig.filter_channels;
    g.fs = ig.g.fsize, g.stride = ig.g.stride, g.padding = ig.g.pad, g.M = cs_.modules_x;
    const std::vector<int>& v = ig.g.vchan;
    bool plain = (int)v.size() == ig.g.channels;
    for (size_t k = 0; plain && k < v.size(); ++k) plain = v[k] == (int)k;
    if (!plain) {
      static_assert(sizeof(int) == sizeof(float), "the channel table shares a float buffer");
      int* d = reinterpret_cast<int*>(cx.buffer(id, (int)i, v.size()));
      if (upload) cuda::copy_to_device(cx, d, v.data(), v.size() * sizeof(int));
      g.vchan = d;
    }
    return g;
  }
#endif
};
CCN_REGISTER_LAYER("local", LocalLayer);

}  // namespace ccn
