// ccn/native/layers/rscale.cpp: type=rscale, cuda-convnet2's random-scale layer
// (RandomScaleLayerParser in layer.py, RandomScaleLayer in cudaconvnet/src/layer.cu):
// random rescaling plus random crop while training, a fixed rescale while testing.
//
// Keys (layer-definition file): channels (>= 1), maxScale (1 .. 2), tgtSize
// (floor(S / maxScale) .. S).
// Shape: channels x S x S -> channels x tgtSize x tgtSize.
// Testing: bilinear resize of the whole input to tgtSize with scale = maxScale (see
//   layers/imgops.h for the sampling rule).
// Training, once per minibatch (every case gets the same transform, as in the original):
//   m = (int)(S / maxScale), n = S - m + 1 scales; scale s (0-based) is drawn with
//   probability (s+1)^2 / (n(n+1)(2n+1)/6); the rescaled size is R = tgtSize + s (exactly
//   the original's rule, which counts scales from tgtSize, so R can exceed S when
//   tgtSize > m); the resize factor is drawn uniformly in [max(1, S/(R+1)), S/R]; the crop
//   origin (y, x) is uniform in [0, R - tgtSize]^2. When R == S the input is only cropped;
//   otherwise it is resized to R x R with that factor and then cropped.
//   Random numbers: uniform01(net seed, layer id, 4*step + k), k = 0 (scale), 1 (factor),
//   2 (crop y), 3 (crop x), so a pass is reproducible from (seed, step).
// Gradient: the original has none (bpropActs asserts; its parser refuses an rscale layer above
// layers with weights). For a given pass the map is linear, so we give the exact gradient of
// the transform used by the last forward pass.
// Layout: rows = cases, each row C*S*S (input) / C*T*T (output), x fastest; parallel over
// (case, channel).
#include <algorithm>
#include <cmath>

#include "layers/imgops.h"

namespace ccn {

class RscaleLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "rscale");
    int channels = spec.get_int("channels");
    if (channels < 1) spec.fail("channels", cat("must be at least 1, found ", channels, "."));
    double max_scale = spec.get_float("maxScale");
    T_ = spec.get_int("tgtSize");
    if (!(max_scale >= 1.0 && max_scale <= 2.0))
      spec.fail("maxScale", cat("must be in the range 1 to 2, found ", max_scale, "."));
    Shape s = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
    S_ = s.h;
    max_scale_ = (float)max_scale;
    const int min_size = (int)std::floor((double)S_ / max_scale);
    if (T_ < min_size)
      spec.fail("tgtSize", cat("must be at least the smallest rescaled image size, floor(", S_, " / ", max_scale, ") = ", min_size,
                               ", found ", T_, "."));
    if (T_ > S_) spec.fail("tgtSize", cat("must not be larger than the ", S_, "x", S_, " input images, found ", T_, "."));
    if (T_ < 1) spec.fail("tgtSize", cat("must be at least 1, found ", T_, "."));
    // The scale distribution, as the original computes it (float division, int truncation).
    const int min_scaled = (int)((float)S_ / max_scale_);
    const int n = S_ - min_scaled + 1;
    const double crops = (double)((int64_t)n * (n + 1) * (2 * n + 1) / 6);
    cum_.assign(n, 0.0);
    cum_[0] = 1.0 / crops;
    for (int k = 1; k < n; ++k) cum_[k] = cum_[k - 1] + (double)(k + 1) * (k + 1) / crops;
    test_plan_ = imgops::ResizePlan(S_, T_, max_scale_);
    out = Shape{channels, T_, T_};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx& ctx) override {
    last_train_ = ctx.train;
    if (ctx.train) sample(ctx);
    const int64_t N = o.rows(), C = out.c, SS = (int64_t)S_ * S_, TT = (int64_t)T_ * T_;
    const int64_t RR = (int64_t)R_ * R_;
#pragma omp parallel
    {
      std::vector<float> tmp(last_train_ && R_ != S_ ? RR : 0);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < N * C; ++j) {
        const int64_t n = j / C, c = j % C;
        const float* x = in[0]->row(n) + c * SS;
        float* y = o.row(n) + c * TT;
        if (!last_train_) {
          imgops::resize_fwd(test_plan_, x, y);
        } else if (R_ == S_) {
          imgops::crop_fwd(x, S_, y, T_, sy_, sx_);
        } else {
          imgops::resize_fwd(plan_, x, tmp.data());
          imgops::crop_fwd(tmp.data(), R_, y, T_, sy_, sx_);
        }
      }
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), C = out.c, SS = (int64_t)S_ * S_, TT = (int64_t)T_ * T_;
    const int64_t RR = (int64_t)R_ * R_;
