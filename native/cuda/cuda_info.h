// ccn/native/cuda/cuda_info.h: what the CUDA runtime sees (compiled only with CUDA).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ccn {

struct GpuInfo {
  int index = 0;
  std::string name;
  int64_t memory_bytes = 0;
  int major = 0, minor = 0;
};

// Visible devices; empty when there is no GPU or no driver (never throws).
std::vector<GpuInfo> cuda_devices();
// Free and total device memory of GPU `gpu` (false when it cannot be asked; never throws).
bool cuda_mem_info(int gpu, size_t* free_bytes, size_t* total_bytes);
// "ok (N devices)" or the runtime's reason there are none (e.g. "no CUDA driver").
std::string cuda_status();

}  // namespace ccn
