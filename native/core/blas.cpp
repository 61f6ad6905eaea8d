// ccn/native/core/blas.cpp: the BLAS binding. The default build uses the scipy-openblas32
// wheel, whose symbols carry a scipy_ prefix; system OpenBLAS and MKL use plain cblas names.
#include "core/blas.h"

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

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  CCN_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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

void set_blas_threads(int n) {
#if defined(CCN_BLAS_SCIPY_OPENBLAS)
  scipy_openblas_set_num_threads(n);
#elif defined(CCN_BLAS_MKL)
  mkl_set_num_threads(n);
#else
  if (openblas_set_num_threads) openblas_set_num_threads(n);
#endif
}

}  // namespace ccn
