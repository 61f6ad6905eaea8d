// ccn/native/net/net.cpp: building, ordering and running a net (see net.h).
#include "net/net.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <cmath>
#include <functional>
#include <set>

#include "layers/neuron.h"

namespace ccn {

Net::Net(const std::string& def_text, const std::string& def_path, const std::string& params_text,
         const std::string& params_path, const std::map<int, Shape>& data_dims, bool allow_unused) {
  def_file_ = parse_config_text(def_text, def_path);
  have_params_ = !params_path.empty();
  if (have_params_) par_file_ = parse_config_text(params_text, params_path);
  build(data_dims, allow_unused);
}

Layer* Net::find_layer(const std::string& name) const {
  for (const auto& l : layers_)
    if (l->name == name) return l.get();
  return nullptr;
}

Param* Net::find_param(const std::string& name) const {
  for (const auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

std::vector<std::string> Net::layer_names() const {
  std::vector<std::string> out;
  for (const auto& l : layers_) out.push_back(l->name);
  return out;
}

int Net::index_of(const std::string& name) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i]->name == name) return (int)i;
  return -1;
}

Param* Net::make_param(const std::string& layer, const std::string& name, int64_t rows, int64_t cols, bool is_bias) {
  // One matrix is capped at 2^31-1 values (8 GiB): kernels index within a matrix with int,
  // and a larger one is a typo (outputs=40960000) rather than a net.
  if (rows * cols > (int64_t)0x7fffffff)
    config_error(def_file_.path, ": layer '", layer, "': its parameter matrix ", name, " would be ", rows, " x ", cols,
                 " = ", rows * cols, " values (", (double)rows * cols * 4 / (1ull << 30),
                 " GiB); ccn allows at most 2147483647 values per matrix. Check the layer's size keys.");
  auto p = std::make_unique<Param>();
  p->name = name;
  p->layer = layer;
  p->is_bias = is_bias;
  try {
    p->w.resize_zeroed(rows, cols);  // (untouched pages take no memory until written: see tensor.h)
    p->grad.resize_zeroed(rows, cols);
    p->inc.resize_zeroed(rows, cols);
  } catch (const Error&) {  // out of (virtual) memory: say which matrix, and how big the net's are
    runtime_error(def_file_.path, ": out of memory making the parameter matrix ", name, " of layer '", layer, "' (",
                  rows, " x ", cols, ", 3 copies of ", (double)rows * cols * 4 / (1 << 20),
                  " MiB: weights, increments, gradients). Check the layer's size keys, or use a machine with more "
                  "memory.");
  }
  params_.push_back(std::move(p));
  return params_.back().get();
}

