// ccn/native/net/net_cuda.cu: a Net's device mode (design: native/cuda/README-design.md).
//
// NetCuda owns everything the net keeps on the GPU: the CudaCtx (device, streams, cuBLAS,
// workspaces), one activation / gradient buffer per layer, the parameters (w, grad, inc;
// Param::dev points into them), and two slots of pinned host + device buffers per data
// matrix for the minibatch copy. Buffers are sized for the largest minibatch seen and
// reused every step. Activations keep the CPU layout: rows = cases, cols = C*H*W
// (row-major, one case per row).
//
// Neurons follow the CPU net (net.cpp): a layer with neuron= keeps its pre-activation in
// pre[i] only when the neuron cannot run in place (Net::in_place_: the layer's bprop does not
// read its output and f' follows from f(x)); otherwise the neuron overwrites act[i] and the
// backward pass hands act[i] in as the "pre-activation" the layer ignores. dCost/d(pre-
// activation) goes into one shared buffer, pre_grad, used by one layer at a time (all on
// the one compute stream).
//
// Minibatch copy: slot s is filled on the copy stream (host Mat -> pinned -> device) and
// the compute stream waits on the copy's event before the step that uses it. prefetch()
// fills the slot the current step does not use, so the copy overlaps the compute. Event
// `free[s]`, recorded on the compute stream after each pass that reads slot s, keeps the
// copy stream from overwriting a slot the GPU still reads; `copied[s]` keeps the host from
// overwriting pinned memory a copy still reads.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"
#include "layers/neuron.h"
#include "net/net.h"

namespace ccn {

namespace {
// CCN_CUDA_LAYER_TIMES=1 (read at each pass): wait for the GPU around every layer and add its
// wall time to fprop_seconds()/bprop_seconds(), for tools/bench_gpu.py's per-layer table. It
// removes the overlap between layers, so the step itself gets slower; off by default.
bool layer_timing() {
  const char* e = std::getenv("CCN_CUDA_LAYER_TIMES");
  return e && *e && std::strcmp(e, "0") != 0;
}
double wall_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
float neuron_arg(const NeuronSpec& n, size_t i, double dflt) { return (float)(i < n.args.size() ? n.args[i] : dflt); }
}  // namespace

struct Net::NetCuda {
  explicit NetCuda(int gpu) : cx(gpu) {
    for (int s = 0; s < 2; ++s) {
      CCN_CUDA_CHECK(cudaEventCreateWithFlags(&copied[s], cudaEventDisableTiming));
      CCN_CUDA_CHECK(cudaEventCreateWithFlags(&freed[s], cudaEventDisableTiming));
    }
  }
  ~NetCuda() {
    for (int s = 0; s < 2; ++s) {
      cudaEventDestroy(copied[s]);
      cudaEventDestroy(freed[s]);
    }
  }
  CudaCtx cx;  // declared first: destroyed last, after every buffer below
  std::vector<DeviceArray> act, pre, grad;  // per layer (pre: only where the neuron is not in place)
  DeviceArray pre_grad;                     // shared: dCost/d(pre-activation) of one layer at a time
  std::vector<DeviceArray> pw, pg, pi;                // per param: w, grad, inc
  std::vector<PinnedArray> pin[2];                    // per dataIdx, per slot
  std::vector<DeviceArray> ddata[2];
  std::vector<int64_t> dcols[2];                      // values per case staged, per dataIdx
  int dcases[2] = {0, 0};
  cudaEvent_t copied[2], freed[2];
  int cur = 0;              // slot of the current step
  bool prefetched = false;  // slot cur^1 holds a prefetched minibatch
  int cases = 0;            // cases of the current step
  mutable std::vector<Mat> host_act, host_grad;  // downloads for output()/output_grad()

