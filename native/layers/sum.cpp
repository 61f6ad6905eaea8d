// ccn/native/layers/sum.cpp: type=sum, sums of groups of `stride` adjacent channels.
//
// The 2012 cuda-convnet's layer.py parses `sum` (one input, key `stride`, default 1, the
// input size must be divisible by stride, outputs = inputs / stride) but its C++ never
// implemented it. ccn implements what the parser describes:
//   out[n, c, y, x] = sum_{k < stride} in[n, c*stride + k, y, x]
//   din[n, c*stride + k, y, x] += dout[n, c, y, x]
// For a flat input (C x 1 x 1) this sums consecutive groups of `stride` values. The input's
// channel count must be a multiple of stride; the output is (C/stride) x H x W.
// Layout: in N x (C*H*W), out N x ((C/stride)*H*W), rows = cases, channel slowest.
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class SumLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("a sum layer takes exactly one input, found ", ctx.in.size(), "."));
    stride_ = spec.get_int("stride", 1);
    if (stride_ < 1) spec.fail("stride", cat("must be a positive integer, found ", stride_, "."));
    const Shape& s = ctx.in[0];
    if (s.c % stride_ != 0)
      spec.fail("stride", cat("input '", ctx.in_names[0], "' has ", s.c, " channel", s.c == 1 ? "" : "s", " (", s.str(),
                              "), which is not a multiple of stride=", stride_,
                              "; a sum layer adds groups of `stride` adjacent channels."));
    out = Shape{s.c / stride_, s.h, s.w};
    hw_ = (int64_t)s.h * s.w;
  }
  // Layout: out[n, c*HW + p] = sum_k in[n, (c*stride + k)*HW + p].
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), C = out.c;
#pragma omp parallel for schedule(static) if (N * o.cols() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* y = o.row(n);
      for (int64_t c = 0; c < C; ++c) {
        float* yc = y + c * hw_;
        const float* xc = x + c * stride_ * hw_;
        for (int64_t p = 0; p < hw_; ++p) yc[p] = xc[p];
        for (int k = 1; k < stride_; ++k)
          for (int64_t p = 0; p < hw_; ++p) yc[p] += xc[k * hw_ + p];
      }
    }
  }
  // Layout: din[n, (c*stride + k)*HW + p] += dout[n, c*HW + p].
  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), C = out.c;
#pragma omp parallel for schedule(static) if (N * dout.cols() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      float* d = din[0]->row(n);
      for (int64_t c = 0; c < C; ++c)
        for (int k = 0; k < stride_; ++k)
          for (int64_t p = 0; p < hw_; ++p) d[(c * stride_ + k) * hw_ + p] += g[c * hw_ + p];
    }
  }
  double flops_per_case() const override { return (double)out.size() * stride_; }

 private:
  int stride_ = 1;
  int64_t hw_ = 1;

#ifdef CCN_WITH_CUDA
  // native/cuda/sum.cu; same layouts.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::chansum_fprop(cx, in[0].p, o.p, o.rows, out.c, hw_, stride_);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::chansum_bprop(cx, dout.p, din[0].p, dout.rows, out.c, hw_, stride_);
  }
#endif
};
CCN_REGISTER_LAYER("sum", SumLayer);

}  // namespace ccn
