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

// A GEMM (m x k) (k x n): 2mnk operations; A and B read once, C written
// (and read too when the GEMM accumulates into it).
inline Cost gemm_cost(double m, double n, double k, int elem, bool accumulate = false) {
  return Cost{2 * m * n * k, (m * k + k * n + m * n * (accumulate ? 2 : 1)) * elem};
}

inline Cost& operator+=(Cost& a, const Cost& b) {
  a.flops += b.flops;
  a.bytes += b.bytes;
  return a;
}
inline Cost times(Cost c, double k) { return Cost{c.flops * k, c.bytes * k}; }

}  // namespace timbre::kernels
