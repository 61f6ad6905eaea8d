// ccn/native/layers/neuron.cpp: neuron functions and the `neuron` layer type.
//
// Definitions (cuda-convnet2 neurons.cuh): ident x; logistic 1/(1+e^-x); tanh[a,b]
// a*tanh(b*x); relu max(0,x); brelu[a] min(a,max(0,x)); softrelu log(1+e^x), x for x>4;
// abs |x|; square x^2; sqrt sqrt(x); linear[a,b] a*x+b; log[a] log(a+x);
// drelu[a] x - a*tanh(x/a). Derivatives as the original's gradient operators, including
// their choices at the edges: abs gives -1 at x = 0 (AbsGradientOperator: x > 0 ? 1 : -1);
// softrelu's is taken from the output y, 1 where y > 4 and else 1 - e^-y (= sigmoid(x)), so
// it is 1 from x ~ 3.98 on (SoftReluGradientOperator). nrelu parses in the original but was never implemented there;
// ccn rejects it with a clear message. Element-wise, any layout.
#include "layers/neuron.h"

#include "core/omp.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/simd.h"
#include "layers/layer.h"
#ifdef CCN_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace ccn {

namespace {
struct NeuronInfo {
  int nargs;
  const char* form;
};
const std::map<std::string, NeuronInfo>& neuron_table() {
  static const std::map<std::string, NeuronInfo> t = {
      {"ident", {0, "ident"}},       {"logistic", {0, "logistic"}}, {"tanh", {2, "tanh[a,b]"}},
      {"relu", {0, "relu"}},         {"brelu", {1, "brelu[a]"}},    {"softrelu", {0, "softrelu"}},
      {"abs", {0, "abs"}},           {"square", {0, "square"}},     {"sqrt", {0, "sqrt"}},
      {"linear", {2, "linear[a,b]"}}, {"log", {1, "log[a]"}},       {"drelu", {1, "drelu[a]"}},
  };
  return t;
}
}  // namespace

void validate_neuron(LayerSpec& spec, const std::string& key, const NeuronSpec& n) {
  if (n.type == "nrelu")
    spec.fail(key, "the 'nrelu' neuron parses in cuda-convnet but was never implemented there, so ccn does not "
                   "offer it either; use relu.");
  const auto& t = neuron_table();
  auto it = t.find(n.type);
  if (it == t.end()) {
    std::vector<std::string> names;
    std::string list;
    for (const auto& kv : t) {
      names.push_back(kv.first);
      list += (list.empty() ? "" : ", ") + std::string(kv.second.form);
    }
    std::string m = did_you_mean(n.type, names);
    spec.fail(key, cat("unknown neuron '", n.type, "'.", m.empty() ? "" : cat(" Did you mean '", m, "'?"),
                       " Neurons: ", list, "."));
  }
  // tanh and linear default to [1,1]/[1,0] when written bare, as people often do.
  if (!n.args.empty() && (int)n.args.size() != it->second.nargs)
    spec.fail(key, cat("neuron '", n.type, "' takes ", it->second.nargs, " parameter", it->second.nargs == 1 ? "" : "s",
                       " (", it->second.form, "), found ", n.args.size(), "."));
  if (n.args.empty() && it->second.nargs > 0 && n.type != "tanh" && n.type != "linear")
    spec.fail(key, cat("neuron '", n.type, "' needs its parameter", it->second.nargs == 1 ? "" : "s", ": write ",
                       it->second.form, "."));
  if ((n.type == "drelu" || n.type == "brelu") && n.args[0] <= 0)
    spec.fail(key, cat("the parameter of ", n.type, " must be positive, found ", n.args[0], "."));
}

static double arg(const NeuronSpec& n, size_t i, double dflt) { return i < n.args.size() ? n.args[i] : dflt; }

// f(begin, count) over [0, sz) in one contiguous piece per OpenMP thread (one piece when small);
// for the element-wise kernels of core/simd.h, whose results do not depend on the split.
template <class F>
static void split_range(int64_t sz, F f) {
  if (sz <= 32768) {
    if (sz > 0) f(0, sz);
    return;
  }
#pragma omp parallel
  {
    const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = ((sz + T - 1) / T + 15) / 16 * 16;
    const int64_t a = std::min(sz, t * per), b = std::min(sz, a + per);
    if (a < b) f(a, b - a);
  }
}

void neuron_fprop(const NeuronSpec& n, const Mat& in_m, Mat& out_m) {
  out_m.resize(in_m.rows(), in_m.cols());
  const float* x = in_m.data();
  float* y = out_m.data();
  const int64_t sz = in_m.size();
  const std::string& t = n.type;
  const float a = (float)arg(n, 0, 1.0), b = (float)arg(n, 1, t == "linear" ? 0.0 : 1.0);
#define CCN_EW(EXPR)                                         \
  _Pragma("omp parallel for simd schedule(static) if (sz > 32768)") \
  for (int64_t k = 0; k < sz; ++k) { const float v = x[k]; y[k] = (EXPR); }
  if (t == "ident") { CCN_EW(v) }
  else if (t == "logistic") { CCN_EW(1.f / (1.f + std::exp(-v))) }
  else if (t == "tanh") { CCN_EW(a * std::tanh(b * v)) }
  else if (t == "relu") { split_range(sz, [&](int64_t b, int64_t m) { simd::k().relu_fwd(x + b, y + b, m); }); }
  else if (t == "brelu") { CCN_EW(std::min(a, std::max(0.f, v))) }
  else if (t == "softrelu") { CCN_EW(v > 4.f ? v : std::log1p(std::exp(v))) }
  else if (t == "abs") { CCN_EW(std::fabs(v)) }
  else if (t == "square") { CCN_EW(v * v) }
  else if (t == "sqrt") { CCN_EW(std::sqrt(v)) }
  else if (t == "linear") { CCN_EW(a * v + b) }
  else if (t == "log") { CCN_EW(std::log(a + v)) }
  else if (t == "drelu") { CCN_EW(v - a * std::tanh(v / a)) }
  else runtime_error("unknown neuron '", t, "'");
#undef CCN_EW
}

