// ccn/native/layers/rgb2yuv.cpp: type=rgb2yuv, cuda-convnet2's RGB -> YUV layer
// (RGBToYUVLayerParser in layer.py, kRGBToYUV in cudaconv3/src/conv_util.cu).
//
// Keys: none besides inputs (the original reads no channels key: the input must be 3 x S x S).
// Per pixel, with (R, G, B) = channels 0, 1, 2:
//   Y =  0.2126  R + 0.7152  G + 0.0722  B
//   U = -0.09991 R - 0.33609 G + 0.436   B
//   V =  0.615   R - 0.55861 G - 0.05639 B
// Shape: out = 3 x S x S.
// Gradient: the original has none (bpropActs asserts; its parser refuses the layer above layers
// with weights). The map is linear, so we give the exact gradient, M^T applied per pixel.
// Layout: rows = cases, each row 3*S*S (channel planes, x fastest); parallel over cases.
#include "layers/imgops.h"

namespace ccn {

namespace {
const float kYuv[3][3] = {{0.2126f, 0.7152f, 0.0722f}, {-0.09991f, -0.33609f, 0.436f}, {0.615f, -0.55861f, -0.05639f}};
}

class RgbToYuvLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override { out = imgops::rgb_shape(spec, ctx, "rgb2yuv"); }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)out.h * out.w;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* y = o.row(n);
      for (int64_t p = 0; p < P; ++p) {
        const float r = x[p], g = x[P + p], b = x[2 * P + p];
        for (int k = 0; k < 3; ++k) y[k * P + p] = kYuv[k][0] * r + kYuv[k][1] * g + kYuv[k][2] * b;
      }
    }
  }

  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), P = (int64_t)out.h * out.w;
#pragma omp parallel for schedule(static) if (N * out.size() > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      float* d = din[0]->row(n);
      for (int64_t p = 0; p < P; ++p) {
        const float gy = g[p], gu = g[P + p], gv = g[2 * P + p];
        for (int k = 0; k < 3; ++k) d[k * P + p] += kYuv[0][k] * gy + kYuv[1][k] * gu + kYuv[2][k] * gv;
      }
    }
  }

  double flops_per_case() const override { return 5.0 * out.size(); }  // 3 products, 2 sums per value

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu (color3_*) with this file's matrix; same layout.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::color3_fprop(cx, matrix(), in[0].p, o.p, o.rows, (int64_t)out.h * out.w);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::color3_bprop(cx, matrix(), dout.p, din[0].p, dout.rows, (int64_t)out.h * out.w);
  }

 private:
  static cuda::Color3 matrix() {
    cuda::Color3 m;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) m.m[i][j] = kYuv[i][j];
    return m;
  }
#endif
};
CCN_REGISTER_LAYER("rgb2yuv", RgbToYuvLayer);

}  // namespace ccn
