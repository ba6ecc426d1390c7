// cost.h: what a kernel launch does, for benchmarks (GFLOP/s, GB/s against
// the machine's ceilings). Every op's .cuh declares a *_cost function.
#pragma once

namespace timbre::kernels {

struct Cost {
  double flops = 0;  // floating-point operations
  double bytes = 0;  // bytes read from + written to global memory (ideal: each once)
};

// n elements, `reads` input arrays and `writes` output arrays of `elem`-byte
// values, `flops_per` operations per element.
inline Cost elementwise_cost(double n, int reads, int writes, double flops_per, int elem = 4) {
  return Cost{n * flops_per, n * elem * double(reads + writes)};
}

}  // namespace timbre::kernels
