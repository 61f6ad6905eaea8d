// ccn/native/layers/eltwise.cpp: type=eltsum and type=eltmax, element-wise combinations of
// several inputs of the same size.
//
// eltsum:  out = sum_i coeffs[i] * in_i;   din_i += coeffs[i] * dout.
//   `coeffs` (one per input, a single value is repeated; default 1) is read from the
//   layer-params file as cuda-convnet2 does, or from the layer-definition file as the 2012
//   cuda-convnet did; when both files have it, the params file wins (and is re-read on resume).
// eltmax (at least two inputs): out = max_i in_i;   din_i += dout where in_i == out.
//   Ties: every input equal to the maximum gets the whole gradient (cuda-convnet2's
//   computeEltwiseMaxGrad compares each input with the output).
// Both require every input to have the same number of values per case (as the originals,
// which compare sizes only); the output takes the first input's shape.
// Layout: every Mat is N x D, rows = cases, cols = C*H*W; the kernels are element-wise over
// the N*D values, so they work on the flat buffers.
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

namespace {

void check_same_sizes(LayerSpec& spec, const SetupCtx& ctx, const char* type) {
  for (size_t i = 1; i < ctx.in.size(); ++i) {
    if (ctx.in[i].size() == ctx.in[0].size()) continue;
    std::string list;
    for (size_t j = 0; j < ctx.in.size(); ++j)
      list += cat(j ? ", " : "", "'", ctx.in_names[j], "' is ", ctx.in[j].str(), " (", ctx.in[j].size(), " values)");
    spec.fail("inputs", cat("all inputs of an ", type, " layer must have the same number of values per case, but ",
                            list, "."));
  }
}

constexpr int64_t kParallelMin = 32768;  // below this many values, threads cost more than they save

}  // namespace

class EltSumLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.empty()) spec.fail("inputs", "an eltsum layer needs at least one input.");
    check_same_sizes(spec, ctx, "eltsum");
    n_ = (int)ctx.in.size();
    spec.allow("coeffs", Src::Def);
    spec.allow("coeffs", Src::Params);
    read_coeffs(spec);
    out = ctx.in[0];
  }
  void reload_params(LayerSpec& spec) override { read_coeffs(spec); }

  // Layout: in_i, o: N x D (flat, element-wise).
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t sz = o.size();
    float* y = o.data();
    for (int i = 0; i < n_; ++i) {
      const float* x = in[i]->data();
      const float c = (float)coeffs_[i];
      const bool first = i == 0;
#pragma omp parallel for simd schedule(static) if (sz > kParallelMin)
      for (int64_t k = 0; k < sz; ++k) y[k] = (first ? 0.f : y[k]) + c * x[k];
    }
  }
  // Layout: dout, din_i: N x D (flat).
  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int64_t sz = dout.size();
    const float* g = dout.data();
    for (int i = 0; i < n_; ++i) {
      if (!din[i]) continue;
      float* d = din[i]->data();
      const float c = (float)coeffs_[i];
#pragma omp parallel for simd schedule(static) if (sz > kParallelMin)
      for (int64_t k = 0; k < sz; ++k) d[k] += c * g[k];
    }
  }
  double flops_per_case() const override { return (2.0 * n_ - 1) * out.size(); }  // n products, n - 1 sums

 private:
  void read_coeffs(LayerSpec& spec) {
    if (spec.has("coeffs", Src::Params))
      coeffs_ = spec.get_float_list("coeffs", n_, std::nullopt, Src::Params);
    else
      coeffs_ = spec.get_float_list("coeffs", n_, 1.0, Src::Def);
  }
  int n_ = 0;
  std::vector<double> coeffs_;

#ifdef CCN_WITH_CUDA
  // native/cuda/elementwise.cu: out = c_0 in_0, then out += c_i in_i; din_i += c_i dout.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    for (int i = 0; i < n_; ++i) {
      if (i == 0) cuda::scale_copy(cx, in[0].p, o.p, o.size(), (float)coeffs_[0]);
      else cuda::axpy(cx, in[i].p, o.p, o.size(), (float)coeffs_[i]);
    }
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    for (int i = 0; i < n_; ++i)
      if (din[i]) cuda::axpy(cx, dout.p, din[i].p, dout.size(), (float)coeffs_[i]);
  }
#endif
};
CCN_REGISTER_LAYER("eltsum", EltSumLayer);

class EltMaxLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() < 2)
      spec.fail("inputs", cat("an eltmax layer needs at least two inputs, found ", ctx.in.size(), "."));
    check_same_sizes(spec, ctx, "eltmax");
    out = ctx.in[0];
  }
  // Layout: in_i, o: N x D (flat, element-wise).
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t sz = o.size();
    const int n = (int)in.size();
    float* y = o.data();
#pragma omp parallel for schedule(static) if (sz > kParallelMin)
    for (int64_t k = 0; k < sz; ++k) {
      float m = in[0]->data()[k];
      for (int i = 1; i < n; ++i) m = std::max(m, in[i]->data()[k]);
      y[k] = m;
    }
  }
  // out is this layer's own output (before any neuron=); ties all receive the gradient.
  // Layout: in_i, out, dout, din_i: N x D (flat).
  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int64_t sz = dout.size();
    const float* g = dout.data();
    const float* y = o.data();
    for (size_t i = 0; i < in.size(); ++i) {
      if (!din[i]) continue;
      const float* x = in[i]->data();
      float* d = din[i]->data();
#pragma omp parallel for simd schedule(static) if (sz > kParallelMin)
      for (int64_t k = 0; k < sz; ++k) d[k] += x[k] == y[k] ? g[k] : 0.f;
    }
  }
  double flops_per_case() const override { return (double)(inputs.size() - 1) * out.size(); }

#ifdef CCN_WITH_CUDA
  // native/cuda/eltwise.cu; o is this layer's own output (pre-neuron), as the net passes it.
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    std::vector<const float*> ins;
    for (const auto& x : in) ins.push_back(x.p);
    cuda::eltmax_fprop(cx, ins, o.p, o.size());
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      if (din[i]) cuda::eltmax_bprop(cx, in[i].p, o.p, dout.p, din[i].p, dout.size());
  }
#endif
};
CCN_REGISTER_LAYER("eltmax", EltMaxLayer);

}  // namespace ccn
