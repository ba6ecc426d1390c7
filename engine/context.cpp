#include "engine/context.h"

#include "kernels/cuda_check.h"

namespace timbre {

cudaStream_t stream() { return nullptr; }  // the default stream

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
