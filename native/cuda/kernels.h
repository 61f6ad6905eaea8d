// ccn/native/cuda/kernels.h: the CUDA kernel launchers, one group per layer type.
//
// Plain C++ (no CUDA headers): layer files compiled by the host compiler call these from
// their fprop_cuda/bprop_cuda overrides (inside #ifdef CCN_WITH_CUDA). Every launcher
// takes the net's CudaCtx, raw device pointers and sizes, enqueues its kernels on
// cx.stream and returns without waiting (except where it says "synchronises").
// Conventions, the same as the CPU layers:
//   - activations: rows = cases (N), cols = C*H*W, x fastest, then y, then channel;
//   - "bprop" launchers ADD into the input gradient (din) and into weight gradients;
//   - images are square: S x S input, O x O output.
// Each launcher's .cu file (native/cuda/<layer>.cu) documents its kernels' layouts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ccn {
struct CudaCtx;
namespace cuda {

// ---- element-wise helpers (elementwise.cu) ------------------------------------------
void fill(CudaCtx& cx, float* x, int64_t n, float v);
void scale_copy(CudaCtx& cx, const float* x, float* y, int64_t n, float a);   // y = a*x
void axpy(CudaCtx& cx, const float* x, float* y, int64_t n, float a);         // y += a*x
// Bias over rows: y[r, c] += b[c] (y is rows x cols).
void add_row_vector(CudaCtx& cx, float* y, const float* b, int64_t rows, int64_t cols);
// Column sums added: db[c] += sum_r g[r, c] (sums in double per column).
void add_col_sums(CudaCtx& cx, const float* g, float* db, int64_t rows, int64_t cols);
// Copies `bytes` from host memory to device memory on cx.stream (small tables, e.g. conv's
// randSparse channel table; from pageable memory this may wait for the stream).
void copy_to_device(CudaCtx& cx, void* dst, const void* src, size_t bytes);
// Sum of all elements of x into host memory, in double. Synchronises.
double sum_to_host(CudaCtx& cx, const float* x, int64_t n, bool squares);

// ---- neurons (neuron.cu) --------------------------------------------------------------
// Neuron codes; a, b are the neuron's parameters (tanh[a,b], brelu[a], linear[a,b], log[a],
// drelu[a]), with the CPU backend's defaults (tanh/linear bare: a=1, b=1 / b=0).
enum NeuronCode : int {
  N_IDENT, N_LOGISTIC, N_TANH, N_RELU, N_BRELU, N_SOFTRELU, N_ABS, N_SQUARE, N_SQRT, N_LINEAR, N_LOG, N_DRELU
};
// -1 for names the CUDA backend does not know.
int neuron_code(const std::string& type);
// y = f(x), n elements.
void neuron_fprop(CudaCtx& cx, int code, float a, float b, const float* x, float* y, int64_t n);
// din (+)= f'(x) * dout, with y = f(x) given; add=false overwrites.
void neuron_bprop(CudaCtx& cx, int code, float a, float b, const float* x, const float* y, const float* dout,
                  float* din, int64_t n, bool add);

// ---- softmax (softmax.cu): x, y: N x K ----------------------------------------------
void softmax_fprop(CudaCtx& cx, const float* x, float* y, int N, int K);
void softmax_bprop(CudaCtx& cx, const float* y, const float* dout, float* din, int N, int K);

// ---- cost.logreg (cost_logreg.cu): labels N x 1 (class indices as floats), probs N x K --
// Fills sums[0..2] = (sum -log p[label], top-1 wrong, top-k wrong), ties share credit like
// the CPU layer. Synchronises. Returns the index of the first case whose label is not a
// class index in 0..K-1, or -1.
// With `logits` (N x K, the input of the softmax that made probs; may be null), -log p[label]
// is log sum_j exp(x_j - max x) - (x_label - max x) in double instead, as the CPU layer does
// for a fused softmax (finite where p underflows).
int64_t logreg_fprop(CudaCtx& cx, const float* labels, const float* probs, const float* logits, int N, int K, int topk,
                     double sums[3]);
// dprobs[n, label] += (float)(-coeff / max(p[n, label], 1e-38)), the quotient in double with the
// layer's double coeff, as the CPU layer computes it.
void logreg_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dprobs, int N, int K, double coeff);
// The fused softmax + logreg gradient: dx[n, j] += (float)(coeff * (p[n, j] - [j == label])), in
// double, as the CPU layer's fused_input_bprop.
void logreg_softmax_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dx, int N, int K, double coeff);

