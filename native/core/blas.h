// ccn/native/core/blas.h: every GEMM in the CPU backend goes through here.
#pragma once
#include <string>

namespace ccn {

// Threading: ccn uses one thread pool, OpenMP's. The BLAS itself runs single-threaded
// (set once when the library loads); sgemm splits a large product into blocks of C rows or
// columns, one block per OpenMP thread, each a single-threaded BLAS call. Called inside a
// parallel region it is one single-threaded call. (Two pools, OpenMP's and OpenBLAS's own
// pthreads, spin-waiting against each other made a 2-core step 3-8x slower; tools/perf-notes.md.)
// Each C element is computed by one call over the whole K; the split depends only on the
// shape and the thread count, so results are reproducible for a given thread count.

// C = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is M x K, op(B) is K x N.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

std::string blas_name();     // which BLAS and its version
std::string blas_config();   // the BLAS's own description of its build (may be empty)
int blas_threads();       // the BLAS library's own threads (1 in ccn, see above)
int gemm_threads();       // threads a large sgemm is split over (the OpenMP threads)
// The CPU threads ccn uses: OpenMP's (the BLAS stays single-threaded, sgemm splits over them),
// or, in a build without OpenMP (core/omp.h), the BLAS library's own.
void set_threads(int n);
bool have_openmp();

}  // namespace ccn
