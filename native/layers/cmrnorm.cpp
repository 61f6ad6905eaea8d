// ccn/native/layers/cmrnorm.cpp: type=cmrnorm, response normalisation across N neighbouring
// maps at each pixel (AlexNet's local response normalisation; keys, windows and the scale
// convention: layers/norm.h).
//
//   D_{c,p} = minDiv + a' * sum_{c' in W(c)} x_{c',p}^2,   y = x * D^(-pow),   a' = scale / N
//   W(c) = [c - N/2, c - N/2 + N) clipped to [0, C), or with blocked=1 the aligned block
//          [(c / N) * N, (c / N) * N + N) clipped (cudaconv3 kFCNorm).
// Backward (exact):
//   dx_{c,p} = g D^(-pow) - 2 a' pow * x_{c,p} * sum_{c' : c in W(c')} g_{c',p} y_{c',p} / D_{c',p}
// The transposed window is [c - (N - 1 - N/2), c + N/2] clipped (the same block when blocked).
//
// Layout: in, out, denominators N x (C*S*S), rows = cases, NCHW per case (x fastest); the inner
// loops run along the S*S contiguous pixels of a map. Forward parallel over (case, channel),
// backward over cases. Only D is kept between the passes (D^(-pow) is recomputed: perf-notes
// entry 3, AlexNet's memory); the loops are core/simd.h's.
#include <vector>

#include "core/simd.h"
#include "layers/norm.h"

namespace ccn {

class CrossMapResponseNormLayer : public NormLayerBase {
 public:
  CrossMapResponseNormLayer() : NormLayerBase(Kind::CrossMap) {}

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)S_ * S_;
    denoms_.resize(N, o.cols());
    const float a = (float)alpha_, k = (float)min_div_;
    const simd::Kernels& K = simd::k();
#pragma omp parallel if (N * C_ * P > 16384)
    {
      std::vector<float> dp(P);  // D^(-pow) of one map
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C_; ++c) {
          const float* xn = in[0]->row(n);
          float* den = denoms_.row(n) + c * P;
          int c0, c1;
          window(c, c0, c1);
          std::fill(den, den + P, 0.f);
          for (int cc = c0; cc < c1; ++cc) K.add_mul(den, xn + cc * P, xn + cc * P, P);
          K.norm_fwd(den, dp.data(), o.row(n) + c * P, xn + c * P, P, k, a, pow_);
        }
    }
  }

  // Parallel over cases; per case, t = g * y / D for all C maps (C x S*S scratch per thread),
  // then each map's gradient from its transposed channel window of t.
  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx& ctx) override {
    if (!din[0]) return;
    const bool assign = ctx.assign(0);
    const int64_t N = dout.rows(), P = (int64_t)S_ * S_, CP = (int64_t)C_ * P;
    CCN_CHECK(denoms_.rows() == N && denoms_.cols() == dout.cols());
    const float f = (float)(-2.0 * alpha_ * pow_);
    const simd::Kernels& K = simd::k();
#pragma omp parallel if (N * CP > 16384)
    {
      std::vector<float> t(CP), dp(P);
#pragma omp for schedule(dynamic, 1)
      for (int64_t n = 0; n < N; ++n) {
        const float* g = dout.row(n);
        K.norm_t(g, o.row(n), denoms_.row(n), t.data(), CP);
        for (int c = 0; c < C_; ++c) {
          const float* x = in[0]->row(n) + c * P;
          float* d = din[0]->row(n) + c * P;
          if (assign) std::fill(d, d + P, 0.f);  // first writer: zero while in cache
          int c0, c1;
          window_t(c, c0, c1);
          K.inv_pow(denoms_.row(n) + c * P, dp.data(), P, pow_);  // recomputed: AlexNet's cmrnorm maps are large
          K.add_mul(d, g + c * P, dp.data(), P);
          for (int cc = c0; cc < c1; ++cc) K.add_fmul(d, f, x, t.data() + cc * P, P);
        }
      }
    }
  }
  bool bprop_assigns_din() const override { return true; }

  // N multiply-adds (the window's sum of squares), then scale, minDiv, power and product
  double flops_per_case() const override { return (double)C_ * S_ * S_ * (2.0 * N_ + 4); }

 private:
  void window(int c, int& c0, int& c1) const {
    if (blocked_) {
      c0 = (c / N_) * N_;
      c1 = std::min(C_, c0 + N_);
    } else {
      c0 = std::max(0, c + lo());
      c1 = std::min(C_, c + lo() + N_);
    }
  }
  void window_t(int c, int& c0, int& c1) const {
    if (blocked_) return window(c, c0, c1);
    c0 = std::max(0, c + lo_t());
    c1 = std::min(C_, c + lo_t() + N_);
  }

  Mat denoms_;  // D from the last fprop, for bprop

#ifdef CCN_WITH_CUDA
  // native/cuda/cmrnorm.cu; the denominators stay in this layer's device buffer (slot 0).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::cmrnorm_fprop(cx, cuda_geom((int)o.rows), in[0].p, o.p, cx.buffer(id, 0, (size_t)o.size()));
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0])
      cuda::cmrnorm_bprop(cx, cuda_geom((int)dout.rows), in[0].p, o.p, cx.buffer(id, 0, (size_t)dout.size()), dout.p,
                          din[0].p);
  }
#endif
};
CCN_REGISTER_LAYER("cmrnorm", CrossMapResponseNormLayer);

}  // namespace ccn
