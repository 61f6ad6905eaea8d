// ccn/native/layers/conv.cpp: type=conv, convolution with weights shared over the image.
//
// Keys and shape rule: see conv_common.h (channels, filterSize, padding, stride, filters per
// group, groups, randSparse, filterChannels, modulesX, partialSum/sumWidth ignored) plus
//   sharedBiases (default 1): one bias per filter, or one per filter and module.
//
//   out[n, f, my, mx] = b + sum_i sum_{c, fy, fx} W_i[c*fs^2 + fy*fs + fx, f]
//                                               * in_i[n, vchan_i[g*Cf + c], my*st - pad + fy, mx*st - pad + fx]
// with g = f / (F / groups) and pixels outside the image 0.
// Weights W_i: (Cf * fs^2) x F, row c*fs^2 + fy*fs + fx (channel slowest), one column per
// filter, as in cuda-convnet. Biases: F x 1 (shared) or (F * modules) x 1 indexed f*modules + m.
// Layout: in_i N x (C_i*S_i*S_i), out N x (F*P), P = modulesX^2, NCHW per case.
//
// Kernels: parallel over cases, one case per task; each thread unfolds its case image-major
// (col[k][m], K x P, kernels/unfold.h; via a padded copy of each plane) into its own buffer and makes single-threaded GEMMs
// (sgemm inside a parallel region), per group:
//   forward:  out_n[g-block] (Fg x P)  = bias + W_g^T (Fg x Kg) * col[g-block] (Kg x P)
//   backward: dW_g (Kg x Fg)          += col[g] (Kg x P) * dout_n[g]^T (P x Fg)
//             dcol[g] (Kg x P)         = W_g (Kg x Fg) * dout_n[g] (Fg x P), folded (added) into din_n
// out_n and dout_n are case n's rows of out/dout, already F x P matrices (NCHW per case).
// Backward is one pass over the cases (unfold, dW GEMM, dcol GEMM, fold per case).
// Weight gradients are summed per slot of cases (at least kMinSlots slots, or one per thread
// when there are more threads), each slot in its own buffer, then the slots in order: the
// result does not depend on which thread did what (nor, up to kMinSlots threads, on how many
// there are), and all loops hand out their work dynamically, so a thread slowed down by
// another process on its core does less of it. (One GEMM over a whole
// 64 MB chunk of cases ran at a quarter of this speed: its operands streamed from memory.)
#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/blas.h"
#include "layers/conv_common.h"
#ifdef CCN_WITH_CUDA
#include "cuda/context.h"
#include "cuda/kernels.h"
#endif

namespace ccn {

class ConvLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    cs_ = parse_conv_setup(spec, ctx, "conv");
    shared_biases_ = spec.get_bool("sharedBiases", true);
    // cuda-convnet2's weight-contrast normalisation (layer-params keys); 0 means off.
    auto wmax = spec.get_float_list("wcNormMax", (int)ctx.in.size(), 0.0, Src::Params);
    auto wmin = spec.get_float_list("wcNormMin", (int)ctx.in.size(), 0.0, Src::Params);
    for (size_t i = 0; i < wmax.size(); ++i)
      if (wmax[i] != 0 || wmin[i] != 0)
        spec.fail("wcNormMax", "weight-contrast normalisation (wcNormMin/wcNormMax) is not implemented; set both to 0.",
                  Src::Params);
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& ig : cs_.in) shapes.push_back({ig.kg(), cs_.filters});
    const int64_t P = cs_.modules();
    setup_weight_params(spec, ctx, *this, shapes, shared_biases_ ? cs_.filters : cs_.filters * P, 1);
    check_weight_source_types(spec, ctx, *this);
    out = Shape{cs_.filters, cs_.modules_x, cs_.modules_x};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int N = (int)o.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    const float* bias = biases->w.data();
    const bool sb = shared_biases_;
    grow_buffers();
