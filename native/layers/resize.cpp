// ccn/native/layers/resize.cpp: type=resize, cuda-convnet2's bilinear resize layer
// (ResizeLayerParser in layer.py, kResizeBilinear in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): channels (>= 1), scale (0.5 .. 2; > 1 shrinks).
// Shape: S x S -> T x T with T = floor(S / scale) (an error when that is 0).
// Target pixel p samples the source at p*scale + S/2 - T/2*scale, clamped to [0, S - 1.01],
// bilinearly from its 2x2 neighbours (see layers/imgops.h), the same along x and y.
// Gradient: the original has none (its bpropActs asserts, and its parser refuses a resize
// layer above layers with weights). The map is linear in the input, so we give the exact
// gradient, the transposed resampling, and do not refuse such nets.
// Layout: rows = cases, each row C*S*S (input) / C*T*T (output), x fastest; parallel over
// (case, channel).
#include <cmath>

#include "layers/imgops.h"

namespace ccn {

class ResizeLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "resize");
    int channels = spec.get_int("channels");
    if (channels < 1) spec.fail("channels", cat("must be at least 1, found ", channels, "."));
    double scale = spec.get_float("scale");
    if (!(scale >= 0.5 && scale <= 2.0))
      spec.fail("scale", cat("must be in the range 0.5 to 2 (the original refuses more severe scalings), found ", scale, "."));
    Shape s = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
    int T = (int)std::floor((double)s.h / scale);
    if (T < 1)
      spec.fail("scale", cat("resizing ", s.h, "x", s.h, " images by scale=", scale, " leaves floor(", s.h, " / ", scale,
                             ") = 0 pixels per side."));
    plan_ = imgops::ResizePlan(s.h, T, (float)scale);
    out = Shape{channels, T, T};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), C = out.c, S = plan_.S, T = plan_.T;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t j = 0; j < N * C; ++j) {
      const int64_t n = j / C, c = j % C;
      imgops::resize_fwd(plan_, in[0]->row(n) + c * S * S, o.row(n) + c * T * T);
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), C = out.c, S = plan_.S, T = plan_.T;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t j = 0; j < N * C; ++j) {
      const int64_t n = j / C, c = j % C;
      imgops::resize_bwd(plan_, dout.row(n) + c * T * T, din[0]->row(n) + c * S * S);
    }
  }

  double flops_per_case() const override { return 9.0 * out.size(); }  // 3 lerps a + u(b - a) per value (imgops.h)

 private:
  imgops::ResizePlan plan_;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu (resize_*) with this plan's tables (imgops::resize_tables, buffer
  // slot 0 of this layer); same layout.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::resize_fprop(cx, imgops::resize_tables(cx, id, 0, plan_, true), in[0].p, o.p, o.rows * out.c);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0])
      cuda::resize_bprop(cx, imgops::resize_tables(cx, id, 0, plan_, false), dout.p, din[0].p, dout.rows * out.c);
  }
#endif
};
CCN_REGISTER_LAYER("resize", ResizeLayer);

}  // namespace ccn
