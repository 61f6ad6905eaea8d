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
// the backward adds into din need no atomics. Backward runs along contiguous input rows
// (max_undo_row, avg_undo_row). relu on a max pool is applied inside it (fuses_neuron).
#include <algorithm>
#include <cmath>
#include <vector>

#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

namespace {

// ceil(a / b) for b > 0 and any sign of a.
int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

enum class PoolOp { Max, Avg, MaxAbs };

// The row loops, inline: the rows are short (S = 8 to 32 in the CIFAR nets), too short for a
// call per row into core/simd.h's kernels to pay (measured: pool2/pool3 backward 2x slower).
// Nothing aliases and every operand is read unconditionally, so each loop vectorises.
inline void max_into(float* __restrict r, const float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) r[i] = std::max(r[i], row[i]);
}
inline void add_into(float* __restrict r, const float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) r[i] += row[i];
}
// h[i] = the window of `taps` values starting at r[i], reduced left to right.
inline void max_taps(const float* __restrict r, float* __restrict h, int n, int taps) {
  for (int i = 0; i < n; ++i) h[i] = r[i];
  for (int k = 1; k < taps; ++k)
    for (int i = 0; i < n; ++i) h[i] = std::max(h[i], r[i + k]);
}
inline void sum_taps(const float* __restrict r, float* __restrict h, int n, int taps) {
  for (int i = 0; i < n; ++i) h[i] = r[i];
  for (int k = 1; k < taps; ++k)
    for (int i = 0; i < n; ++i) h[i] += r[i + k];
}
// d[i] += x[i] == m[i] ? g[i] : 0 (g read unconditionally: if-converted and vectorised).
inline void add_where_equal(float* __restrict d, const float* __restrict x, const float* __restrict m,
                            const float* __restrict g, int n) {
  for (int i = 0; i < n; ++i) {
    const float gi = g[i];
    d[i] += x[i] == m[i] ? gi : 0.f;
  }
}

// The same for three (m, g) rows at stride rs, the row 2 term first, then 1, then 0.
inline void add_where_equal3(float* __restrict d, const float* __restrict x, const float* __restrict m,
                             const float* __restrict g, int64_t rs, int n) {
  const float *m0 = m, *m1 = m + rs, *m2 = m + 2 * rs, *g0 = g, *g1 = g + rs, *g2 = g + 2 * rs;
  for (int i = 0; i < n; ++i) {
    const float xi = x[i], a2 = g2[i], a1 = g1[i], a0 = g0[i];
    float di = d[i];
    di += xi == m2[i] ? a2 : 0.f;
    di += xi == m1[i] ? a1 : 0.f;
    di += xi == m0[i] ? a0 : 0.f;
    d[i] = di;
  }
}

// d[i] += g2[i], then g1[i], then g0[i] (rows at stride rs).
inline void add3(float* __restrict d, const float* __restrict g, int64_t rs, int n) {
  const float *g0 = g, *g1 = g + rs, *g2 = g + 2 * rs;
  for (int i = 0; i < n; ++i) {
    float di = d[i];
    di += g2[i];
    di += g1[i];
    di += g0[i];
    d[i] = di;
  }
}

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
    const bool relu = has_neuron && fuses_neuron();
    // Windows [ia, ib) along a row lie entirely inside it (start + ox*stride >= 0 and
    // start + ox*stride + sizeX <= S).
    const int ia = std::min(O, start_ >= 0 ? 0 : (-start_ + stride_ - 1) / stride_);
    const int ib = std::max(ia, std::min(O, S - size_ - start_ < 0 ? 0 : (S - size_ - start_) / stride_ + 1));
    // Rows of >= 24 pixels take the vector pass for the interior windows; on shorter ones its
    // loop overheads cost more than the scalar windows (measured on 18pct's 16 and 8 pixel rows).
    const bool wide = S >= 24;
    const int64_t inPlane = (int64_t)S * S, outPlane = (int64_t)O * O;
