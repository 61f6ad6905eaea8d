// ccn/native/layers/cost_sum2.cpp: type=cost.sum2, sum of squares of its one input.
//
// Value (summed over cases, like every cost): sum_n sum_j x[n, j]^2, reported as "sum2".
// Gradient: dCost/dx = coeff * 2 * x (cuda-convnet2's SumOfSquaresCostLayer adds -2*coeff*x
// to its negated-gradient buffer). No 1/2 factor, no division by the number of cases.
// Layout: x is N x D, rows = cases.
#include "layers/cost_common.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class Sum2Cost : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("cost.sum2 takes exactly one input, found ", ctx.in.size(), "."));
    reject_cost_children(spec);
    reload_params(spec);
    out = Shape{0, 1, 1};
  }
  void reload_params(LayerSpec& spec) override { coeff_ = read_cost_coeff(spec); }

  // Layout: x N x D flat; the sum is accumulated in double.
  void fprop(const std::vector<const Mat*>& in, Mat&, const PassCtx&) override {
    const int64_t sz = in[0]->size();
    const float* x = in[0]->data();
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (sz > 65536)
    for (int64_t k = 0; k < sz; ++k) s += (double)x[k] * x[k];
    values_ = {s};
  }
  // Layout: x, din N x D flat.
  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat&, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t sz = in[0]->size();
    const float* x = in[0]->data();
    float* d = din[0]->data();
    const float c = (float)(2.0 * coeff_);
#pragma omp parallel for simd schedule(static) if (sz > 32768)
    for (int64_t k = 0; k < sz; ++k) d[k] += c * x[k];
  }
  bool is_cost() const override { return true; }
  double flops_per_case() const override { return 2.0 * inputs[0]->out.size(); }  // a multiply-add per value
  std::vector<double> cost_values() const override { return values_; }
  std::vector<std::string> cost_names() const override { return {"sum2"}; }
  double coeff() const override { return coeff_; }

 private:
  double coeff_ = 1;
  std::vector<double> values_;

#ifdef CCN_WITH_CUDA
  // native/cuda/cost_sum2.cu; the forward pass synchronises to return the sum.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat, CudaCtx& cx, const PassCtx&) override {
    values_ = {cuda::sum2_fprop(cx, in[0].p, in[0].size())};
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::sum2_bprop(cx, in[0].p, din[0].p, in[0].size(), (float)coeff_);
  }
#endif
};
CCN_REGISTER_LAYER("cost.sum2", Sum2Cost);

}  // namespace ccn