  cudaStream_t stream() const { return (cudaStream_t)cx.stream; }
  cudaStream_t copy_stream() const { return (cudaStream_t)cx.copy_stream; }
  // Layer `in`'s output for the step in slot s on n cases: a data layer's is its minibatch on the device.
  DevMat act_of(int s, const Layer* in, int n) const {
    const DeviceArray& a = in->is_data() ? ddata[s][in->data_idx()] : act[in->id];
    return DevMat{a.data(), n, in->out.size()};
  }
};

static DevMat view(const DeviceArray& a, int64_t rows, int64_t cols) { return DevMat{a.data(), rows, cols}; }

void Net::to_device(int gpu) {
  if (cuda_) {
    if (cuda_->cx.device == gpu) return;
    to_host();
  }
  forward_done_ = false;  // the last pass's buffers stay behind: bprop needs a new fprop here
  std::string missing;
  for (const auto& l : layers_) {
    if (l->is_data()) continue;
    if (!l->has_cuda()) missing += cat(missing.empty() ? "" : ", ", l->name, " (type=", l->type, ")");
    if (l->has_neuron && cuda::neuron_code(l->neuron.type) < 0)
      missing += cat(missing.empty() ? "" : ", ", l->name, " (neuron=", l->neuron.type, ")");
  }
  if (!missing.empty())
    runtime_error("this net cannot run on the GPU yet: these layers have no CUDA implementation: ", missing,
                  ". Run it on the CPU.");
  auto nc = std::make_shared<NetCuda>(gpu);
  for (auto& p : params_) {
    const size_t n = (size_t)p->w.size();
    nc->pw.emplace_back(n);
    nc->pg.emplace_back(n);
    nc->pi.emplace_back(n);
  }
  size_t n = layers_.size();
  nc->act.resize(n);
  nc->pre.resize(n);
  nc->grad.resize(n);
  nc->host_act.resize(n);
  nc->host_grad.resize(n);
  cuda_ = nc;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = *params_[i];
    p.dev.w = nc->pw[i].data();
    p.dev.grad = nc->pg[i].data();
    p.dev.inc = nc->pi[i].data();
  }
  try {
    push_params();
    bool gemm = false;
    for (const auto& l : layers_) gemm = gemm || !l->weights.empty();
    if (gemm) nc->cx.cublas();  // fail now, not in the middle of a pass, when cuBLAS is missing
  } catch (...) {
    for (auto& p : params_) p->dev = Param::Dev{};
    cuda_.reset();
    throw;
  }
}

void Net::to_host() {
  if (!cuda_) return;
  pull_params();
  for (auto& p : params_) p->dev = Param::Dev{};
  cuda_.reset();
  forward_done_ = false;  // the last pass's buffers were on the device
}

int Net::device() const { return cuda_ ? cuda_->cx.device : -1; }
size_t Net::device_bytes() const {
  if (!cuda_) return 0;
  size_t b = cuda_->cx.bytes_allocated();
  auto add = [&](const std::vector<DeviceArray>& v) {
    for (const auto& a : v) b += a.size() * sizeof(float);
  };
  add(cuda_->act), add(cuda_->pre), add(cuda_->grad);
  b += cuda_->pre_grad.size() * sizeof(float);
  add(cuda_->pw), add(cuda_->pg), add(cuda_->pi), add(cuda_->ddata[0]), add(cuda_->ddata[1]);
  return b;
}

// Parameter copies go through the compute stream (cudaMemcpyAsync on cx.stream), so they
// are ordered after every kernel enqueued before them and before every kernel enqueued
// after them, whatever the per-thread default-stream settings; the host then waits for the
// stream, because the host Mats are pageable and must be complete (pull) or may be changed
// (push) once this returns. Only the matrices in `parts` travel.
namespace {
void copy_param(CudaCtx& cx, Param& p, int parts, bool to_host) {
  const size_t bytes = (size_t)p.w.size() * sizeof(float);
  if (!bytes) return;
  struct {
    int bit;
    Mat* host;
    float* dev;
  } parts3[3] = {{Net::kW, &p.w, p.dev.w}, {Net::kGrad, &p.grad, p.dev.grad}, {Net::kInc, &p.inc, p.dev.inc}};
  for (auto& q : parts3) {
    if (!(parts & q.bit)) continue;
    if (to_host)
      CCN_CUDA_CHECK(cudaMemcpyAsync(q.host->data(), q.dev, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)cx.stream));
    else
      CCN_CUDA_CHECK(cudaMemcpyAsync(q.dev, q.host->data(), bytes, cudaMemcpyHostToDevice, (cudaStream_t)cx.stream));
  }
}
}  // namespace

void Net::pull_params(const Param* only, int parts) {
  if (!cuda_) return;
  cuda_->cx.make_current();
  for (auto& pp : params_)
    if (!only || pp.get() == only) copy_param(cuda_->cx, *pp, parts, true);
  cuda_->cx.sync();
}

void Net::push_params(const Param* only, int parts) {
  if (!cuda_) return;
  cuda_->cx.make_current();
  for (auto& pp : params_)
    if (!only || pp.get() == only) copy_param(cuda_->cx, *pp, parts, false);
  cuda_->cx.sync();
}

void Net::synchronize() {
  if (!cuda_) return;
  cuda_->cx.make_current();
  cuda_->cx.sync();
  CCN_CUDA_CHECK(cudaStreamSynchronize(cuda_->copy_stream()));
}