// ---- cost.sum2 (cost_sum2.cu): x N x D --------------------------------------------------
double sum2_fprop(CudaCtx& cx, const float* x, int64_t n);  // sum x^2 in double; synchronises
void sum2_bprop(CudaCtx& cx, const float* x, float* din, int64_t n, float coeff);  // din += 2*coeff*x

// ---- fc (fc.cu): in_i N x K_i, W_i K_i x O, b 1 x O, out N x O ---------------------------
// out (= or +=) in * W; the layer adds the bias with add_row_vector.
void fc_fprop(CudaCtx& cx, const float* in, const float* W, float* out, int N, int K, int O, bool accumulate);
// din += dout * W^T (din may be null); dW += in^T * dout.
void fc_bprop(CudaCtx& cx, const float* in, const float* W, const float* dout, float* din, float* dW, int N, int K,
              int O);

// ---- conv (conv.cu): shared-weight convolution, one input at a time ------------------
// Image: N x (C*S*S); output N x (F*M*M); M = modulesX. Weights (Cf*fs*fs) x F, row
// c*fs*fs + fy*fs + fx, one column per filter; filter f belongs to group f / (F/groups) and
// sees that group's Cf channels: image channel g*Cf + c, or vchan[g*Cf + c] when a
// channel table is given (randSparse; device int array of groups*Cf entries, else null).
// Pixels outside the image are 0; module (my, mx) reads image row my*stride - padding + fy.
struct ConvGeom {
  int N = 0, C = 0, S = 0;         // cases, image channels, image size
  int F = 0, groups = 1, Cf = 0;   // filters (all groups), groups, channels per filter
  int fs = 0, stride = 1, padding = 0, M = 0;
  const int* vchan = nullptr;      // device, groups*Cf entries, or null
};
// How many cases conv_fprop (bprop = false) or conv_bprop (bprop = true, din given or not)
// unfold at once: the largest count whose scratch (groups*K*MM floats per case, twice that in
// bprop with din, plus F*MM for the output or its gradient with filters outermost) stays within the budget,
// at least 1 and at most N. The budget is CCN_UNFOLD_BYTES when set, as the CPU layers read it
// (kernels/unfold.h unfold_budget_bytes), else 256 MB. Host code, no GPU needed.
int conv_chunk_cases(const ConvGeom& g, bool bprop, bool with_din);
// col = the unfolded input of cases n0 .. n0+nc-1 in the [g][k][n][m] layout of conv.cu
// (groups*K rows of nc*MM columns); conv_fprop and conv_bprop use it, the tests and
// tools/bench_gpu.py call it alone.
void conv_unfold(CudaCtx& cx, const ConvGeom& g, const float* in, int n0, int nc, float* col);
// out (= or +=) conv(in, W). Uses cx.scratch for the unfolded input, in chunks of cases.
void conv_fprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, float* out, bool accumulate);
// din += conv^T(dout, W) (skipped when din is null); dW += correlation of in and dout.
void conv_bprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, const float* dout, float* din,
                float* dW);
// Biases: shared (F x 1): out[n, f, m] += b[f]; unshared (F*M*M x 1): += b[f*M*M + m].
void conv_add_bias(CudaCtx& cx, float* out, const float* b, int N, int F, int MM, bool shared);
void conv_bias_grad(CudaCtx& cx, const float* dout, float* db, int N, int F, int MM, bool shared);

