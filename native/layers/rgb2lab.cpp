// ccn/native/layers/rgb2lab.cpp: type=rgb2lab, cuda-convnet2's RGB -> L*a*b* layer
// (RGBToLABLayerParser in layer.py, kRGBToLAB in cudaconv3/src/conv_util.cu).
//
// Keys (layer-definition file): center (bool, default 0: subtract 50 from L*). No channels
// key: the input must be 3 x S x S, meant to hold RGB in [0, 1] without mean subtraction.
// Per pixel, with (R, G, B) = channels 0, 1, 2, exactly as the original kernel:
//   X = 0.49 R + 0.31 G + 0.2 B;  Y = 0.17697 R + 0.8124 G + 0.01063 B;  Z = 0.01 G + 0.99 B
//   f(t) = t^0.3333 if t > 0.0088564517, else 7.787037 t + 0.13793103
//   L* = 116 f(Y) - 16 (- 50 with center);  a* = 500 (f(X) - f(Y));  b* = 200 (f(Y) - f(Z))
// (The original's comment mentions a factor 5.6506753 on XYZ that its code does not apply,
// and it uses the exponent 0.3333, not 1/3; we follow the code.)
// Shape: out = 3 x S x S.
// Gradient: the original has none (bpropActs asserts; its parser refuses the layer above layers
// with weights). We give the exact derivative (f'(t) = 0.3333 t^-0.6667 above the threshold,
// 7.787037 below; f jumps by about 1e-5 at the threshold, where the derivative is one-sided).
// Layout: rows = cases, each row 3*S*S (channel planes, x fastest); parallel over cases.
#include <cmath>

#include "layers/imgops.h"

namespace ccn {

namespace {
const float kXyz[3][3] = {{0.49f, 0.31f, 0.2f}, {0.17697f, 0.8124f, 0.01063f}, {0.0f, 0.01f, 0.99f}};
constexpr float kThr = 0.0088564517f, kExpo = 0.3333f, kSlope = 7.787037f, kIcept = 0.13793103f;
inline float labf(float t) { return t > kThr ? std::pow(t, kExpo) : kSlope * t + kIcept; }
inline float labf_d(float t) { return t > kThr ? kExpo * std::pow(t, kExpo - 1.0f) : kSlope; }
}  // namespace

class RgbToLabLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    out = imgops::rgb_shape(spec, ctx, "rgb2lab");
    center_ = spec.get_bool("center", false);
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), P = (int64_t)out.h * out.w;
    const float off = center_ ? 50.0f : 0.0f;
#pragma omp parallel for schedule(static) if (N * out.size() > 16384)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      float* y = o.row(n);
      for (int64_t p = 0; p < P; ++p) {
        float f[3];
        xyz_f(x, P, p, f);
        y[p] = 116.0f * f[1] - 16.0f - off;
        y[P + p] = 500.0f * (f[0] - f[1]);
        y[2 * P + p] = 200.0f * (f[1] - f[2]);
      }
    }
  }

  void bprop(const std::vector<const Mat*>& in, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t N = dout.rows(), P = (int64_t)out.h * out.w;
#pragma omp parallel for schedule(static) if (N * out.size() > 16384)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = in[0]->row(n);
      const float* g = dout.row(n);
      float* d = din[0]->row(n);
      for (int64_t p = 0; p < P; ++p) {
        float t[3];
        for (int k = 0; k < 3; ++k) t[k] = kXyz[k][0] * x[p] + kXyz[k][1] * x[P + p] + kXyz[k][2] * x[2 * P + p];
        const float gl = g[p], ga = g[P + p], gb = g[2 * P + p];
        // d/d f(X), f(Y), f(Z), then through f to X, Y, Z
        const float gt[3] = {500.0f * ga * labf_d(t[0]), (116.0f * gl - 500.0f * ga + 200.0f * gb) * labf_d(t[1]),
                             -200.0f * gb * labf_d(t[2])};
        for (int k = 0; k < 3; ++k) d[k * P + p] += kXyz[0][k] * gt[0] + kXyz[1][k] * gt[1] + kXyz[2][k] * gt[2];
      }
    }
  }

  double flops_per_case() const override { return 8.0 * out.size(); }

 private:
  static void xyz_f(const float* x, int64_t P, int64_t p, float f[3]) {
    const float r = x[p], g = x[P + p], b = x[2 * P + p];
    for (int k = 0; k < 3; ++k) f[k] = labf(kXyz[k][0] * r + kXyz[k][1] * g + kXyz[k][2] * b);
  }
  bool center_ = false;

#ifdef CCN_WITH_CUDA
  // native/cuda/imgops.cu (rgb2lab_*) with this file's constants; same layout.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::rgb2lab_fprop(cx, params(), in[0].p, o.p, o.rows, (int64_t)out.h * out.w);
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::rgb2lab_bprop(cx, params(), in[0].p, dout.p, din[0].p, dout.rows, (int64_t)out.h * out.w);
  }

 private:
  cuda::LabParams params() const {
    cuda::LabParams L;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) L.xyz.m[i][j] = kXyz[i][j];
    L.thr = kThr, L.expo = kExpo, L.slope = kSlope, L.icept = kIcept;
    L.off = center_ ? 50.0f : 0.0f;
    return L;
  }
#endif
};
CCN_REGISTER_LAYER("rgb2lab", RgbToLabLayer);

}  // namespace ccn