bool neuron_grad_from_output(const NeuronSpec& n) {
  // relu: in > 0 exactly when out > 0; brelu: 0 < in < a exactly when 0 < out < a (bprop
  // below tests `v`, which then is the output). The others use out or constants only.
  static const char* ok[] = {"ident", "relu", "brelu", "logistic", "tanh", "linear", "sqrt", "softrelu"};
  for (const char* t : ok)
    if (n.type == t) return true;
  return false;
}

void neuron_bprop(const NeuronSpec& n, const Mat& in_m, const Mat& out_m, const Mat& dout_m, Mat& din_m, bool add) {
  din_m.resize(in_m.rows(), in_m.cols());
  const float* x = in_m.data();
  const float* y = out_m.data();
  const float* g = dout_m.data();
  float* d = din_m.data();
  const int64_t sz = in_m.size();
  const std::string& t = n.type;
  const float a = (float)arg(n, 0, 1.0), b = (float)arg(n, 1, 1.0);
  // One pass either way. Overwriting stores 0.f + g*f', bitwise what zeroing and then adding
  // gave (the + 0.f turns a -0 product into +0, as 0 + -0 did).
#define CCN_EW(EXPR)                                                                            \
  if (add) {                                                                                    \
    _Pragma("omp parallel for simd schedule(static) if (sz > 32768)")                           \
    for (int64_t k = 0; k < sz; ++k) { const float v = x[k], o = y[k]; (void)v; (void)o;        \
      d[k] += g[k] * (EXPR); }                                                                  \
  } else {                                                                                      \
    _Pragma("omp parallel for simd schedule(static) if (sz > 32768)")                           \
    for (int64_t k = 0; k < sz; ++k) { const float v = x[k], o = y[k]; (void)v; (void)o;        \
      d[k] = 0.f + g[k] * (EXPR); }                                                             \
  }
  if (t == "ident") { CCN_EW(1.f) }
  else if (t == "logistic") { CCN_EW(o * (1.f - o)) }
  else if (t == "tanh") { CCN_EW(a * b * (1.f - (o / a) * (o / a))) }
  else if (t == "relu") { split_range(sz, [&](int64_t b, int64_t m) { simd::k().relu_bwd(x + b, g + b, d + b, m, !add); }); }
  else if (t == "brelu") { CCN_EW((v > 0.f && v < a) ? 1.f : 0.f) }
  else if (t == "softrelu") { CCN_EW(o > 4.f ? 1.f : -std::expm1(-o)) }
  else if (t == "abs") { CCN_EW(v > 0.f ? 1.f : -1.f) }
  else if (t == "square") { CCN_EW(2.f * v) }
  else if (t == "sqrt") { CCN_EW(0.5f / o) }
  else if (t == "linear") { CCN_EW(a) }
  else if (t == "log") { CCN_EW(1.f / (a + v)) }
  else if (t == "drelu") { CCN_EW(std::tanh(v / a) * std::tanh(v / a)) }
  else runtime_error("unknown neuron '", t, "'");
#undef CCN_EW
}

// type=neuron: one input, same shape, `neuron=` is the function.
class NeuronLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (ctx.in.size() != 1) spec.fail("inputs", cat("a neuron layer takes exactly one input, found ", ctx.in.size(), "."));
    fn_ = spec.get_neuron("neuron");
    validate_neuron(spec, "neuron", fn_);
    out = ctx.in[0];
  }
  void fprop(const std::vector<const Mat*>& in, Mat& o, const PassCtx&) override { neuron_fprop(fn_, *in[0], o); }
  void bprop(const std::vector<const Mat*>& in, const Mat& o, const Mat& dout, const std::vector<Mat*>& din,
             const PassCtx& ctx) override {
    if (din[0]) neuron_bprop(fn_, *in[0], o, dout, *din[0], !ctx.assign(0));
  }
  bool bprop_assigns_din() const override { return true; }
  double flops_per_case() const override { return (double)out.size(); }
  const NeuronSpec* neuron_fn() const override { return &fn_; }

#ifdef CCN_WITH_CUDA
  bool has_cuda() const override { return cuda::neuron_code(fn_.type) >= 0; }  // native/cuda/neuron.cu
  void fprop_cuda(const std::vector<DevMat>& in, DevMat o, CudaCtx& cx, const PassCtx&) override {
    cuda::neuron_fprop(cx, cuda::neuron_code(fn_.type), (float)arg(fn_, 0, 1.0),
                       (float)arg(fn_, 1, fn_.type == "linear" ? 0.0 : 1.0), in[0].p, o.p, o.size());
  }
  void bprop_cuda(const std::vector<DevMat>& in, DevMat o, DevMat dout, const std::vector<DevMat>& din, CudaCtx& cx,
                  const PassCtx&) override {
    if (din[0])
      cuda::neuron_bprop(cx, cuda::neuron_code(fn_.type), (float)arg(fn_, 0, 1.0), (float)arg(fn_, 1, 1.0), in[0].p,
                         o.p, dout.p, din[0].p, o.size(), true);
  }
#endif

 private:
  NeuronSpec fn_;
};
CCN_REGISTER_LAYER("neuron", NeuronLayer);

}  // namespace ccn
