// ccn/native/cuda/testing_ops.h: run one kernel launcher on host arrays (for tests).
// Every array is uploaded, the op runs on a fresh CudaCtx of `gpu`, and every array is
// downloaded again, so an op's outputs (and in/out arguments such as din) come back in
// `arrays`. Ops and their argument names are listed in testing_ops.cu.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ccn::cuda {

void run_test_op(const std::string& op, std::map<std::string, Mat>& arrays, const std::map<std::string, double>& scalars,
                 int gpu);
std::vector<std::string> test_ops();

}  // namespace ccn::cuda
