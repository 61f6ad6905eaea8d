// ccn/native/net/net.h: a net built from a layer-definition and a layer-params file.
//
// The net parses both files, orders the layers (any DAG; cycles and unknown inputs are
// errors), asks each layer to set itself up, and then runs forward, backward and the SGD
// update. It owns every activation, gradient and parameter; nothing is global, so several
// nets can live side by side. Activations: one Mat per layer, rows = cases, cols = C*H*W.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "layers/layer.h"
#include "netdef/config.h"

namespace ccn {

struct CostReport {
  std::string layer;
  std::vector<std::string> names;
  std::vector<double> values;  // summed over cases
  double coeff = 1;
};

class Net {
 public:
  // def_text/params_text are the files' contents; the paths are for messages. An empty
  // params_path means "no params file" (learning keys default to 0; for inspection only).
  // data_dims gives each dataIdx's per-case shape, as a data provider would. allow_unused: a
  // layer that feeds nothing is accepted (a net read back from a checkpoint, which an older
  // ccn may have saved with one; cuda-convnet2 checked only on a fresh parse too).
  Net(const std::string& def_text, const std::string& def_path, const std::string& params_text,
      const std::string& params_path, const std::map<int, Shape>& data_dims, bool allow_unused = false);

  // Re-read the learning hyper-parameters from a (possibly edited) params file.
  void reload_params(const std::string& params_text, const std::string& params_path);

  // Forward pass. data[i] is dataIdx i: rows = cases, cols = that data's size. Layers whose
  // dataIdx is not given must not be needed... every data layer must be given.
  // The matrices are read during the call only (copied into the data layers' own buffers on
  // the CPU, into pinned staging on a GPU), so they may be views (Mat::borrow) of the caller's.
  void fprop(const std::vector<const Mat*>& data, bool train);
  // Backward pass from the cost layers (seeds empty) or from the given output gradients
  // (layer name -> dCost/dOutput, as if cost = sum(seed * output)); adds to param grads.
  void bprop(const std::map<std::string, const Mat*>& seeds = {});
  // SGD with momentum and weight decay for every parameter whose updatePeriod is reached.
  // progress in [0,1] drives the schedules; minibatch is the nominal minibatch size.
  void update(double progress, int minibatch);
  void zero_param_grads();

  std::vector<CostReport> costs() const;
  // Name of the first layer (in forward order) whose output holds NaN or Inf, or "".
  std::string first_nonfinite_layer() const;

  // Introspection
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  const std::vector<std::unique_ptr<Param>>& params() const { return params_; }
  Layer* find_layer(const std::string& name) const;
  Param* find_param(const std::string& name) const;
  std::vector<std::string> layer_names() const;
  const Mat& output(const std::string& layer) const;
  const Mat& output_grad(const std::string& layer) const;
  int num_cases() const { return cases_; }
  int gpus_needed() const { return gpus_needed_; }
  const ConfigFile& def_file() const { return def_file_; }
  const ConfigFile& params_file() const { return par_file_; }
  void set_data_grads(bool on) { data_grads_ = on; compute_needs_grad(); }
  // Skip the backward pass where it only feeds frozen matrices (learning rate base 0, which
  // Param::begin_update leaves untouched): a layer whose parameters are all frozen and whose
  // inputs need no gradient is not gone back through, nor is anything below it that only it
  // feeds. Their `grad` then stays 0. Off by default (every gradient is computed, as API
  // users and gradient checks expect); ccn train turns it on, so fine-tuning the top of a net
  // does not pay for the frozen bottom.
  void set_skip_frozen(bool on) { skip_frozen_ = on; compute_needs_grad(); }
  // Whether the backward pass computes gradients for layer i's parameters (set_skip_frozen).
  bool learns(const Layer* l) const;
  // A backward pass goes through l: its parameters' gradients may now be nonzero (Param::grad_written).
  static void note_grads_written(const Layer& l) {
    for (Param* p : l.weights) p->grad_written = true;
    if (l.biases) l.biases->grad_written = true;
  }
  // Zero every gradient buffer before the backward pass, so that no layer assigns its input
  // gradients (Layer::bprop_assigns_din) but every one adds: tests compare the two branches.
  // Default: the environment variable CCN_GRAD_ZERO=eager (read once per process).
  void set_grad_zero_eager(bool on) { grad_zero_eager_ = on; }
  bool grad_zero_eager() const { return grad_zero_eager_; }
  // Wall-clock seconds spent in each layer's forward (neuron included) and backward pass,
  // summed since construction or the last reset_layer_times() (for tools/layer_times.py).
  const std::vector<double>& fprop_seconds() const { return fprop_s_; }
  const std::vector<double>& bprop_seconds() const { return bprop_s_; }
  void reset_layer_times();
  // Whether layer i keeps a pre-activation copy of its output (a neuron that is neither applied
  // in place nor fused into the layer): for memory estimates.
  bool keeps_pre(int i) const { return layers_[i]->has_neuron && !in_place_[i] && !fused_[i]; }
  // The same on the GPU (net_cuda.cu), whose kernels fuse no neuron: a fused layer keeps its
  // pre-activation there.
  bool device_keeps_pre(int i) const { return layers_[i]->has_neuron && !in_place_[i]; }
  // For a cost layer fused with a softmax that wants its logits (fused_producer_,
  // Layer::fused_wants_logits), the layer whose outputs are the logits.
  const Layer* fused_logits(int i) const {
    const int p = fused_producer_[i];
    return p >= 0 && layers_[i]->fused_wants_logits() ? layers_[p]->inputs[0] : nullptr;
  }
  // For a layer whose input gradient its cost layer computes (fused_cost_), that cost layer.
  const Layer* fused_into(int i) const { return fused_cost_[i] >= 0 ? layers_[fused_cost_[i]].get() : nullptr; }

