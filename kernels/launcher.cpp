#include "kernels/launcher.h"

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "kernels/blas.h"
#include "kernels/cuda_check.h"
#include "kernels/grid.h"
#include "kernels/profile.h"

namespace timbre::kernels {

void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

void check_pointer(const char* op, const void* p, const char* name) {
  if (p == nullptr) fail(op, std::string(name) + " is null");
}

void check_block(const char* op, int block) {
  if (block < 32 || block > 1024 || block % 32 != 0)
    fail(op, "block must be a multiple of 32 in [32, 1024], not " + std::to_string(block));
}

void check_at_least(const char* op, const char* name, long long value, long long least) {
  if (value < least)
    fail(op, std::string(name) + " must be >= " + std::to_string(least) + ", not " +
                 std::to_string(value));
}

void check_size_and_block(const char* op, long long n, int block) {
  check_at_least(op, "n", n, 0);
  check_block(op, block);
}

void check_fits_int(const char* op, const char* what, long long value) {
  if (value > INT_MAX)
    fail(op, std::string(what) + " = " + std::to_string(value) + " does not fit in int");
}

unsigned blocks_for(long long n, int block) {
  const long long cap = std::max(1LL, max_grid_threads() / block);
  const long long blocks = (std::max(n, 1LL) + block - 1) / block;
  return unsigned(std::min(blocks, cap));
}

// Brackets a GEMM for kernels/profile.h: 2mnk flops per product, and the
// bytes of reading A, B (and C when beta != 0) and writing C once.
static profile::LibraryCall profiled_gemm(const char* name, cublasHandle_t h, const GemmShape& g,
                                   int count, bool reads_c, int elem) {
  cudaStream_t s = nullptr;
  CUBLAS_CHECK(cublasGetStream(h, &s));
  const double m = g.m, n = g.n, k = g.k;
  std::string shape;
  if (profile::tracing())
    shape = "m=" + std::to_string(g.m) + " n=" + std::to_string(g.n) + " k=" +
            std::to_string(g.k) + (count > 1 ? " batch=" + std::to_string(count) : "");
  return profile::LibraryCall(name, s, 2 * m * n * k * count,
                              double(elem) * count * (m * k + k * n + m * n * (reads_c ? 2 : 1)),
                              std::move(shape));
}

void gemm(cublasHandle_t h, const GemmShape& g, float alpha, const float* A, const float* B,
          float beta, float* C) {
  const auto p = profiled_gemm("cublasSgemm", h, g, 1, beta != 0, 4);
  CUBLAS_CHECK(cublasSgemm(h, g.ta, g.tb, g.m, g.n, g.k, &alpha, A, g.lda, B, g.ldb, &beta, C,
                           g.ldc));
}

void gemm(cublasHandle_t h, const GemmShape& g, double alpha, const double* A, const double* B,
          double beta, double* C) {
  const auto p = profiled_gemm("cublasDgemm", h, g, 1, beta != 0, 8);
  CUBLAS_CHECK(cublasDgemm(h, g.ta, g.tb, g.m, g.n, g.k, &alpha, A, g.lda, B, g.ldb, &beta, C,
                           g.ldc));
}

void gemm_batched(cublasHandle_t h, const GemmShape& g, const GemmBatch& batch, float alpha,
                  const float* A, const float* B, float beta, float* C) {
  const auto p = profiled_gemm("cublasSgemmStridedBatched", h, g, batch.count, beta != 0, 4);
  CUBLAS_CHECK(cublasSgemmStridedBatched(h, g.ta, g.tb, g.m, g.n, g.k, &alpha, A, g.lda, batch.a,
                                         B, g.ldb, batch.b, &beta, C, g.ldc, batch.c,
                                         batch.count));
}

void gemm_batched(cublasHandle_t h, const GemmShape& g, const GemmBatch& batch, double alpha,
                  const double* A, const double* B, double beta, double* C) {
  const auto p = profiled_gemm("cublasDgemmStridedBatched", h, g, batch.count, beta != 0, 8);
  CUBLAS_CHECK(cublasDgemmStridedBatched(h, g.ta, g.tb, g.m, g.n, g.k, &alpha, A, g.lda, batch.a,
                                         B, g.ldb, batch.b, &beta, C, g.ldc, batch.c,
                                         batch.count));
}

void check_handle(const char* op, cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) fail(op, "the cuBLAS handle is null");
  cudaStream_t handle_stream = nullptr;
  CUBLAS_CHECK(cublasGetStream(handle, &handle_stream));
  if (handle_stream != stream)
    fail(op, "the cuBLAS handle is set to another stream than the launch's; call "
             "cublasSetStream(handle, stream) first");
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  CUBLAS_CHECK(cublasGetPointerMode(handle, &mode));
  if (mode != CUBLAS_POINTER_MODE_HOST)
    fail(op, "the cuBLAS handle must be in CUBLAS_POINTER_MODE_HOST");
}

}  // namespace timbre::kernels
