// tools/cudasim/include/cuda_runtime.h: the CUDA runtime API, as far as ccn uses it, for the
// CUDA simulator (tools/cudasim/README.md). It replaces the toolkit's header when the CUDA
// sources are compiled by the host compiler (CCN_CUDA=SIM): kernels become plain functions, a
// launch `k<<<grid, block, smem, stream>>>(args)` becomes `ccnsim_launch(...)` (rewritten by
// tools/cudasim/transform.py), and the runtime functions below are implemented on the CPU by
// tools/cudasim/runtime.cpp (libccnsim_rt.so), which also exports the cuBLAS v2 entry points
// ccn loads at run time.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- what nvcc defines ----------------------------------------------------------
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif
#define CCN_CUDA_SIM 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// Block-shared memory: one copy per kernel (blocks run one after another, the threads of a
// block share it). transform.py rewrites each declaration to register it (ccnsim_shared), and
// the runtime fills it with NaN bytes before each block of a kernel with barriers; this macro
// covers any declaration the rewrite missed.
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

extern "C" {
extern uint3 ccnsim_threadIdx, ccnsim_blockIdx;
extern dim3 ccnsim_blockDim, ccnsim_gridDim;
void ccnsim_syncthreads();
void ccnsim_shared(void* p, size_t bytes);
}
#define threadIdx ccnsim_threadIdx
#define blockIdx ccnsim_blockIdx
#define blockDim ccnsim_blockDim
#define gridDim ccnsim_gridDim
#define warpSize 32
inline void __syncthreads() { ccnsim_syncthreads(); }
inline void __threadfence() {}

// Threads of a simulated kernel run one at a time, so an atomic is a plain read-modify-write.
template <class T>
inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  T old = *p;
  *p = old < v ? v : old;
  return old;
}

// Round-to-nearest intrinsics: never merged into a fused multiply-add, as nvcc promises. The
// simulator's kernels are compiled with contraction on (-ffp-contract=fast -mfma on x86-64,
// like nvcc's default --fmad=true), so an empty asm hides the operands and the result from
// the compiler's contraction.
#if defined(__x86_64__)
#define CCNSIM_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define CCNSIM_OPAQUE(v) __asm__("" : "+w"(v))
#endif
template <class F>
inline float ccnsim_rn(float a, float b, F op) {
  CCNSIM_OPAQUE(a);
  CCNSIM_OPAQUE(b);
  float r = op(a, b);
  CCNSIM_OPAQUE(r);
  return r;
}
inline float __fmul_rn(float a, float b) { return ccnsim_rn(a, b, [](float x, float y) { return x * y; }); }
inline float __fadd_rn(float a, float b) { return ccnsim_rn(a, b, [](float x, float y) { return x + y; }); }
inline float __fsub_rn(float a, float b) { return ccnsim_rn(a, b, [](float x, float y) { return x - y; }); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline float __int_as_float(int i) {
  float f;
  __builtin_memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  __builtin_memcpy(&i, &f, 4);
  return i;
}

// ---- the device's single-precision math functions --------------------------------------
// A GPU's expf, powf, tanhf, logf, log1pf and expm1f are not correctly rounded: CUDA documents
// them at 2, 4, 2, 1, 1 and 1 ulp. The host's are (nearly) correctly rounded, so a tolerance
// tuned here could be too tight on a GPU: on an H100 expf flipped near-ties that glibc's did
// not (tests/cuda/netcompare.py). So device code gets these through ccnsim_faithful: the
// exact result (in double) rounded to either neighbouring float, chosen by a hash of the
// function and its arguments (deterministic, as on a GPU), at most 1 ulp from exact. Where
// the exact value is a float (expf(0) = 1), that float. Results below FLT_MIN stay the nearest
// float: there one ulp is a change by a factor (0 or 1.4e-45 is -50 or -103 in a safelog), and
// the H100 matched the CPU where gradcheck.ini's softmax underflows. CCNSIM_MATH=exact: the
// nearest float everywhere.
extern "C" int ccnsim_math_faithful;
inline float ccnsim_faithful(double exact, uint32_t fn, float a, float b = 0.f) {
  const float r = (float)exact;
  if (!ccnsim_math_faithful || !std::isfinite(r) || (double)r == exact || std::isnan(exact) ||
      std::fabs(r) < 1.17549435e-38f)
    return r;
  uint32_t ua, ub;
  __builtin_memcpy(&ua, &a, 4);
  __builtin_memcpy(&ub, &b, 4);
  uint64_t h = ((uint64_t)ua << 32 | ub) ^ ((uint64_t)fn * 0x9E3779B97F4A7C15ull);  // splitmix64's finaliser
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  h ^= h >> 31;
  if (!(h & 1)) return r;
  const float other = std::nextafter(r, exact > (double)r ? INFINITY : -INFINITY);  // the other side of exact
  return std::isfinite(other) ? other : r;
}
inline float ccnsim_expf(float a) { return ccnsim_faithful(std::exp((double)a), 1, a); }
inline float ccnsim_logf(float a) { return ccnsim_faithful(std::log((double)a), 2, a); }
inline float ccnsim_log1pf(float a) { return ccnsim_faithful(std::log1p((double)a), 3, a); }
inline float ccnsim_expm1f(float a) { return ccnsim_faithful(std::expm1((double)a), 4, a); }
inline float ccnsim_tanhf(float a) { return ccnsim_faithful(std::tanh((double)a), 5, a); }
inline float ccnsim_powf(float a, float b) { return ccnsim_faithful(std::pow((double)a, (double)b), 6, a, b); }
// (function-like macros: `expf(x)` in a .cu file; <cmath> is already in, so no declaration of
// the library's own is rewritten)
#define expf(a) ccnsim_expf(a)
#define logf(a) ccnsim_logf(a)
#define log1pf(a) ccnsim_log1pf(a)
#define expm1f(a) ccnsim_expm1f(a)
#define tanhf(a) ccnsim_tanhf(a)
#define powf(a, b) ccnsim_powf(a, b)

using std::isfinite;
using std::isinf;
using std::isnan;
using std::max;
using std::min;

// ---- the runtime API --------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct CUstream_st;
struct CUevent_st;
typedef CUstream_st* cudaStream_t;
typedef CUevent_st* cudaEvent_t;
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  int maxThreadsPerBlock;
  size_t sharedMemPerBlock;
};

