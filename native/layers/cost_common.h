// ccn/native/layers/cost_common.h: small helpers shared by the cost layers in this folder
// (cost.sum2, cost.crossent, cost.bce, cost.dce).
#pragma once
#include <cmath>

#include "layers/layer.h"

namespace ccn {

// cuda-convnet2's safelog (layer_kernels.cuh): log(x) for x > 0, else -50.
inline double cost_safelog(double x) { return x > 0 ? std::log(x) : -50.0; }

// Smallest divisor used by the gradients t/y and (1-t)/(1-y), so an exact 0 or 1 gives a
// huge finite gradient instead of inf (the original divides unguarded).
constexpr float kCostMinDiv = 1e-38f;

// cuda-convnet2's cost parser reads `children=` (aggregated costs); ccn does not offer them.
inline void reject_cost_children(LayerSpec& spec) {
  if (spec.has("children"))
    spec.fail("children", "aggregated cost layers (children=) are not supported by ccn; give each cost layer "
                          "its own inputs instead.");
}

// `coeff` from the layer-params file (default 1), as cost.logreg reads it.
inline double read_cost_coeff(LayerSpec& spec) { return spec.get_float("coeff", 1.0, Src::Params); }

}  // namespace ccn
