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
//
// Direct kernels (kernels/directconv.h, AVX-512, stride 1 only): chosen at setup by
// CCN_CONV_KERNEL = gemm | direct | auto (default auto), read once here, never per pass.
// auto takes direct when the CPU has AVX-512F, every input has stride 1 and filters per group
// <= kDirectMaxFg (384, from measurements, see there); direct takes it wherever it can run
// (AVX-512F, stride 1; otherwise GEMM); gemm never uses it.
// Same parallel structure (one case per task, slots of cases for dW), per case and group:
//   forward:  pin  = the case's virtual channels zero-padded to Q x Q, Q = modulesX - 1 + fs
//             out_n[g-block] = bias + direct_fwd(pin[g-block], wpack_g)  (first input, shared
//             biases; otherwise += after a bias fill)
//   dW:       dT   = dout_n transposed to P x (G * Fgp) (filters last, each group padded to a
//             multiple of 16 with zeros); dw_[slot] += direct_dw(pin[g-block], dT[g-block]);
//             shared-bias sums per slot from dout_n (while in cache), slots then lanes in order
//   dx:       dpad = dout_n zero-padded to S+fs-1 square planes (offset fs-1-pad),
//             din_n[vchan[g-block]] += direct_fwd(dpad[g-block], tpack_g): the input gradient
//             is the "full" convolution of dout with the flipped, transposed filters.
// wpack_g (forward) and tpack_g (dx) are the lane-packed weights of directconv.h, rebuilt
// from W once per pass before the parallel loop:
//   wpack_g[(b*Kg + k)*16 + j]            = W[k, g*Fg + b*16 + j]                     (0 past Fg)
//   tpack_g[(b*Fg*fs^2 + f*fs^2 + gy*fs + gx)*16 + j]
//                                         = W[(b*16+j)*fs^2 + (fs-1-gy)*fs + fs-1-gx, g*Fg + f]  (0 past Cf)
#include "core/omp.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/blas.h"
#include "kernels/directconv.h"
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
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& ig : cs_.in) shapes.push_back({ig.kg(), cs_.filters});
    const int64_t P = cs_.modules();
    setup_weight_params(spec, ctx, *this, shapes, shared_biases_ ? cs_.filters : cs_.filters * P, 1);
    check_weight_source_types(spec, ctx, *this);
    read_wc_norm(spec);
    out = Shape{cs_.filters, cs_.modules_x, cs_.modules_x};
    choose_kernel(spec);
  }
  // cuda-convnet2's weight-contrast normalisation (Param::wc_norm_min/max), one value per
  // input, for the matrices this layer owns (a shared one keeps its owner's, as for wball).
  void read_wc_norm(LayerSpec& spec) {
    const int n = (int)weights.size();
    auto wmax = spec.get_float_list("wcNormMax", n, 0.0, Src::Params);
    auto wmin = spec.get_float_list("wcNormMin", n, 0.0, Src::Params);
    for (int i = 0; i < n; ++i) {
      if (wmax[i] < 0 || wmin[i] < 0)
        spec.fail(wmax[i] < 0 ? "wcNormMax" : "wcNormMin", "must be at least 0 (0 turns the normalisation off).",
                  Src::Params);
      if (wmax[i] > 0 && wmin[i] > wmax[i])
        spec.fail("wcNormMin", cat("must not exceed wcNormMax (", wmax[i], "), found ", wmin[i], "."), Src::Params);
      Param* p = weights[i];
      if (p->layer != name || std::find(weights.begin(), weights.begin() + i, p) != weights.begin() + i) continue;
      p->wc_norm_min = wmin[i];
      p->wc_norm_max = wmax[i];
    }
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx& pc) override {
    if (direct_) {
      count_conv_kernel(kDirectFprop);
      fprop_direct(in, o);
    } else {
      count_conv_kernel(kGemmFprop);
      fprop_gemm(in, o, pc);
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx& pc) override {
    // The direct path sums shared-bias gradients case by case while dout_n is in cache.
    if (!(direct_ && shared_biases_)) bias_grad(dout);
    count_conv_kernel(direct_ ? kDirectBprop : kGemmBprop);
    if (direct_) bprop_direct(in, dout, din, pc);
    else bprop_gemm(in, o, dout, din, pc);
  }
  // Input gradients assigned when the net asks (PassCtx::din_assign): the GEMM path's fold
  // starts each case's sums from +0 instead of the buffer; the direct dx writes 0 + sums
  // when every image channel is read by exactly one virtual channel, else zeroes the case's
  // row first. Both bitwise what zeroing the buffer first gave.
  bool bprop_assigns_din() const override { return true; }

 private:
  void fprop_gemm(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) {
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

  void bias_grad(const Mat& dout) {
    const int N = (int)dout.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
    // Bias gradients, summed over cases (and modules when shared) in double. Shared: kLanes
    // partial sums, lane j taking modules m = j mod kLanes (the lanes' adds are independent, so
    // they vectorise; one serial chain of N*P double adds took ~5 ms for 18pct conv1),
    // added in lane order at the end: deterministic, whatever the thread count.
    float* db = biases->grad.data();
    if (shared_biases_ && direct_conv_available()) {  // the same sums, AVX-512 (bitwise equal)
      const int64_t ld = dout.cols();
#pragma omp parallel for schedule(static)
      for (int f = 0; f < F; ++f) db[f] += (float)shared_bias_grad(dout.data() + (int64_t)f * P, ld, N, P);
    } else if (shared_biases_) {
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
  }

  void bprop_gemm(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
                  const PassCtx& pc) {
    const int N = (int)dout.rows(), F = cs_.filters;
    const int64_t P = cs_.modules();
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
      for (int sl = 0; sl < S; ++sl) dw_[sl].resize(Kg, F);  // allocations stay outside parallel regions
      Mat* dx = din[i];
      const bool assign = pc.assign(i);
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
            fold_image_major(ig.g, col.data(), dx->row(n), q, assign);
          }
        }
      }
      add_slots(weights[i]->grad, S);
    }
  }

  // dW += the slots' partial sums, in slot order (dW and every slot are Kg x F).
  void add_slots(Mat& grad, int S) {
    float* dW = grad.data();
    const int64_t KF = grad.size();
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < KF; ++j) {
      float s = dW[j];
      for (int sl = 0; sl < S; ++sl) s += dw_[sl].data()[j];
      dW[j] = s;
    }
  }

  // ---- direct kernels (see the top of the file) ----
  void choose_kernel(LayerSpec& spec) {
    std::string mode = "auto";
    if (const char* e = std::getenv("CCN_CONV_KERNEL")) {
      if (*e) mode = e;
    }
    if (mode != "auto" && mode != "gemm" && mode != "direct")
      spec.fail_layer(cat("CCN_CONV_KERNEL must be gemm, direct or auto, found '", mode, "'."));
    bool can = direct_conv_available();
    bool want = true;
    for (const auto& ig : cs_.in) {
      can = can && ig.g.stride == 1;
      want = want && cs_.filters / ig.groups <= kDirectMaxFg;
    }
    direct_ = can && (mode == "direct" || (mode == "auto" && want));
    fmap_.resize(cs_.filters);
    for (int f = 0; f < cs_.filters; ++f) fmap_[f] = f;
  }

  static int64_t padq(const ConvInputGeom& ig, int M) { return (int64_t)M - 1 + ig.g.fsize; }
  static int64_t dq(const ConvInputGeom& ig) { return (int64_t)ig.g.size + ig.g.fsize - 1; }

  // dst (Q x Q) = the S x S plane src shifted by off: dst[Y][X] = src[Y-off][X-off], 0 outside
  // src (off may be negative: then src's first rows and columns are left out).
  static void pad_plane(const float* src, int64_t S, int64_t off, int64_t Q, float* dst) {
    const int64_t x0 = std::clamp<int64_t>(off, 0, Q), x1 = std::clamp<int64_t>(off + S, x0, Q);
    for (int64_t Y = 0; Y < Q; ++Y) {
      float* row = dst + Y * Q;
      const int64_t y = Y - off;
      if (y < 0 || y >= S) {
        std::memset(row, 0, sizeof(float) * Q);
        continue;
      }
      for (int64_t X = 0; X < x0; ++X) row[X] = 0;
      if (x1 > x0) std::memcpy(row + x0, src + y * S + (x0 - off), sizeof(float) * (x1 - x0));
      for (int64_t X = x1; X < Q; ++X) row[X] = 0;
    }
  }

  // The case's virtual channels, zero-padded: pin[v][Y][X] = img[vchan[v]][Y-pad][X-pad].
  static void pad_input(const ConvInputGeom& ig, int64_t Q, const float* img, float* pin) {
    const int64_t S = ig.g.size, SS = S * S;
    for (size_t v = 0; v < ig.g.vchan.size(); ++v)
      pad_plane(img + ig.g.vchan[v] * SS, S, ig.g.pad, Q, pin + (int64_t)v * Q * Q);
  }

  // Lane-packed weights of input i for the forward pass (wpack) and the input gradient (tpack).
  void pack_weights(size_t i, bool fwd, bool dx) {
    const ConvInputGeom& ig = cs_.in[i];
    const int F = cs_.filters, G = ig.groups, Fg = F / G, Cf = ig.filter_channels, fs = ig.g.fsize;
    const int64_t Kg = ig.kg(), f2 = (int64_t)fs * fs;
    const float* W = weights[i]->w.data();
    if (fwd) {
      const int nb = (Fg + 15) / 16;
      std::vector<float>& wp = wpack_[i];
      wp.assign((size_t)G * nb * Kg * 16, 0.f);
      for (int g = 0; g < G; ++g)
        for (int b = 0; b < nb; ++b)
          for (int64_t k = 0; k < Kg; ++k) {
            float* d = wp.data() + (((int64_t)g * nb + b) * Kg + k) * 16;
            const float* s = W + k * F + g * Fg + b * 16;
            for (int j = 0; j < 16 && b * 16 + j < Fg; ++j) d[j] = s[j];
          }
    }
    if (dx) {
      const int nb = (Cf + 15) / 16;
      const int64_t Kt = (int64_t)Fg * f2;
      std::vector<float>& tp = tpack_[i];
      tp.assign((size_t)G * nb * Kt * 16, 0.f);
      for (int g = 0; g < G; ++g)
        for (int b = 0; b < nb; ++b)
          for (int f = 0; f < Fg; ++f)
            for (int gy = 0; gy < fs; ++gy)
              for (int gx = 0; gx < fs; ++gx) {
                float* d = tp.data() + ((((int64_t)g * nb + b) * Kt) + f * f2 + gy * fs + gx) * 16;
                for (int j = 0; j < 16 && b * 16 + j < Cf; ++j)
                  d[j] = W[((int64_t)(b * 16 + j) * f2 + (fs - 1 - gy) * fs + (fs - 1 - gx)) * F + g * Fg + f];
              }
    }
  }

  // Per-thread scratch for the direct kernels, sized outside the parallel regions.
  void grow_direct_buffers(bool dx) {
    const size_t T = (size_t)omp_get_max_threads();
    const int M = cs_.modules_x, F = cs_.filters;
    const int64_t P = cs_.modules();
    int64_t pin = 0, dt = 0, dp = 0, ac = 0;
    for (const auto& ig : cs_.in) {
      const int G = ig.groups, Fgp = (F / G + 15) / 16 * 16;
      ac = std::max(ac, direct_fwd_scratch(M, F / G));
      if (dx) ac = std::max(ac, direct_fwd_scratch(ig.g.size, ig.filter_channels));
      pin = std::max<int64_t>(pin, (int64_t)ig.g.vchan.size() * padq(ig, M) * padq(ig, M));
      dt = std::max<int64_t>(dt, P * G * Fgp);
      if (dx) dp = std::max<int64_t>(dp, (int64_t)F * dq(ig) * dq(ig));
    }
    if (pin_.size() < T) pin_.resize(T);
    if (dt_.size() < T) dt_.resize(T);
    if (dpad_.size() < T) dpad_.resize(T);
    if (acc_.size() < T) acc_.resize(T);
    for (size_t t = 0; t < T; ++t) {
      acc_[t].resize(ac, 1);
      if ((int64_t)pin_[t].size() < pin) pin_[t].resize(pin);
      if ((int64_t)dt_[t].size() < dt) dt_[t].resize(dt);
      if ((int64_t)dpad_[t].size() < dp) dpad_[t].resize(dp);
    }
    wpack_.resize(cs_.in.size());
    tpack_.resize(cs_.in.size());
  }

  void fprop_direct(const std::vector<const Mat*>& in, Mat& o) {
    const int N = (int)o.rows(), F = cs_.filters, M = cs_.modules_x;
    const int64_t P = cs_.modules();
    const float* bias = biases->w.data();
    const bool sb = shared_biases_;
    grow_direct_buffers(false);
    for (size_t i = 0; i < in.size(); ++i) pack_weights(i, true, false);
#pragma omp parallel
    {
      float* pin = pin_[omp_get_thread_num()].data();
      float* acc = acc_[omp_get_thread_num()].data();
#pragma omp for schedule(dynamic, 1)
      for (int n = 0; n < N; ++n) {
        float* out_n = o.row(n);  // F x P
        // Shared biases: the first input's kernel writes bias + sum (no separate fill pass).
        if (!sb)
          for (int64_t j = 0; j < F * P; ++j) out_n[j] = bias[j];
        for (size_t i = 0; i < in.size(); ++i) {
          const ConvInputGeom& ig = cs_.in[i];
          const int G = ig.groups, Fg = F / G, Cf = ig.filter_channels, fs = ig.g.fsize;
          const int64_t Q = padq(ig, M), Kg = ig.kg(), nb = (Fg + 15) / 16;
          pad_input(ig, Q, in[i]->row(n), pin);
          const bool first = i == 0 && sb;
          for (int g = 0; g < G; ++g)
            direct_fwd(pin + (int64_t)g * Cf * Q * Q, Cf, (int)Q, fs, M, wpack_[i].data() + g * nb * Kg * 16, Fg,
                       fmap_.data() + g * Fg, out_n, P, first ? bias : nullptr, !first, acc);
        }
      }
    }
  }

  // Whether input i's virtual channels read every image channel exactly once.
  bool vchan_is_permutation(const ConvInputGeom& ig) const {
    std::vector<int> seen(ig.g.channels, 0);
    for (int c : ig.g.vchan)
      if (c < 0 || c >= ig.g.channels || seen[c]++) return false;
    return (int)ig.g.vchan.size() == ig.g.channels;
  }

  void bprop_direct(const std::vector<const Mat*>& in, const Mat& dout, const std::vector<Mat*>& din,
                    const PassCtx& pc) {
    const int N = (int)dout.rows(), F = cs_.filters, M = cs_.modules_x;
    const int64_t P = cs_.modules();
    bool any_dx = false;
    for (Mat* d : din) any_dx = any_dx || d;
    grow_direct_buffers(any_dx);
    const int T = omp_get_max_threads();
    for (size_t i = 0; i < in.size(); ++i) {
      const ConvInputGeom& ig = cs_.in[i];
      const int G = ig.groups, Fg = F / G, Cf = ig.filter_channels, fs = ig.g.fsize, S_img = ig.g.size;
      const int Fgp = (Fg + 15) / 16 * 16, ldT = G * Fgp;
      const int64_t Kg = ig.kg(), Q = padq(ig, M), D = dq(ig), SS = (int64_t)S_img * S_img;
      const int64_t nbc = (Cf + 15) / 16, Kt = (int64_t)Fg * fs * fs;
      const int off = fs - 1 - ig.g.pad;  // dpad[f][Y][X] = dout[f][Y - off][X - off]
      Mat* dx = din[i];
      if (dx) pack_weights(i, false, true);
      const bool assign = dx && pc.assign(i), write = assign && vchan_is_permutation(ig);
      const bool zero_first = assign && !write;
      const int S = std::min(N, std::max(kMinSlots, T));
      if ((int)dw_.size() < S) dw_.resize(S);
      for (int sl = 0; sl < S; ++sl) dw_[sl].resize(Kg, F);
      // Shared-bias gradient (with the first input): per slot and filter 8 double lanes
      // (lane = module mod 8), the slots' lanes added in slot order, then the lanes in order.
      const bool do_bias = i == 0 && shared_biases_;
      if (do_bias) bsum_.assign((size_t)S * F * 8, 0.0);
#pragma omp parallel num_threads(T)
      {
        const int t = omp_get_thread_num();
        float* pin = pin_[t].data();
        float* dT = dt_[t].data();
        float* dpad = dpad_[t].data();
        float* acc = acc_[t].data();
#pragma omp for schedule(dynamic, 1)
        for (int sl = 0; sl < S; ++sl) {
          dw_[sl].zero();
          for (int n = (int)((int64_t)N * sl / S); n < (int)((int64_t)N * (sl + 1) / S); ++n) {
            const float* dout_n = dout.row(n);  // F x P
            pad_input(ig, Q, in[i]->row(n), pin);
            if (do_bias)
              for (int f = 0; f < F; ++f) bias_lanes_add(dout_n + (int64_t)f * P, P, &bsum_[((size_t)sl * F + f) * 8]);
            for (int g = 0; g < G; ++g) direct_transpose(dout_n + (int64_t)g * Fg * P, P, Fg, P, dT + g * Fgp, ldT, Fgp);
            for (int g = 0; g < G; ++g)
              direct_dw(pin + (int64_t)g * Cf * Q * Q, Cf, (int)Q, fs, M, dT + g * Fgp, ldT, Fg,
                        dw_[sl].data() + g * Fg, F);
            if (!dx) continue;
            for (int f = 0; f < F; ++f) pad_plane(dout_n + (int64_t)f * P, M, off, D, dpad + (int64_t)f * D * D);
            if (zero_first) std::fill(dx->row(n), dx->row(n) + dx->cols(), 0.f);
            for (int g = 0; g < G; ++g)  // !accumulate: 0 + the sums (bias null)
              direct_fwd(dpad + (int64_t)g * Fg * D * D, Fg, (int)D, fs, S_img, tpack_[i].data() + g * nbc * Kt * 16,
                         Cf, ig.g.vchan.data() + g * Cf, dx->row(n), SS, nullptr, !write, acc);
          }
        }
      }
      add_slots(weights[i]->grad, S);
      if (do_bias) {
        float* db = biases->grad.data();
        for (int f = 0; f < F; ++f) {
          double lanes[8] = {}, t = 0;
          for (int sl = 0; sl < S; ++sl)
            for (int j = 0; j < 8; ++j) lanes[j] += bsum_[((size_t)sl * F + f) * 8 + j];
          for (int j = 0; j < 8; ++j) t += lanes[j];
          db[f] += (float)t;
        }
      }
    }
  }

 public:

  void reload_params(LayerSpec& spec) override {
    reload_weight_params(spec, *this);
    read_wc_norm(spec);
  }

  bool bprop_reads_output() const override { return false; }

  double flops_per_case() const override {
    double f = 0;
    for (const auto& ig : cs_.in) f += 2.0 * cs_.modules() * cs_.filters * ig.kg();  // multiply-adds, 2 each
    return f;
  }

 private:
  static constexpr int kMinSlots = 8;
  // auto: direct up to this many filters per group. Measured (1 thread, minibatch 128, forward +
  // backward, tools/conv_kernel_bench.py): 18pct's 32-64 filters 2.1-2.2x GEMM's speed,
  // AlexNet's 192-384 1.08-1.12x (conv5, 256: 0.96-1.23x, noise); 13x13 layers with 512
  // filters about equal, 1024 0.9x, 2048 0.85x (minibatch 8-16).
  static constexpr int kDirectMaxFg = 384;

  bool direct_ = false;       // chosen once at setup (choose_kernel)
  std::vector<int> fmap_;     // 0..F-1: output channel of lane j (forward)
  std::vector<std::vector<float>> wpack_, tpack_;     // per input: lane-packed weights
  std::vector<std::vector<float>> pin_, dt_, dpad_;  // per thread: padded input, dout^T, padded dout
  std::vector<Mat> acc_;  // per thread: direct_fwd's lanes-last accumulators (64-byte aligned)
  std::vector<double> bsum_;  // per slot, filter and lane: shared-bias gradient partial sums

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
