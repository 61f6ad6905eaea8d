// ccn/native/layers/cost_bce.cpp: type=cost.bce (binomial cross-entropy) and type=cost.dce
// (detection cross-entropy), cuda-convnet2's BinomialCrossEntropyCostLayer and
// DetectionCrossEntropyCostLayer.
//
// inputs = labels t (N x K, each value a 0/1 target), outputs y (N x K, e.g. logistic units).
// posWeight (layer-params file, default 1) weighs the positive term. With
// safelog(x) = log x, or -50 for x <= 0, the values, summed over cases, are
//   "crossent":     -sum_{n,k} (posWeight * t * safelog(y) + (1 - t) * safelog(1 - y))
//   "error":         sum_{n,k} [(y > 0.5) != t] / K     (wrong decisions per case, as a fraction of K)
//   cost.bce only, "top-1 error": sum_n (1 - sum_k t[n,k] * [y[n,k] == max_k y[n,:]] / #ties),
//                    the error rate as if y were a softmax with one correct class
//   cost.dce only, for each class k (counts over the cases; cuda-convnet2 prints
//                    precision = true positives / declared positives and recall = true
//                    positives / positives from them):
//                    "declared positive[k]" sum_n [y > 0.5], "positive[k]" sum_n t,
//                    "true positive[k]" sum_n t * [(y > 0.5) == t]
// Gradient: dCost/dy = -coeff * (posWeight * t / y - (1 - t) / (1 - y)). Nothing flows into
// the labels. Fused, as in cuda-convnet2 (NeuronLayer::bpropSpecial), when y is a logistic
// neuron's output (a neuron layer, or neuron=logistic on any layer) that feeds only this
// cost: the net then asks fused_input_bprop for dCost/dx, x the logistic's input,
//   coeff * ((1 - t) * y - posWeight * t * (1 - y)),
// which stays right where y rounds to 0 or 1 in float32 (from |x| ~ 17 on), where 1 / (1 - y)
// clamped and times y * (1 - y) = 0 would stop a confidently wrong unit from learning.
// Layout: labels, y, din: N x K, rows = cases.
#include <algorithm>

#include "layers/cost_common.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class BceCost : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 2)
      spec.fail("inputs", cat(spec.type(), " takes two inputs, labels then outputs; found ", ctx.in.size(), "."));
    if (ctx.in[0].size() != ctx.in[1].size())
      spec.fail("inputs", cat(spec.type(), " needs one label per output: the labels '", ctx.in_names[0], "' have ",
                              ctx.in[0].size(), " values per case but the outputs '", ctx.in_names[1], "' have ",
                              ctx.in[1].size(), "."));
    reject_cost_children(spec);
    classes_ = (int)ctx.in[1].size();
    reload_params(spec);
    out = Shape{0, 1, 1};
  }
  void reload_params(LayerSpec& spec) override {
    coeff_ = read_cost_coeff(spec);
    pos_weight_ = spec.get_float("posWeight", 1.0, Src::Params);
  }

  // Layout: row n of labels and y is case n.
  void fprop(const std::vector<const Mat*>& in, Mat&, const PassCtx&) override {
    const Mat& t = *in[0];
    const Mat& y = *in[1];
    const int64_t N = y.rows(), K = y.cols();
    const double pw = pos_weight_;
    double ce = 0, wrong_bits = 0, wrong_top1 = 0;
#pragma omp parallel for reduction(+ : ce, wrong_bits, wrong_top1) schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* tr = t.row(n);
      const float* yr = y.row(n);
      float mx = yr[0];
      double s = 0;
      int64_t bits = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double tv = tr[k], yv = yr[k];
        s += pw * tv * cost_safelog(yv) + (1.0 - tv) * cost_safelog(1.0 - yv);
        bits += (yr[k] > 0.5f ? 1.f : 0.f) != tr[k];
        mx = std::max(mx, yr[k]);
      }
      ce -= s;
      wrong_bits += (double)bits;
      int ties = 0;
      double hit = 0;
      for (int64_t k = 0; k < K; ++k)
        if (yr[k] == mx) {
          ++ties;
          hit += tr[k];
        }
      wrong_top1 += 1.0 - hit / ties;
    }
    values_ = {ce, wrong_bits / (double)K};
    if (!detection()) {
      values_.push_back(wrong_top1);
      return;
    }
    // Per-class counts for precision and recall. Layout: column k of labels and y.
    std::vector<double> declared(K), positive(K), truepos(K);
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t k = 0; k < K; ++k) {
      double dcl = 0, pos = 0, tp = 0;
      for (int64_t n = 0; n < N; ++n) {
        const float tv = t.at(n, k);
        const float dec = y.at(n, k) > 0.5f ? 1.f : 0.f;
        dcl += dec;
        pos += tv;
        tp += tv * (dec == tv ? 1.0 : 0.0);
      }
      declared[k] = dcl;
      positive[k] = pos;
      truepos[k] = tp;
    }
    for (int64_t k = 0; k < K; ++k) {
      values_.push_back(declared[k]);
      values_.push_back(positive[k]);
      values_.push_back(truepos[k]);
    }
  }
  // Layout: din N x K, element-wise with labels and y.
  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat&, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[1]) return;
    const int64_t sz = in[1]->size();
    const float* t = in[0]->data();
    const float* y = in[1]->data();
    float* d = din[1]->data();
    const float c = (float)coeff_, pw = (float)pos_weight_;
