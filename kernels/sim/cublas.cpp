// cublas.cpp: simcuda's cuBLAS subset, computed on the CPU by OpenBLAS.
//
// Mapping. cuBLAS and CBLAS share the BLAS definition of GEMM,
//   C = alpha * op(A) * op(B) + beta * C,   op(A) is m x k, op(B) k x n, C m x n,
// on column-major matrices with leading dimensions, so each call is one
// cblas_sgemm(CblasColMajor, ...) with the same arguments. What differs, and
// is therefore done here:
//   * argument checks: cuBLAS returns CUBLAS_STATUS_INVALID_VALUE, OpenBLAS
//     only prints (xerbla) and returns, so every documented check is made
//     before OpenBLAS is called and OpenBLAS never sees a bad argument;
//   * beta == 0 means "C is output only": NaN or Inf left in C (simcuda
//     fills new memory with NaN) must not leak through 0 * NaN. OpenBLAS's
//     beta == 0 path writes C without reading it (checked by the tests); k ==
//     0 or alpha == 0 reduce to C = beta * C here, without reading A or B;
//   * CUBLAS_OP_C is CUBLAS_OP_T for real data.
// Pointer modes: simcuda device memory is host memory, so alpha and beta are
// read through their pointers in both CUBLAS_POINTER_MODE_HOST and _DEVICE.
// Streams: simcuda runs every stream's work in issue order, so a call is
// complete when it returns (as if the stream were synchronised); the stream
// is only stored for cublasGetStream. Math modes are stored and reported but
// the arithmetic is always full FP32 (no TF32 rounding).
//
// Threads. OpenBLAS runs single-threaded here; the parallelism comes from
// simcuda's own worker pool (parallel_host), which waits passively between
// jobs. OpenBLAS's pthread pool instead spins with sched_yield after every
// call, and on a 2-core machine that spinning took a quarter of a training
// step away from the kernels that ran next. A large GEMM is split into
// column panels of C, C[:, j0:j1] = alpha op(A) op(B)[:, j0:j1] + beta
// C[:, j0:j1], each one OpenBLAS call; a strided batch is split by batch.
// The panels depend only on the GEMM's shape, never on the worker count,
// and each element of C is one call's full dot product over k, so the
// result is the same bits for any number of workers.

#include <cublas_v2.h>  // first: maps cublasCreate -> cublasCreate_v2 etc.

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <new>

#include "kernels/sim/internal.h"

struct cublasContext {
  cudaStream_t stream = nullptr;  // the legacy default stream
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
};