#pragma omp parallel
    {
      Mat& col = col_[omp_get_thread_num()];  // sized by grow_buffers: no allocation in here
      float* q = pad_[omp_get_thread_num()].data();
#pragma omp for schedule(dynamic, 1)
      for (int n = 0; n < N; ++n) {
        float* out_n = o.row(n);  // F x P
        for (int f = 0; f < F; ++f)
          for (int64_t m = 0; m < P; ++m) out_n[f * P + m] = sb ? bias[f] : bias[f * P + m];
        for (size_t i = 0; i < in.size(); ++i) {
          const ConvInputGeom& ig = cs_.in[i];
          const int64_t Kg = ig.kg();
          const int G = ig.groups, Fg = F / G;
          col.resize(ig.g.rows(), P);  // col[k][m]
          unfold_image_major(ig.g, in[i]->row(n), col.data(), q);
          const float* W = weights[i]->w.data();
          for (int g = 0; g < G; ++g)
            sgemm(true, false, Fg, (int)P, (int)Kg, 1.f, W + (int64_t)g * Fg, F, col.row(g * Kg), (int)P, 1.f,
                  out_n + (int64_t)g * Fg * P, (int)P);
        }
      }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int N = (int)dout.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    // Bias gradients, summed over cases (and modules when shared) in double. Shared: kLanes
    // partial sums, lane j taking modules m = j mod kLanes (the lanes' adds are independent, so
    // they vectorise; one serial chain of N*P double adds took ~5 ms for 18pct conv1),
    // added in lane order at the end: deterministic, whatever the thread count.
    float* db = biases->grad.data();
    if (shared_biases_) {
      constexpr int kLanes = 8;
#pragma omp parallel for schedule(static)
      for (int f = 0; f < F; ++f) {
        double acc[kLanes] = {};
        for (int n = 0; n < N; ++n) {
          const float* g = dout.row(n) + (int64_t)f * P;
          int64_t m = 0;
          for (; m + kLanes <= P; m += kLanes)
            for (int j = 0; j < kLanes; ++j) acc[j] += g[m + j];
          for (; m < P; ++m) acc[m % kLanes] += g[m];
        }
        double s = 0;
        for (int j = 0; j < kLanes; ++j) s += acc[j];
        db[f] += (float)s;
      }
    } else {
      const int64_t FP = (int64_t)F * P;
#pragma omp parallel for schedule(static)
      for (int64_t j = 0; j < FP; ++j) {
        double s = 0;
        for (int n = 0; n < N; ++n) s += dout.row(n)[j];
        db[j] += (float)s;
      }
    }
    grow_buffers();
    const int T = omp_get_max_threads();
    for (size_t i = 0; i < in.size(); ++i) {
      const ConvInputGeom& ig = cs_.in[i];
      const int64_t K = ig.g.rows(), Kg = ig.kg();
      const int G = ig.groups, Fg = F / G;
      const float* W = weights[i]->w.data();
      // One pass over the cases. Weight gradients: the cases are cut into S contiguous slots;
      // slot s sums its cases, in order, into dw_[s] (K x F); slots are handed out dynamically
      // and summed in slot order. Input gradient (when needed), case by case right after its
      // weight-gradient GEMM, reusing the column buffer and dout_n while in cache.
      const int S = std::min(N, std::max(kMinSlots, T));
      if ((int)dw_.size() < S) dw_.resize(S);
      for (int sl = 0; sl < S; ++sl) dw_[sl].resize(K, F);  // allocations stay outside parallel regions
      Mat* dx = din[i];
#pragma omp parallel num_threads(T)
      {
        Mat& col = col_[omp_get_thread_num()];
        col.resize(K, P);
        float* q = pad_[omp_get_thread_num()].data();
#pragma omp for schedule(dynamic, 1)
        for (int sl = 0; sl < S; ++sl) {
          dw_[sl].zero();
          for (int n = (int)((int64_t)N * sl / S); n < (int)((int64_t)N * (sl + 1) / S); ++n) {
            unfold_image_major(ig.g, in[i]->row(n), col.data(), q);
            const float* dout_n = dout.row(n);  // F x P
            for (int g = 0; g < G; ++g)
              sgemm(false, true, (int)Kg, Fg, (int)P, 1.f, col.row(g * Kg), (int)P, dout_n + (int64_t)g * Fg * P,
                    (int)P, 1.f, dw_[sl].data() + (int64_t)g * Fg, F);
            if (!dx) continue;
            for (int g = 0; g < G; ++g)  // dcol[g] = W_g dout_n[g], overwriting col
              sgemm(false, false, (int)Kg, (int)P, Fg, 1.f, W + (int64_t)g * Fg, F, dout_n + (int64_t)g * Fg * P,
                    (int)P, 0.f, col.row(g * Kg), (int)P);
            fold_image_major(ig.g, col.data(), dx->row(n), q);
          }
        }
      }
      float* dW = weights[i]->grad.data();
      const int64_t KF = K * F;
#pragma omp parallel for schedule(static)
      for (int64_t j = 0; j < KF; ++j) {
        float s = dW[j];
        for (int sl = 0; sl < S; ++sl) s += dw_[sl].data()[j];
        dW[j] = s;
      }
    }
  }

  void reload_params(LayerSpec& spec) override {
    reload_weight_params(spec, *this);
    spec.allow("wcNormMax", Src::Params);
    spec.allow("wcNormMin", Src::Params);
  }

  bool bprop_reads_output() const override { return false; }

  double flops_per_case() const override {
    double f = 0;
    for (const auto& ig : cs_.in) f += (double)cs_.modules() * cs_.filters * ig.kg();
    return f;
  }

 private:
  static constexpr int kMinSlots = 8;

  // One column buffer per OpenMP thread, with room for the largest input's K x P, allocated
  // here, outside the parallel regions (an exception must not escape one).
  void grow_buffers() {
    const size_t T = (size_t)omp_get_max_threads();
    if (col_.size() < T) col_.resize(T);
    int64_t K = 0;
    for (const auto& ig : cs_.in) K = std::max<int64_t>(K, ig.g.rows());
    for (auto& c : col_) c.resize(K, cs_.modules());
    int64_t Q2 = 0;
    for (const auto& ig : cs_.in) Q2 = std::max(Q2, padded_plane_size(ig.g));
    if (pad_.size() < T) pad_.resize(T);
    for (auto& p : pad_) p.resize(Q2);
  }

  ConvSetup cs_;
  bool shared_biases_ = true;
  std::vector<Mat> col_;  // per thread: one case unfolded image-major, K x P
  std::vector<Mat> dw_;   // per slot of cases: weight-gradient partial sums, K x F
  std::vector<std::vector<float>> pad_;  // per thread: one padded image plane (unfold/fold scratch)

