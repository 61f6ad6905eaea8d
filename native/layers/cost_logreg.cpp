// ccn/native/layers/cost_logreg.cpp: type=cost.logreg, multinomial logistic regression.
//
// inputs = labels (N x 1, class indices as floats), probs (N x K, e.g. a softmax).
// Values, summed over cases: -log p[label]; top-1 wrong; top-k wrong (topk, default 1).
// A case counts as correct with credit 1/t when its label ties t classes for the top
// probability (cuda-convnet2's "ties share credit"); for top-k, the label is right when
// fewer than k classes beat it, with the same sharing among ties crossing the k boundary.
// Gradient: dCost/dprobs[n, label] = -coeff / p[n, label].
// Fused with the softmax that makes probs when that softmax feeds only this layer (the net
// decides: Layer::fuses_with, net.h fused_producer_), as cuda-convnet's LogregCostLayer and
// SoftmaxLayer did (computeLogregSoftmaxGrad): the net then hands fprop the softmax's input x
// (logits, N x K) as a third input, and -log p[label] is log sum_j exp(x_j - m) - (x_label - m)
// (m = max_j x_j, in double: finite and exact where p underflows to 0, where -log of the
// clamped p would stop at 87.5); the backward pass writes dCost/dx = coeff * (p - onehot(label))
// in one step (fused_input_bprop), where -coeff/p times the softmax's Jacobian would give 0
// for a p that underflowed: a case the net gets confidently wrong would stop pulling.
#include <cmath>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class LogregCost : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 2)
      spec.fail("inputs", cat("cost.logreg takes two inputs, labels then probabilities; found ", ctx.in.size(), "."));
    if (ctx.in[0].size() != 1)
      spec.fail("inputs", cat("the first input, '", ctx.in_names[0], "', must be the labels (1 value per case); it has ",
                              ctx.in[0].size(), "."));
    classes_ = (int)ctx.in[1].size();
    reload_params(spec);
    out = Shape{0, 1, 1};
  }
  void reload_params(LayerSpec& spec) override {
    coeff_ = spec.get_float("coeff", 1.0, Src::Params);
    const Src topk_src = spec.has("topk", Src::Def) ? Src::Def : Src::Params;
    topk_ = spec.get_int("topk", 1, topk_src);
    spec.allow("topk", Src::Def);
    if (topk_ < 1 || topk_ > classes_)
      spec.fail("topk", cat("must be between 1 and the number of classes (", classes_, "), found ", topk_, "."), topk_src);
  }
  void fprop(const std::vector<const Mat*>& in, Mat&, const PassCtx&) override {
    const Mat& lab = *in[0];
    const Mat& p = *in[1];
    const Mat* logits = in.size() > 2 ? in[2] : nullptr;  // fused with its softmax (see the top)
    double nll = 0, wrong1 = 0, wrongk = 0;
    for (int64_t n = 0; n < p.rows(); ++n) {
      const float* pr = p.row(n);
      int y = label(lab.at(n, 0));
      float py = pr[y];
      int greater = 0, equal = 0;  // classes with p > py, and with p == py (label included)
      for (int j = 0; j < classes_; ++j) {
        greater += pr[j] > py;
        equal += pr[j] == py;
      }
      if (logits) {
        const float* x = logits->row(n);
        float m = x[0];
        for (int j = 1; j < classes_; ++j) m = std::max(m, x[j]);
        double s = 0;
        for (int j = 0; j < classes_; ++j) s += std::exp((double)x[j] - (double)m);
        nll += std::log(s) - ((double)x[y] - (double)m);
      } else {
        nll -= std::log(std::max(py, 1e-38f));
      }
      wrong1 += 1.0 - credit(greater, equal, 1);
      wrongk += 1.0 - credit(greater, equal, topk_);
    }
    values_ = {nll, wrong1};
    if (topk_ > 1) values_.push_back(wrongk);
  }
  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat&, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[1]) return;
    const Mat& lab = *in[0];
    const Mat& p = *in[1];
    for (int64_t n = 0; n < p.rows(); ++n) {
      int y = label(lab.at(n, 0));
      din[1]->at(n, y) += (float)(-coeff_ / std::max(p.at(n, y), 1e-38f));
    }
  }
  bool fuses_with(const Layer& sm) const override {
    return sm.type == "softmax" && !sm.has_neuron && sm.inputs.size() == 1;
  }
  bool fused_wants_logits() const override { return true; }
  // dx = (or +=) coeff * (p - onehot(label)): dCost/d(the softmax's input).
  void fused_input_bprop(const Mat& lab, const Mat& p, Mat& dx, bool assign) override {
    const int64_t N = p.rows(), K = p.cols();
    for (int64_t n = 0; n < N; ++n) label(lab.at(n, 0));  // reported here, not inside the parallel loop
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const int y = (int)lab.at(n, 0);
      const float* pr = p.row(n);
      float* d = dx.row(n);
      for (int64_t j = 0; j < K; ++j) {
        const float g = (float)(coeff_ * ((double)pr[j] - (j == y ? 1.0 : 0.0)));
        d[j] = assign ? 0.f + g : d[j] + g;
      }
    }
  }
#ifdef CCN_WITH_CUDA
  // native/cuda/cost_logreg.cu; the forward pass synchronises to return the sums.
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat, CudaCtx& cx, const PassCtx&) override {
    double s[3];
    const float* logits = in.size() > 2 ? in[2].p : nullptr;
    int64_t bad = cuda::logreg_fprop(cx, in[0].p, in[1].p, logits, (int)in[1].rows, classes_, topk_, s);
    if (bad >= 0)
      input_error("cost layer '", name, "': the label of case ", bad, " is not a class index in 0..", classes_ - 1,
                  ".");
    values_ = {s[0], s[1]};
    if (topk_ > 1) values_.push_back(s[2]);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[1]) cuda::logreg_bprop(cx, in[0].p, in[1].p, din[1].p, (int)in[1].rows, classes_, coeff_);
  }
  void fused_input_bprop_cuda(DevMat labels, DevMat probs, DevMat dx, CudaCtx& cx) override {
    cuda::logreg_softmax_bprop(cx, labels.p, probs.p, dx.p, (int)probs.rows, classes_, coeff_);
  }
#endif
  bool is_cost() const override { return true; }
  // the label's rank (2 comparisons per class) and its log
  double flops_per_case() const override { return 2.0 * classes_ + 1; }
  std::vector<double> cost_values() const override { return values_; }
  std::vector<std::string> cost_names() const override {
    std::vector<std::string> n = {"logprob", "error"};
    if (topk_ > 1) n.push_back(cat("top-", topk_, " error"));
    return n;
  }
  double coeff() const override { return coeff_; }

 private:
  int label(float v) const {
    int y = (int)v;
    if (v != (float)y || y < 0 || y >= classes_)
      input_error("cost layer '", name, "': label ", v, " is not a class index in 0..", classes_ - 1, ".");
    return y;
  }
  // Share of credit for a label that `greater` classes beat and `equal` classes tie with.
  static double credit(int greater, int equal, int k) {
    if (greater >= k) return 0.0;
    int slots = k - greater;
    return slots >= equal ? 1.0 : (double)slots / equal;
  }
  int classes_ = 0, topk_ = 1;
  double coeff_ = 1;
  std::vector<double> values_;
};
CCN_REGISTER_LAYER("cost.logreg", LogregCost);

}  // namespace ccn
