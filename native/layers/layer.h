// ccn/native/layers/layer.h: the layer interface, parameters and the type registry.
//
// One file per layer type in native/layers/ holds its key rules, its shape rule and its CPU
// kernels, and registers itself under its `type=` name with CCN_REGISTER_LAYER. The net
// (native/net) owns activations, gradients and parameters and calls the layers in order.
//
// Layout (see core/tensor.h): a layer's input and output are Mats of rows = cases,
// cols = C*H*W (NCHW per case, x fastest). Gradients have the same shape as what they
// are gradients of.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/devmat.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "netdef/spec.h"

namespace ccn {

// Per-case shape of a layer's output: channels x rows x cols. Non-image outputs (fc,
// softmax, labels) are c x 1 x 1.
struct Shape {
  int c = 0, h = 1, w = 1;
  int64_t size() const { return (int64_t)c * h * w; }
  std::string str() const;
  bool operator==(const Shape& o) const { return c == o.c && h == o.h && w == o.w; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

// A learnable matrix (weights or biases) with its sum-over-cases gradient, its momentum
// increment and its learning hyper-parameters from the layer-params file.
struct Param {
  std::string name;        // "conv1.weights[0]", "conv1.biases"
  std::string layer;       // owning layer
  bool is_bias = false;
  Mat w, grad, inc;        // same shape; grad accumulates over cases (and updatePeriod passes)
  Schedule eps;            // learning rate over training progress
  double mom = 0, wc = 0, wball = 0;
  // wball > 0 constrains the L2 norm of each column of every block of wball_rows consecutive
  // rows (0: the whole column) after each update, as cuda-convnet2's _constrainWeights: fc,
  // sfc and conv rescale every column to norm wball (HardWeightConstraintOperator), local
  // layers (wball_hard = false, wball_rows = the rows of one module) only those above it
  // (normalizeLocalWeights).
  int64_t wball_rows = 0;
  bool wball_hard = true;
  // conv's weight-contrast normalisation (wcNormMin/wcNormMax; off while wc_norm_max is 0):
  // after each update, each column (filter) w with s = sqrt(sum (w - mean w)^2) / rows is
  // scaled by wc_norm_min / s where s < wc_norm_min and by wc_norm_max / s where s >
  // wc_norm_max (cuda-convnet2's ConvLayer::_constrainWeights, WeightContrastNormOperator).
  double wc_norm_min = 0, wc_norm_max = 0;
  int update_period = 1;
  int passes = 0;          // gradient passes accumulated since the last update
  bool grad_written = false;  // grad may be nonzero (a backward pass went through its layer, or
                              // it was set from outside); a frozen matrix's is zeroed only then
  // initialisation, done by the Python side: N(0, init_std^2) or init_value, or a user function
  double init_std = 0, init_value = 0;
  std::string init_func;   // "module.func(args)" or ""
  int shared_by = 0;       // number of extra uses of this matrix through weightSource (other layers'
                           // inputs, or later inputs of its own layer)

  // One SGD step's settings, the same for every backend: inc = mom*inc - scale*grad - decay*w.
  struct Step {
    float scale = 0, decay = 0;
    int64_t wball_block = 0;  // rows per wball block; 0 = no wball constraint this step
    bool wball_hard = false;  // rescale every column of a block to norm wball, not only larger ones
    float wcn_min = 0, wcn_max = 0;  // weight-contrast normalisation this step (off while wcn_max is 0)
    bool frozen = false;      // the learning rate's base is 0: no update; the caller zeroes grad
  };
  // Counts this pass; false until updatePeriod passes have accumulated (then passes restarts).
  // A matrix whose learning rate has base value 0 (epsW=0, a schedule with base=0) is not
  // updated at all, as in cuda-convnet (Weights::update: no momentum step, no decay): false,
  // with step.frozen set.
  bool begin_update(double progress, int minibatch, Step& step);

  // Device copies while the net runs on a GPU (owned by the net's device state; null on
  // the CPU). While on the device they are authoritative and w/grad/inc above are stale
  // until Net::pull_params().
  struct Dev {
    float* w = nullptr;
    float* grad = nullptr;
    float* inc = nullptr;
  } dev;
};

// What a layer's kernels get besides the data.
struct PassCtx {
  bool train = true;
  uint64_t seed = 0;       // the net's seed
  uint64_t step = 0;       // forward passes done in training, for counter-based random numbers
  int layer_id = 0;
  // Data parallel (ccn/parallel.py): the row of this minibatch's first case within the
  // global minibatch that all ranks together process; per-case random numbers are indexed
  // by the global case, so N ranks draw what one process at the whole minibatch draws.
  int64_t case_offset = 0;
  // Backward only (net.cpp, lazy gradient zeroing): din_assign[i] set means *din[i] holds
  // stale values and this layer is its first writer in this pass, so bprop must OVERWRITE all
  // of it (as if it had been zeroed and then added to). Only set for layers whose
  // bprop_assigns_din() is true, and never for an input the layer takes twice.
  std::vector<bool> din_assign;
  bool assign(size_t i) const { return i < din_assign.size() && din_assign[i]; }
};

class Net;
class Layer;
struct CudaCtx;  // native/cuda/context.h: device, stream, cuBLAS handle, workspaces

// What setup() gets: input shapes, the data provider's dimensions, and the net to declare
// parameters with.
struct SetupCtx {
  std::vector<Shape> in;            // shapes of the inputs, in `inputs=` order
  std::vector<std::string> in_names;
  const std::map<int, Shape>* data_dims = nullptr;
  Net* net = nullptr;
  Layer* layer = nullptr;
  // A new parameter matrix owned by the net.
  Param* make_param(const std::string& name, int64_t rows, int64_t cols, bool is_bias);
  // The weight matrix named by weightSource ("conv7" = "conv7[0]", or "conv6[2]") for input
  // `input`: a matrix of a layer earlier in the net's order, or one of this layer's own
  // matrices of a lower input index (already in layer->weights). Errors name this layer and
  // the reference.
  Param* find_weights(LayerSpec& spec, const std::string& ref, int input);
};

class Layer {
 public:
  virtual ~Layer() = default;

  // Read keys (through spec, so unknown keys are caught), check the inputs, set `out`,
  // declare parameters. Errors go through spec.fail / spec.fail_layer.
  virtual void setup(LayerSpec& spec, SetupCtx& ctx) = 0;
  // out = f(inputs); out is already sized cases x out.size().
  virtual void fprop(const std::vector<const Mat*>& in, Mat& out, const PassCtx& ctx) = 0;
  // Adds dCost/d(input i) into *din[i] (skip where din[i] is null) and adds weight and bias
  // gradients (summed over cases) into the params' grad. dout is dCost/d(out).
  virtual void bprop(const std::vector<const Mat*>& in, const Mat& out, const Mat& dout,
                     const std::vector<Mat*>& din, const PassCtx& ctx) = 0;
  // Floating-point operations per case in the forward pass (show-net's "fwd MFLOPs/case"), neuron
  // excluded: a multiply-add counts 2, any other add, multiply, comparison, division or
  // elementary function (exp, log, pow) 1, as the layer's kernels compute it (separable box sums
  // for rnorm/cnorm); layers that only move data (data, concat, crop, href, nailbed) count 0.
  virtual double flops_per_case() const { return 0; }
  // Cost layers: the cost values summed over cases (e.g. logreg: -log p, top-1 wrong,
  // top-k wrong) and the names of those values.
  virtual bool is_cost() const { return false; }
  virtual std::vector<double> cost_values() const { return {}; }
  virtual std::vector<std::string> cost_names() const { return {}; }
  virtual double coeff() const { return 1.0; }
  // Re-read the learning hyper-parameters (layer-params file) when resuming.
  virtual void reload_params(LayerSpec& spec) {}
  // Data layers are filled by the net from the minibatch, not computed.
  virtual bool is_data() const { return false; }
  virtual int data_idx() const { return -1; }
  // Layers whose output does not depend on their inputs differentiably (none yet) can say so.
  virtual bool passes_gradient() const { return true; }
  // Whether bprop reads its `out` argument. Layers that ignore it (conv, fc) let the net apply
  // a neuron such as relu in place, without keeping the pre-activation output (net.cpp).
  virtual bool bprop_reads_output() const { return true; }
  // Whether bprop honours PassCtx::din_assign (writes every element of din[i] when asked to
  // assign). The net then skips zeroing that gradient buffer before the backward pass.
  virtual bool bprop_assigns_din() const { return false; }
  // Whether this layer applies its own neuron (the `neuron` member, set before this is asked)
  // inside fprop and takes it into account in bprop: fprop then writes f(out) directly, bprop
  // gets that post-neuron output as `out` and dCost/d(post-neuron output) as `dout`, and the
  // net keeps no pre-activation copy. CPU only (net_cuda.cu applies neurons itself).
  virtual bool fuses_neuron() const { return false; }
  // Fused cost gradients, as cuda-convnet computed them. A cost layer says in
  // fuses_with(producer) whether it differentiates through the function that makes its second
  // input y in one step:
  //  - cost.logreg through a softmax without a neuron: dCost/dx = coeff * (p - onehot(label))
  //    (computeLogregSoftmaxGrad); its fprop also gets the softmax's input x (the logits) as a
  //    third input (Net::fused_logits);
  //  - cost.bce and cost.dce through a logistic neuron (a neuron layer, or neuron=logistic on
  //    any layer): dCost/dx = coeff * ((1 - t) * y - posWeight * t * (1 - y))
  //    (NeuronLayer::bpropSpecial, CrossEntLogisticGradientOperator).
  // The net fuses a producer only when it feeds nothing but this cost (net.cpp). In the
  // backward pass from the costs it then calls fused_input_bprop at the producer's turn, in
  // place of the pair cost bprop + the producer's derivative, which would divide by y and
  // multiply by y again (0 / 0, or a lost gradient, where y saturates in float32). It writes
  // dCost/dx -- x the producer's input, or its pre-activation for neuron= -- into dx
  // (assigning when `assign`, else adding).
  virtual bool fuses_with(const Layer& producer) const { return false; }
  // Whether fprop wants the fused softmax's logits as a third input (cost.logreg).
  virtual bool fused_wants_logits() const { return false; }
  virtual void fused_input_bprop(const Mat& labels, const Mat& y, Mat& dx, bool assign);
  // The function of a type=neuron layer (nullptr for other types, whose neuron= is `neuron`).
  virtual const NeuronSpec* neuron_fn() const { return nullptr; }

  // ---- CUDA backend (optional; see native/cuda/README-design.md) ----
  // Same contracts as fprop/bprop, on device memory, enqueued on cx's stream: out is
  // already sized; bprop ADDS into din[i] (skip where din[i].p is null) and into the
  // params' dev.grad. Layers that implement these return true from has_cuda(); the
  // defaults throw "layer type X has no CUDA implementation yet".
  virtual bool has_cuda() const { return false; }
  virtual void fprop_cuda(const std::vector<DevMat>& in, DevMat out, CudaCtx& cx, const PassCtx& ctx);
  virtual void bprop_cuda(const std::vector<DevMat>& in, DevMat out, DevMat dout, const std::vector<DevMat>& din,
                          CudaCtx& cx, const PassCtx& ctx);
  // fuses_with(): as fused_input_bprop, adding into dx.
  virtual void fused_input_bprop_cuda(DevMat labels, DevMat y, DevMat dx, CudaCtx& cx);

  std::string name, type;
  int id = 0;
  std::vector<Layer*> inputs;
  Shape out;
  std::vector<Param*> weights;  // one per input for weight layers (may be shared)
  Param* biases = nullptr;
  NeuronSpec neuron;            // applied after fprop when type != ident
  bool has_neuron = false;
};

using LayerFactory = std::function<std::unique_ptr<Layer>()>;
std::map<std::string, LayerFactory>& layer_registry();
struct LayerRegistrar {
  LayerRegistrar(const char* type, LayerFactory f) { layer_registry()[type] = std::move(f); }
};
#define CCN_REGISTER_LAYER(TYPE, CLASS) \
  static ::ccn::LayerRegistrar ccn_registrar_##CLASS(TYPE, [] { return std::unique_ptr<::ccn::Layer>(new CLASS()); })

// The learning keys of a weight layer (epsW, epsB, momW, momB, wc, wball, updatePeriod from
// the params file; initW, initB, initWFunc, initBFunc, weightSource from the def file).
// Creates one weight matrix per input of the given shapes (rows x cols each) or shares one
// through weightSource, and the bias matrix (bias_rows x bias_cols; 0 rows for none).
void setup_weight_params(LayerSpec& spec, SetupCtx& ctx, Layer& layer,
                         const std::vector<std::pair<int64_t, int64_t>>& weight_shapes, int64_t bias_rows,
                         int64_t bias_cols, double default_init_w = 0.01);
void reload_weight_params(LayerSpec& spec, Layer& layer);

// Input shape helpers used by image layers: interpret a flat input as channels x s x s.
Shape image_shape(LayerSpec& spec, const Shape& in, int channels, const std::string& input_name);

// Deterministic counter-based random numbers: mix64 and uniform01 live in core/rng.h
// (host and device), so the CPU and CUDA backends draw identical values.

}  // namespace ccn