#ifdef CCN_WITH_CUDA
  // native/cuda/conv.cu, one input at a time; same layouts. cs_.filters is already
  // filters * groups (all filters), the launchers' F.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      cuda::conv_fprop(cx, cuda_geom(cx, i, (int)o.rows, true), in[i].p, weights[i]->dev.w, o.p, i > 0);
    cuda::conv_add_bias(cx, o.p, biases->dev.w, (int)o.rows, cs_.filters, (int)cs_.modules(), shared_biases_);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      cuda::conv_bprop(cx, cuda_geom(cx, i, (int)dout.rows, false), in[i].p, weights[i]->dev.w, dout.p, din[i].p,
                       weights[i]->dev.grad);
    cuda::conv_bias_grad(cx, dout.p, biases->dev.grad, (int)dout.rows, cs_.filters, (int)cs_.modules(),
                         shared_biases_);
  }

 private:
  // Input i's geometry. Plain groups (vchan = 0..C-1) pass no table; a randSparse table
  // lives in the persistent buffer (this layer's id, slot i), uploaded by every forward
  // pass (tiny; a new device context may reuse the same addresses, so "already uploaded"
  // cannot be told safely) and read by the backward pass that follows it.
  cuda::ConvGeom cuda_geom(CudaCtx& cx, size_t i, int N, bool upload) const {
    const ConvInputGeom& ig = cs_.in[i];
    cuda::ConvGeom g;
    g.N = N, g.C = ig.g.channels, g.S = ig.g.size;
    g.F = cs_.filters, g.groups = ig.groups, g.Cf = ig.filter_channels;
    g.fs = ig.g.fsize, g.stride = ig.g.stride, g.padding = ig.g.pad, g.M = cs_.modules_x;
    const std::vector<int>& v = ig.g.vchan;
    bool plain = (int)v.size() == ig.g.channels;
    for (size_t k = 0; plain && k < v.size(); ++k) plain = v[k] == (int)k;
    if (!plain) {
      static_assert(sizeof(int) == sizeof(float), "the channel table shares a float buffer");
      int* d = reinterpret_cast<int*>(cx.buffer(id, (int)i, v.size()));
      if (upload) cuda::copy_to_device(cx, d, v.data(), v.size() * sizeof(int));
      g.vchan = d;
    }
    return g;
  }
#endif
};
CCN_REGISTER_LAYER("conv", ConvLayer);

}  // namespace ccn
