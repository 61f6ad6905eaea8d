// ccn/native/layers/softmax.cpp: type=softmax over each case's values.
//   y[n, j] = exp(x[n, j] - max_j x[n, :]) / sum_j exp(...)
//   dx[n, j] += y[n, j] * (dy[n, j] - sum_k dy[n, k] * y[n, k])
// Layout: N x K, rows = cases.
#include <cmath>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class SoftmaxLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("a softmax layer takes exactly one input, found ", ctx.in.size(), "."));
    out = Shape{(int)ctx.in[0].size(), 1, 1};
  }
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), K = o.cols();
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* y = o.row(n);
      float mx = x[0];
      for (int64_t j = 1; j < K; ++j) mx = std::max(mx, x[j]);
      double s = 0;
      for (int64_t j = 0; j < K; ++j) {
        y[j] = std::exp(x[j] - mx);
        s += y[j];
      }
      const float inv = (float)(1.0 / s);
      for (int64_t j = 0; j < K; ++j) y[j] *= inv;
    }
  }
  void bprop(const std::vector<const Mat*>&, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = o.rows(), K = o.cols();
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* y = o.row(n);
      const float* g = dout.row(n);
      float* d = din[0]->row(n);
      double dot = 0;
      for (int64_t j = 0; j < K; ++j) dot += (double)g[j] * y[j];
      for (int64_t j = 0; j < K; ++j) d[j] += y[j] * (g[j] - (float)dot);
    }
  }
  double flops_per_case() const override { return 5.0 * out.size(); }  // max, x - max, exp, sum, scale

#ifdef CCN_WITH_CUDA
  bool has_cuda() const override { return true; }  // native/cuda/softmax.cu
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::softmax_fprop(cx, in[0].p, o.p, (int)o.rows, (int)o.cols);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::softmax_bprop(cx, o.p, dout.p, din[0].p, (int)o.rows, (int)o.cols);
  }
#endif
};
CCN_REGISTER_LAYER("softmax", SoftmaxLayer);

}  // namespace ccn