// ---- pool (pool.cu): in N x (C*S*S), out N x (C*O*O) -----------------------------------
// Output o covers [start + o*stride, start + o*stride + sizeX) clipped to the image, in x
// and y. max: the window's maximum (0 for a window with no pixel inside the image);
// avg: sum / (pixels inside the image). Backward: max ties all get the gradient.
// maxabs (max = true and abs = true): the window's value of largest magnitude, the LAST
// such pixel in row-major window order on ties (|later| >= |kept| replaces, as the CPU
// layer); backward as max (every window pixel equal to the output gets the gradient).
struct PoolGeom {
  int N = 0, C = 0, S = 0, O = 0, sizeX = 0, start = 0, stride = 1;
  bool max = true;
  bool abs = false;  // with max: pool=maxabs
};
void pool_fprop(CudaCtx& cx, const PoolGeom& g, const float* in, float* out);
void pool_bprop(CudaCtx& cx, const PoolGeom& g, const float* in, const float* out, const float* dout, float* din);

// ---- response normalisation (rnorm.cu, cmrnorm.cu, cnorm.cu): x, y N x (C*S*S) ---------
// y = x * d^-pow, d = minDiv + a * sum over the window. `a` is the user's scale already
// divided as the layer requires (rnorm and cnorm: scale/size^2, cmrnorm: scale/size).
// Window of p: [p - size/2, p - size/2 + size) clipped (rnorm: 2-D in x,y; cmrnorm: over
// channels, or the aligned block [c - c%size, +size) when blocked). `denoms` (N*C*S*S
// floats, e.g. cx.buffer(layer id, 0, ...)) is written by fprop and read by bprop.
// The kernels reproduce the CPU layers' float operations in the CPU's order (window sums
// row by row then across, no fused multiply-adds, D^-pow by layers/norm.h inv_pow's rule), so
// with the common exponents (0.75, 0.5, 1) they give the CPU's bits; build the geometry with
// norm_geom(), which derives pow_case and f2 from the layer's double parameters as the CPU does.
struct NormGeom {
  int N = 0, C = 0, S = 0, size = 0;
  float a = 0, pow = 0, minDiv = 1;
  bool blocked = false;  // cmrnorm only
  int pow_case = 0;      // D^-pow as inv_pow: 1 = pow 0.75, 2 = 0.5, 3 = 1 (exact paths), 0 = powf
  float f2 = 0;          // (float)(-2 * alpha * pow), computed in double as the CPU layers do
};
inline NormGeom norm_geom(int N, int C, int S, int size, double alpha, double pow, double min_div, bool blocked) {
  NormGeom g;
  g.N = N, g.C = C, g.S = S, g.size = size;
  g.a = (float)alpha, g.pow = (float)pow, g.minDiv = (float)min_div, g.blocked = blocked;
  g.pow_case = pow == 0.75 ? 1 : pow == 0.5 ? 2 : pow == 1.0 ? 3 : 0;
  g.f2 = (float)(-2.0 * alpha * pow);
  return g;
}
void rnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* denoms);
void rnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* denoms,
                 const float* dout, float* din);
void cmrnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* denoms);
void cmrnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* denoms,
                   const float* dout, float* din);
// cnorm: u = x - (clipped window mean of x), d = minDiv + a * sum over the window of u^2,
// y = x * d^-pow. `state` holds 2*N*C*S*S floats (d, then u), written by fprop.
void cnorm_fprop(CudaCtx& cx, const NormGeom& g, const float* x, float* y, float* state);
void cnorm_bprop(CudaCtx& cx, const NormGeom& g, const float* x, const float* y, const float* state,
                 const float* dout, float* din);

// ---- eltsum / eltmax (eltwise.cu): every input and out N x D ------------------------------
// eltsum: out = sum_i c_i in_i is scale_copy + axpy; din_i += c_i dout is axpy.
void eltmax_fprop(CudaCtx& cx, const std::vector<const float*>& ins, float* out, int64_t n);
// din += dout where in == out (ties all receive the gradient).
void eltmax_bprop(CudaCtx& cx, const float* in, const float* out, const float* dout, float* din, int64_t n);

