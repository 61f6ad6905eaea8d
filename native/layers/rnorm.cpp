// ccn/native/layers/rnorm.cpp: type=rnorm, response normalisation within each map over an
// N x N neighbourhood (keys, windows and the scale convention: layers/norm.h).
//
//   D_p = minDiv + a' * sum_{q in W(p)} x_q^2,   y_p = x_p * D_p^(-pow),   a' = scale / N^2
// Backward (exact):
//   dx_q = g_q * D_q^(-pow) - 2 a' pow * x_q * sum_{p : q in W(p)} g_p y_p / D_p
// where the last sum is a box sum over the transposed window (norm.h lo_t).
//
// Layout: in, out, denominators N x (C*S*S), rows = cases, NCHW per case (x fastest).
// Parallel over cases. Per case, all C maps go at once through padded planes: each map is
// copied into a Q x Q plane (Q = S + N - 1, zeros around it), so both passes of the box sum
// are single flat loops over all C*Q*Q values (core/simd.h box_sum: one vector loop instead
// of C*S short rows). Terms that fall on the zero border add +0, which changes nothing: the
// sums start at +0 and add in the same order as box_sum_2d (norm.h), so the results are
// bitwise those of the plane-by-plane version. D^(-pow) is kept from fprop for bprop.
#include <vector>

#include "core/simd.h"
#include "layers/norm.h"

namespace ccn {

class ResponseNormLayer : public NormLayerBase {
 public:
  ResponseNormLayer() : NormLayerBase(Kind::Response) {}

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)S_ * S_, CP = C_ * P;
    denoms_.resize(N, o.cols());
    dpow_.resize(N, o.cols());
    const float a = (float)alpha_, k = (float)min_div_;
    const simd::Kernels& K = simd::k();
#pragma omp parallel if (N * CP > 16384)
    {
      BoxScratch bs(C_, S_, N_);
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const float* x = in[0]->row(n);
        float* den = denoms_.row(n);
        bs.load(x, -lo(), [&](const float* src, float* dst, int64_t m) { K.square(src, dst, m); });
        bs.sum(K, den);
        K.norm_fwd(den, dpow_.row(n), o.row(n), x, CP, k, a, pow_);
      }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx& ctx) override {
    if (!din[0]) return;
    const bool assign = ctx.assign(0);
    const int64_t N = dout.rows(), P = (int64_t)S_ * S_, CP = C_ * P;
    CCN_CHECK(denoms_.rows() == N && denoms_.cols() == dout.cols() && dpow_.rows() == N);
    const float f = (float)(-2.0 * alpha_ * pow_);
    const simd::Kernels& K = simd::k();
#pragma omp parallel if (N * CP > 16384)
    {
      BoxScratch bs(C_, S_, N_);
      std::vector<float> t(CP), s(CP);
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const float* g = dout.row(n);
        K.norm_t(g, o.row(n), denoms_.row(n), t.data(), CP);
        bs.load(t.data(), -lo_t(), [](const float* src, float* dst, int64_t m) { std::copy(src, src + m, dst); });
        bs.sum(K, s.data());
        K.norm_bwd(din[0]->row(n), g, dpow_.row(n), in[0]->row(n), s.data(), f, CP, assign);
      }
    }
  }
  bool bprop_assigns_din() const override { return true; }

  double flops_per_case() const override { return (double)C_ * S_ * S_ * (2.0 * N_ + 4); }

 private:
  // Per-thread padded planes for the box sums of one case: C planes of Q x Q, Q = S + N - 1.
  struct BoxScratch {
    int C, S, N, Q;
    int64_t QQ;
    std::vector<float> a, h, v;
    BoxScratch(int C_, int S_, int N_) : C(C_), S(S_), N(N_), Q(S_ + N_ - 1), QQ((int64_t)Q * Q) {
      a.assign(C * QQ, 0.f);  // borders stay 0; load() writes the S x S interiors only
      h.assign(C * QQ, 0.f);
      v.assign(C * QQ, 0.f);
    }
    // The interiors (offset pad rows and columns) from C maps of S x S, through op(src, dst, S).
    template <class Op>
    void load(const float* src, int pad, Op op) {
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < S; ++y) op(src + ((int64_t)c * S + y) * S, a.data() + c * QQ + (int64_t)(y + pad) * Q + pad, S);
    }
    // dst (C maps of S x S) = the N x N box sums: rows, then columns, as box_sum_2d.
    void sum(const simd::Kernels& K, float* dst) {
      const int64_t CQQ = C * QQ;
      K.box_sum(a.data(), h.data(), CQQ - (N - 1), N, 1);
      K.box_sum(h.data(), v.data(), CQQ - (int64_t)(N - 1) * Q - (N - 1), N, Q);
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < S; ++y) {
          const float* sv = v.data() + c * QQ + (int64_t)y * Q;
          std::copy(sv, sv + S, dst + ((int64_t)c * S + y) * S);
        }
    }
  };

  Mat denoms_;  // D from the last fprop, for bprop
  Mat dpow_;    // D^(-pow) from the last fprop

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