void Net::prefetch(const std::vector<const Mat*>& data) {
  if (!cuda_) runtime_error("prefetch: the net is not on a GPU.");
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  const int s = nc.cur ^ 1;
  if (data.empty() || !data[0]) input_error("prefetch needs at least the data for dataIdx 0.");
  const int n = (int)data[0]->rows();
  for (size_t i = 0; i < data.size(); ++i)
    if (data[i] && data[i]->rows() != n)
      input_error("the minibatch's data matrices disagree on the number of cases: dataIdx 0 has ", n,
                  " but dataIdx ", i, " has ", data[i]->rows(), ".");
  for (const auto& l : layers_) {
    if (!l->is_data()) continue;
    int idx = l->data_idx();
    if (idx >= (int)data.size() || !data[idx])
      input_error("data layer '", l->name, "' reads dataIdx=", idx, " but the minibatch has only ", data.size(),
                  " data matri", data.size() == 1 ? "x" : "ces", ".");
    if (data[idx]->cols() != l->out.size())
      input_error("data layer '", l->name, "' expects ", l->out.size(), " values per case (", l->out.str(),
                  ") for dataIdx=", idx, " but the minibatch has ", data[idx]->cols(), ".");
  }
  // The pinned buffers of slot s must no longer be read by an earlier copy.
  CCN_CUDA_CHECK(cudaEventSynchronize(nc.copied[s]));
  // The device buffers of slot s must no longer be read by an earlier pass.
  CCN_CUDA_CHECK(cudaStreamWaitEvent(nc.copy_stream(), nc.freed[s], 0));
  // Grow only: the vectors hold the other slot's buffers too, which the step now running may
  // still read (device) or a copy may still read (pinned); shrinking would free them.
  for (int d = 0; d < 2; ++d) {
    if (nc.pin[d].size() < data.size()) nc.pin[d].resize(data.size());
    if (nc.ddata[d].size() < data.size()) nc.ddata[d].resize(data.size());
    if (nc.dcols[d].size() < data.size()) nc.dcols[d].resize(data.size(), -1);
  }
  for (size_t i = data.size(); i < nc.dcols[s].size(); ++i) nc.dcols[s][i] = -1;  // not in this minibatch
  for (size_t i = 0; i < data.size(); ++i) {
    if (!data[i]) {
      nc.dcols[s][i] = -1;
      continue;
    }
    const size_t count = (size_t)data[i]->size();
    nc.pin[s][i].resize(count);
    if (count > nc.ddata[s][i].size()) {  // growing frees the old buffer: wait for its readers
      CCN_CUDA_CHECK(cudaStreamSynchronize(nc.stream()));
      CCN_CUDA_CHECK(cudaStreamSynchronize(nc.copy_stream()));
      nc.ddata[s][i].resize(count);
    }
    copy_bytes(nc.pin[s][i].data(), data[i]->data(), count * sizeof(float));
    CCN_CUDA_CHECK(cudaMemcpyAsync(nc.ddata[s][i].data(), nc.pin[s][i].data(), count * sizeof(float),
                                   cudaMemcpyHostToDevice, nc.copy_stream()));
    nc.dcols[s][i] = data[i]->cols();
  }
  nc.dcases[s] = n;
  CCN_CUDA_CHECK(cudaEventRecord(nc.copied[s], nc.copy_stream()));
  nc.prefetched = true;
}