// ---- concat (concat.cu): in_i N x D_i, out N x sum D_i -----------------------------------
// out[n, offset + j] = in[n, j]; bprop: din[n, j] += dout[n, offset + j].
void concat_fprop(CudaCtx& cx, const float* in, float* out, int N, int Din, int Dout, int offset);
void concat_bprop(CudaCtx& cx, const float* dout, float* din, int N, int Din, int Dout, int offset);

// ---- dropout / dropout2 (dropout.cu): x, y N x D flat, element k = n*D + j --------------
// Mask m_k = [uniform01(seed, stream, first + k) < keep] (core/rng.h, identical to the CPU);
// y = x * (m_k ? on : 0). bprop recomputes the same mask: din += dout * (m_k ? on : 0).
// (The CPU layer's stream: mix64(step ^ 0xD1B54A32D192ED03) ^ layer_id; first: the global
// index of element 0, PassCtx::case_offset * D, so data-parallel ranks draw the
// single-process mask.)
void dropout_fprop(CudaCtx& cx, const float* x, float* y, int64_t n, uint64_t seed, uint64_t stream, uint64_t first,
                   float keep, float on);
void dropout_bprop(CudaCtx& cx, const float* dout, float* din, int64_t n, uint64_t seed, uint64_t stream,
                   uint64_t first, float keep, float on);
// Testing / disabled passes are scale_copy (y = s*x) and axpy (din += s*dout).

// ---- local (local.cu): locally connected (unshared) filters, one input at a time --------
// Geometry as conv (ConvGeom above: groups, channel table, padding, stride), P = M*M
// modules, Kg = Cf*fs*fs. Weights W: (P*Kg) x F, row m*Kg + c*fs*fs + fy*fs + fx, column f
// (module slowest); filter f belongs to group g = f / (F/groups).
//   out[n, f, m] (= or +=) sum_{c, fy, fx} W[m*Kg + c*fs^2 + fy*fs + fx, f]
//                              * in[n, chan(g, c), my*stride - padding + fy, mx*stride - padding + fx]
// (pixels outside the image 0). The biases (F*P x 1, unshared) are conv_add_bias /
// conv_bias_grad with shared = false. Plain kernels, one thread per output element.
void local_fprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, float* out, bool accumulate);
// din += d out / d in (skipped when din is null); dW += d out / d W summed over cases
// (skipped when dW is null).
void local_bprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, const float* dout, float* din,
                 float* dW);

// ---- cmpool (cmpool.cu): cross-map max pooling, in N x (C*SS), out N x (O*SS) ----------
// out[n, o, p] = max over channels c in [start + o*stride, start + o*stride + size) clipped
// to [0, C) of in[n, c, p] (SS = pixels per map). Backward: din[n, c, p] += dout[n, o, p]
// for every output o whose window holds c and whose value equals in[n, c, p] (ties all).
struct CmPoolGeom {
  int N = 0, C = 0, SS = 0, O = 0, size = 1, start = 0, stride = 1;
};
void cmpool_fprop(CudaCtx& cx, const CmPoolGeom& g, const float* in, float* out);
void cmpool_bprop(CudaCtx& cx, const CmPoolGeom& g, const float* in, const float* out, const float* dout, float* din);

// ---- sum (sum.cu): sums of groups of `stride` adjacent channels -------------------------
// in N x (C*HW), out N x ((C/stride)*HW): out[n, c*HW + p] = sum_{k<stride} in[n, (c*stride + k)*HW + p];
// bprop din[n, (c*stride + k)*HW + p] += dout[n, c*HW + p].
void chansum_fprop(CudaCtx& cx, const float* in, float* out, int64_t N, int64_t Cout, int64_t HW, int stride);
void chansum_bprop(CudaCtx& cx, const float* dout, float* din, int64_t N, int64_t Cout, int64_t HW, int stride);

