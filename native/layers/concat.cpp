// ccn/native/layers/concat.cpp: type=concat and type=pass, per-case concatenation of the inputs.
//
//   out[n, off_i + j] = in_i[n, j],  off_i = sum_{k<i} size(in_k)   (inputs in `inputs=` order)
//   din_i[n, j] += dout[n, off_i + j]
// This is cuda-convnet2's ConcatenationLayer (copyOffsets = running sums of the input sizes).
// cuda-convnet2's `pass` layer produces the same thing without copying (its inputs write into
// slices of its buffer, "like a concatenation layer" as its example files say); with one
// input it is the identity. Here both copy.
// Shape: since channels are the slowest axis of a case, concatenating inputs that share
// rows x cols is a concatenation of channels: out = (sum of channels) x rows x cols. Inputs
// of different spatial sizes give a flat vector (total x 1 x 1).
// Layout: in_i N x D_i, out N x sum(D_i), rows = cases.
#include <cstring>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class ConcatLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.empty()) spec.fail("inputs", cat("a ", spec.type(), " layer needs at least one input."));
    bool same_hw = true;
    int64_t total = 0;
    int channels = 0;
    offsets_.clear();
    for (const auto& s : ctx.in) {
      offsets_.push_back(total);
      total += s.size();
      channels += s.c;
      same_hw = same_hw && s.h == ctx.in[0].h && s.w == ctx.in[0].w;
    }
    offsets_.push_back(total);
    if (total > 2000000000LL) spec.fail("inputs", cat("the concatenated output would have ", total, " values per case."));
    out = same_hw ? Shape{channels, ctx.in[0].h, ctx.in[0].w} : Shape{(int)total, 1, 1};
  }
  // Layout: row n of the output is the rows n of the inputs one after another.
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows(), D = o.cols();
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t n = 0; n < N; ++n) {
      float* y = o.row(n);
      for (size_t i = 0; i < in.size(); ++i) {
        const int64_t w = offsets_[i + 1] - offsets_[i];
        if (w > 0) std::memcpy(y + offsets_[i], in[i]->row(n), sizeof(float) * w);
      }
    }
  }
  // Layout: din_i[n, :] += dout[n, off_i : off_i + D_i].
  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    const int64_t N = dout.rows(), D = dout.cols();
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dout.row(n);
      for (size_t i = 0; i < din.size(); ++i) {
        if (!din[i]) continue;
        float* d = din[i]->row(n);
        const float* gi = g + offsets_[i];
        const int64_t w = offsets_[i + 1] - offsets_[i];
        for (int64_t j = 0; j < w; ++j) d[j] += gi[j];
      }
    }
  }

 private:
  std::vector<int64_t> offsets_;

#ifdef CCN_WITH_CUDA
  // native/cuda/concat.cu, one input at a time (type=pass too); same layouts.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    for (size_t i = 0; i < in.size(); ++i)
      cuda::concat_fprop(cx, in[i].p, o.p, (int)o.rows, (int)(offsets_[i + 1] - offsets_[i]), (int)o.cols,
                         (int)offsets_[i]);
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    for (size_t i = 0; i < din.size(); ++i)
      if (din[i])
        cuda::concat_bprop(cx, dout.p, din[i].p, (int)dout.rows, (int)(offsets_[i + 1] - offsets_[i]), (int)dout.cols,
                           (int)offsets_[i]);
  }
#endif
};
CCN_REGISTER_LAYER("concat", ConcatLayer);

class PassLayer : public ConcatLayer {};
CCN_REGISTER_LAYER("pass", PassLayer);

}  // namespace ccn
