// ccn/native/cuda/testing_ops.cu: the kernel launchers exposed one by one to the tests
// (tests/cuda/), so each CUDA kernel is checked against a NumPy reference or the CPU layer
// even where the layer class that will call it is not written yet.
#include <functional>

#include "core/rng.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/fastdiv.cuh"
#include "cuda/kernels.h"
#include "cuda/testing_ops.h"

namespace ccn::cuda {

namespace {
struct Args {
  CudaCtx& cx;
  std::map<std::string, DeviceArray>& dev;
  std::map<std::string, Mat>& host;
  const std::map<std::string, double>& sc;
  float* a(const std::string& k) const {
    auto it = dev.find(k);
    if (it == dev.end()) input_error("CUDA test op: missing array '", k, "'.");
    return it->second.data();
  }
  float* opt(const std::string& k) const {
    auto it = dev.find(k);
    return it == dev.end() ? nullptr : it->second.data();
  }
  int64_t n(const std::string& k) const { return host.at(k).size(); }
  double s(const std::string& k) const {
    auto it = sc.find(k);
    if (it == sc.end()) input_error("CUDA test op: missing scalar '", k, "'.");
    return it->second;
  }
  double s(const std::string& k, double d) const {
    auto it = sc.find(k);
    return it == sc.end() ? d : it->second;
  }
  int i(const std::string& k) const { return (int)s(k); }
  // Host array k -> its device copy, on the op's stream (used by ops that compute a result
  // on the host and hand it back through the device copy, which run_test_op downloads).
  void upload(const std::string& k) const {
    const Mat& h = host.at(k);
    if (h.size())
      CCN_CUDA_CHECK(cudaMemcpyAsync(a(k), h.data(), (size_t)h.size() * sizeof(float), cudaMemcpyHostToDevice,
                                     (cudaStream_t)cx.stream));
  }
};

CmPoolGeom cmpool_geom(Args& a) {
  CmPoolGeom g;
  g.N = a.i("N"), g.C = a.i("C"), g.SS = a.i("SS"), g.O = a.i("O");
  g.size = a.i("size"), g.start = a.i("start"), g.stride = a.i("stride");
  return g;
}

// The channel table, when given, goes into a device array owned by the op's array map
// (freed with the others, also when the op throws).
ConvGeom conv_geom(Args& a) {
  ConvGeom g;
  g.N = a.i("N"), g.C = a.i("C"), g.S = a.i("S"), g.F = a.i("F"), g.groups = a.i("groups"), g.Cf = a.i("Cf");
  g.fs = a.i("fs"), g.stride = a.i("stride"), g.padding = a.i("padding"), g.M = a.i("M");
  if (a.host.count("vchan")) {
    const Mat& v = a.host.at("vchan");
    std::vector<int> iv(v.size());
    for (int64_t k = 0; k < v.size(); ++k) iv[k] = (int)v.data()[k];
    static_assert(sizeof(int) == sizeof(float), "the table lives in a float array");
    auto& d = a.dev["(vchan as int)"];
    d.resize(iv.size());
    // On the op's stream, and waited for: `iv` is a local that dies when this returns.
    CCN_CUDA_CHECK(cudaMemcpyAsync(d.data(), iv.data(), iv.size() * sizeof(int), cudaMemcpyHostToDevice,
                                   (cudaStream_t)a.cx.stream));
    a.cx.sync();
    g.vchan = reinterpret_cast<const int*>(d.data());
  }
  return g;
}
PoolGeom pool_geom(const Args& a) {
  PoolGeom g;
  g.N = a.i("N"), g.C = a.i("C"), g.S = a.i("S"), g.O = a.i("O"), g.sizeX = a.i("sizeX"), g.start = a.i("start");
  g.stride = a.i("stride"), g.max = a.i("max") != 0, g.abs = a.s("abs", 0) != 0;
  return g;
}
NormGeom norm_geom(const Args& a) {
  return cuda::norm_geom(a.i("N"), a.i("C"), a.i("S"), a.i("size"), a.s("a"), a.s("pow"), a.s("minDiv"),
                         a.i("blocked") != 0);
}
uint64_t dropout_stream(const Args& a) {  // as the CPU dropout layer derives it
  return mix64((uint64_t)a.s("step") ^ 0xD1B54A32D192ED03ULL) ^ (uint64_t)a.s("layer_id");
}

using Op = std::function<void(Args&)>;
const std::map<std::string, Op>& ops() {
  static const std::map<std::string, Op> t = {
      {"neuron_fprop", [](Args& a) { neuron_fprop(a.cx, a.i("code"), (float)a.s("a"), (float)a.s("b"), a.a("x"), a.a("y"), a.n("x")); }},
      {"neuron_bprop", [](Args& a) { neuron_bprop(a.cx, a.i("code"), (float)a.s("a"), (float)a.s("b"), a.a("x"), a.a("y"), a.a("dout"), a.a("din"), a.n("x"), a.i("add") != 0); }},
      {"softmax_fprop", [](Args& a) { softmax_fprop(a.cx, a.a("x"), a.a("y"), (int)a.host.at("x").rows(), (int)a.host.at("x").cols()); }},
      {"softmax_bprop", [](Args& a) { softmax_bprop(a.cx, a.a("y"), a.a("dout"), a.a("din"), (int)a.host.at("y").rows(), (int)a.host.at("y").cols()); }},
      {"logreg_fprop", [](Args& a) {
         double s[3];
         const float* logits = a.host.count("logits") ? a.a("logits") : nullptr;
         int64_t bad = logreg_fprop(a.cx, a.a("labels"), a.a("probs"), logits, (int)a.host.at("probs").rows(), (int)a.host.at("probs").cols(), a.i("topk"), s);
         Mat& out = a.host.at("sums");  // written back directly (host side)
         for (int k = 0; k < 3; ++k) out.data()[k] = (float)s[k];
         out.data()[3] = (float)bad;
         a.upload("sums");
       }},
      {"logreg_bprop", [](Args& a) { logreg_bprop(a.cx, a.a("labels"), a.a("probs"), a.a("dprobs"), (int)a.host.at("probs").rows(), (int)a.host.at("probs").cols(), a.s("coeff")); }},
      {"logreg_softmax_bprop", [](Args& a) { logreg_softmax_bprop(a.cx, a.a("labels"), a.a("probs"), a.a("dx"), (int)a.host.at("probs").rows(), (int)a.host.at("probs").cols(), a.s("coeff")); }},
      {"bce_bprop", [](Args& a) { bce_bprop(a.cx, a.a("labels"), a.a("y"), a.a("dy"), a.n("y"), (float)a.s("coeff"), (float)a.s("pos_weight")); }},
      {"sum2", [](Args& a) {
         double s = sum2_fprop(a.cx, a.a("x"), a.n("x"));
         sum2_bprop(a.cx, a.a("x"), a.a("din"), a.n("x"), (float)a.s("coeff"));
         a.host.at("sum").data()[0] = (float)s;
         a.upload("sum");
       }},
      {"fc_fprop", [](Args& a) {
         const Mat& x = a.host.at("x");
         fc_fprop(a.cx, a.a("x"), a.a("W"), a.a("y"), (int)x.rows(), (int)x.cols(), (int)a.host.at("W").cols(), a.i("accumulate") != 0);
       }},
      {"fc_bprop", [](Args& a) {
         const Mat& x = a.host.at("x");
         fc_bprop(a.cx, a.a("x"), a.a("W"), a.a("dout"), a.opt("din"), a.opt("dW"), (int)x.rows(), (int)x.cols(), (int)a.host.at("W").cols());
       }},
      {"add_row_vector", [](Args& a) { add_row_vector(a.cx, a.a("y"), a.a("b"), a.host.at("y").rows(), a.host.at("y").cols()); }},
      {"add_col_sums", [](Args& a) { add_col_sums(a.cx, a.a("g"), a.a("db"), a.host.at("g").rows(), a.host.at("g").cols()); }},
      {"conv_fprop", [](Args& a) {
         ConvGeom g = conv_geom(a);
         conv_fprop(a.cx, g, a.a("x"), a.a("W"), a.a("y"), a.i("accumulate") != 0);
       }},
      {"conv_unfold", [](Args& a) {  // col: groups*K x (nc*MM), cases n0 .. n0+nc-1
         conv_unfold(a.cx, conv_geom(a), a.a("x"), a.i("n0"), a.i("nc"), a.a("col"));
       }},
      {"conv_bprop", [](Args& a) {
         ConvGeom g = conv_geom(a);
         conv_bprop(a.cx, g, a.a("x"), a.a("W"), a.a("dout"), a.opt("din"), a.opt("dW"));
       }},
      {"conv_add_bias", [](Args& a) { conv_add_bias(a.cx, a.a("y"), a.a("b"), a.i("N"), a.i("F"), a.i("MM"), a.i("shared") != 0); }},
      {"conv_bias_grad", [](Args& a) { conv_bias_grad(a.cx, a.a("dout"), a.a("db"), a.i("N"), a.i("F"), a.i("MM"), a.i("shared") != 0); }},
      {"pool_fprop", [](Args& a) { pool_fprop(a.cx, pool_geom(a), a.a("x"), a.a("y")); }},
      {"pool_bprop", [](Args& a) { pool_bprop(a.cx, pool_geom(a), a.a("x"), a.a("y"), a.a("dout"), a.a("din")); }},
      {"rnorm_fprop", [](Args& a) { rnorm_fprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state")); }},
      {"rnorm_bprop", [](Args& a) { rnorm_bprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state"), a.a("dout"), a.a("din")); }},
      {"cmrnorm_fprop", [](Args& a) { cmrnorm_fprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state")); }},
      {"cmrnorm_bprop", [](Args& a) { cmrnorm_bprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state"), a.a("dout"), a.a("din")); }},
      {"cnorm_fprop", [](Args& a) { cnorm_fprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state")); }},
      {"cnorm_bprop", [](Args& a) { cnorm_bprop(a.cx, norm_geom(a), a.a("x"), a.a("y"), a.a("state"), a.a("dout"), a.a("din")); }},
      {"eltsum", [](Args& a) {  // y = sum c_i x_i (x0.., coeffs c0..), din_i += c_i dout
         int k = a.i("inputs");
         for (int i = 0; i < k; ++i) {
           float c = (float)a.s(cat("c", i));
           if (i == 0) scale_copy(a.cx, a.a("x0"), a.a("y"), a.n("y"), c);
           else axpy(a.cx, a.a(cat("x", i)), a.a("y"), a.n("y"), c);
           axpy(a.cx, a.a("dout"), a.a(cat("din", i)), a.n("y"), c);
         }
       }},
      {"cmpool_fprop", [](Args& a) { cmpool_fprop(a.cx, cmpool_geom(a), a.a("x"), a.a("y")); }},
      {"cmpool_bprop", [](Args& a) { cmpool_bprop(a.cx, cmpool_geom(a), a.a("x"), a.a("y"), a.a("dout"), a.a("din")); }},
      {"eltmax_fprop", [](Args& a) {
         std::vector<const float*> ins;
         for (int i = 0; i < a.i("inputs"); ++i) ins.push_back(a.a(cat("x", i)));
         eltmax_fprop(a.cx, ins, a.a("y"), a.n("y"));
       }},
      {"eltmax_bprop", [](Args& a) { eltmax_bprop(a.cx, a.a("x"), a.a("y"), a.a("dout"), a.a("din"), a.n("y")); }},
      {"concat_fprop", [](Args& a) { concat_fprop(a.cx, a.a("x"), a.a("y"), (int)a.host.at("x").rows(), (int)a.host.at("x").cols(), (int)a.host.at("y").cols(), a.i("offset")); }},
      {"concat_bprop", [](Args& a) { concat_bprop(a.cx, a.a("dout"), a.a("din"), (int)a.host.at("din").rows(), (int)a.host.at("din").cols(), (int)a.host.at("dout").cols(), a.i("offset")); }},
      {"dropout_fprop", [](Args& a) { dropout_fprop(a.cx, a.a("x"), a.a("y"), a.n("x"), (uint64_t)a.s("seed"), dropout_stream(a), (uint64_t)a.s("first", 0), (float)a.s("keep"), (float)a.s("on")); }},
      {"dropout_bprop", [](Args& a) { dropout_bprop(a.cx, a.a("dout"), a.a("din"), a.n("dout"), (uint64_t)a.s("seed"), dropout_stream(a), (uint64_t)a.s("first", 0), (float)a.s("keep"), (float)a.s("on")); }},
      {"sgd", [](Args& a) {
         sgd_update(a.cx, a.a("w"), a.a("inc"), a.a("grad"), a.n("w"), (float)a.s("mom"), (float)a.s("scale"), (float)a.s("decay"));
         if (a.s("wcn_max", 0) > 0)
           wc_norm(a.cx, a.a("w"), a.host.at("w").rows(), a.host.at("w").cols(), (float)a.s("wcn_min", 0),
                   (float)a.s("wcn_max"));
         if (a.s("wball", 0) > 0)
           wball_constrain(a.cx, a.a("w"), a.host.at("w").rows(), a.host.at("w").cols(), (float)a.s("wball"),
                           a.s("hard", 0) != 0);
       }},
  };
  return t;
}

// Ops that need no GPU: host-side rules of the launchers, so tests can check them on
// machines without one (CI). Each reads scalars and writes its results into host arrays.
using HostOp = std::function<void(std::map<std::string, Mat>&, const std::map<std::string, double>&)>;
const std::map<std::string, HostOp>& host_ops() {
  static const std::map<std::string, HostOp> t = {
      // conv_fprop / conv_bprop's chunk of cases (conv_chunk_cases): scalars = the ConvGeom
      // fields, bprop (0/1), din (0/1); array "chunk" (1 element) receives the result.
      {"conv_chunk", [](std::map<std::string, Mat>& arr, const std::map<std::string, double>& sc) {
         auto get = [&](const char* k) {
           auto it = sc.find(k);
           if (it == sc.end()) input_error("CUDA test op: missing scalar '", k, "'.");
           return (int)it->second;
         };
         ConvGeom g;
         g.N = get("N"), g.C = get("C"), g.S = get("S"), g.F = get("F"), g.groups = get("groups"), g.Cf = get("Cf");
         g.fs = get("fs"), g.stride = get("stride"), g.padding = get("padding"), g.M = get("M");
         arr["chunk"] = Mat(1, 1);
         arr["chunk"].at(0, 0) = (float)conv_chunk_cases(g, get("bprop") != 0, get("din") != 0);
       }},
      // FastDiv (fastdiv.cuh) against '/' and '%' for every n in [lo, hi] (scalars d, lo, hi;
      // mul_delta, default 0, adds to the multiplier so a test can see a wrong one caught);
      // array "bad" (1 element) receives the number of n where they differ.
      {"fastdiv", [](std::map<std::string, Mat>& arr, const std::map<std::string, double>& sc) {
         auto get = [&](const char* k, double dflt) { auto it = sc.find(k); return it == sc.end() ? dflt : it->second; };
         const int64_t d = (int64_t)get("d", 1), lo = (int64_t)get("lo", 0), hi = (int64_t)get("hi", 0);
         if (d < 1 || d >= (1ll << 31) || lo < 0 || hi >= (1ll << 31) || hi - lo > (1ll << 26))
           input_error("CUDA test op fastdiv: needs 1 <= d < 2^31, 0 <= lo <= hi < 2^31, hi - lo <= 2^26.");
         FastDiv f((uint32_t)d);
         f.mul += (uint32_t)(int64_t)get("mul_delta", 0);
         int64_t bad = 0;
         for (int64_t n = lo; n <= hi; ++n) {
           int q, r;
           f.divmod((int)n, q, r);
           bad += (q != n / d || r != n % d);
         }
         arr["bad"] = Mat(1, 1);
         arr["bad"].at(0, 0) = (float)bad;
       }},
  };
  return t;
}
}  // namespace

std::vector<std::string> test_ops() {
  std::vector<std::string> out;
  for (const auto& kv : ops()) out.push_back(kv.first);
  for (const auto& kv : host_ops()) out.push_back(kv.first);
  return out;
}

void run_test_op(const std::string& op, std::map<std::string, Mat>& arrays, const std::map<std::string, double>& scalars,
                 int gpu) {
  auto h = host_ops().find(op);
  if (h != host_ops().end()) return h->second(arrays, scalars);
  auto it = ops().find(op);
  if (it == ops().end()) input_error("unknown CUDA test op '", op, "'.");
  CudaCtx cx(gpu);
  cudaStream_t st = (cudaStream_t)cx.stream;
  // Every copy goes on the op's stream (a non-blocking stream does not wait for the legacy
  // default stream, so a plain cudaMemcpy could still be landing while the op's kernels read
  // the array), then one synchronisation before the op runs and one before the host reads.
  std::map<std::string, DeviceArray> dev;
  for (auto& kv : arrays) {
    DeviceArray d((size_t)kv.second.size());
    if (kv.second.size())
      CCN_CUDA_CHECK(cudaMemcpyAsync(d.data(), kv.second.data(), (size_t)kv.second.size() * sizeof(float),
                                     cudaMemcpyHostToDevice, st));
    dev.emplace(kv.first, std::move(d));
  }
  cx.sync();
  Args a{cx, dev, arrays, scalars};
  it->second(a);
  cx.sync();
  // Timing (tools/bench_gpu.py): with scalar repeat=R > 0, run the op R more times between
  // CUDA events and return the mean milliseconds per run in array "ms" (1 element).
  const int repeat = (int)a.s("repeat", 0);
  float ms = 0;
  if (repeat > 0) {
    cudaEvent_t e0, e1;
    CCN_CUDA_CHECK(cudaEventCreate(&e0));
    CCN_CUDA_CHECK(cudaEventCreate(&e1));
    CCN_CUDA_CHECK(cudaEventRecord(e0, st));
    for (int r = 0; r < repeat; ++r) it->second(a);
    CCN_CUDA_CHECK(cudaEventRecord(e1, st));
    CCN_CUDA_CHECK(cudaEventSynchronize(e1));
    CCN_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CCN_CUDA_CHECK(cudaEventDestroy(e0));
    CCN_CUDA_CHECK(cudaEventDestroy(e1));
  }
  for (auto& kv : arrays)
    if (kv.second.size())
      CCN_CUDA_CHECK(cudaMemcpyAsync(kv.second.data(), dev.at(kv.first).data(),
                                     (size_t)kv.second.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
  cx.sync();
  if (repeat > 0) {
    arrays["ms"] = Mat(1, 1);
    arrays["ms"].at(0, 0) = ms / repeat;
  }
}

}  // namespace ccn::cuda