// ---- sfc (sfc.cu): split fully-connected, in N x K, W K x O, out N x (O*parts) -----------
// Part p: out[:, p*O .. p*O+O) (= or +=) in[:, p*Kp .. p*Kp+Kp) * W[p*Kp .. p*Kp+Kp, :],
// Kp = K/parts. The layer adds the bias with add_row_vector (and add_col_sums backward).
void sfc_fprop(CudaCtx& cx, const float* in, const float* W, float* out, int N, int K, int O, int parts,
               bool accumulate);
// Per part: din += dout_p W_p^T (din may be null); dW_p += in_p^T dout_p (dW may be null).
void sfc_bprop(CudaCtx& cx, const float* in, const float* W, const float* dout, float* din, float* dW, int N, int K,
               int O, int parts);

// ---- cost.crossent (cost_crossent.cu): labels t and probs p, both N x K ----------------
// sums[0] = -sum_n sum_k t * safelog(p) (safelog(x) = log x, or -50 for x <= 0, in double);
// sums[1] = sum_n (1 - [a class tying for max p has t > 0] / #ties). Synchronises.
void crossent_fprop(CudaCtx& cx, const float* labels, const float* probs, int N, int K, double sums[2]);
// dprobs -= coeff * t / max(p, 1e-38) where t != 0 (n = N*K elements).
void crossent_bprop(CudaCtx& cx, const float* labels, const float* probs, float* dprobs, int64_t n, float coeff);

// ---- cost.bce / cost.dce (cost_bce.cu): labels t and outputs y, both N x K ---------------
// sums[0] = -sum (posWeight * t * safelog(y) + (1 - t) * safelog(1 - y));
// sums[1] = number of wrong decisions [(y > 0.5) != t] (the layer divides by K);
// sums[2] = sum_n (1 - sum_k t * [y == max_k y] / #ties).
// per_class (null, or 3*K doubles): [3k] = sum_n [y > 0.5], [3k+1] = sum_n t,
// [3k+2] = sum_n t * [(y > 0.5) == t]. Synchronises.
void bce_fprop(CudaCtx& cx, const float* labels, const float* y, int N, int K, double pos_weight, double sums[3],
               double* per_class);
// dy -= coeff * (posWeight * t / max(y, 1e-38) - (1 - t) / max(1 - y, 1e-38)), n = N*K elements.
void bce_bprop(CudaCtx& cx, const float* labels, const float* y, float* dy, int64_t n, float coeff, float pos_weight);
// Fused with the logistic that made y = logistic(x): dx += coeff * ((1 - t) * y - posWeight * t * (1 - y)).
void bce_logistic_bprop(CudaCtx& cx, const float* labels, const float* y, float* dx, int64_t n, float coeff,
                        float pos_weight);

// ---- image operations (imgops.cu): href, crop, nailbed, blur, resize (and rscale), ----
// rgb2yuv, rgb2lab. Images are `planes` = N*C contiguous planes, [plane][y][x]: S x S in,
// T x T (or O x O) out, which is the NCHW row layout of every case.
// href: dst[r, i] (= or +=) src[r, S-1-i] for each of the `rows` = N*C*S image rows.
void href(CudaCtx& cx, const float* src, float* dst, int64_t rows, int S, bool add);
// crop: out[pl, y, x] = in[pl, sy + y, sx + x] (T x T window of S x S); bprop adds dout there.
void crop_fprop(CudaCtx& cx, const float* in, float* out, int64_t planes, int S, int T, int sy, int sx);
void crop_bprop(CudaCtx& cx, const float* dout, float* din, int64_t planes, int S, int T, int sy, int sx);
// nailbed: out[pl, oy, ox] = in[pl, start + oy*stride, start + ox*stride] (O x O); bprop adds back.
void nailbed_fprop(CudaCtx& cx, const float* in, float* out, int64_t planes, int S, int O, int start, int stride);
void nailbed_bprop(CudaCtx& cx, const float* dout, float* din, int64_t planes, int S, int O, int start, int stride);
// blur: separable filter f[0..fs) (fs <= 9), zero padding, r = fs/2. Forward: along x then y,
//   t[y, x] = sum_k f[k] in[y, x + k - r];  out[y, x] = sum_k f[k] t[y + k - r, x];
// transpose = true applies the adjoint (the layer passes the reversed filter): along y, then x.
// dst = (or += when add) the result. Uses cx.scratch for t (planes*S*S floats).
struct BlurFilter {
  int fs = 0;
  float f[9] = {};
};
void blur_apply(CudaCtx& cx, const BlurFilter& f, const float* src, float* dst, int64_t planes, int S, bool transpose,
                bool add);