#pragma omp parallel
    {
      std::vector<float> tmp(last_train_ && R_ != S_ ? RR : 0);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < N * C; ++j) {
        const int64_t n = j / C, c = j % C;
        const float* g = dout.row(n) + c * TT;
        float* d = din[0]->row(n) + c * SS;
        if (!last_train_) {
          imgops::resize_bwd(test_plan_, g, d);
        } else if (R_ == S_) {
          imgops::crop_bwd(g, T_, d, S_, sy_, sx_);
        } else {
          std::fill(tmp.begin(), tmp.end(), 0.0f);
          imgops::crop_bwd(g, T_, tmp.data(), R_, sy_, sx_);
          imgops::resize_bwd(plan_, tmp.data(), d);
        }
      }
    }
  }

  double flops_per_case() const override { return 9.0 * out.size(); }  // 3 lerps a + u(b - a) per value (imgops.h)

 private:
  // Draw this minibatch's rescaled size, factor and crop origin.
  void sample(const PassCtx& ctx) {
    const uint64_t stream = (uint64_t)ctx.layer_id;
    const float r = uniform01(ctx.seed, stream, 4 * ctx.step + 0);
    R_ = T_;
    float factor = max_scale_;
    for (size_t k = 0; k < cum_.size(); ++k) {
      if (r <= cum_[k]) {
        R_ += (int)k;
        const float end = (float)S_ / (float)R_;
        const double start = std::max(1.0, (double)S_ / (1.0 + R_));
        factor = (float)(start + uniform01(ctx.seed, stream, 4 * ctx.step + 1) * (end - start));
        break;
      }
    }
    const int max_start = R_ - T_;
    auto pick = [&](uint64_t k) {
      int v = (int)(uniform01(ctx.seed, stream, 4 * ctx.step + k) * (float)(max_start + 1));
      return std::min(v, max_start);
    };
    sy_ = pick(2);
    sx_ = pick(3);
    if (R_ != S_) plan_ = imgops::ResizePlan(S_, R_, factor);
  }

  int S_ = 0, T_ = 0;
  float max_scale_ = 1;
  std::vector<double> cum_;
  imgops::ResizePlan test_plan_, plan_;
  bool last_train_ = false;
  int R_ = 0, sy_ = 0, sx_ = 0;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu: the CPU's draws (sample(), on the host, from seed/step/layer id)
  // and the same three cases: testing = resize with the test plan; R == S = crop; else resize
  // S -> R into a persistent buffer (slot 1 of this layer), then crop. Plan tables in slot 0.
  // bprop undoes the last forward pass's transform (zeroed R x R buffer, crop back, resize back).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx& ctx) override {
    last_train_ = ctx.train;
    if (ctx.train) sample(ctx);
    const int64_t planes = o.rows * out.c;
    if (!last_train_) {
      cuda::resize_fprop(cx, imgops::resize_tables(cx, id, 0, test_plan_, true), in[0].p, o.p, planes);
    } else if (R_ == S_) {
      cuda::crop_fprop(cx, in[0].p, o.p, planes, S_, T_, sy_, sx_);
    } else {
      float* tmp = cx.buffer(id, 1, (size_t)(planes * R_ * R_));
      cuda::resize_fprop(cx, imgops::resize_tables(cx, id, 0, plan_, true), in[0].p, tmp, planes);
      cuda::crop_fprop(cx, tmp, o.p, planes, R_, T_, sy_, sx_);
    }
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (!din[0]) return;
    const int64_t planes = dout.rows * out.c;
    if (!last_train_) {
      cuda::resize_bprop(cx, imgops::resize_tables(cx, id, 0, test_plan_, false), dout.p, din[0].p, planes);
    } else if (R_ == S_) {
      cuda::crop_bprop(cx, dout.p, din[0].p, planes, S_, T_, sy_, sx_);
    } else {
      float* tmp = cx.buffer(id, 1, (size_t)(planes * R_ * R_));
      cuda::fill(cx, tmp, planes * R_ * R_, 0.f);
      cuda::crop_bprop(cx, dout.p, tmp, planes, R_, T_, sy_, sx_);
      cuda::resize_bprop(cx, imgops::resize_tables(cx, id, 0, plan_, false), tmp, din[0].p, planes);
    }
  }
#endif
};
CCN_REGISTER_LAYER("rscale", RscaleLayer);

}  // namespace ccn
