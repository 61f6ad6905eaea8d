// ccn/native/layers/sfc.cpp: type=sfc, cuda-convnet2's "split fully-connected" layer
// (SplitFCLayerParser in layer.py, SplitFCLayer in cudaconvnet/src/layer.cu).
//
// Keys: parts (>= 1), outputs (>= 1, outputs per part), plus every weight-layer key (initW,
// initB, initWFunc, initBFunc, weightSource; epsW, epsB, momW, momB, wc, wball, updatePeriod in
// the layer-params file). Several inputs allowed; each input's size K_i must be divisible by parts.
// The input values, the weight rows and the outputs are each cut into `parts` contiguous blocks,
// and block p of the output sees only block p of each input:
//   out[n, p*O + j] = b[p*O + j] + sum_i sum_{k < K_i/P} in_i[n, p*K_i/P + k] * W_i[p*K_i/P + k, j]
// Weights W_i: K_i x O (O = outputs), shared by no part with another. Biases: 1 x (O*parts).
// Shape: out = (O*parts) x 1 x 1.
// Layout: in_i N x K_i, out N x (O*P), rows = cases. Three GEMMs per input and part (BLAS).
#include "core/blas.h"
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class SplitFcLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.empty()) spec.fail("inputs", "an sfc layer needs at least one input.");
    parts_ = spec.get_int("parts");
    if (parts_ < 1) spec.fail("parts", cat("must be at least 1, found ", parts_, "."));
    O_ = spec.get_int("outputs");
    if (O_ < 1) spec.fail("outputs", cat("must be a positive integer, found ", O_, "."));
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (size_t i = 0; i < ctx.in.size(); ++i) {
      const int64_t K = ctx.in[i].size();
      if (K % parts_ != 0)
        spec.fail("parts", cat("input '", ctx.in_names[i], "' has ", K, " values per case, which is not divisible by parts=",
                               parts_, "."));
      shapes.push_back({K, O_});
    }
    setup_weight_params(spec, ctx, *this, shapes, 1, (int64_t)O_ * parts_);
    out = Shape{O_ * parts_, 1, 1};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int N = (int)o.rows(), OP = (int)o.cols();
    const float* b = biases->w.data();
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < OP; ++j) o.at(n, j) = b[j];
    for (size_t i = 0; i < in.size(); ++i) {
      const int K = (int)in[i]->cols(), Kp = K / parts_;
      const float* W = weights[i]->w.data();
      for (int p = 0; p < parts_; ++p)
        sgemm(false, false, N, O_, Kp, 1.f, in[i]->data() + (int64_t)p * Kp, K, W + (int64_t)p * Kp * O_, O_, 1.f,
              o.data() + (int64_t)p * O_, OP);
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int N = (int)dout.rows(), OP = (int)dout.cols();
    for (size_t i = 0; i < in.size(); ++i) {
      const int K = (int)in[i]->cols(), Kp = K / parts_;
      const float* W = weights[i]->w.data();
      float* G = weights[i]->grad.data();
      for (int p = 0; p < parts_; ++p) {
        const float* g = dout.data() + (int64_t)p * O_;
        if (din[i])
          sgemm(false, true, N, Kp, O_, 1.f, g, OP, W + (int64_t)p * Kp * O_, O_, 1.f, din[i]->data() + (int64_t)p * Kp, K);
        sgemm(true, false, Kp, O_, N, 1.f, in[i]->data() + (int64_t)p * Kp, K, g, OP, 1.f, G + (int64_t)p * Kp * O_, O_);
      }
    }
    float* db = biases->grad.data();
    for (int n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      for (int j = 0; j < OP; ++j) db[j] += g[j];
    }
  }

  void reload_params(LayerSpec& spec) override { reload_weight_params(spec, *this); }

  double flops_per_case() const override {
    double f = 0;
    for (auto* w : weights) f += 2.0 * w->w.rows() * w->w.cols();  // multiply-adds, 2 each
    return f;
  }

 private:
  int parts_ = 1, O_ = 0;

#ifdef CCN_WITH_CUDA
  // The same GEMMs per part through cuBLAS (native/cuda/sfc.cu); same layouts. Bias:
  // add_row_vector forward, add_col_sums backward (1 x O*parts).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    const int N = (int)o.rows;
    for (size_t i = 0; i < in.size(); ++i)
      cuda::sfc_fprop(cx, in[i].p, weights[i]->dev.w, o.p, N, (int)in[i].cols, O_, parts_, i > 0);
    cuda::add_row_vector(cx, o.p, biases->dev.w, N, o.cols);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    const int N = (int)dout.rows;
    for (size_t i = 0; i < in.size(); ++i)
      cuda::sfc_bprop(cx, in[i].p, weights[i]->dev.w, dout.p, din[i].p, weights[i]->dev.grad, N, (int)in[i].cols, O_,
                      parts_);
    cuda::add_col_sums(cx, dout.p, biases->dev.grad, N, dout.cols);
  }
#endif
};
CCN_REGISTER_LAYER("sfc", SplitFcLayer);

}  // namespace ccn
