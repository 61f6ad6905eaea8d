// ccn/native/layers/pool.cpp: type=pool, spatial max / avg / maxabs pooling within each map.
//
// Keys (layer-definition file): channels, sizeX, stride, start (default 0, may be negative),
// outputsX (default 0 = computed), pool = max | avg | maxabs (maxabs is cuda-convnet2's).
//
// Shape: the input is channels x S x S; the output is channels x O x O with
//   O = outputsX, or when outputsX = 0:  O = ceil((S - start - sizeX) / stride) + 1.
// Output o (along each axis) covers input pixels [start + o*stride, start + o*stride + sizeX)
// clipped to [0, S). Every window must keep at least one pixel of the image.
//   max:    out = max over the clipped window; backward: every input equal to the maximum
//           (all tied maxima) receives the output's full gradient, as in cuda-convnet's
//           kLocalMaxUndo.
//   maxabs: out = the input of largest magnitude (of several with equal magnitude, the last in
//           row-major window order, as cuda-convnet2's MaxAbsPooler); backward as max.
//   avg:    out = sum / (number of window pixels inside the image); backward is the exact
//           gradient of that, dout / count to each pixel of the clipped window. (The original's
//           kLocalAvgUndo divides by sizeX^2 even at borders, which is not the gradient of its
//           own forward; we follow the forward.)
//
// Layout: in N x (C*S*S), out N x (C*O*O), rows = cases, NCHW per case (x fastest).
// Kernels are parallel over (case, channel) planes; each plane is owned by one thread, so
// the backward adds into din need no atomics. The plane loops (core/simd_pool.inc, one build
// per instruction set, see core/simd.h) run along contiguous rows. relu on a max pool is
// applied inside it (fuses_neuron).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/simd.h"
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

namespace {

// ceil(a / b) for b > 0 and any sign of a.
int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

enum class PoolOp { Max, Avg, MaxAbs };

}  // namespace

class PoolLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("a pool layer takes exactly one input, found ", ctx.in.size(), "."));
    std::string pool = spec.get_str("pool");
    if (pool == "max") op_ = PoolOp::Max;
    else if (pool == "avg") op_ = PoolOp::Avg;
    else if (pool == "maxabs") op_ = PoolOp::MaxAbs;
    else {
      std::string m = did_you_mean(pool, {"max", "avg", "maxabs"});
      spec.fail("pool", cat("unknown pooling '", pool, "'; expected max, avg or maxabs.",
                            m.empty() ? std::string() : cat(" Did you mean '", m, "'?")));
    }
    channels_ = spec.get_int("channels");
    Shape in = image_shape(spec, ctx.in[0], channels_, ctx.in_names[0]);
    S_ = in.h;
    size_ = spec.get_int("sizeX");
    if (size_ < 1) spec.fail("sizeX", cat("must be at least 1, found ", size_, "."));
    stride_ = spec.get_int("stride");
    if (stride_ < 1) spec.fail("stride", cat("must be at least 1, found ", stride_, "."));
    start_ = spec.get_int("start", 0);
    int ox = spec.get_int("outputsX", 0);
    if (ox < 0) spec.fail("outputsX", cat("must be 0 (computed) or positive, found ", ox, "."));
    if (start_ + size_ <= 0)
      spec.fail("start", cat("with start=", start_, " and sizeX=", size_, " the first pooling window [", start_, ", ",
                             start_ + size_, ") lies entirely outside the ", S_, "x", S_, " image."));
    if (start_ >= S_)
      spec.fail("start", cat("start=", start_, " is outside the ", S_, "x", S_, " image."));
    if (ox == 0) {
      O_ = ceil_div(S_ - start_ - size_, stride_) + 1;
      if (O_ < 1)
        spec.fail("sizeX", cat("with start=", start_, ", sizeX=", size_, " and stride=", stride_, " on a ", S_, "x", S_,
                               " image, outputsX = ceil((", S_, " - ", start_, " - ", size_, ") / ", stride_, ") + 1 = ", O_,
                               "; give a smaller sizeX or start, or an explicit outputsX."));
    } else {
      O_ = ox;
    }
    int last = start_ + (O_ - 1) * stride_;
    if (last >= S_)
      spec.fail(ox ? "outputsX" : "stride",
                cat("the last pooling window (output ", O_ - 1, ") starts at pixel ", last, ", entirely outside the ", S_,
                    "x", S_, " image (start=", start_, ", stride=", stride_, ", outputsX=", O_, ")."));
    out = Shape{channels_, O_, O_};
  }

  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override {
    const int64_t N = o.rows();
    const int C = channels_, S = S_, O = O_;
    const simd::PoolGeom geom = geometry();
    const simd::Kernels& K = simd::k();
    const int64_t inPlane = (int64_t)S * S, outPlane = (int64_t)O * O;
#pragma omp parallel
    {
      // rb: the output rows' windows reduced over their rows (O rows of S; the inline loop
      // below and the other plane loops use the first); hb: h
      std::vector<float> rb((size_t)O * S), hb(S);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) {
          const float* x = in[0]->row(n) + c * inPlane;  // S x S plane, x fastest
          float* y = o.row(n) + c * outPlane;            // O x O plane
          if (op_ != PoolOp::MaxAbs && (S >= 24 || (size_ == 3 && stride_ == 2))) {
            K.pool_fwd_plane(geom, x, y, rb.data(), hb.data());
            continue;
          }
          for (int oy = 0; oy < O; ++oy) {
            const int y0 = std::max(0, start_ + oy * stride_), y1 = std::min(S, start_ + oy * stride_ + size_);
            if (op_ != PoolOp::MaxAbs) {
              // Rows under 24 px: the window-by-window loop inline here (the plane kernel was
              // measured 0.2-0.5 ms slower on 18pct's 16 and 8 px avg pools; sizeX 3 stride 2
              // has its own plane loops now, perf-notes pool-5).
              std::copy(x + y0 * S, x + y0 * S + S, rb.begin());
              for (int yy = y0 + 1; yy < y1; ++yy) {
                const float* row = x + yy * S;
                if (op_ == PoolOp::Max)
                  for (int xx = 0; xx < S; ++xx) rb[xx] = std::max(rb[xx], row[xx]);
                else
                  for (int xx = 0; xx < S; ++xx) rb[xx] += row[xx];
              }
              for (int ox = 0; ox < O; ++ox) {
                const int x0 = std::max(0, start_ + ox * stride_), x1 = std::min(S, start_ + ox * stride_ + size_);
                float r = rb[x0];
                if (op_ == PoolOp::Max) {
                  for (int xx = x0 + 1; xx < x1; ++xx) r = std::max(r, rb[xx]);
                  if (geom.relu) r = r > 0.f ? r : 0.f;  // the relu neuron's expression (neuron.cpp)
                } else {
                  for (int xx = x0 + 1; xx < x1; ++xx) r += rb[xx];
                  r /= (float)((y1 - y0) * (x1 - x0));
                }
                y[oy * O + ox] = r;
              }
              continue;
            }
            for (int ox = 0; ox < O; ++ox) {
              const int x0 = std::max(0, start_ + ox * stride_), x1 = std::min(S, start_ + ox * stride_ + size_);
              float r = x[y0 * S + x0];
              for (int yy = y0; yy < y1; ++yy)
                for (int xx = x0; xx < x1; ++xx)
                  if (!(std::fabs(r) > std::fabs(x[yy * S + xx]))) r = x[yy * S + xx];
              y[oy * O + ox] = r;
            }
          }
        }
    }
  }

  // relu on a max pool is fused (Layer::fuses_neuron): max(window) then relu in fprop; bprop
  // gets the post-relu output and its gradient. relu(max) keeps the maximum where it is
  // positive, so comparing the window with the output finds the same pixels there; where the
  // maximum is <= 0 relu' = 0 and only +0 terms are added, as before (see max_undo_row).
  bool fuses_neuron() const override { return op_ == PoolOp::Max && neuron.type == "relu"; }
  bool bprop_assigns_din() const override { return true; }
  // avg's backward does not read the output, so a neuron with f' from f runs in place.
  bool bprop_reads_output() const override { return op_ != PoolOp::Avg; }

  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx& ctx) override {
    if (!din[0]) return;
    const bool assign = ctx.assign(0);
    const int64_t N = dout.rows();
    const int C = channels_, S = S_, O = O_;
    const simd::PoolGeom geom = geometry();
    const simd::Kernels& K = simd::k();
    const int64_t inPlane = (int64_t)S * S, outPlane = (int64_t)O * O;
#pragma omp parallel if (N * C * outPlane > 16384)
    {
      const size_t scratch = (size_t)simd::pool_bwd_scratch(geom);  // spread rows, see below
      std::vector<float> me(scratch, 0.f), ge(scratch, 0.f);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)  // each plane of din is this thread's only
          K.pool_bwd_plane(geom, in[0]->row(n) + c * inPlane, o.row(n) + c * outPlane, dout.row(n) + c * outPlane,
                           din[0]->row(n) + c * inPlane, me.data(), ge.data(), assign);
    }
  }

  double flops_per_case() const override { return (double)channels_ * O_ * O_ * size_ * size_; }

 private:
  // The plane loops are core/simd_pool.inc's (built per instruction set). Forward: per output
  // row, the window rows are reduced along contiguous pixels (max or sum, in row order); on
  // rows of >= 24 pixels the windows inside the row come from one vector pass h[x] = the
  // window starting at x (reduced left to right, as window by window), picked every stride,
  // and the clipped ones at the borders window by window. relu fused: relu(max), the relu
  // neuron's expression. Max with sizeX 3, stride 2 (pool1 of the CIFAR nets): every output
  // row's window-row maxima first, then the interior windows max(max(r0, r1), r2) read at
  // stride 2 in one vector loop (the same maxima in the same order). Its backward interleaves
  // the plane's outputs with zeros instead of spreading them (core/simd_pool.inc,
  // p_max_bwd_plane_s2): the same spread rows, so the same sums.
  // Backward, max_undo_row:
  // max/maxabs backward for one row of outputs (oy): m[ox] = the output (the window's
  // maximum), go[ox] its gradient; input rows [y0, y1) of the S x S planes x (input) and d
  // (its gradient, x fastest). Every window pixel equal to m[ox] gets go[ox] added.
  // For each window column offset dx, DESCENDING, the row's windows are spread onto pixels:
  // me[p] = m[ox], ge[p] = go[ox] at p = start + ox*stride + dx (0 elsewhere), then each
  // input row yy of the window gets d[yy][p] += x[yy][p] == me[p] ? ge[p] : 0 over the pixel
  // span [p_lo, p_hi] of those windows: contiguous, branch-free, vectorised (the direct
  // window-by-window scatter runs 3-element inner loops at ~5x the forward's time).
  // Order: a pixel covered by windows ox1 < ox2 of this row has dx1 > dx2, so with dx
  // descending it receives ox1's term before ox2's, and rows oy arrive in order: every pixel
  // sums its terms in row-major window order, as the scatter does. The extra +0 terms (pixels
  // of the span not at offset dx) change nothing but the sign of a zero gradient.
  // me_all, ge_all: scratch (simd::pool_bwd_scratch: sizeX rows of S floats here, or the
  // stride-2 interleaved rows), one row per dx, zero-filled by the
  // caller once: row dx only ever receives values at its window pixels (the same for every
  // output row), so its other pixels stay 0 (0 == x ? 0 : 0 adds +0).
  // With relu fused, m is relu(max) and go the gradient of that: ge = m > 0 ? 0 + go : +0,
  // which is the pre-activation gradient the separate neuron backward produced (0 + go*f').
  // With sizeX = 3 the three dx spreads are made first and each input row is passed once,
  // adding the dx = 2, 1, 0 terms per pixel in that order over the union of their spans (the
  // rows are 0 outside their window pixels: the extra pixels add +0 as the gaps did).
  // avg_undo_row spreads ge = go / (pixels of the window) the same way and adds it (sizeX = 3;
  // other sizes window by window), bitwise the window-by-window d += go / count.
  simd::PoolGeom geometry() const {
    simd::PoolGeom g;
    g.S = S_, g.O = O_, g.size = size_, g.stride = stride_, g.start = start_;
    // Windows [ia, ib) lie entirely inside a row (start + ox*stride >= 0, + sizeX <= S).
    g.ia = std::min(O_, start_ >= 0 ? 0 : (-start_ + stride_ - 1) / stride_);
    g.ib = std::max(g.ia, std::min(O_, S_ - size_ - start_ < 0 ? 0 : (S_ - size_ - start_) / stride_ + 1));
    g.max = op_ != PoolOp::Avg;
    g.relu = has_neuron && fuses_neuron();
    return g;
  }

  PoolOp op_ = PoolOp::Max;
  int channels_ = 0, S_ = 0, size_ = 0, stride_ = 1, start_ = 0, O_ = 0;

#ifdef CCN_WITH_CUDA
  // native/cuda/pool.cu (max, maxabs and avg). Same layouts.
 public:
  bool has_cuda() const override { return true; }
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::pool_fprop(cx, cuda_geom((int)o.rows), in[0].p, o.p);
  }
  // o is this layer's own output (pre-neuron), as the net passes it.
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0]) cuda::pool_bprop(cx, cuda_geom((int)dout.rows), in[0].p, o.p, dout.p, din[0].p);
  }

 private:
  cuda::PoolGeom cuda_geom(int N) const {
    cuda::PoolGeom g;
    g.N = N, g.C = channels_, g.S = S_, g.O = O_, g.sizeX = size_, g.start = start_, g.stride = stride_;
    g.max = op_ != PoolOp::Avg;  // maxabs is max with abs: the same backward (in == out)
    g.abs = op_ == PoolOp::MaxAbs;
    return g;
  }
#endif
};
CCN_REGISTER_LAYER("pool", PoolLayer);

}  // namespace ccn
