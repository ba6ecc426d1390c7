#include "engine/context.h"

#include "kernels/cuda_check.h"

namespace timbre {

cudaStream_t stream() {
  // A created stream, not the legacy default one: a CUDA graph can only be
  // captured from a created stream. Blocking (the default flags), so it still
  // orders against the legacy stream's work (blocking cudaMemcpy, code that
  // passes stream 0) as the legacy stream did.
  static cudaStream_t s = [] {
    cudaStream_t c;
    CUDA_CHECK(cudaStreamCreate(&c));
    return c;
  }();
  return s;
}

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetStream(handle, stream()));
    // Exact FP32 (no TF32) so results match the CPU references and PyTorch.
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    return handle;
  }();
  return h;
}

cudaStream_t copy_stream() {
  static cudaStream_t s = [] {
    cudaStream_t c;
    // Non-blocking: it does not wait for the legacy default stream.
    CUDA_CHECK(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking));
    return c;
  }();
  return s;
}

}  // namespace timbre