void Net::fprop_cuda(const std::vector<const Mat*>& data, bool train) {
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  if (!data.empty()) {
    prefetch(data);  // validates, then copies into the other slot
  } else if (!nc.prefetched) {
    input_error("fprop without data needs a minibatch given to prefetch() first.");
  }
  nc.cur ^= 1;
  nc.prefetched = false;
  const int s = nc.cur;
  const int n = nc.dcases[s];
  cases_ = n;
  nc.cases = n;
  CCN_CUDA_CHECK(cudaStreamWaitEvent(nc.stream(), nc.copied[s], 0));
  // Buffers for n cases (grow-only).
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer* l = layers_[i].get();
    if (l->is_data()) continue;
    const size_t sz = (size_t)n * l->out.size();
    const bool keep_pre = device_keeps_pre((int)i);
    if (sz > nc.act[i].size() || (keep_pre && sz > nc.pre[i].size())) {
      CCN_CUDA_CHECK(cudaStreamSynchronize(nc.stream()));
      nc.act[i].resize(sz);
      if (keep_pre) nc.pre[i].resize(sz);
    }
  }
  PassCtx ctx;
  ctx.train = train;
  ctx.seed = seed;
  ctx.step = step;
  ctx.case_offset = case_offset;
  const bool timing = layer_timing();
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer* l = layers_[i].get();
    if (l->is_data()) continue;
    ctx.layer_id = (int)i;
    std::vector<DevMat> ins;
    for (Layer* in : l->inputs) ins.push_back(nc.act_of(s, in, n));
    if (const Layer* logits = fused_logits((int)i)) ins.push_back(nc.act_of(s, logits, n));  // (net.h fused_producer_)
    const bool keep_pre = device_keeps_pre((int)i);
    DevMat dst = view(keep_pre ? nc.pre[i] : nc.act[i], n, l->out.size());
    double t0 = 0;
    if (timing) nc.cx.sync(), t0 = wall_s();
    l->fprop_cuda(ins, dst, nc.cx, ctx);
    if (l->has_neuron) {  // in place when dst is act[i] (elementwise, so safe)
      const NeuronSpec& f = l->neuron;
      cuda::neuron_fprop(nc.cx, cuda::neuron_code(f.type), neuron_arg(f, 0, 1.0),
                         neuron_arg(f, 1, f.type == "linear" ? 0.0 : 1.0), dst.p, nc.act[i].data(), dst.size());
    }
    if (timing) nc.cx.sync(), fprop_s_[i] += wall_s() - t0;
  }
  CCN_CUDA_CHECK(cudaEventRecord(nc.freed[s], nc.stream()));
}

void Net::bprop_cuda(const std::map<std::string, const Mat*>& seeds) {
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  const int n = cases_;
  const int s = nc.cur;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!needs_grad_[i]) continue;
    Layer* l = layers_[i].get();
    const size_t sz = (size_t)n * l->out.size();
    if (sz > nc.grad[i].size()) {
      CCN_CUDA_CHECK(cudaStreamSynchronize(nc.stream()));
      nc.grad[i].resize(sz);
    }
    if (sz) CCN_CUDA_CHECK(cudaMemsetAsync(nc.grad[i].data(), 0, sz * sizeof(float), nc.stream()));
  }
  for (const auto& kv : seeds) {
    int i = index_of(kv.first);
    if (i < 0) input_error("bprop: no layer named '", kv.first, "'.");
    const Mat& m = *kv.second;
    if (m.rows() != n || m.cols() != layers_[i]->out.size())
      input_error("bprop: the gradient for layer '", kv.first, "' must be ", n, "x", layers_[i]->out.size(), ", got ",
                  m.rows(), "x", m.cols(), ".");
    nc.grad[i].resize((size_t)m.size());
    // Pageable host memory: this copy is synchronous for the host, which is what we want.
    CCN_CUDA_CHECK(cudaMemcpyAsync(nc.grad[i].data(), m.data(), (size_t)m.size() * sizeof(float),
                                   cudaMemcpyHostToDevice, nc.stream()));
  }
  PassCtx ctx;
  ctx.train = true;
  ctx.seed = seed;
  ctx.step = step;
  ctx.case_offset = case_offset;
  const bool timing = layer_timing();
  for (int i = (int)layers_.size() - 1; i >= 0; --i) {
    Layer* l = layers_[i].get();
    if (l->is_data()) continue;
    if (l->is_cost() && !seeds.empty()) continue;
    bool any_in = false;
    std::vector<DevMat> din;
    std::vector<DevMat> ins;
    for (Layer* in : l->inputs) {
      ins.push_back(nc.act_of(s, in, n));
      const bool need = needs_grad_[in->id] && l->passes_gradient();  // sized and zeroed above
      din.push_back(need ? view(nc.grad[in->id], n, in->out.size()) : DevMat{});
      any_in = any_in || need;
    }
    if (fused_producer_[i] >= 0) din[1] = DevMat{};  // left to the producer's turn, as on the CPU
    const int fused_cost = seeds.empty() ? fused_cost_[i] : -1;
    if (!any_in && !learns(l)) continue;
    note_grads_written(*l);
    ctx.layer_id = i;
    const int64_t osz = l->out.size();
    double t0 = 0;
    if (timing) nc.cx.sync(), t0 = wall_s();
    Layer* cost = fused_cost >= 0 ? layers_[fused_cost].get() : nullptr;  // (net.h fused_cost_)
    if (cost && !l->has_neuron) {
      if (din[0].p) cost->fused_input_bprop_cuda(nc.act_of(s, cost->inputs[0], n), view(nc.act[i], n, osz), din[0], nc.cx);
    } else if (l->is_cost()) {
      l->bprop_cuda(ins, DevMat{}, DevMat{}, din, nc.cx, ctx);
    } else if (l->has_neuron) {
      const size_t sz = (size_t)n * osz;
      if (sz > nc.pre_grad.size()) {  // the shared buffer: earlier layers' kernels may still read it
        CCN_CUDA_CHECK(cudaStreamSynchronize(nc.stream()));
        nc.pre_grad.resize(sz);
      }
      // In place, act[i] stands in for the pre-activation (f' from f(x); the layer ignores
      // its `out` argument then), as on the CPU.
      const DeviceArray& pre = in_place_[i] ? nc.act[i] : nc.pre[i];
      if (cost) {  // neuron=logistic feeding cost.bce/dce: the cost gives dCost/d(pre-activation)
        CCN_CUDA_CHECK(cudaMemsetAsync(nc.pre_grad.data(), 0, sz * sizeof(float), nc.stream()));
        cost->fused_input_bprop_cuda(nc.act_of(s, cost->inputs[0], n), view(nc.act[i], n, osz),
                                     view(nc.pre_grad, n, osz), nc.cx);
      } else {
        const NeuronSpec& f = l->neuron;
        cuda::neuron_bprop(nc.cx, cuda::neuron_code(f.type), neuron_arg(f, 0, 1.0), neuron_arg(f, 1, 1.0),
                           pre.data(), nc.act[i].data(), nc.grad[i].data(), nc.pre_grad.data(), (int64_t)sz, false);
      }
      l->bprop_cuda(ins, view(pre, n, osz), view(nc.pre_grad, n, osz), din, nc.cx, ctx);
    } else {
      l->bprop_cuda(ins, view(nc.act[i], n, osz), view(nc.grad[i], n, osz), din, nc.cx, ctx);
    }
    if (timing) nc.cx.sync(), bprop_s_[i] += wall_s() - t0;
  }
  CCN_CUDA_CHECK(cudaEventRecord(nc.freed[s], nc.stream()));
}

