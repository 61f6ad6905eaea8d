// ccn/native/layers/cnorm.cpp: type=cnorm, contrast normalisation within each map over an
// N x N neighbourhood (keys, windows and the scale convention: layers/norm.h).
//
//   m_p = (1 / n_p) sum_{q in W(p)} x_q      (n_p = number of window pixels inside the image)
//   d_p = x_p - m_p
//   D_p = minDiv + a' * sum_{q in W(p)} d_q^2,   y_p = x_p * D_p^(-pow),   a' = scale / N^2
// The numerator is the raw x, as in cuda-convnet2's ContrastNormLayer (mean by AvgPooler over
// the clipped window, start -N/2, stride 1).
// Backward: the exact gradient, including the path through the local mean (cuda-convnet's
// convContrastNormUndo treats the mean as a constant; we differentiate what we compute):
//   T = g * y / D,   U_q = -2 a' pow * d_q * (W^T T)_q
//   dx_r = g_r D_r^(-pow) + U_r - (W^T (U / n))_r
// where W^T is the box sum over the transposed window (norm.h lo_t).
//
// Layout: in, out, denominators, mean differences N x (C*S*S), rows = cases, NCHW per case.
// Parallel over (case, channel) planes; each thread keeps S*S scratch planes.
#include <vector>

#include "core/simd.h"
#include "layers/norm.h"

namespace ccn {

class ContrastNormLayer : public NormLayerBase {
 public:
  ContrastNormLayer() : NormLayerBase(Kind::Contrast) {}

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)S_ * S_;
    denoms_.resize(N, o.cols());
    diffs_.resize(N, o.cols());
    dpow_.resize(N, o.cols());
    const float a = (float)alpha_, k = (float)min_div_;
    const std::vector<float> inv_n = inverse_counts();
    const simd::Kernels& K = simd::k();
#pragma omp parallel
    {
      std::vector<float> sum(P), sq(P), tmp(P);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C_; ++c) {
          const float* x = in[0]->row(n) + c * P;
          float* dif = diffs_.row(n) + c * P;
          float* den = denoms_.row(n) + c * P;
          float* dp = dpow_.row(n) + c * P;
          float* y = o.row(n) + c * P;
          box_sum_2d(x, sum.data(), tmp.data(), S_, lo(), N_);
          for (int64_t p = 0; p < P; ++p) {
            dif[p] = x[p] - sum[p] * inv_n[p];
            sq[p] = dif[p] * dif[p];
          }
          box_sum_2d(sq.data(), den, tmp.data(), S_, lo(), N_);
          K.norm_fwd(den, dp, y, x, P, k, a, pow_);
        }
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), P = (int64_t)S_ * S_;
    CCN_CHECK(denoms_.rows() == N && denoms_.cols() == dout.cols());
    const float f = (float)(-2.0 * alpha_ * pow_);
    const std::vector<float> inv_n = inverse_counts();
    const simd::Kernels& K = simd::k();
#pragma omp parallel
    {
      std::vector<float> t(P), s(P), u(P), tmp(P);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C_; ++c) {
          const float* y = o.row(n) + c * P;
          const float* g = dout.row(n) + c * P;
          const float* den = denoms_.row(n) + c * P;
          const float* dif = diffs_.row(n) + c * P;
          const float* dp = dpow_.row(n) + c * P;
          float* d = din[0]->row(n) + c * P;
          K.norm_t(g, y, den, t.data(), P);
          box_sum_2d(t.data(), s.data(), tmp.data(), S_, lo_t(), N_);
          for (int64_t p = 0; p < P; ++p) {
            u[p] = f * dif[p] * s[p];           // dL/dd
            d[p] += g[p] * dp[p] + u[p];
            t[p] = u[p] * inv_n[p];             // through the mean: dL/dm = -U
          }
          box_sum_2d(t.data(), s.data(), tmp.data(), S_, lo_t(), N_);
          for (int64_t p = 0; p < P; ++p) d[p] -= s[p];
        }
    }
  }

  double flops_per_case() const override { return (double)C_ * S_ * S_ * (4.0 * N_ + 6); }

 private:
  // 1 / (number of window pixels inside the image), per pixel of a plane.
  std::vector<float> inverse_counts() const {
    std::vector<float> r((size_t)S_ * S_);
    for (int y = 0; y < S_; ++y)
      for (int x = 0; x < S_; ++x)
        r[(size_t)y * S_ + x] = 1.f / (float)(clipped_count(y, lo(), N_, S_) * clipped_count(x, lo(), N_, S_));
    return r;
  }

  Mat denoms_, diffs_, dpow_;  // D, x - mean and D^(-pow) from the last fprop, for bprop

#ifdef CCN_WITH_CUDA
  // native/cuda/cnorm.cu; its state (D, then x - mean: 2 * N*C*S*S floats) stays in this
  // layer's device buffer (slot 0).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::cnorm_fprop(cx, cuda_geom((int)o.rows), in[0].p, o.p, cx.buffer(id, 0, 2 * (size_t)o.size()));
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0])
      cuda::cnorm_bprop(cx, cuda_geom((int)dout.rows), in[0].p, o.p, cx.buffer(id, 0, 2 * (size_t)dout.size()),
                        dout.p, din[0].p);
  }
#endif
};
CCN_REGISTER_LAYER("cnorm", ContrastNormLayer);

}  // namespace ccn