#pragma omp parallel for simd schedule(static) if (sz > 32768)
    for (int64_t k = 0; k < sz; ++k)
      d[k] -= c * (pw * t[k] / std::max(y[k], kCostMinDiv) - (1.f - t[k]) / std::max(1.f - y[k], kCostMinDiv));
  }
  bool fuses_with(const Layer& p) const override {
    const NeuronSpec* f = p.has_neuron ? &p.neuron : p.neuron_fn();
    return f && f->type == "logistic" && (p.has_neuron || p.inputs.size() == 1);
  }
  // dx = (or +=) dCost/dx for y = logistic(x) (see the top). Layout: t, y, dx: N x K.
  void fused_input_bprop(const Mat& lab, const Mat& y_m, Mat& dx, bool assign) override {
    const int64_t sz = y_m.size();
    const float* t = lab.data();
    const float* y = y_m.data();
    float* d = dx.data();
    const float c = (float)coeff_, pw = (float)pos_weight_;
#pragma omp parallel for simd schedule(static) if (sz > 32768)
    for (int64_t k = 0; k < sz; ++k) {
      const float g = c * ((1.f - t[k]) * y[k] - pw * t[k] * (1.f - y[k]));
      d[k] = assign ? 0.f + g : d[k] + g;
    }
  }
  bool is_cost() const override { return true; }
  // per value: 2 logs, 2 differences (1 - t, 1 - y), 3 products, 2 sums, 1 comparison
  double flops_per_case() const override { return 10.0 * classes_; }
  std::vector<double> cost_values() const override { return values_; }
  std::vector<std::string> cost_names() const override {
    std::vector<std::string> names = {"crossent", "error"};
    if (!detection()) {
      names.push_back("top-1 error");
      return names;
    }
    for (int k = 0; k < classes_; ++k) {
      names.push_back(cat("declared positive[", k, "]"));
      names.push_back(cat("positive[", k, "]"));
      names.push_back(cat("true positive[", k, "]"));
    }
    return names;
  }
  double coeff() const override { return coeff_; }

 protected:
  virtual bool detection() const { return false; }

 private:
  int classes_ = 0;
  double coeff_ = 1, pos_weight_ = 1;
  std::vector<double> values_;

#ifdef CCN_WITH_CUDA
  // native/cuda/cost_bce.cu (both cost.bce and cost.dce); the forward pass synchronises to
  // return the sums. Values in the CPU layer's order.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat, CudaCtx& cx, const PassCtx&) override {
    const int N = (int)in[1].rows, K = (int)in[1].cols;
    double s[3];
    std::vector<double> per_class(detection() ? 3 * (size_t)K : 0);
    cuda::bce_fprop(cx, in[0].p, in[1].p, N, K, pos_weight_, s, detection() ? per_class.data() : nullptr);
    values_ = {s[0], s[1] / (double)K};
    if (!detection()) {
      values_.push_back(s[2]);
      return;
    }
    values_.insert(values_.end(), per_class.begin(), per_class.end());  // per class: declared, positive, true pos.
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[1]) cuda::bce_bprop(cx, in[0].p, in[1].p, din[1].p, in[1].size(), (float)coeff_, (float)pos_weight_);
  }
  void fused_input_bprop_cuda(DevMat labels, DevMat y, DevMat dx, CudaCtx& cx) override {
    cuda::bce_logistic_bprop(cx, labels.p, y.p, dx.p, y.size(), (float)coeff_, (float)pos_weight_);
  }
#endif
};
CCN_REGISTER_LAYER("cost.bce", BceCost);

class DceCost : public BceCost {
 protected:
  bool detection() const override { return true; }
};
CCN_REGISTER_LAYER("cost.dce", DceCost);

}  // namespace ccn
