// ccn/native/layers/neuron.h: element-wise activation functions ("neurons").
//
// Used by the `neuron` layer type and by `neuron=` on any other layer (the net applies it
// after the layer's fprop). Layout-agnostic: element-wise over whole Mats.
#pragma once
#include "core/tensor.h"
#include "netdef/spec.h"

namespace ccn {

// Checks the neuron's name and argument count; errors name the layer and key.
void validate_neuron(LayerSpec& spec, const std::string& key, const NeuronSpec& n);
void neuron_fprop(const NeuronSpec& n, const Mat& in, Mat& out);
// Whether f'(in) is a function of out = f(in) alone (ident, relu, brelu, logistic, tanh,
// linear, sqrt, softrelu): then neuron_bprop gives the same result with `in` = `out`, and the net can
// apply the neuron in place.
bool neuron_grad_from_output(const NeuronSpec& n);
// din (+)= f'(in) * dout; `add` chooses accumulate or overwrite.
void neuron_bprop(const NeuronSpec& n, const Mat& in, const Mat& out, const Mat& dout, Mat& din, bool add);

}  // namespace ccn
