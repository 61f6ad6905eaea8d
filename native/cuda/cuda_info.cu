// ccn/native/cuda/cuda_info.cu: device enumeration for `ccn info`.
#include <cuda_runtime.h>

#include "core/error.h"
#include "cuda/cuda_info.h"

namespace ccn {

std::vector<GpuInfo> cuda_devices() {
  std::vector<GpuInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back(GpuInfo{i, p.name, (int64_t)p.totalGlobalMem, p.major, p.minor});
  }
  return out;
}

bool cuda_mem_info(int gpu, size_t* free_bytes, size_t* total_bytes) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess || cudaSetDevice(gpu) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool ok = cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess;
  cudaSetDevice(prev);
  cudaGetLastError();
  return ok;
}

std::string cuda_status() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(e);
  }
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  return cat("ok: ", n, " device", n == 1 ? "" : "s", ", runtime ", rt / 1000, ".", (rt % 1000) / 10, ", driver ",
             drv / 1000, ".", (drv % 1000) / 10);
}

}  // namespace ccn
