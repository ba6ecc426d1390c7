// common.cuh: included first by every kernel file.
//
// Gives the kernel language for both compilers (simcuda.h: nvcc or g++), the
// error-checking macros (cuda_check.h), checked launches and grid helpers.
//
//   LAUNCH(my_kernel, grid, block, smem_bytes, stream, args...);
//
// is my_kernel<<<grid, block, smem_bytes, stream>>>(args...) followed by a
// check of the launch; it throws timbre::CudaError naming the kernel, file
// and line. Template kernels go in parentheses: LAUNCH((k<float, 4>), ...).
#pragma once

#include "kernels/cuda_check.h"
#include "kernels/sim/simcuda.h"

#define LAUNCH(kernel, grid, block, smem, stream, ...) \
  CUDA_CHECK((::simcuda::launch<kernel>((grid), (block), (smem), (stream), __VA_ARGS__)))

namespace timbre {

constexpr __host__ __device__ inline long long ceil_div(long long a, long long b) {
  return (a + b - 1) / b;
}

// Blocks for a one-dimensional launch over n items, at most max_blocks (a
// grid-stride loop in the kernel covers the rest).
// (At least one block, whatever max_blocks says.)
inline unsigned grid_1d(long long n, unsigned block, unsigned max_blocks = 65535u * 32u) {
  if (max_blocks == 0) max_blocks = 1;
  const long long b = ceil_div(n > 0 ? n : 1, block);
  return unsigned(b < max_blocks ? b : max_blocks);
}

}  // namespace timbre
