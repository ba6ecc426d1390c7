// cuda_check.h: one way to check every CUDA, cuBLAS and cuFFT call.
//
//   CUDA_CHECK(cudaMalloc(&d_x, bytes));      // throws timbre::CudaError
//   CUBLAS_CHECK(cublasSgemm(...));
//   CUFFT_CHECK(cufftExecR2C(...));
//   CUDA_CHECK_LOG(cudaFree(d_x));             // destructors: log, never throw
//
// The exception names the failed expression, the library's error name and
// description, and file:line. In the sim flavour it also carries simcuda's
// explanation (which kernel, which block, what went wrong).
// Host-only header: no device code, usable from .cpp files.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cufft.h>

#include <stdexcept>
#include <string>

namespace timbre {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line);
[[noreturn]] void throw_cufft_error(cufftResult r, const char* expr, const char* file, int line);
void log_cuda_error(cudaError_t e, const char* expr, const char* file, int line) noexcept;

const char* cufft_result_name(cufftResult r);

}  // namespace timbre

#define CUDA_CHECK(expr)                                                          \
  do {                                                                            \
    const cudaError_t timbre_e_ = (expr);                                         \
    if (timbre_e_ != cudaSuccess) ::timbre::throw_cuda_error(timbre_e_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_LOG(expr)                                                      \
  do {                                                                            \
    const cudaError_t timbre_e_ = (expr);                                         \
    if (timbre_e_ != cudaSuccess) ::timbre::log_cuda_error(timbre_e_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                        \
  do {                                                                            \
    const cublasStatus_t timbre_s_ = (expr);                                      \
    if (timbre_s_ != CUBLAS_STATUS_SUCCESS)                                       \
      ::timbre::throw_cublas_error(timbre_s_, #expr, __FILE__, __LINE__);         \
  } while (0)

#define CUFFT_CHECK(expr)                                                         \
  do {                                                                            \
    const cufftResult timbre_r_ = (expr);                                         \
    if (timbre_r_ != CUFFT_SUCCESS) ::timbre::throw_cufft_error(timbre_r_, #expr, __FILE__, __LINE__); \
  } while (0)
