// ccn/native/cuda/cublas.h: the GEMMs of the CUDA backend, through cuBLAS loaded at run time.
//
// Why run-time loading: CI compiles every .cu file with nvcc on machines whose CUDA
// toolkit has no cuBLAS headers or libraries. ccn declares the handful of cuBLAS entry
// points it uses (their C ABI has been stable since cuBLAS v2) and dlopen()s the library
// the first time a net needs it, so there is ONE code path, compiled everywhere, and a
// clear run-time error when no cuBLAS is found. Search order:
//   1. $CCN_CUBLAS (a path to libcublas.so.*),
//   2. directories registered by Python (ccn/_native.py adds the pip package
//      nvidia-cublas: site-packages/nvidia/cu13/lib, nvidia/cublas/lib),
//   3. the loader's default search (LD_LIBRARY_PATH, ldconfig): libcublas.so.13, .12, .so,
//   4. $CUDA_HOME/lib64, /usr/local/cuda/lib64.
// libcublasLt from the same directory is loaded first (libcublas needs it).
//
// All matrices are row-major like Mat; the row-major -> column-major swap is done here.
// Full float32 math (no TF32) so results track the CPU backend.
#pragma once
#include <string>
#include <vector>

namespace ccn {
struct CudaCtx;
namespace cuda {

// C = alpha * op(A) * op(B) + beta * C on cx.stream. op(A): M x K, op(B): K x N, C: M x N.
void sgemm(CudaCtx& cx, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// Handle management (used by CudaCtx).
void* cublas_create(void* stream);
void cublas_destroy(void* handle);
// "cuBLAS 130xxx (path)" once loaded, else why it could not be loaded. Never throws.
std::string cublas_describe();
void cublas_add_search_dir(const std::string& dir);

}  // namespace cuda
}  // namespace ccn