void Net::zero_param_grads_cuda() {
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  for (auto& p : params_) {
    if (p->w.size())
      CCN_CUDA_CHECK(cudaMemsetAsync(p->dev.grad, 0, (size_t)p->w.size() * sizeof(float), nc.stream()));
    p->passes = 0;
  }
}

void Net::update_cuda(double progress, int minibatch) {
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  for (auto& pp : params_) {
    Param& p = *pp;
    Param::Step st;
    if (!p.begin_update(progress, minibatch, st)) {
      if (st.frozen && p.grad_written && p.w.size())
        CCN_CUDA_CHECK(cudaMemsetAsync(p.dev.grad, 0, (size_t)p.w.size() * sizeof(float), nc.stream()));
      if (st.frozen) p.grad_written = false;
      continue;
    }
    cuda::sgd_update(nc.cx, p.dev.w, p.dev.inc, p.dev.grad, p.w.size(), (float)p.mom, st.scale, st.decay);
    if (st.wcn_max > 0) cuda::wc_norm(nc.cx, p.dev.w, p.w.rows(), p.w.cols(), st.wcn_min, st.wcn_max);
    if (st.wball_block > 0)  // per block of rows (see Param::begin_update)
      for (int64_t b0 = 0; b0 < p.w.rows(); b0 += st.wball_block)
        cuda::wball_constrain(nc.cx, p.dev.w + b0 * p.w.cols(), st.wball_block, p.w.cols(), (float)p.wball,
                              st.wball_hard);
  }
}

const Mat& Net::output_cuda(int i, bool grad) const {
  NetCuda& nc = *cuda_;
  nc.cx.make_current();
  nc.cx.sync();
  Layer* l = layers_[i].get();
  const int n = cases_;
  Mat& h = grad ? nc.host_grad[i] : nc.host_act[i];
  const int64_t cols = l->out.size();
  const float* src = nullptr;
  if (grad) {
    src = nc.grad[i].size() >= (size_t)n * cols ? nc.grad[i].data() : nullptr;
  } else if (l->is_data()) {
    const auto& dd = nc.ddata[nc.cur];
    const int idx = l->data_idx();
    src = idx < (int)dd.size() && nc.dcols[nc.cur][idx] >= 0 ? dd[idx].data() : nullptr;
  } else {
    src = nc.act[i].size() >= (size_t)n * cols ? nc.act[i].data() : nullptr;
  }
  h.resize(src ? n : 0, cols);
  if (src && h.size()) {
    CCN_CUDA_CHECK(cudaMemcpyAsync(h.data(), src, (size_t)h.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                   nc.stream()));
    nc.cx.sync();
  }
  return h;
}

}  // namespace ccn