#pragma omp parallel
    {
      std::vector<float> rb(S), hb(S);  // one output row's windows reduced over their rows; h
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) {
          const float* x = in[0]->row(n) + c * inPlane;  // S x S plane, x fastest
          float* y = o.row(n) + c * outPlane;            // O x O plane
          for (int oy = 0; oy < O; ++oy) {
            const int y0 = std::max(0, start_ + oy * stride_), y1 = std::min(S, start_ + oy * stride_ + size_);
            if (op_ == PoolOp::MaxAbs) {
              for (int ox = 0; ox < O; ++ox) {
                const int x0 = std::max(0, start_ + ox * stride_), x1 = std::min(S, start_ + ox * stride_ + size_);
                float r = x[y0 * S + x0];
                for (int yy = y0; yy < y1; ++yy)
                  for (int xx = x0; xx < x1; ++xx)
                    if (!(std::fabs(r) > std::fabs(x[yy * S + xx]))) r = x[yy * S + xx];
                y[oy * O + ox] = r;
              }
              continue;
            }
            // Vertical pass along contiguous rows, then the horizontal windows: those inside
            // the row from one vector pass over all columns (h[x] = the window starting at x,
            // reduced in the same order as window by window), then picked every stride; the
            // clipped ones at the borders one by one.
            std::copy(x + y0 * S, x + y0 * S + S, rb.begin());
            for (int yy = y0 + 1; yy < y1; ++yy) {
              if (op_ == PoolOp::Max) max_into(rb.data(), x + yy * S, S);
              else add_into(rb.data(), x + yy * S, S);
            }
            if (wide && ib > ia) {
              const int hx0 = start_ + ia * stride_, hn = start_ + (ib - 1) * stride_ + 1 - hx0;
              if (op_ == PoolOp::Max) max_taps(rb.data() + hx0, hb.data(), hn, size_);
              else sum_taps(rb.data() + hx0, hb.data(), hn, size_);
              const float cnt = (float)((y1 - y0) * size_);
              for (int ox = ia; ox < ib; ++ox) {
                float r = hb[(ox - ia) * stride_];
                if (op_ == PoolOp::Max) {
                  if (relu) r = r > 0.f ? r : 0.f;  // the relu neuron's expression (neuron.cpp)
                } else {
                  r /= cnt;
                }
                y[oy * O + ox] = r;
              }
            }
            for (int ox = 0; ox < O; ++ox) {
              if (wide && ox == ia) ox = std::max(ia, ib);  // interior windows done above
              if (ox >= O) break;
              const int x0 = std::max(0, start_ + ox * stride_), x1 = std::min(S, start_ + ox * stride_ + size_);
              float r = rb[x0];
              if (op_ == PoolOp::Max) {
                for (int xx = x0 + 1; xx < x1; ++xx) r = std::max(r, rb[xx]);
                if (relu) r = r > 0.f ? r : 0.f;
              } else {
                for (int xx = x0 + 1; xx < x1; ++xx) r += rb[xx];
                r /= (float)((y1 - y0) * (x1 - x0));
              }
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
    const bool relu = has_neuron && fuses_neuron();
    const int64_t N = dout.rows();
    const int C = channels_, S = S_, O = O_;
    const int64_t inPlane = (int64_t)S * S, outPlane = (int64_t)O * O;
#pragma omp parallel if (N * C * outPlane > 16384)
    {
      std::vector<float> me((size_t)size_ * S, 0.f), ge((size_t)size_ * S, 0.f);  // max_undo_row's scratch
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) {
          const float* x = in[0]->row(n) + c * inPlane;
          const float* y = o.row(n) + c * outPlane;
          const float* g = dout.row(n) + c * outPlane;
          float* d = din[0]->row(n) + c * inPlane;  // this thread's plane only
          if (assign) std::fill(d, d + inPlane, 0.f);  // first writer: zero while it is in cache
          for (int oy = 0; oy < O; ++oy) {
            const int y0 = std::max(0, start_ + oy * stride_), y1 = std::min(S, start_ + oy * stride_ + size_);
            if (op_ != PoolOp::Avg) {
              max_undo_row(x, y + oy * O, g + oy * O, d, y0, y1, me.data(), ge.data(), relu);
            } else if (S >= 24 || size_ == 3) {
              avg_undo_row(g + oy * O, d, y0, y1, ge.data());
            } else {  // short rows: window by window (the spread's loop overheads cost more)
              for (int ox = 0; ox < O; ++ox) {
                const int x0 = std::max(0, start_ + ox * stride_), x1 = std::min(S, start_ + ox * stride_ + size_);
                const float v = g[oy * O + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int yy = y0; yy < y1; ++yy)
                  for (int xx = x0; xx < x1; ++xx) d[yy * S + xx] += v;
              }
            }
          }
        }
    }
  }

  double flops_per_case() const override { return (double)channels_ * O_ * O_ * size_ * size_; }

 private:
  // Max/maxabs backward for one row of outputs (oy): m[ox] = the output (the window's
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
  // me_all, ge_all: scratch of sizeX rows of S floats, one row per dx, zero-filled by the
  // caller once: row dx only ever receives values at its window pixels (the same for every
  // output row), so its other pixels stay 0 (0 == x ? 0 : 0 adds +0).
  // With relu fused, m is relu(max) and go the gradient of that: ge = m > 0 ? 0 + go : +0,
  // which is the pre-activation gradient the separate neuron backward produced (0 + go*f').
  void max_undo_row(const float* x, const float* m, const float* go, float* d, int y0, int y1, float* me_all,
                    float* ge_all, bool relu) const {
    const int S = S_, O = O_, st = stride_;
    if (size_ == 3) {
      // The three dx passes in one: spread all three rows first, then each input row once over
      // the union of the spans, adding the dx = 2, 1, 0 terms in that order per pixel (the
      // order of the separate passes; the rows are 0 outside their window pixels, so the
      // union's extra pixels add +0 as the separate spans' gaps did).
      int u_lo = S, u_hi = 0;
      for (int dx = 2; dx >= 0; --dx) {
        const int off = start_ + dx;
        const int lo = off >= 0 ? 0 : (-off + st - 1) / st;
        const int hi = std::min(O, off >= S ? 0 : (S - 1 - off) / st + 1);
        if (lo >= hi) continue;
        u_lo = std::min(u_lo, off + lo * st);
        u_hi = std::max(u_hi, off + (hi - 1) * st + 1);
        float* me = me_all + (int64_t)dx * S;
        float* ge = ge_all + (int64_t)dx * S;
        if (relu)
          for (int ox = lo; ox < hi; ++ox) me[off + ox * st] = m[ox], ge[off + ox * st] = m[ox] > 0.f ? 0.f + go[ox] : 0.f;
        else
          for (int ox = lo; ox < hi; ++ox) me[off + ox * st] = m[ox], ge[off + ox * st] = go[ox];
      }
      if (u_lo >= u_hi) return;
      for (int yy = y0; yy < y1; ++yy)
        add_where_equal3(d + (int64_t)yy * S + u_lo, x + (int64_t)yy * S + u_lo, me_all + u_lo, ge_all + u_lo, S,
                         u_hi - u_lo);
      return;
    }
    for (int dx = size_ - 1; dx >= 0; --dx) {
      // Outputs ox whose column off + ox*st lies in [0, S): [lo, hi).
      const int off = start_ + dx;
      const int lo = off >= 0 ? 0 : (-off + st - 1) / st;
      const int hi = std::min(O, off >= S ? 0 : (S - 1 - off) / st + 1);
      if (lo >= hi) continue;
      const int p_lo = off + lo * st, p_hi = off + (hi - 1) * st + 1;  // pixel span [p_lo, p_hi)
      float* me = me_all + (int64_t)dx * S;  // its pixels off + ox*st are set here, the rest stay 0
      float* ge = ge_all + (int64_t)dx * S;
      if (relu)
        for (int ox = lo; ox < hi; ++ox) me[off + ox * st] = m[ox], ge[off + ox * st] = m[ox] > 0.f ? 0.f + go[ox] : 0.f;
      else
        for (int ox = lo; ox < hi; ++ox) me[off + ox * st] = m[ox], ge[off + ox * st] = go[ox];
      for (int yy = y0; yy < y1; ++yy)
        add_where_equal(d + (int64_t)yy * S + p_lo, x + (int64_t)yy * S + p_lo, me + p_lo, ge + p_lo,
                                  p_hi - p_lo);
    }
  }

  // Avg backward for one row of outputs, spread as max_undo_row does (same order per pixel,
  // the same +0 extras): ge[p] = go[ox] / (pixels of window ox) at its offset-dx pixel, then
  // d[yy][p] += ge[p] along the span. Bitwise the window-by-window d += go / count.
  void avg_undo_row(const float* go, float* d, int y0, int y1, float* ge_all) const {
    const int S = S_, O = O_, st = stride_;
    if (size_ == 3) {  // the three dx passes in one, as in max_undo_row
      int u_lo = S, u_hi = 0;
      for (int dx = 2; dx >= 0; --dx) {
        const int off = start_ + dx;
        const int lo = off >= 0 ? 0 : (-off + st - 1) / st;
        const int hi = std::min(O, off >= S ? 0 : (S - 1 - off) / st + 1);
        if (lo >= hi) continue;
        u_lo = std::min(u_lo, off + lo * st);
        u_hi = std::max(u_hi, off + (hi - 1) * st + 1);
        float* ge = ge_all + (int64_t)dx * S;
        for (int ox = lo; ox < hi; ++ox) {
          const int x0 = std::max(0, start_ + ox * st), x1 = std::min(S, start_ + ox * st + size_);
          ge[off + ox * st] = go[ox] / (float)((y1 - y0) * (x1 - x0));
        }
      }
      if (u_lo >= u_hi) return;
      for (int yy = y0; yy < y1; ++yy) add3(d + (int64_t)yy * S + u_lo, ge_all + u_lo, S, u_hi - u_lo);
      return;
    }
    for (int dx = size_ - 1; dx >= 0; --dx) {
      const int off = start_ + dx;
      const int lo = off >= 0 ? 0 : (-off + st - 1) / st;
      const int hi = std::min(O, off >= S ? 0 : (S - 1 - off) / st + 1);
      if (lo >= hi) continue;
      const int p_lo = off + lo * st, p_hi = off + (hi - 1) * st + 1;
      float* ge = ge_all + (int64_t)dx * S;
      for (int ox = lo; ox < hi; ++ox) {
        const int x0 = std::max(0, start_ + ox * st), x1 = std::min(S, start_ + ox * st + size_);
        ge[off + ox * st] = go[ox] / (float)((y1 - y0) * (x1 - x0));
      }
      for (int yy = y0; yy < y1; ++yy) add_into(d + (int64_t)yy * S + p_lo, ge + p_lo, p_hi - p_lo);
    }
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
