// ccn/native/net/net_nocuda.cpp: the device-mode entry points of a build without CUDA.
// (With CUDA, native/net/net_cuda.cu defines them.)
#ifndef CCN_WITH_CUDA
#include "net/net.h"

namespace ccn {

struct Net::NetCuda {};

static const char* kNoCuda =
    "this ccn was built without the CUDA backend (no CUDA compiler was found when it was built); "
    "rebuild with nvcc on the PATH, or run on the CPU.";

void Net::to_device(int) { runtime_error(kNoCuda); }
void Net::to_host() {}
int Net::device() const { return -1; }
void Net::pull_params(const Param*, int) {}
void Net::push_params(const Param*, int) {}
void Net::synchronize() {}
void Net::prefetch(const std::vector<const Mat*>&) { runtime_error(kNoCuda); }
size_t Net::device_bytes() const { return 0; }
void Net::fprop_cuda(const std::vector<const Mat*>&, bool) { runtime_error(kNoCuda); }
void Net::bprop_cuda(const std::map<std::string, const Mat*>&) { runtime_error(kNoCuda); }
void Net::update_cuda(double, int) { runtime_error(kNoCuda); }
void Net::zero_param_grads_cuda() { runtime_error(kNoCuda); }
const Mat& Net::output_cuda(int, bool) const { runtime_error(kNoCuda); }

}  // namespace ccn
#endif
