// ccn/native/layers/href.cpp: type=href, cuda-convnet2's horizontal reflection layer
// (HorizontalReflectionLayerParser in layer.py, kReflectH in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): channels (1 .. 3, the original's limit).
// Shape: out = in = channels x S x S;  out[c, y, x] = in[c, y, S - 1 - x].
// Gradient (the original has it): the same reflection of dout.
// Layout: rows = cases, each row C*S*S with x fastest; parallel over cases.
#include "layers/imgops.h"

namespace ccn {

class HrefLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "href");
    int channels = spec.get_int("channels");
    if (channels < 1 || channels > 3)
      spec.fail("channels", cat("must be in the range 1 to 3 (as in cuda-convnet2), found ", channels, "."));
    out = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override { reflect(*in[0], o, false); }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (din[0]) reflect(dout, *din[0], true);
  }

 private:
  void reflect(const Mat& src, Mat& dst, bool add) const {
    const int64_t N = src.rows(), rows = (int64_t)out.c * out.h;
    const int S = out.w;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = src.row(n);
      float* y = dst.row(n);
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * S;
        float* yr = y + r * S;
        if (add)
          for (int i = 0; i < S; ++i) yr[i] += xr[S - 1 - i];
        else
          for (int i = 0; i < S; ++i) yr[i] = xr[S - 1 - i];
      }
    }
  }

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu; same layout (N*C*S rows of S pixels).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::href(cx, in[0].p, o.p, o.rows * out.c * out.h, out.w, false);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::href(cx, dout.p, din[0].p, dout.rows * out.c * out.h, out.w, true);
  }
#endif
};
CCN_REGISTER_LAYER("href", HrefLayer);

}  // namespace ccn