void Net::build(const std::map<int, Shape>& data_dims, bool allow_unused) {
  const std::string& dpath = def_file_.path;
  if (def_file_.sections.empty())
    config_error(dpath, ": no layer sections found; a layer-definition file has sections like [data] with type=data.");

  // Section -> type and inputs, with unknown types caught up front.
  std::vector<std::string> types;
  for (const auto& kv : layer_registry()) types.push_back(kv.first);
  std::map<std::string, const Section*> by_name;
  std::map<std::string, std::vector<std::string>> inputs_of;
  for (const auto& s : def_file_.sections) {
    by_name[s.name] = &s;
    if (s.name == "DEFAULT")
      config_error(dpath, ":", s.line, ": ConfigParser's [DEFAULT] section (keys shared by every section) is not "
                   "supported; write the keys in each layer's section.");
    const Entry* t = s.find("type");
    if (!t) config_error(dpath, ":", s.line, ": in section [", s.name, "]: missing required key 'type'.");
    if (!layer_registry().count(t->value)) {
      std::string m = did_you_mean(t->value, types);
      std::string list;
      for (const auto& ty : types) list += (list.empty() ? "" : ", ") + ty;
      config_error(dpath, ":", t->line, ": in section [", s.name, "], key 'type': unknown layer type '", t->value, "'.",
                   m.empty() ? "" : cat(" Did you mean '", m, "'?"), " Known types: ", list, ".");
    }
    std::vector<std::string> ins;
    if (t->value != "data" && !s.find("inputs"))
      config_error(dpath, ":", s.line, ": in section [", s.name, "]: missing required key 'inputs' (the layers this one "
                   "reads, e.g. inputs=data; every layer but type=data has it).");
    if (const Entry* e = s.find("inputs")) {
      for (const auto& n : split(e->value, ',')) {
        if (n.empty())
          config_error(dpath, ":", e->line, ": in section [", s.name, "], key 'inputs': empty layer name in '", e->value, "'.");
        ins.push_back(n);
      }
    }
    inputs_of[s.name] = ins;
  }
  std::vector<std::string> names;
  for (const auto& s : def_file_.sections) names.push_back(s.name);
  for (const auto& s : def_file_.sections) {
    for (const auto& in : inputs_of[s.name]) {
      if (!by_name.count(in)) {
        std::string m = did_you_mean(in, names);
        config_error(dpath, ":", s.find("inputs")->line, ": in section [", s.name, "], key 'inputs': there is no layer '", in,
                     "'.", m.empty() ? "" : cat(" Did you mean '", m, "'?"));
      }
      if (in == s.name)
        config_error(dpath, ":", s.find("inputs")->line, ": in section [", s.name, "], key 'inputs': a layer cannot be its own input.");
    }
  }
  // A layer that feeds nothing is a mistake in a net with cost layers (cuda-convnet2's
  // parse_layers: "Layer 'X' of type 'Y' is unused"; only cost layers are exempt, data layers
  // are not). A net without any cost layer cannot be trained; ccn builds such nets for features
  // and for backward passes from given output gradients, so its ends are allowed there.
  {
    bool any_cost = false;
    for (const auto& s : def_file_.sections) any_cost = any_cost || s.find("type")->value.rfind("cost.", 0) == 0;
    for (const auto& s : def_file_.sections) {
      const std::string& type = s.find("type")->value;
      if (allow_unused || !any_cost || type.rfind("cost.", 0) == 0) continue;
      bool used = false;
      for (const auto& kv : inputs_of) used = used || std::count(kv.second.begin(), kv.second.end(), s.name) > 0;
      if (used) continue;
      std::string by_source;  // layers that name it in weightSource only
      for (const auto& o : def_file_.sections)
        if (const Entry* e = o.find("weightSource"))
          for (auto r : split(e->value, ','))
            if (strip(r.substr(0, r.find('['))) == s.name && o.name != s.name && by_source.find("'" + o.name + "'") == std::string::npos)
              by_source += (by_source.empty() ? "'" : ", '") + o.name + "'";
      config_error(dpath, ":", s.line, ": layer '", s.name, "' (type=", type, ") is unused: no layer has it in inputs=, so "
                   "its output reaches no cost layer", by_source.empty() ? std::string() : cat(" (weightSource in ", by_source,
                   " shares its weights but does not use its output)"), ". Add it to the inputs of a layer or remove it; "
                   "cuda-convnet2 rejects such a net too.");
    }
  }
  if (have_params_) {
    for (const auto& ps : par_file_.sections)
      if (!by_name.count(ps.name)) {
        std::string m = did_you_mean(ps.name, names);
        config_error(par_file_.path, ":", ps.line, ": section [", ps.name, "] names no layer of ", dpath, ".",
                     m.empty() ? "" : cat(" Did you mean '", m, "'?"));
      }
  }

  // Depth-first topological order, stable in file order; report a cycle by its members.
  std::map<std::string, int> state;  // 0 new, 1 on stack, 2 done
  std::vector<std::string> order, stack;
  bool with_sources = false;  // second pass: weightSource edges included
  std::function<void(const std::string&)> visit = [&](const std::string& n) {
    if (state[n] == 2) return;
    if (state[n] == 1) {
      auto it = std::find(stack.begin(), stack.end(), n);
      std::string cyc;
      for (; it != stack.end(); ++it) cyc += *it + " -> ";
      if (with_sources)
        config_error(dpath, ": the layers form a cycle once weightSource is counted: ", cyc, n,
                     ". A layer that shares weights through weightSource must come after the layer it names, "
                     "so neither may depend on the other.");
      config_error(dpath, ": the layers form a cycle: ", cyc, n, ". Layer inputs must form a directed acyclic graph.");
    }
    state[n] = 1;
    stack.push_back(n);
    for (const auto& in : inputs_of[n]) visit(in);
    stack.pop_back();
    state[n] = 2;
    order.push_back(n);
  };
  for (const auto& s : def_file_.sections) visit(s.name);

  // Weight sources must be set up before their users: add them as ordering edges.
  // (A weightSource names a layer; its reference may carry an [index].)
  {
    std::map<std::string, std::vector<std::string>> extra;
    for (const auto& s : def_file_.sections)
      if (const Entry* e = s.find("weightSource"))
        for (auto r : split(e->value, ',')) {
          size_t lb = r.find('[');
          if (lb != std::string::npos) r = strip(r.substr(0, lb));
          if (!r.empty() && by_name.count(r) && r != s.name) extra[s.name].push_back(r);
        }
    if (!extra.empty()) {
      for (auto& kv : extra)
        for (auto& r : kv.second) inputs_of[kv.first].push_back(r);
      state.clear();
      order.clear();
      with_sources = true;
      for (const auto& s : def_file_.sections) visit(s.name);
      for (auto& kv : extra)
        for (size_t i = 0; i < kv.second.size(); ++i) inputs_of[kv.first].pop_back();
    }
  }

  for (const auto& n : order) {
    const Section* sec = by_name[n];
    const Section* psec = have_params_ ? par_file_.find(n) : nullptr;
    LayerSpec spec(&def_file_, sec, have_params_ ? &par_file_ : nullptr, psec);
    auto layer = layer_registry().at(spec.type())();
    layer->name = n;
    layer->type = spec.type();
    layer->id = (int)layers_.size();
    SetupCtx ctx;
    ctx.net = this;
    ctx.layer = layer.get();
    ctx.data_dims = &data_dims;
    for (const auto& in : inputs_of[n]) {
      Layer* il = find_layer(in);
      CCN_CHECK(il != nullptr);
      layer->inputs.push_back(il);
      ctx.in.push_back(il->out);
      ctx.in_names.push_back(in);
    }
    spec.allow("inputs");
    // gpu= (cuda-convnet2): device indices for model/data parallelism.
    if (spec.has("gpu")) {
      std::set<long> seen;
      for (const auto& g : split(spec.get_str("gpu"), ',')) {
        char* end = nullptr;
        long v = std::strtol(g.c_str(), &end, 10);
        if (g.empty() || *end || v < 0 || v > 1023)
          spec.fail("gpu", cat("expected a comma list of device indices such as 0 or 0,1; found '", spec.get_str("gpu"), "'."));
        // cuda-convnet2 (layer.py): "all replicas must run on different GPUs"
        if (!seen.insert(v).second)
          spec.fail("gpu", cat("device ", v, " is listed twice in '", spec.get_str("gpu"), "'; each copy of a data-parallel "
                               "layer needs a GPU of its own, so list each index once, e.g. 0,1."));
        gpus_needed_ = std::max(gpus_needed_, (int)v + 1);
      }
    }
    layer->setup(spec, ctx);
    // cuda-convnet2 reads neuron= on cost layers and drops it (CostParser): a no-op here too.
    if (layer->is_cost()) spec.allow("neuron");
    if (!layer->is_data() && !layer->is_cost() && layer->type != "neuron") {
      layer->neuron = spec.get_neuron("neuron", std::string("ident"));
      validate_neuron(spec, "neuron", layer->neuron);
      layer->has_neuron = layer->neuron.type != "ident";
    }
    spec.finish();
    if (!layer->is_data() && !layer->is_cost() && layer->out.size() <= 0)
      spec.fail_layer(cat("its output would be empty (", layer->out.str(), ")."));
    layers_.push_back(std::move(layer));
  }
  size_t n = layers_.size();
  acts_.resize(n);
  pre_.resize(n);
  grads_.resize(n);
  in_place_.resize(n);
  fused_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Layer* l = layers_[i].get();
    fused_[i] = l->has_neuron && l->fuses_neuron();
    in_place_[i] = !fused_[i] && l->has_neuron && !l->bprop_reads_output() && neuron_grad_from_output(l->neuron);
  }
  fused_producer_.assign(n, -1);
  fused_cost_.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const Layer* l = layers_[i].get();
    if (!l->is_cost() || l->inputs.size() != 2) continue;
    const Layer* p = l->inputs[1];
    if (l->inputs[0] == p || fused_[p->id] || !l->fuses_with(*p)) continue;
    int consumers = 0;  // the original fuses only a producer whose one consumer is the cost layer
    for (const auto& o : layers_) consumers += (int)std::count(o->inputs.begin(), o->inputs.end(), p);
    if (consumers != 1) continue;
    fused_producer_[i] = p->id;
    fused_cost_[p->id] = (int)i;
  }
  reset_layer_times();
  compute_needs_grad();
}

