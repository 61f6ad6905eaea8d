// ccn/native/core/blas.cpp: the BLAS binding. The default build uses the scipy-openblas32
// wheel, whose symbols carry a scipy_ prefix; system OpenBLAS and MKL use plain cblas names.
#include "core/blas.h"

#include "core/omp.h"

#include <algorithm>

#if defined(CCN_BLAS_SCIPY_OPENBLAS)
#include <cblas.h>
#define CCN_SGEMM scipy_cblas_sgemm
#elif defined(CCN_BLAS_MKL)
#include <mkl.h>
#define CCN_SGEMM cblas_sgemm
#else
#include <cblas.h>
#define CCN_SGEMM cblas_sgemm
#endif

#if defined(CCN_BLAS_SYSTEM)
// OpenBLAS exports these; other system BLASes may not, so they are weak.
extern "C" {
int openblas_get_num_threads(void) __attribute__((weak));
void openblas_set_num_threads(int) __attribute__((weak));
char* openblas_get_config(void) __attribute__((weak));
}
#endif

namespace ccn {

namespace {

void set_blas_threads(int n) {
#if defined(CCN_BLAS_SCIPY_OPENBLAS)
  scipy_openblas_set_num_threads(n);
#elif defined(CCN_BLAS_MKL)
  mkl_set_num_threads(n);
#else
  if (openblas_set_num_threads) openblas_set_num_threads(n);
#endif
}

// With OpenMP the BLAS runs single-threaded from the moment the library loads (see blas.h);
// without it, the BLAS keeps its own threads, the only ones ccn then has.
#ifdef _OPENMP
const bool blas_single_threaded = (set_blas_threads(1), true);
#else
const bool blas_single_threaded = true;
#endif

void gemm_call(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
               const float* B, int ldb, float beta, float* C, int ldc) {
  CCN_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

// Split C (M x N) along its longer side (rows of A or columns of B) into up to 4 blocks per
// thread, handed out dynamically (a thread that shares its core with another process then
// does less), each a multiple of 16 rows/columns so the BLAS kernel's panels stay whole.
// Row block [r0, r1): A's rows r0.. (op(A) row r is A + r*lda, or column r of A when
// transposed) and C's rows.
// Column block [c0, c1): B's columns c0.. (B + c0, or row c0 of B when transposed) and C's.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  (void)blas_single_threaded;
  const int T = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double work = 2.0 * M * N * std::max(K, 1);
  if (T == 1 || work < 4e6) {
    gemm_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool by_rows = M >= N;
  const int len = by_rows ? M : N;
  const int step = std::max(32, ((len + 4 * T - 1) / (4 * T) + 15) / 16 * 16);
  const int blocks = (len + step - 1) / step;
#pragma omp parallel for num_threads(std::min(T, blocks)) schedule(dynamic, 1)
  for (int t = 0; t < blocks; ++t) {
    const int lo = t * step, hi = std::min(len, lo + step);
    if (lo >= hi) continue;
    if (by_rows) {
      const float* At = trans_a ? A + lo : A + (int64_t)lo * lda;
      gemm_call(trans_a, trans_b, hi - lo, N, K, alpha, At, lda, B, ldb, beta, C + (int64_t)lo * ldc, ldc);
    } else {
      const float* Bt = trans_b ? B + (int64_t)lo * ldb : B + lo;
      gemm_call(trans_a, trans_b, M, hi - lo, K, alpha, A, lda, Bt, ldb, beta, C + lo, ldc);
    }
  }
}

std::string blas_name() { return CCN_BLAS_NAME; }

std::string blas_config() {
#if defined(CCN_BLAS_SCIPY_OPENBLAS)
  return scipy_openblas_get_config();
#elif defined(CCN_BLAS_MKL)
  char buf[256];
  mkl_get_version_string(buf, sizeof buf);
  return buf;
#else
  return openblas_get_config ? openblas_get_config() : "";
#endif
}

int blas_threads() {
#if defined(CCN_BLAS_SCIPY_OPENBLAS)
  return scipy_openblas_get_num_threads();
#elif defined(CCN_BLAS_MKL)
  return mkl_get_max_threads();
#else
  return openblas_get_num_threads ? openblas_get_num_threads() : 1;
#endif
}

int gemm_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return blas_threads();
#endif
}

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  set_blas_threads(n);
#endif
}

bool have_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace ccn