extern "C" {
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e) { return cudaStreamWaitEvent(s, e, 0); }
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
inline cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}

// ---- kernel launches ----------------------------------------------------------------
// Enqueues `body` (one thread's work, called once per thread with threadIdx/blockIdx set) on
// stream s. `fibers`: the kernel reaches __syncthreads, so each block's threads run as fibers
// that meet at every barrier; otherwise they run one after another. `bad`: why the kernel
// faults as soon as it runs ("" when it does not).
extern "C++" void ccnsim_enqueue_kernel(const char* name, const char* file, int line, bool fibers, dim3 grid,
                                        dim3 block, size_t smem, cudaStream_t s, std::function<void()> body,
                                        std::string bad, std::vector<std::pair<const void*, bool>> acc);
// Null, device memory (up to one past an allocation's end) or pinned host memory.
extern "C++" bool ccnsim_device_pointer(const void* p);

// A launch argument becomes the parameter's type as nvcc converts it: implicitly.
template <class P, class A>
inline P ccnsim_arg(A&& a) {
  return std::forward<A>(a);
}
// A pointer argument must point at device memory: a GPU faults on a host pointer. Each one is
// also an access (a write unless it points to const) for the cross-stream hazard check.
template <class T>
inline void ccnsim_check_arg(const T& v, int i, std::string& bad, std::vector<std::pair<const void*, bool>>& acc) {
  if constexpr (std::is_pointer_v<T>) {
    if (v) acc.emplace_back((const void*)v, !std::is_const_v<std::remove_pointer_t<T>>);
    if (!ccnsim_device_pointer((const void*)v)) {
      char buf[96];
      snprintf(buf, sizeof buf, "%sargument %d (%p)", bad.empty() ? "" : ", ", i + 1, (const void*)v);
      bad += buf;
    }
  }
}

// k<<<grid, block, smem, stream>>>(args...): the arguments are converted to the kernel's
// parameter types and copied now, as CUDA does at a launch.
template <class... P, class... A>
inline void ccnsim_launch(const char* name, const char* file, int line, bool fibers, dim3 grid, dim3 block,
                          size_t smem, cudaStream_t s, void (*k)(P...), A&&... a) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> args{ccnsim_arg<std::decay_t<P>>(std::forward<A>(a))...};
  std::string bad;
  std::vector<std::pair<const void*, bool>> acc;
  std::apply([&bad, &acc](const auto&... v) {
    int i = 0;
    (ccnsim_check_arg(v, i++, bad, acc), ...);
  }, args);
  ccnsim_enqueue_kernel(name, file, line, fibers, grid, block, smem, s, [k, args] { std::apply(k, args); }, bad,
                        std::move(acc));
}
template <class... P, class... A>
inline void ccnsim_launch(const char* name, const char* file, int line, bool fibers, dim3 grid, dim3 block,
                          size_t smem, int s, void (*k)(P...), A&&... a) {  // stream 0
  ccnsim_launch(name, file, line, fibers, grid, block, smem, (cudaStream_t) nullptr, k, std::forward<A>(a)...);
}
