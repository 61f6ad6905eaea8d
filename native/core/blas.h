// ccn/native/core/blas.h: every GEMM in the CPU backend goes through here.
#pragma once
#include <string>

namespace ccn {

// C = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is M x K, op(B) is K x N.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

std::string blas_name();     // which BLAS and its version
std::string blas_config();   // the BLAS's own description of its build (may be empty)
int blas_threads();
void set_blas_threads(int n);

}  // namespace ccn
