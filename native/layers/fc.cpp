// ccn/native/layers/fc.cpp: type=fc, fully connected, any number of inputs.
//
//   out[n, o] = sum_i sum_k in_i[n, k] * W_i[k, o] + b[o]
// Weights W_i: (values per case of input i) x outputs, as in cuda-convnet. Biases: 1 x outputs.
// Layout: in_i N x K_i, out N x O (rows = cases). Three GEMMs per input through the BLAS.
#include "core/blas.h"
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class FcLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.empty()) spec.fail("inputs", "an fc layer needs at least one input.");
    int outputs = spec.get_int("outputs");
    if (outputs <= 0) spec.fail("outputs", cat("must be a positive integer, found ", outputs, "."));
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& s : ctx.in) shapes.push_back({s.size(), outputs});
    setup_weight_params(spec, ctx, *this, shapes, 1, outputs);
    out = Shape{outputs, 1, 1};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int N = (int)o.rows(), O = (int)o.cols();
    const float* b = biases->w.data();
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < O; ++j) o.at(n, j) = b[j];
    for (size_t i = 0; i < in.size(); ++i) {
      const int K = (int)in[i]->cols();
      sgemm(false, false, N, O, K, 1.f, in[i]->data(), K, weights[i]->w.data(), O, 1.f, o.data(), O);
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int N = (int)dout.rows(), O = (int)dout.cols();
    for (size_t i = 0; i < in.size(); ++i) {
      const int K = (int)in[i]->cols();
      if (din[i]) sgemm(false, true, N, K, O, 1.f, dout.data(), O, weights[i]->w.data(), O, 1.f, din[i]->data(), K);
      sgemm(true, false, K, O, N, 1.f, in[i]->data(), K, dout.data(), O, 1.f, weights[i]->grad.data(), O);
    }
    float* db = biases->grad.data();
    for (int n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      for (int j = 0; j < O; ++j) db[j] += g[j];
    }
  }

  void reload_params(LayerSpec& spec) override { reload_weight_params(spec, *this); }

#ifdef CCN_WITH_CUDA
  // The same three GEMMs through cuBLAS (native/cuda/fc.cu); same layouts.
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    const int N = (int)o.rows, O = (int)o.cols;
    for (size_t i = 0; i < in.size(); ++i)
      cuda::fc_fprop(cx, in[i].p, weights[i]->dev.w, o.p, N, (int)in[i].cols, O, i > 0);
    cuda::add_row_vector(cx, o.p, biases->dev.w, N, O);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    const int N = (int)dout.rows, O = (int)dout.cols;
    for (size_t i = 0; i < in.size(); ++i)
      cuda::fc_bprop(cx, in[i].p, weights[i]->dev.w, dout.p, din[i].p, weights[i]->dev.grad, N, (int)in[i].cols, O);
    cuda::add_col_sums(cx, dout.p, biases->dev.grad, N, O);
  }
#endif
  bool bprop_reads_output() const override { return false; }

  double flops_per_case() const override {
    double f = 0;
    for (auto* w : weights) f += 2.0 * w->w.rows() * w->w.cols();  // multiply-adds, 2 each
    return f;
  }
};
CCN_REGISTER_LAYER("fc", FcLayer);

}  // namespace ccn
