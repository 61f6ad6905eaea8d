// ccn/native/layers/crop.cpp: type=crop, cuda-convnet2's fixed crop layer
// (CropLayerParser in layer.py, kCrop in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): channels (>= 1), startX (0 .. S-1), startY (0 .. S-1,
// default startX), sizeX (1 .. S). startX + sizeX and startY + sizeX must not pass S (the
// original's parser checks x, its kernel asserts y).
// Shape: S x S -> sizeX x sizeX;  out[c, y, x] = in[c, startY + y, startX + x].
// Gradient: the original has none (bpropActs asserts; its parser refuses a crop layer above
// layers with weights). Cropping is linear, so we give the exact gradient (dout placed back
// at the crop window) and do not refuse such nets.
// Layout: rows = cases, each row C*S*S (input) / C*sizeX*sizeX (output), x fastest; parallel
// over (case, channel).
#include "layers/imgops.h"

namespace ccn {

class CropLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "crop");
    int channels = spec.get_int("channels");
    if (channels < 1) spec.fail("channels", cat("must be at least 1, found ", channels, "."));
    sx_ = spec.get_int("startX");
    sy_ = spec.get_int("startY", sx_);
    T_ = spec.get_int("sizeX");
    Shape s = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
    S_ = s.h;
    if (sx_ < 0 || sx_ > S_ - 1) spec.fail("startX", cat("must be in the range 0 to ", S_ - 1, " for ", S_, "x", S_, " images, found ", sx_, "."));
    if (T_ < 1 || T_ > S_) spec.fail("sizeX", cat("must be in the range 1 to ", S_, " for ", S_, "x", S_, " images, found ", T_, "."));
    if (sy_ < 0 || sy_ > S_ - 1) spec.fail("startY", cat("must be in the range 0 to ", S_ - 1, " for ", S_, "x", S_, " images, found ", sy_, "."));
    if (sx_ + T_ > S_)
      spec.fail("sizeX", cat("startX (", sx_, ") + sizeX (", T_, ") passes the image size (", S_, ")."));
    if (sy_ + T_ > S_)
      spec.fail(spec.has("startY") ? "startY" : "sizeX",
                cat("startY (", sy_, ") + sizeX (", T_, ") passes the image size (", S_, ")."));
    out = Shape{channels, T_, T_};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), C = out.c, SS = (int64_t)S_ * S_, TT = (int64_t)T_ * T_;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t j = 0; j < N * C; ++j) {
      const int64_t n = j / C, c = j % C;
      imgops::crop_fwd(in[0]->row(n) + c * SS, S_, o.row(n) + c * TT, T_, sy_, sx_);
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), C = out.c, SS = (int64_t)S_ * S_, TT = (int64_t)T_ * T_;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t j = 0; j < N * C; ++j) {
      const int64_t n = j / C, c = j % C;
      imgops::crop_bwd(dout.row(n) + c * TT, T_, din[0]->row(n) + c * SS, S_, sy_, sx_);
    }
  }

 private:
  int S_ = 0, T_ = 0, sx_ = 0, sy_ = 0;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu; same layout (N*C planes).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::crop_fprop(cx, in[0].p, o.p, o.rows * out.c, S_, T_, sy_, sx_);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::crop_bprop(cx, dout.p, din[0].p, dout.rows * out.c, S_, T_, sy_, sx_);
  }
#endif
};
CCN_REGISTER_LAYER("crop", CropLayer);

}  // namespace ccn
