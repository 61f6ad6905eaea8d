// ccn/native/layers/nailbed.cpp: type=nailbed, cuda-convnet2's "bed of nails" subsampling
// (NailbedLayerParser in layer.py, kBedOfNails in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): channels (>= 1), stride (>= 1).
// Shape: S x S input -> outputsX x outputsX with outputsX = ceil(S / stride), keeping the
// pixels at start + o*stride (both axes), start = (S - stride*(outputsX - 1)) // 2:
//   out[c, oy, ox] = in[c, start + oy*stride, start + ox*stride]
// Gradient (the original has it, convBedOfNailsUndo): scatter dout back to those pixels.
// (The original's kernel wrapper asserts stride > 1; stride = 1 is the identity here.)
// Layout: rows = cases, each row C*S*S (input) / C*oX*oX (output), x fastest; parallel over cases.
#include "layers/imgops.h"

namespace ccn {

class NailbedLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    imgops::require_one_input(spec, ctx, "nailbed");
    int channels = spec.get_int("channels");
    if (channels < 1) spec.fail("channels", cat("must be at least 1, found ", channels, "."));
    stride_ = spec.get_int("stride");
    if (stride_ < 1) spec.fail("stride", cat("must be at least 1, found ", stride_, "."));
    Shape s = image_shape(spec, ctx.in[0], channels, ctx.in_names[0]);
    S_ = s.h;
    ox_ = (S_ + stride_ - 1) / stride_;
    start_ = (S_ - stride_ * (ox_ - 1)) / 2;
    out = Shape{channels, ox_, ox_};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows();
    const int C = out.c;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* y = o.row(n);
      for (int c = 0; c < C; ++c)
        for (int oy = 0; oy < ox_; ++oy)
          for (int ox = 0; ox < ox_; ++ox)
            y[((int64_t)c * ox_ + oy) * ox_ + ox] =
                x[((int64_t)c * S_ + start_ + oy * stride_) * S_ + start_ + ox * stride_];
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows();
    const int C = out.c;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      float* d = din[0]->row(n);
      for (int c = 0; c < C; ++c)
        for (int oy = 0; oy < ox_; ++oy)
          for (int ox = 0; ox < ox_; ++ox)
            d[((int64_t)c * S_ + start_ + oy * stride_) * S_ + start_ + ox * stride_] +=
                g[((int64_t)c * ox_ + oy) * ox_ + ox];
    }
  }

 private:
  int S_ = 0, stride_ = 1, ox_ = 0, start_ = 0;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu; same layout (N*C planes).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::nailbed_fprop(cx, in[0].p, o.p, o.rows * out.c, S_, ox_, start_, stride_);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::nailbed_bprop(cx, dout.p, din[0].p, dout.rows * out.c, S_, ox_, start_, stride_);
  }
#endif
};
CCN_REGISTER_LAYER("nailbed", NailbedLayer);

}  // namespace ccn
