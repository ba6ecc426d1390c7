// blas.h: the cuBLAS GEMM as the layer launchers call it, in float and double.
//
// cuBLAS is column-major; timbre's matrices are row-major. A row-major
// (m x n) matrix is the column-major (n x m) matrix of its transpose, so a
// row-major C = A B is issued as the column-major C^T = B^T A^T (swap the
// operands and m, n). The launchers spell out each GEMM's column-major form
// in a comment beside the call.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace timbre::kernels {

constexpr cublasOperation_t kN = CUBLAS_OP_N;
constexpr cublasOperation_t kT = CUBLAS_OP_T;

// C = alpha op(A) op(B) + beta C, column-major, alpha and beta on the host.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
          int ldc);
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          double alpha, const double* A, int lda, const double* B, int ldb, double beta,
          double* C, int ldc);

// beta for a GEMM that assigns (0) or accumulates (1) into C.
template <class T>
T beta_for(bool accumulate) {
  return accumulate ? T(1) : T(0);
}

// The handle must issue its GEMMs on the launcher's stream (or kernels and
// GEMMs would race on a GPU; simcuda runs everything in issue order and
// could not tell) and read alpha and beta from the host.
void check_handle(const char* op, cublasHandle_t handle, cudaStream_t stream);

}  // namespace timbre::kernels
