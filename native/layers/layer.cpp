// ccn/native/layers/layer.cpp: registry, shared key rules of weight layers, helpers.
#include "layers/layer.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <sstream>

#include "net/net.h"

namespace ccn {

std::string Shape::str() const { return cat(c, "x", h, "x", w); }

std::map<std::string, LayerFactory>& layer_registry() {
  static std::map<std::string, LayerFactory> r;
  return r;
}

void Layer::fprop_cuda(const std::vector<DevMat>&, DevMat, CudaCtx&, const PassCtx&) {
  runtime_error("layer '", name, "': layer type ", type, " has no CUDA implementation yet; run this net on the CPU.");
}
void Layer::bprop_cuda(const std::vector<DevMat>&, DevMat, DevMat, const std::vector<DevMat>&, CudaCtx&,
                       const PassCtx&) {
  runtime_error("layer '", name, "': layer type ", type, " has no CUDA implementation yet; run this net on the CPU.");
}
void Layer::fused_input_bprop(const Mat&, const Mat&, Mat&, bool) {
  runtime_error("layer '", name, "': layer type ", type, " says it fuses with its input but has no fused gradient.");
}
void Layer::fused_input_bprop_cuda(DevMat, DevMat, DevMat, CudaCtx&) {
  runtime_error("layer '", name, "': layer type ", type, " has no fused input gradient on the GPU.");
}

bool Param::begin_update(double progress, int minibatch, Step& step) {
  if (eps.base <= 0) {
    passes = 0;
    step.frozen = true;
    return false;
  }
  if (++passes < update_period) return false;
  passes = 0;
  const double e = eps.value(progress);
  step.scale = (float)(e / ((double)minibatch * update_period));
  step.decay = is_bias ? 0.f : (float)(wc * e);
  // The constraints after the step, only for weights that learn (a frozen matrix returned above),
  // as in the original: conv's weight-contrast normalisation, then wball on each column of every
  // block of wball_rows rows (fc: whole columns; local: per module).
  if (wc_norm_max > 0 && !is_bias) step.wcn_min = (float)wc_norm_min, step.wcn_max = (float)wc_norm_max;
  step.wball_block = 0;
  if (wball > 0 && !is_bias) {
    const int64_t rows = w.rows();
    step.wball_block = wball_rows > 0 && rows % wball_rows == 0 ? wball_rows : rows;
    step.wball_hard = wball_hard;
  }
  return true;
}

Param* SetupCtx::make_param(const std::string& pname, int64_t rows, int64_t cols, bool is_bias) {
  return net->make_param(layer->name, layer->name + "." + pname, rows, cols, is_bias);
}

Param* SetupCtx::find_weights(LayerSpec& spec, const std::string& ref, int input) {
  std::string lname = ref;
  int idx = 0;  // a bare name means matrix 0, as in cuda-convnet2 (layer.py)
  size_t lb = ref.find('[');
  if (lb != std::string::npos) {
    if (ref.back() != ']') spec.fail("weightSource", cat("expected a layer name or name[index], found '", ref, "'."));
    lname = strip(ref.substr(0, lb));
    std::string si = ref.substr(lb + 1, ref.size() - lb - 2);
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(si.c_str(), &end, 10);
    if (si.empty() || *end || errno) spec.fail("weightSource", cat("the index in '", ref, "' is not an integer."));
    idx = (v < 0 || v > 1000000) ? -1 : (int)v;
  }
  if (lname == layer->name) {
    // cuda-convnet2: a layer may reuse one of its own matrices of a lower index, so that one
    // filter bank serves several inputs. layer->weights holds the matrices of inputs 0..input-1.
    if (idx < 0 || idx >= input) {
      const std::string which = lb == std::string::npos ? cat("'", ref, "' (which means ", lname, "[0])") : cat("'", ref, "'");
      spec.fail("weightSource",
                input == 0 ? cat(which, " names this layer's own matrix for input 0; a layer can only reuse its own "
                                 "matrix of a lower input index, so input 0 needs its own weights (leave its entry empty).")
                           : cat(which, " for input ", input, " names this layer's own matrix ", idx,
                                 ", which is not defined yet; a layer can only reuse its own matrices of a lower input "
                                 "index, here ", lname, "[0]", input > 1 ? cat(" to ", lname, "[", input - 1, "]") : std::string(),
                                 "."));
    }
    return layer->weights[idx];
  }
  Layer* src = net->find_layer(lname);
  if (!src) {
    std::string m = did_you_mean(lname, net->layer_names());
    spec.fail("weightSource", cat("there is no layer '", lname, "'", m.empty() ? "." : cat("; did you mean '", m, "'?")));
  }
  if (src->weights.empty())
    spec.fail("weightSource", cat("layer '", lname, "' (type=", src->type, ") has no weights to share."));
  if (idx < 0 || idx >= (int)src->weights.size())
    spec.fail("weightSource", cat("layer '", lname, "' has ", src->weights.size(), " weight matri",
                                  src->weights.size() == 1 ? "x" : "ces", "; the index in '", ref, "' is out of range (0 to ",
                                  src->weights.size() - 1, ")."));
  return src->weights[idx];
}

void setup_weight_params(LayerSpec& spec, SetupCtx& ctx, Layer& layer,
                         const std::vector<std::pair<int64_t, int64_t>>& shapes, int64_t bias_rows, int64_t bias_cols,
                         double default_init_w) {
  int n = (int)shapes.size();
  auto sources = spec.get_str_list("weightSource", n, std::string(""));
  auto init_w = spec.get_float_list("initW", n, default_init_w);
  double init_b = spec.get_float("initB", 0.0);
  std::string wfunc = spec.get_str("initWFunc", std::string(""));
  std::string bfunc = spec.get_str("initBFunc", std::string(""));
  for (int i = 0; i < n; ++i) {
    if (!sources[i].empty()) {
      Param* p = ctx.find_weights(spec, sources[i], i);
      if (p->w.rows() != shapes[i].first || p->w.cols() != shapes[i].second)
        spec.fail("weightSource", cat("weights '", p->name, "' are ", p->w.rows(), "x", p->w.cols(), " but layer '",
                                      layer.name, "' needs ", shapes[i].first, "x", shapes[i].second,
                                      n > 1 ? cat(" for input ", i, " (", ctx.in_names[i], ")") : std::string(), "."));
      p->shared_by++;
      layer.weights.push_back(p);
      continue;
    }
    Param* p = ctx.make_param(cat("weights[", i, "]"), shapes[i].first, shapes[i].second, false);
    p->init_std = init_w[i];
    p->init_func = wfunc;
    layer.weights.push_back(p);
  }
  if (bias_rows > 0) {
    layer.biases = ctx.make_param("biases", bias_rows, bias_cols, true);
    layer.biases->init_value = init_b;
    layer.biases->init_func = bfunc;
  }
  reload_weight_params(spec, layer);
}

// The allowed range of a learning key of the layer-params file: momW/momB in [0, 1), the
// others (epsW/epsB constants and schedule bases, wc, wball) at least 0. `n` values, one per
// input for lists.
static void check_param_range(LayerSpec& spec, const std::string& key, const std::vector<double>& v, int n) {
  const bool mom = key == "momW" || key == "momB";
  for (int i = 0; i < (int)v.size(); ++i) {
    if (mom ? (v[i] >= 0 && v[i] < 1) : v[i] >= 0) continue;
    std::ostringstream os;
    os.precision(12);
    os << v[i];
    spec.fail(key, cat(n > 1 ? cat("the value for input ", i, " is ") : std::string("the value is "), os.str(), "; ", key,
                       mom ? " (a momentum) must be at least 0 and less than 1." : " must be at least 0."),
              Src::Params);
  }
}
static void check_param_range(LayerSpec& spec, const std::string& key, const std::vector<Schedule>& v, int n) {
  for (int i = 0; i < (int)v.size(); ++i) {
    if (v[i].base >= 0) continue;
    std::ostringstream os;
    os.precision(12);
    os << v[i].base;
    const std::string input = n > 1 ? cat(" for input ", i) : std::string();
    spec.fail(key, v[i].type == "const" && v[i].tgt_factor == 1 && v[i].num_steps == 1
                       ? cat("the learning rate", input, " is ", os.str(), "; ", key, " must be at least 0.")
                       : cat("the ", v[i].type, " schedule", input, " has base=", os.str(), "; its base must be at least 0."),
              Src::Params);
  }
}

void reload_weight_params(LayerSpec& spec, Layer& layer) {
  int n = (int)layer.weights.size();
  // Without any layer-params file (show-net), learning keys default to zero.
  bool strict = spec.params_given();
  std::optional<double> z = strict ? std::nullopt : std::optional<double>(0.0);
  auto eps_w = spec.get_schedule_list("epsW", n, z, Src::Params);
  auto mom_w = spec.get_float_list("momW", n, z, Src::Params);
  auto wc = spec.get_float_list("wc", n, z, Src::Params);
  auto wball = spec.get_float_list("wball", n, 0.0, Src::Params);
  // 0 means "as often as possible" in cuda-convnet2 (layer.py's default), i.e. every pass.
  int period = spec.get_int("updatePeriod", 1, Src::Params);
  if (period < 0) spec.fail("updatePeriod", "must be 0 or more (0 and 1 both update after every minibatch).", Src::Params);
  period = std::max(period, 1);
  // Ranges (cuda-convnet did not check them): a momentum of 1 or more never forgets and grows
  // without bound, a negative one oscillates; negative rates, decay or norm caps invert them.
  check_param_range(spec, "epsW", eps_w, n);
  check_param_range(spec, "momW", mom_w, n);
  check_param_range(spec, "wc", wc, n);
  check_param_range(spec, "wball", wball, n);
  for (int i = 0; i < n; ++i) {
    // A shared matrix keeps its owner's settings: skip another layer's matrix and one this
    // layer reuses for a later input (weightSource naming itself; the first use owns it).
    Param* p = layer.weights[i];
    if (p->layer != layer.name || std::find(layer.weights.begin(), layer.weights.begin() + i, p) != layer.weights.begin() + i)
      continue;
    p->eps = eps_w[i];
    p->mom = mom_w[i];
    p->wc = wc[i];
    p->wball = wball[i];
    p->update_period = period;
  }
  if (layer.biases) {
    auto eps_b = spec.get_schedule_list("epsB", 1, z, Src::Params);
    check_param_range(spec, "epsB", eps_b, 1);
    layer.biases->eps = eps_b[0];
    layer.biases->mom = spec.get_float("momB", z, Src::Params);
    check_param_range(spec, "momB", std::vector<double>{layer.biases->mom}, 1);
    layer.biases->update_period = period;
  } else {
    spec.allow("epsB", Src::Params);
    spec.allow("momB", Src::Params);
  }
}

Shape image_shape(LayerSpec& spec, const Shape& in, int channels, const std::string& input_name) {
  if (channels <= 0) spec.fail("channels", cat("must be a positive integer, found ", channels, "."));
  if (in.c == channels && in.h == in.w && in.h > 0) return in;
  int64_t n = in.size();
  if (n % channels != 0)
    spec.fail("channels", cat("input '", input_name, "' has ", n, " values per case (", in.str(), "), which is not a multiple of channels=", channels, "."));
  int64_t px = n / channels;
  int64_t s = (int64_t)std::llround(std::sqrt((double)px));
  if (s * s != px)
    spec.fail("channels", cat("input '", input_name, "' has ", n, " values per case; with channels=", channels, " that is ",
                              px, " pixels per channel, which is not a square image."));
  return Shape{channels, (int)s, (int)s};
}

}  // namespace ccn
