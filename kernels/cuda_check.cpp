#include "kernels/cuda_check.h"

#include <cstdio>

#if TIMBRE_BACKEND_SIM
#include "kernels/sim/control.h"
#endif

namespace timbre {
namespace {

std::string where(const char* expr, const char* file, int line) {
  return std::string(expr) + " at " + file + ":" + std::to_string(line);
}

std::string simcuda_detail([[maybe_unused]] cudaError_t e) {
#if TIMBRE_BACKEND_SIM
  const std::string d = simcuda::error_detail(e);
  if (!d.empty()) return "\n  simcuda: " + d;
#endif
  return {};
}

}  // namespace

void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  throw CudaError(std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ") from " +
                  where(expr, file, line) + simcuda_detail(e));
}

void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line) {
  throw CudaError(std::string(cublasGetStatusName(s)) + " (" + cublasGetStatusString(s) +
                  ") from " + where(expr, file, line));
}

void throw_cufft_error(cufftResult r, const char* expr, const char* file, int line) {
  throw CudaError(std::string(cufft_result_name(r)) + " from " + where(expr, file, line));
}

void log_cuda_error(cudaError_t e, const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "timbre: %s (%s) from %s:%d: %s\n", cudaGetErrorName(e),
               cudaGetErrorString(e), file, line, expr);
}

const char* cufft_result_name(cufftResult r) {
  switch (r) {
    case CUFFT_SUCCESS: return "CUFFT_SUCCESS";
    case CUFFT_INVALID_PLAN: return "CUFFT_INVALID_PLAN";
    case CUFFT_ALLOC_FAILED: return "CUFFT_ALLOC_FAILED";
    case CUFFT_INVALID_TYPE: return "CUFFT_INVALID_TYPE";
    case CUFFT_INVALID_VALUE: return "CUFFT_INVALID_VALUE";
    case CUFFT_INTERNAL_ERROR: return "CUFFT_INTERNAL_ERROR";
    case CUFFT_EXEC_FAILED: return "CUFFT_EXEC_FAILED";
    case CUFFT_SETUP_FAILED: return "CUFFT_SETUP_FAILED";
    case CUFFT_INVALID_SIZE: return "CUFFT_INVALID_SIZE";
    case CUFFT_UNALIGNED_DATA: return "CUFFT_UNALIGNED_DATA";
    case CUFFT_INVALID_DEVICE: return "CUFFT_INVALID_DEVICE";
    case CUFFT_NO_WORKSPACE: return "CUFFT_NO_WORKSPACE";
    case CUFFT_NOT_IMPLEMENTED: return "CUFFT_NOT_IMPLEMENTED";
    case CUFFT_NOT_SUPPORTED: return "CUFFT_NOT_SUPPORTED";
    default: return "CUFFT_UNKNOWN_ERROR";
  }
}

}  // namespace timbre