bool Net::grad_zero_eager_default() {
  static const bool eager = [] {
    const char* e = std::getenv("CCN_GRAD_ZERO");
    return e && std::string(e) == "eager";
  }();
  return eager;
}

void Net::reset_layer_times() {
  fprop_s_.assign(layers_.size(), 0.0);
  bprop_s_.assign(layers_.size(), 0.0);
}

namespace {
// Layer times are wall-clock seconds, or with CCN_LAYER_CLOCK=thread (read once) the calling
// thread's CPU time: with one thread, A/B comparisons on a loaded machine then count only
// this process's work.
double now_s() {
  static const bool thread_clock = [] {
    const char* e = std::getenv("CCN_LAYER_CLOCK");
    return e && std::string(e) == "thread";
  }();
  if (thread_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void Net::reload_params(const std::string& params_text, const std::string& params_path) {
  ConfigFile pf = parse_config_text(params_text, params_path);
  for (const auto& ps : pf.sections)
    if (!find_layer(ps.name)) {
      std::string m = did_you_mean(ps.name, layer_names());
      config_error(params_path, ":", ps.line, ": section [", ps.name, "] names no layer of this net.",
                   m.empty() ? "" : cat(" Did you mean '", m, "'?"));
    }
  par_file_ = std::move(pf);
  have_params_ = true;
  for (auto& l : layers_) {
    const Section* sec = def_file_.find(l->name);
    LayerSpec spec(&def_file_, sec, &par_file_, par_file_.find(l->name));
    l->reload_params(spec);
  }
  compute_needs_grad();  // a learning rate may have become 0 or stopped being 0 (set_skip_frozen)
}

bool Net::learns(const Layer* l) const {
  if (!skip_frozen_) return !l->weights.empty() || l->biases != nullptr;
  for (const Param* p : l->weights)
    if (p->eps.base > 0) return true;
  return l->biases && l->biases->eps.base > 0;
}

void Net::compute_needs_grad() {
  needs_grad_.assign(layers_.size(), false);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer* l = layers_[i].get();
    bool need = (l->is_data() && data_grads_) || learns(l);
    for (Layer* in : l->inputs) need = need || needs_grad_[in->id];
    needs_grad_[i] = need;
  }
}

void Net::fprop(const std::vector<const Mat*>& data, bool train) {
  // A forward pass that stops part way (a bad minibatch) leaves the layers' buffers of mixed
  // sizes: no backward pass may read them until a forward pass has gone through.
  forward_done_ = false;
  if (cuda_) {
    fprop_cuda(data, train);
    forward_done_ = true;
    return;
  }
  fprop_cpu(data, train);
  forward_done_ = true;
}

void Net::fprop_cpu(const std::vector<const Mat*>& data, bool train) {
  if (data.empty() || !data[0]) input_error("fprop needs at least the data for dataIdx 0.");
  int n = (int)data[0]->rows();
  for (size_t i = 0; i < data.size(); ++i)
    if (data[i] && data[i]->rows() != n)
      input_error("the minibatch's data matrices disagree on the number of cases: dataIdx 0 has ", n,
                  " but dataIdx ", i, " has ", data[i]->rows(), ".");
  cases_ = n;
  PassCtx ctx;
  ctx.train = train;
  ctx.seed = seed;
  ctx.step = step;
  ctx.case_offset = case_offset;
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer* l = layers_[i].get();
    ctx.layer_id = (int)i;
    const double t0 = now_s();
    if (l->is_data()) {
      int idx = l->data_idx();
      if (idx >= (int)data.size() || !data[idx])
        input_error("data layer '", l->name, "' reads dataIdx=", idx, " but the minibatch has only ", data.size(),
                    " data matri", data.size() == 1 ? "x" : "ces", ".");
      if (data[idx]->cols() != l->out.size())
        input_error("data layer '", l->name, "' expects ", l->out.size(), " values per case (", l->out.str(),
                    ") for dataIdx=", idx, " but the minibatch has ", data[idx]->cols(), ".");
      acts_[i].copy_from(*data[idx]);  // into the layer's own buffer, reused from step to step
      fprop_s_[i] += now_s() - t0;
      continue;
    }
    const std::vector<const Mat*> ins = fprop_inputs((int)i);
    const bool keep_pre = keeps_pre((int)i);
    Mat& dst = keep_pre ? pre_[i] : acts_[i];
    dst.resize(n, l->out.size());
    l->fprop(ins, dst, ctx);
    if (fused_[i]) {
      // the layer applied its neuron itself
    } else if (keep_pre) {
      acts_[i].resize(n, l->out.size());
      neuron_fprop(l->neuron, pre_[i], acts_[i]);
    } else if (l->has_neuron) {
      neuron_fprop(l->neuron, acts_[i], acts_[i]);
    }
    fprop_s_[i] += now_s() - t0;
  }
}

std::vector<const Mat*> Net::fprop_inputs(int i) {
  std::vector<const Mat*> ins;
  for (Layer* in : layers_[i]->inputs) ins.push_back(&acts_[in->id]);
  if (const Layer* logits = fused_logits(i)) ins.push_back(&acts_[logits->id]);
  return ins;
}

void Net::bprop(const std::map<std::string, const Mat*>& seeds) {
  if (!forward_done_)
    input_error("backward needs a forward pass first (a net just built or moved to another device, or whose last "
                "forward pass failed, has no activations to go back through).");
  if (cuda_) return bprop_cuda(seeds);
  // Lazy zeroing: a gradient buffer is not zeroed up front. written[j] records whether some
  // layer has already stored dCost/d(output j) in this pass; the first writer of grads_[j]
  // assigns instead of adding when it supports that (Layer::bprop_assigns_din) and takes j as
  // one input only, otherwise grads_[j] is zeroed just before it. The sum each gradient
  // element receives is the same, in the same order, as with zeroing first: 0 + t1 + t2 ...;
  // assigning layers write 0.f + t1 so that even the sign of a zero result is unchanged.
  // Eager zeroing (set_grad_zero_eager, default CCN_GRAD_ZERO=eager) zeroes every buffer
  // first, as before, so every layer adds: for tests of the layers' adding branch.
  const bool eager = grad_zero_eager_;
  const int n = cases_;
  const size_t L = layers_.size();
  std::vector<char> written(L, 0);
  for (size_t i = 0; i < L; ++i)
    if (needs_grad_[i]) {
      grads_[i].resize(n, layers_[i]->out.size());
      if (eager) grads_[i].zero(), written[i] = 1;
    }
  for (const auto& kv : seeds) {
    int i = index_of(kv.first);
    if (i < 0) input_error("bprop: no layer named '", kv.first, "'.");
    const Mat& s = *kv.second;
    if (s.rows() != n || s.cols() != layers_[i]->out.size())
      input_error("bprop: the gradient for layer '", kv.first, "' must be ", n, "x", layers_[i]->out.size(), ", got ",
                  s.rows(), "x", s.cols(), ".");
    grads_[i].resize(n, layers_[i]->out.size());
    grads_[i].copy_from(s);
    written[i] = 1;
  }
  PassCtx ctx;
  ctx.train = true;
  ctx.seed = seed;
  ctx.step = step;
  ctx.case_offset = case_offset;
  Mat empty;
  for (int i = (int)L - 1; i >= 0; --i) {
    Layer* l = layers_[i].get();
    if (l->is_data()) continue;
    if (l->is_cost() && !seeds.empty()) continue;
    bool any_in = false;
    std::vector<Mat*> din;
    std::vector<const Mat*> ins;
    // from the costs, a fused producer's turn computes its input gradient through its cost layer
    const int fused_cost = seeds.empty() ? fused_cost_[i] : -1;
    for (Layer* in : l->inputs) {
      ins.push_back(&acts_[in->id]);
      din.push_back(needs_grad_[in->id] && l->passes_gradient() ? &grads_[in->id] : nullptr);
      any_in = any_in || din.back();
    }
    if (fused_producer_[i] >= 0) din[1] = nullptr;  // left to the producer's turn (fused_cost_)
    if (!any_in && !learns(l)) continue;
    note_grads_written(*l);
    ctx.layer_id = i;
    const double t0 = now_s();
    if (!l->is_cost() && !written[i] && fused_cost < 0) {  // no consumer wrote dCost/d(this output): it is 0
      grads_[i].zero();
      written[i] = 1;
    }
    // a fused producer without neuron= writes dCost/d(its first input) through its cost layer
    const bool fused_writes = fused_cost >= 0 && !l->has_neuron;
    const bool can_assign = fused_writes || l->bprop_assigns_din();
    ctx.din_assign.assign(din.size(), false);
    for (size_t k = 0; k < din.size(); ++k) {
      if (!din[k]) continue;
      const int j = l->inputs[k]->id;
      if (written[j]) continue;
      const bool twice = std::count(l->inputs.begin(), l->inputs.end(), l->inputs[k]) > 1;
      if (can_assign && !twice && (!fused_writes || k == 0)) ctx.din_assign[k] = true;
      else grads_[j].zero();
      written[j] = 1;
    }
    Layer* cost = fused_cost >= 0 ? layers_[fused_cost].get() : nullptr;  // (net.h fused_cost_)
    if (cost && l->has_neuron) {
      // neuron=logistic on this layer: the cost layer gives dCost/d(pre-activation)
      pre_grad_.resize(n, l->out.size());
      cost->fused_input_bprop(acts_[cost->inputs[0]->id], acts_[i], pre_grad_, true);
      l->bprop(ins, in_place_[i] ? acts_[i] : pre_[i], pre_grad_, din, ctx);
    } else if (cost) {
      if (din[0]) cost->fused_input_bprop(acts_[cost->inputs[0]->id], acts_[i], *din[0], ctx.din_assign[0]);
    } else if (l->is_cost()) {
      l->bprop(ins, acts_[i], empty, din, ctx);
    } else if (l->has_neuron && !fused_[i]) {
      // In place, acts_ stands in for the pre-activation (see in_place_); the layer ignores
      // its `out` argument then.
      const Mat& pre = in_place_[i] ? acts_[i] : pre_[i];
      pre_grad_.resize(n, l->out.size());
      neuron_bprop(l->neuron, pre, acts_[i], grads_[i], pre_grad_, false);
      l->bprop(ins, pre, pre_grad_, din, ctx);
    } else {
      l->bprop(ins, acts_[i], grads_[i], din, ctx);
    }
    bprop_s_[i] += now_s() - t0;
  }
  for (size_t i = 0; i < L; ++i)  // gradients nobody wrote (unused outputs, data layers) are 0
    if (needs_grad_[i] && !written[i]) grads_[i].zero();
}

void Net::zero_param_grads() {
  if (cuda_) return zero_param_grads_cuda();
  for (auto& p : params_) {
    p->grad.zero();
    p->passes = 0;
  }
}

void Net::update(double progress, int minibatch) {
  if (minibatch <= 0) input_error("update: the minibatch size must be positive, got ", minibatch, ".");
  if (cuda_) return update_cuda(progress, minibatch);
  for (auto& pp : params_) {
    Param& p = *pp;
    Param::Step st;
    if (!p.begin_update(progress, minibatch, st)) {
      if (st.frozen && p.grad_written) p.grad.zero(), p.grad_written = false;
      continue;
    }
    const float scale = st.scale, decay = st.decay, mom = (float)p.mom;
    float* w = p.w.data();
    float* inc = p.inc.data();
    float* g = p.grad.data();
    const int64_t sz = p.w.size();
#pragma omp parallel for schedule(static) if (sz > 65536)
    for (int64_t k = 0; k < sz; ++k) {
      inc[k] = mom * inc[k] - scale * g[k] - decay * w[k];
      w[k] += inc[k];
      g[k] = 0.f;
    }
    if (st.wcn_max > 0) {  // weight-contrast normalisation of each column (Param::wc_norm_min/max)
      const int64_t rows = p.w.rows(), cols = p.w.cols();
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
      for (int64_t c = 0; c < cols; ++c) {
        double sum = 0, ss = 0;
        for (int64_t r = 0; r < rows; ++r) sum += w[r * cols + c];
        const double mean = sum / (double)rows;
        for (int64_t r = 0; r < rows; ++r) ss += (w[r * cols + c] - mean) * (w[r * cols + c] - mean);
        const double s = std::sqrt(ss) / (double)rows;
        const double f = s < st.wcn_min ? st.wcn_min / s : s > st.wcn_max ? st.wcn_max / s : 1.0;
        if (f != 1.0 && std::isfinite(f))  // (a constant filter, s = 0, stays as it is)
          for (int64_t r = 0; r < rows; ++r) w[r * cols + c] *= (float)f;
      }
    }
    if (st.wball_block > 0) {  // constrain the norm of each column within each block of rows
      const int64_t rows = p.w.rows(), cols = p.w.cols(), blk = st.wball_block;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
      for (int64_t b0 = 0; b0 < rows; b0 += blk) {
        std::vector<double> norm2(cols, 0.0);
        for (int64_t r = b0; r < b0 + blk; ++r)
          for (int64_t c = 0; c < cols; ++c) norm2[c] += (double)w[r * cols + c] * w[r * cols + c];
        for (int64_t c = 0; c < cols; ++c) {
          double nrm = std::sqrt(norm2[c]);
          if (nrm > p.wball || (st.wball_hard && nrm > 0)) {  // (an all-zero column stays 0)
            float f = (float)(p.wball / nrm);
            for (int64_t r = b0; r < b0 + blk; ++r) w[r * cols + c] *= f;
          }
        }
      }
    }
  }
}

std::vector<CostReport> Net::costs() const {
  std::vector<CostReport> out;
  for (const auto& l : layers_)
    if (l->is_cost()) out.push_back(CostReport{l->name, l->cost_names(), l->cost_values(), l->coeff()});
  return out;
}

std::string Net::first_nonfinite_layer() const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Mat& a = cuda_ ? output_cuda((int)i, false) : acts_[i];
    const float* p = a.data();
    for (int64_t k = 0; k < a.size(); ++k)
      if (!std::isfinite(p[k])) return layers_[i]->name;
    if (layers_[i]->is_cost())
      for (double v : layers_[i]->cost_values())
        if (!std::isfinite(v)) return layers_[i]->name;
  }
  return "";
}

const Mat& Net::output(const std::string& layer) const {
  int i = index_of(layer);
  if (i < 0) input_error("no layer named '", layer, "'.");
  if (cuda_) return output_cuda(i, false);
  return acts_[i];
}

const Mat& Net::output_grad(const std::string& layer) const {
  int i = index_of(layer);
  if (i < 0) input_error("no layer named '", layer, "'.");
  if (cuda_) return output_cuda(i, true);
  return grads_[i];
}

}  // namespace ccn