// resize (bilinear, layers/imgops.h ResizePlan): device copies of the plan's tables, T entries
// each: lo, hi (ints), u (weight of lo along x), w (weight of hi along y). Forward:
//   c0 = u[px]*(in[lo[py], lo[px]] - in[lo[py], hi[px]]) + in[lo[py], hi[px]], c1 likewise on
//   row hi[py], out[py, px] = w[py]*(c1 - c0) + c0   (T x T from S x S)
// bprop: din += the transposed resampling (each target pixel hands its gradient to its four
// source neighbours; atomic adds, so the summation order varies from run to run).
struct ResizeTables {
  int S = 0, T = 0;
  const int* lo = nullptr;
  const int* hi = nullptr;
  const float* u = nullptr;
  const float* w = nullptr;
};
void resize_fprop(CudaCtx& cx, const ResizeTables& t, const float* in, float* out, int64_t planes);
void resize_bprop(CudaCtx& cx, const ResizeTables& t, const float* dout, float* din, int64_t planes);
// Colour transforms on N cases of 3 planes of P pixels (channel k of pixel p at k*P + p).
// rgb2yuv (any 3x3 M): y[k] = sum_j M[k][j] x[j]; bprop din[k] += sum_j M[j][k] g[j].
struct Color3 {
  float m[3][3] = {};
};
void color3_fprop(CudaCtx& cx, const Color3& M, const float* x, float* y, int64_t N, int64_t P);
void color3_bprop(CudaCtx& cx, const Color3& M, const float* dout, float* din, int64_t N, int64_t P);
// rgb2lab: t = xyz * rgb; f(t) = t^expo if t > thr, else slope*t + icept;
//   L = 116 f(t1) - 16 - off;  a = 500 (f(t0) - f(t1));  b = 200 (f(t1) - f(t2)).
// bprop: the exact derivative (f'(t) = expo t^(expo-1) above thr, slope below), added to din.
struct LabParams {
  Color3 xyz;
  float thr = 0, expo = 0, slope = 0, icept = 0, off = 0;
};
void rgb2lab_fprop(CudaCtx& cx, const LabParams& L, const float* x, float* y, int64_t N, int64_t P);
void rgb2lab_bprop(CudaCtx& cx, const LabParams& L, const float* x, const float* dout, float* din, int64_t N,
                   int64_t P);

// ---- SGD update (sgd.cu) ---------------------------------------------------------------
// inc = mom*inc - scale*grad - decay*w; w += inc; grad = 0 (n elements).
void sgd_update(CudaCtx& cx, float* w, float* inc, float* grad, int64_t n, float mom, float scale, float decay);
// Rescale each column of w (rows x cols) whose L2 norm exceeds wball (hard: every nonzero
// column) to norm wball.
void wball_constrain(CudaCtx& cx, float* w, int64_t rows, int64_t cols, float wball, bool hard);
// Weight-contrast normalisation of each column of w (rows x cols), as Net::update on the CPU.
void wc_norm(CudaCtx& cx, float* w, int64_t rows, int64_t cols, float wmin, float wmax);

}  // namespace cuda
}  // namespace ccn
