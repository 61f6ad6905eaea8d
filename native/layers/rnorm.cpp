// ccn/native/layers/rnorm.cpp: type=rnorm, response normalisation within each map over an
// N x N neighbourhood (keys, windows and the scale convention: layers/norm.h).
//
//   D_p = minDiv + a' * sum_{q in W(p)} x_q^2,   y_p = x_p * D_p^(-pow),   a' = scale / N^2
// Backward (exact):
//   dx_q = g_q * D_q^(-pow) - 2 a' pow * x_q * sum_{p : q in W(p)} g_p y_p / D_p
// where the last sum is a box sum over the transposed window (norm.h lo_t).
//
// Layout: in, out, denominators N x (C*S*S), rows = cases, NCHW per case (x fastest).
// Parallel over (case, channel) planes; each thread keeps S*S scratch planes.
#include <vector>

#include "layers/norm.h"

namespace ccn {

class ResponseNormLayer : public NormLayerBase {
 public:
  ResponseNormLayer() : NormLayerBase(Kind::Response) {}

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)S_ * S_;
    denoms_.resize(N, o.cols());
    const float a = (float)alpha_, k = (float)min_div_;
#pragma omp parallel
    {
      std::vector<float> sq(P), tmp(P), dpv(P);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C_; ++c) {
          const float* x = in[0]->row(n) + c * P;
          float* den = denoms_.row(n) + c * P;
          float* dp = dpv.data();
          float* y = o.row(n) + c * P;
          for (int64_t p = 0; p < P; ++p) sq[p] = x[p] * x[p];
          box_sum_2d(sq.data(), den, tmp.data(), S_, lo(), N_);
          for (int64_t p = 0; p < P; ++p) den[p] = k + a * den[p];
          inv_pow(den, dp, P, pow_);
          for (int64_t p = 0; p < P; ++p) y[p] = x[p] * dp[p];
        }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), P = (int64_t)S_ * S_;
    CCN_CHECK(denoms_.rows() == N && denoms_.cols() == dout.cols());
    const float f = (float)(-2.0 * alpha_ * pow_);
#pragma omp parallel
    {
      std::vector<float> t(P), s(P), tmp(P), dpv(P);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C_; ++c) {
          const float* x = in[0]->row(n) + c * P;
          const float* y = o.row(n) + c * P;
          const float* g = dout.row(n) + c * P;
          const float* den = denoms_.row(n) + c * P;
          float* dp = dpv.data();
          inv_pow(den, dp, P, pow_);  // recomputed: cheaper than keeping N x C x S x S more floats
          float* d = din[0]->row(n) + c * P;
          for (int64_t p = 0; p < P; ++p) t[p] = g[p] * y[p] / den[p];
          box_sum_2d(t.data(), s.data(), tmp.data(), S_, lo_t(), N_);
          for (int64_t p = 0; p < P; ++p) d[p] += g[p] * dp[p] + f * x[p] * s[p];
        }
    }
  }

  double flops_per_case() const override { return (double)C_ * S_ * S_ * (2.0 * N_ + 4); }

 private:
  Mat denoms_;  // D from the last fprop, for bprop

#ifdef CCN_WITH_CUDA
  // native/cuda/rnorm.cu; the denominators stay in this layer's device buffer (slot 0).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::rnorm_fprop(cx, cuda_geom((int)o.rows), in[0].p, o.p, cx.buffer(id, 0, (size_t)o.size()));
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0])
      cuda::rnorm_bprop(cx, cuda_geom((int)dout.rows), in[0].p, o.p, cx.buffer(id, 0, (size_t)dout.size()), dout.p,
                        din[0].p);
  }
#endif
};
CCN_REGISTER_LAYER("rnorm", ResponseNormLayer);

}  // namespace ccn