  // Random numbers are counter-based: (seed, step, layer, element). step counts training
  // forward passes; both are part of a checkpoint.
  uint64_t seed = 0;
  uint64_t step = 0;
  // Data parallel: global row of this net's first case (see PassCtx::case_offset); 0 alone.
  int64_t case_offset = 0;

  Param* make_param(const std::string& layer, const std::string& name, int64_t rows, int64_t cols, bool is_bias);

  // ---- device mode (native/net/net_cuda.cu; design: native/cuda/README-design.md) ----
  // to_device(gpu) checks that every layer has a CUDA implementation, allocates the
  // parameters on that GPU and uploads them; from then on fprop/bprop/update/output run
  // there. to_host() downloads the parameters and frees all device memory. Without CUDA
  // compiled in, to_device throws a runtime error saying so.
  void to_device(int gpu);
  void to_host();
  bool on_device() const { return cuda_ != nullptr; }
  int device() const;          // the GPU index, or -1 on the CPU
  // Which of a parameter's three matrices pull_params/push_params copy (a bit mask).
  enum ParamPart : int { kW = 1, kGrad = 2, kInc = 4, kAllParts = 7 };
  // device -> host Mats, e.g. before a checkpoint: every parameter, or only `only`; only the
  // matrices in `parts`. Waits for the compute stream first (the values are final).
  void pull_params(const Param* only = nullptr, int parts = kAllParts);
  // host Mats -> device, e.g. after set(): only `parts`, so the device's other matrices of
  // the parameter (which may be newer than the host's) are left alone.
  void push_params(const Param* only = nullptr, int parts = kAllParts);
  // Waits until the GPU has finished everything enqueued for this net (timing, tests); a
  // no-op on the CPU.
  void synchronize();
  // Start copying the next minibatch to the GPU while the current one computes; a later
  // fprop with an empty data list uses it. (On the CPU: a runtime error.)
  void prefetch(const std::vector<const Mat*>& data);
  size_t device_bytes() const; // device memory held by this net

 private:
  struct NetCuda;              // defined in net_cuda.cu
  std::shared_ptr<NetCuda> cuda_;
  void fprop_cuda(const std::vector<const Mat*>& data, bool train);
  void bprop_cuda(const std::map<std::string, const Mat*>& seeds);
  void update_cuda(double progress, int minibatch);
  void zero_param_grads_cuda();
  const Mat& output_cuda(int layer, bool grad) const;

  void build(const std::map<int, Shape>& data_dims, bool allow_unused);
  void fprop_cpu(const std::vector<const Mat*>& data, bool train);
  void compute_needs_grad();
  int index_of(const std::string& name) const;

  ConfigFile def_file_, par_file_;
  bool have_params_ = false;
  std::vector<std::unique_ptr<Layer>> layers_;   // forward order
  std::vector<std::unique_ptr<Param>> params_;
  // Layers with a neuron keep the pre-activation output in pre_[i], unless the neuron is
  // applied in place (in_place_[i]: the layer's bprop ignores its output and f' follows from
  // f). pre_grad_ is scratch for dCost/d(pre-activation), one layer at a time.
  // fused_[i]: the layer applies its neuron itself (Layer::fuses_neuron); no pre_[i] either.
  // The device mode (net_cuda.cu) follows the same rules with in_place_ and one pre_grad
  // (its kernels fuse nothing: a fused layer keeps its pre-activation there and runs its neuron).
  std::vector<Mat> acts_, pre_, grads_;
  std::vector<bool> in_place_, fused_;
  // Fused cost gradients (Layer::fuses_with: softmax + cost.logreg, logistic + cost.bce/dce):
  // fused_producer_[i] is the layer feeding cost layer i that way, fused_cost_[p] the cost
  // layer that computes producer p's input gradient (-1: none). In the backward pass from the
  // costs the cost layer leaves dCost/d(producer output) alone (it is not computed: output_grad
  // of such a producer reads 0) and the producer's turn writes dCost/d(its input), or of its
  // pre-activation for neuron=, through the cost layer; with seeds (bprop from given
  // gradients) both run as usual.
  std::vector<int> fused_producer_, fused_cost_;
  // The inputs layer i's fprop gets: its inputs' outputs, and for a fused cost layer the
  // softmax's input as a third.
  std::vector<const Mat*> fprop_inputs(int i);
  Mat pre_grad_;
  std::vector<bool> needs_grad_;
  std::vector<double> fprop_s_, bprop_s_;
  bool data_grads_ = false;
  bool skip_frozen_ = false;
  bool grad_zero_eager_ = grad_zero_eager_default();
  static bool grad_zero_eager_default();
  int cases_ = 0;
  bool forward_done_ = false;  // the last fprop went through (bprop reads its buffers)
  int gpus_needed_ = 1;
};

}  // namespace ccn
