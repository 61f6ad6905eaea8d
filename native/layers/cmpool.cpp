// ccn/native/layers/cmpool.cpp: type=cmpool, cross-map (across channels) max pooling
// (cuda-convnet2's CrossMapPoolLayer).
//
// Keys (layer-definition file): channels, size, stride, start (default 0, must be <= 0),
// outputs (number of output maps; default 0 = computed), pool (only max, as in the original).
//
// Output map o at pixel p is the maximum of input maps [start + o*stride, start + o*stride + size)
// clipped to [0, channels), at the same pixel. With outputs = 0 (an extension: the original
// requires it) outputs = ceil((channels - start - size) / stride) + 1, the pool layer's rule along
// channels. As in the original, the windows must cover every input map:
// start + (outputs - 1) * stride + size >= channels, and no window may lie entirely outside.
// Backward: every input equal to its output's maximum (all tied maxima) gets the full gradient.
//
// Layout: in N x (C*S*S), out N x (outputs*S*S), rows = cases, NCHW per case (x fastest).
// Kernels run parallel over (case, output map); the inner loops run along the S*S pixels of a
// plane (contiguous, vectorisable). The backward pass is parallel over cases only, because the
// windows of neighbouring output maps overlap on input maps.
#include <algorithm>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class CrossMapPoolLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("a cmpool layer takes exactly one input, found ", ctx.in.size(), "."));
    std::string pool = spec.get_str("pool");
    if (pool != "max") {
      std::string m = did_you_mean(pool, {"max"});
      spec.fail("pool", cat("cross-map pooling supports only pool=max (as in cuda-convnet2), found '", pool, "'.",
                            m.empty() ? std::string() : cat(" Did you mean '", m, "'?")));
    }
    C_ = spec.get_int("channels");
    Shape in = image_shape(spec, ctx.in[0], C_, ctx.in_names[0]);
    S_ = in.h;
    size_ = spec.get_int("size");
    if (size_ < 1 || size_ > C_)
      spec.fail("size", cat("must be between 1 and channels=", C_, ", found ", size_, "."));
    stride_ = spec.get_int("stride");
    if (stride_ < 1) spec.fail("stride", cat("must be at least 1, found ", stride_, "."));
    if (stride_ > size_)
      spec.fail("stride", cat("stride=", stride_, " is larger than size=", size_, ", so some input maps would be skipped."));
    start_ = spec.get_int("start", 0);
    if (start_ > 0) spec.fail("start", cat("must be 0 or negative, found ", start_, "."));
    if (start_ + size_ <= 0)
      spec.fail("start", cat("with start=", start_, " and size=", size_, " the first window [", start_, ", ", start_ + size_,
                             ") contains no input map."));
    int outs = spec.get_int("outputs", 0);
    if (outs < 0) spec.fail("outputs", cat("must be 0 (computed) or positive, found ", outs, "."));
    if (outs == 0) {
      int a = C_ - start_ - size_;  // >= 0 here
      outs = (a + stride_ - 1) / stride_ + 1;
    }
    O_ = outs;
    const int last = start_ + (O_ - 1) * stride_;
    if (last >= C_)
      spec.fail("outputs", cat("output map ", O_ - 1, " would pool input maps [", last, ", ", last + size_,
                               "), entirely past the ", C_, " input channels."));
    if (last + size_ < C_)
      spec.fail("outputs", cat("cross-map pooling with start=", start_, ", stride=", stride_, ", size=", size_,
                               ", outputs=", O_, " covers only ", last + size_, " of ", C_, " input channels."));
    out = Shape{O_, S_, S_};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)S_ * S_;
#pragma omp parallel for collapse(2) schedule(static) if (N * O_ * P > 16384)
    for (int64_t n = 0; n < N; ++n)
      for (int m = 0; m < O_; ++m) {
        const int c0 = std::max(0, start_ + m * stride_), c1 = std::min(C_, start_ + m * stride_ + size_);
        const float* x = in[0]->row(n);  // C planes of P pixels
        float* y = o.row(n) + m * P;
        std::copy(x + c0 * P, x + (c0 + 1) * P, y);
        for (int c = c0 + 1; c < c1; ++c) {
          const float* xc = x + c * P;
          for (int64_t p = 0; p < P; ++p) y[p] = std::max(y[p], xc[p]);
        }
      }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), P = (int64_t)S_ * S_;
#pragma omp parallel for schedule(static) if (N * O_ * P > 16384)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* d = din[0]->row(n);
      for (int m = 0; m < O_; ++m) {
        const int c0 = std::max(0, start_ + m * stride_), c1 = std::min(C_, start_ + m * stride_ + size_);
        const float* y = o.row(n) + m * P;
        const float* g = dout.row(n) + m * P;
        for (int c = c0; c < c1; ++c) {
          const float* xc = x + c * P;
          float* dc = d + c * P;
          for (int64_t p = 0; p < P; ++p) dc[p] += xc[p] == y[p] ? g[p] : 0.f;
        }
      }
    }
  }

  double flops_per_case() const override { return (double)O_ * size_ * S_ * S_; }

 private:
  int C_ = 0, S_ = 0, size_ = 1, stride_ = 1, start_ = 0, O_ = 0;

#ifdef CCN_WITH_CUDA
  // native/cuda/cmpool.cu; same layouts. bprop gets the layer's own (pre-neuron) output.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::cmpool_fprop(cx, cuda_geom((int)o.rows), in[0].p, o.p);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::cmpool_bprop(cx, cuda_geom((int)dout.rows), in[0].p, o.p, dout.p, din[0].p);
  }

 private:
  cuda::CmPoolGeom cuda_geom(int N) const {
    cuda::CmPoolGeom g;
    g.N = N, g.C = C_, g.SS = S_ * S_, g.O = O_, g.size = size_, g.start = start_, g.stride = stride_;
    return g;
  }
#endif
};
CCN_REGISTER_LAYER("cmpool", CrossMapPoolLayer);

}  // namespace ccn
