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

// The shape of one column-major GEMM, C = alpha op(A) op(B) + beta C, in
// cuBLAS's terms. Aggregate: GemmShape{ta, tb, m, n, k, lda, ldb, ldc}.
struct GemmShape {
  cublasOperation_t ta, tb;  // op(A), op(B): kN (as stored) or kT (transposed)
  int m, n, k;               // C is m x n, op(A) m x k, op(B) k x n
  int lda, ldb, ldc;         // leading dimensions: elements between columns of A, B, C
};

// C = alpha op(A) op(B) + beta C, column-major, alpha and beta on the host.
void gemm(cublasHandle_t h, const GemmShape& g, float alpha, const float* A, const float* B,
          float beta, float* C);
void gemm(cublasHandle_t h, const GemmShape& g, double alpha, const double* A, const double* B,
          double beta, double* C);

// A strided batch of GEMMs of one shape: the i-th (i < count) runs on A +
// i*a, B + i*b and C + i*c (strides in elements; 0 reuses one operand).
// Aggregate: GemmBatch{a, b, c, count}.
struct GemmBatch {
  long long a, b, c;
  int count;
};

// C_i = alpha op(A_i) op(B_i) + beta C_i for every i of the batch, in one
// cuBLAS call (cublas<t>gemmStridedBatched).
void gemm_batched(cublasHandle_t h, const GemmShape& g, const GemmBatch& batch, float alpha,
                  const float* A, const float* B, float beta, float* C);
void gemm_batched(cublasHandle_t h, const GemmShape& g, const GemmBatch& batch, double alpha,
                  const double* A, const double* B, double beta, double* C);

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