namespace {

bool valid_op(cublasOperation_t op) {
  return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

CBLAS_TRANSPOSE to_cblas(cublasOperation_t op) {
  return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;  // OP_C == OP_T for real data
}

// The checks cuBLAS documents for cublas<t>gemm, in its order: the handle,
// then the values.
template <class T>
cublasStatus_t check_gemm(cublasHandle_t handle, cublasOperation_t transa,
                          cublasOperation_t transb, int m, int n, int k, const T* alpha,
                          int lda, int ldb, const T* beta, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(transa) || !valid_op(transb)) return CUBLAS_STATUS_INVALID_VALUE;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const int rows_a = transa == CUBLAS_OP_N ? m : k;  // A is stored rows_a x (the other)
  const int rows_b = transb == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, rows_a) || ldb < std::max(1, rows_b) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

// C = beta * C on the m x n block; beta == 0 writes zeros without reading C.
template <class T>
void scale_c(int m, int n, T beta, T* C, int ldc) {
  for (int j = 0; j < n; ++j) {
    T* col = C + int64_t(j) * ldc;
    if (beta == T(0))
      std::fill(col, col + m, T(0));
    else if (beta != T(1))
      for (int i = 0; i < m; ++i) col[i] *= beta;
  }
}

void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                const double* A, int lda, const double* B, int ldb, double beta, double* C,
                int ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// One GEMM after the checks passed, on the calling thread.
template <class T>
void gemm_serial(cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, T alpha,
                 const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  if (m == 0 || n == 0) return;     // empty C: nothing to do
  if (k == 0 || alpha == T(0)) {    // op(A) * op(B) contributes nothing: A and B unread
    scale_c(m, n, beta, C, ldc);
    return;
  }
  // beta == 0: OpenBLAS (like the reference BLAS) then sets C without
  // reading it, so NaN left in C cannot leak (tests/sim/test_cublas.cpp
  // starts such C at NaN); no separate zeroing pass.
  cblas_gemm(to_cblas(transa), to_cblas(transb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void single_threaded_openblas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Column panels for a GEMM of this shape: one below 2^22 multiply-adds (a
// few milliseconds: not worth a hand-off), else up to 8 panels of at least
// 32 columns. A function of the shape only (see "Threads" above).
int column_panels(long long m, long long n, long long k) {
  if (m * n * k < (1LL << 22)) return 1;
  return int(std::clamp<long long>(n / 32, 1, 8));
}

// Panel p of `panels` of op(B) and C. Column j of op(B) is column j of B
// (op N: B + j*ldb) or row j of B (op T: B + j).
template <class T>
void gemm(cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, T alpha,
          const T* A, int lda, const T* B, int ldb, T beta, T* C, int ldc) {
  single_threaded_openblas();
  const int panels = column_panels(m, n, k);
  if (panels == 1) {
    gemm_serial(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  simcuda::detail::parallel_host(unsigned(panels), [&](unsigned p) {
    const int j0 = int((long long)n * p / panels), j1 = int((long long)n * (p + 1) / panels);
    const T* Bp = transb == CUBLAS_OP_N ? B + (long long)j0 * ldb : B + j0;
    gemm_serial(transa, transb, m, j1 - j0, k, alpha, A, lda, Bp, ldb, beta,
                C + (long long)j0 * ldc, ldc);
  });
}

template <class T>
cublasStatus_t gemm_call(cublasHandle_t handle, cublasOperation_t transa,
                         cublasOperation_t transb, int m, int n, int k, const T* alpha,
                         const T* A, int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
  const cublasStatus_t s = check_gemm(handle, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  const T a = *alpha, b = *beta;  // host scalars, read at the call (as cuBLAS does)
  simcuda::detail::host_work(handle->stream, [=] {
    gemm(transa, transb, m, n, k, a, A, lda, B, ldb, b, C, ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

// Batch i multiplies A + i*strideA by B + i*strideB into C + i*strideC
// (strides in elements, 64-bit).
template <class T>
cublasStatus_t gemm_strided_batched_call(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const T* alpha, const T* A, int lda, long long strideA,
                                         const T* B, int ldb, long long strideB, const T* beta,
                                         T* C, int ldc, long long strideC, int batchCount) {
  const cublasStatus_t s = check_gemm(handle, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const T a = *alpha, b = *beta;  // host scalars, read at the call (as cuBLAS does)
  simcuda::detail::host_work(handle->stream, [=] {
    single_threaded_openblas();
    if (batchCount >= 2 && (long long)m * n * k * batchCount >= (1LL << 22)) {
      // Batches in parallel, each one serial call (batches never share C).
      simcuda::detail::parallel_host(unsigned(batchCount), [&](unsigned i) {
        gemm_serial(transa, transb, m, n, k, a, A + i * strideA, lda, B + i * strideB, ldb, b,
                    C + i * strideC, ldc);
      });
    } else {
      for (int i = 0; i < batchCount; ++i)
        gemm(transa, transb, m, n, k, a, A + i * strideA, lda, B + i * strideB, ldb, b,
             C + i * strideC, ldc);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new (std::nothrow) cublasContext;
  return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (stream == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  // One base mode, optionally with the DISALLOW_REDUCED_PRECISION_REDUCTION flag.
  const int base = int(mode) & ~int(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  switch (base) {
    case CUBLAS_DEFAULT_MATH:
    case CUBLAS_TENSOR_OP_MATH:
    case CUBLAS_PEDANTIC_MATH:
    case CUBLAS_TF32_TENSOR_OP_MATH:
    case CUBLAS_FP32_EMULATED_BF16X9_MATH:
    case CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH:
      handle->math_mode = mode;
      return CUBLAS_STATUS_SUCCESS;
    default:
      return CUBLAS_STATUS_INVALID_VALUE;
  }
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math_mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the cuBLAS handle was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "a resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value was passed as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "the device lacks an architectural feature the function requires";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal cuBLAS operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the requested functionality is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "the requested functionality needs a license";
  }
  return "unknown cuBLAS status";
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm_call(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t cublasDgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const double* alpha,
                           const double* A, int lda, const double* B, int ldb,
                           const double* beta, double* C, int ldc) {
  return gemm_call(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda,
                                         long long int strideA, const float* B, int ldb,
                                         long long int strideB, const float* beta, float* C,
                                         int ldc, long long int strideC, int batchCount) {
  return gemm_strided_batched_call(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B,
                                   ldb, strideB, beta, C, ldc, strideC, batchCount);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const double* alpha, const double* A, int lda,
                                         long long int strideA, const double* B, int ldb,
                                         long long int strideB, const double* beta, double* C,
                                         int ldc, long long int strideC, int batchCount) {
  return gemm_strided_batched_call(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B,
                                   ldb, strideB, beta, C, ldc, strideC, batchCount);
}

}  // extern "C"
