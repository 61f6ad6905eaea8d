// ccn/native/layers/dropout.cpp: type=dropout and type=dropout2 (cuda-convnet2).
//
// Keys (layer-params file, as cuda-convnet2 reads them): keep (probability of keeping a
// value, default 0.5, 0 < keep <= 1) and enable (default true).
//   dropout,  training:   out = in * m / keep,  m ~ Bernoulli(keep) per value
//   dropout,  testing:    out = in
//   dropout2, training:   out = in * m
//   dropout2, testing:    out = in * keep
// With enable=false the layer behaves as in testing, in training too: dropout copies,
// dropout2 still multiplies by keep (cuda-convnet2's Dropout2Layer takes its scaling branch
// whenever it does not draw a mask).
// Backward: din += dout * (the factor used in the last forward pass), i.e. the stored mask
// (m/keep or m) after a training pass, 1 or keep after a testing pass.
// The mask is m = [uniform01(seed, stream, n*D + j) < keep] with stream derived from the
// net's step (training passes done) and this layer's position, so a run is reproducible and
// does not depend on the number of threads. n is the case's row in the global minibatch
// (ctx.case_offset + local row), so data-parallel ranks draw the single-process mask.
// Layout: in, out, mask: N x D, rows = cases, element-wise.
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

class DropoutLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1)
      spec.fail("inputs", cat("a ", spec.type(), " layer takes exactly one input, found ", ctx.in.size(), "."));
    out = ctx.in[0];
    reload_params(spec);
  }
  void reload_params(LayerSpec& spec) override {
    keep_ = spec.get_float("keep", 0.5, Src::Params);
    enable_ = spec.get_bool("enable", true, Src::Params);
    if (!(keep_ > 0 && keep_ <= 1))
      spec.fail("keep", cat("must be in (0, 1] (it is the probability of keeping a value), found ", keep_, "."),
                Src::Params);
  }

  // Layout: x, y, mask: N x D flat; element k = n*D + j.
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx& ctx) override {
    const int64_t sz = o.size();
    const float* x = in[0]->data();
    float* y = o.data();
    masked_ = enable_ && ctx.train;
    if (masked_) {
      mask_.resize(o.rows(), o.cols());
      float* m = mask_.data();
      const float on = scaled() ? (float)(1.0 / keep_) : 1.f;
      const float keep = (float)keep_;
      const uint64_t seed = ctx.seed;
      const uint64_t stream = mix64(ctx.step ^ 0xD1B54A32D192ED03ULL) ^ (uint64_t)ctx.layer_id;
      const uint64_t first = (uint64_t)(ctx.case_offset * o.cols());  // global index of element 0
#pragma omp parallel for schedule(static) if (sz > 16384)
      for (int64_t k = 0; k < sz; ++k) {
        m[k] = uniform01(seed, stream, first + (uint64_t)k) < keep ? on : 0.f;
        y[k] = x[k] * m[k];
      }
    } else {
      const float s = test_factor();
#pragma omp parallel for simd schedule(static) if (sz > 32768)
      for (int64_t k = 0; k < sz; ++k) y[k] = x[k] * s;
    }
  }
  // Layout: dout, din, mask: N x D flat.
  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx&) override {
    if (!din[0]) return;
    const int64_t sz = dout.size();
    const float* g = dout.data();
    float* d = din[0]->data();
    if (masked_) {
      if (mask_.rows() != dout.rows() || mask_.cols() != dout.cols())
        runtime_error("dropout layer '", name, "': backward pass without a matching forward pass.");
      const float* m = mask_.data();
#pragma omp parallel for simd schedule(static) if (sz > 32768)
      for (int64_t k = 0; k < sz; ++k) d[k] += g[k] * m[k];
    } else {
      const float s = test_factor();
#pragma omp parallel for simd schedule(static) if (sz > 32768)
      for (int64_t k = 0; k < sz; ++k) d[k] += g[k] * s;
    }
  }
  double flops_per_case() const override { return (double)out.size(); }

 protected:
  virtual bool scaled() const { return true; }  // dropout: training divides by keep
  float test_factor() const { return scaled() ? 1.f : (float)keep_; }

 private:
  double keep_ = 0.5;
  bool enable_ = true;
  bool masked_ = false;  // whether the last forward pass drew a mask
  Mat mask_;

#ifdef CCN_WITH_CUDA
  // native/cuda/dropout.cu: the same mask as the CPU (same seed, stream and global element
  // index, case_offset * D + k); the backward pass recomputes it from what the forward
  // pass used, kept here (the device keeps no mask).
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx& ctx) override {
    masked_ = enable_ && ctx.train;
    if (masked_) {
      dev_stream_ = mix64(ctx.step ^ 0xD1B54A32D192ED03ULL) ^ (uint64_t)ctx.layer_id;
      dev_seed_ = ctx.seed;
      dev_first_ = (uint64_t)(ctx.case_offset * o.cols);
      dev_rows_ = o.rows, dev_cols_ = o.cols;
      cuda::dropout_fprop(cx, in[0].p, o.p, o.size(), dev_seed_, dev_stream_, dev_first_, (float)keep_, on_value());
    } else {
      cuda::scale_copy(cx, in[0].p, o.p, o.size(), test_factor());
    }
  }
  void bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (!din[0]) return;
    if (masked_) {
      if (dev_rows_ != dout.rows || dev_cols_ != dout.cols)
        runtime_error("dropout layer '", name, "': backward pass without a matching forward pass.");
      cuda::dropout_bprop(cx, dout.p, din[0].p, dout.size(), dev_seed_, dev_stream_, dev_first_, (float)keep_,
                          on_value());
    } else {
      cuda::axpy(cx, dout.p, din[0].p, dout.size(), test_factor());
    }
  }

 private:
  float on_value() const { return scaled() ? (float)(1.0 / keep_) : 1.f; }  // as the CPU fprop
  uint64_t dev_seed_ = 0, dev_stream_ = 0, dev_first_ = 0;
  int64_t dev_rows_ = -1, dev_cols_ = -1;
#endif
};
CCN_REGISTER_LAYER("dropout", DropoutLayer);

class Dropout2Layer : public DropoutLayer {
 protected:
  bool scaled() const override { return false; }
};
CCN_REGISTER_LAYER("dropout2", Dropout2Layer);

}  // namespace ccn
