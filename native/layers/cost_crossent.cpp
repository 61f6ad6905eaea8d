// ccn/native/layers/cost_crossent.cpp: type=cost.crossent, cross-entropy against label
// distributions (cuda-convnet2's CrossEntCostLayer).
//
// inputs = labels (N x K: one-hot rows, or any target distribution), probs (N x K, e.g. a
// softmax) -- unlike cost.logreg, the labels are a K-vector per case, not a class index.
// Values, summed over cases:
//   "crossent": -sum_n sum_k t[n,k] * safelog(p[n,k])        (safelog(x) = log x, or -50 if x <= 0)
//   "error":     sum_n (1 - c_n), c_n = 1/(#classes tying for max p) when one of those tied
//                classes has t > 0, else 0.
// Gradient: dCost/dp[n,k] = -coeff * t[n,k] / p[n,k]. Nothing flows into the labels.
// (The original also requires probs to come from a softmax and fuses the two gradients;
// ccn accepts any input and lets the softmax layer apply its own Jacobian.)
// Layout: labels, probs, din: N x K, rows = cases.
#include <algorithm>

#include "layers/cost_common.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class CrossEntCost : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 2)
      spec.fail("inputs", cat("cost.crossent takes two inputs, labels then probabilities; found ", ctx.in.size(), "."));
    if (ctx.in[0].size() != ctx.in[1].size())
      spec.fail("inputs", cat("cost.crossent needs one label value per class: the labels '", ctx.in_names[0], "' have ",
                              ctx.in[0].size(), " values per case but the probabilities '", ctx.in_names[1], "' have ",
                              ctx.in[1].size(), " (cost.logreg takes class indices instead)."));
    reject_cost_children(spec);
    reload_params(spec);
    out = Shape{0, 1, 1};
  }
  void reload_params(LayerSpec& spec) override { coeff_ = read_cost_coeff(spec); }

  // Layout: row n of labels and probs is case n; one pass per case.
  void fprop(const std::vector<const Mat*>& in, Mat&, const PassCtx&) override {
    const Mat& t = *in[0];
    const Mat& p = *in[1];
    const int64_t N = p.rows(), K = p.cols();
    double ce = 0, wrong = 0;
#pragma omp parallel for reduction(+ : ce, wrong) schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* tr = t.row(n);
      const float* pr = p.row(n);
      float mx = pr[0];
      for (int64_t k = 1; k < K; ++k) mx = std::max(mx, pr[k]);
      int nmax = 0;
      bool hit = false;
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        nmax += pr[k] == mx;
        hit = hit || (pr[k] == mx && tr[k] > 0.f);
        s += (double)tr[k] * cost_safelog(pr[k]);
      }
      ce -= s;
      wrong += 1.0 - (hit ? 1.0 / nmax : 0.0);
    }
    values_ = {ce, wrong};
  }
  // Layout: din N x K, element-wise with labels and probs.
  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat&, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[1]) return;
    const int64_t sz = in[1]->size();
    const float* t = in[0]->data();
    const float* p = in[1]->data();
    float* d = din[1]->data();
    const float c = (float)coeff_;
#pragma omp parallel for simd schedule(static) if (sz > 32768)
    for (int64_t k = 0; k < sz; ++k)
      if (t[k] != 0.f) d[k] -= c * t[k] / std::max(p[k], kCostMinDiv);
  }
  bool is_cost() const override { return true; }
  // per class: the max and tie comparisons, a log and a multiply-add
  double flops_per_case() const override { return 5.0 * inputs[1]->out.size(); }
  std::vector<double> cost_values() const override { return values_; }
  std::vector<std::string> cost_names() const override { return {"crossent", "error"}; }
  double coeff() const override { return coeff_; }

 private:
  double coeff_ = 1;
  std::vector<double> values_;

#ifdef CCN_WITH_CUDA
  // native/cuda/cost_crossent.cu; the forward pass synchronises to return the sums.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat, CudaCtx& cx, const PassCtx&) override {
    double s[2];
    cuda::crossent_fprop(cx, in[0].p, in[1].p, (int)in[1].rows, (int)in[1].cols, s);
    values_ = {s[0], s[1]};
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[1]) cuda::crossent_bprop(cx, in[0].p, in[1].p, din[1].p, in[1].size(), (float)coeff_);
  }
#endif
};
CCN_REGISTER_LAYER("cost.crossent", CrossEntCost);

}  // namespace ccn
