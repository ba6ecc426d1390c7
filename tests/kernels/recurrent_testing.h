// recurrent_testing.h: what the GRU and attention kernel tests share (the
// tolerance model of a chain of roundings, inputs, a cuBLAS handle, finite
// differences). Included by tests/kernels/test_gru.cpp and test_attention.cpp.
#pragma once

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "tests/testing.h"

namespace timbre::testing::recurrent {

using timbre::DeviceBuffer;

// ---------------------------------------------------------------------------
// Tolerances: |got - ref| <= atol + rtol*|ref|, in units of the unit
// roundoff u of T (2^-24 float, 2^-53 double), so one analysis serves both
// types; the references compute in double, so for T = float their error is
// negligible and for T = double it is of the same kind as the kernel's.
//
// Where the error comes from (float; the same counts hold for double):
//   * A GEMM entry is a dot product of K terms. Its rounding error, for any
//     summation order (OpenBLAS here, cuBLAS with or without split-K on a
//     GPU), is the sum of K roundings of partial sums, with random signs.
//     cuBLAS in its default math mode computes FP32 GEMMs in FP32 (no TF32);
//     with TF32 allowed the errors would be ~1000x larger and these tests
//     would fail, as they should.
//   * The gate arithmetic: ~10 roundings per element, plus expf/tanhf, which
//     are within 2 ulp on a GPU (CUDA Programming Guide, "Mathematical
//     Functions"); simcuda uses libm (< 1 ulp).
//   * Through time: an error in h_{t-1} reaches h_t multiplied by the step's
//     Jacobian, whose norm stays below ~1 for these weights (|W| ~ 1/sqrt(H),
//     gates in (0, 1), tanh' <= 1): the roundings of all S steps add up.
//     Backward adds up the same way in reverse, then sums B*S rows for the
//     parameter gradients.
// Model: a value fed by a chain of N roundings, each at most u times the
// scale of the values involved and of random sign, is off by a random walk
// of standard deviation <= u sqrt(N) scale; 4 standard deviations cover
// every element of the tensors here. The fixed part (the gate arithmetic,
// 2 ulp transcendentals, and cancellation: small entries, like the bias
// gradients of the 1-unit layer, whose terms are larger than the result)
// gets 256 u. So eps = u (4 sqrt(N) + 256), relative to the scale (the
// largest |ref| of the tensor compared). The errors measured on the shapes
// below (simcuda, OpenBLAS) are at most ~30 u in both types, and every check
// passes with a margin of 17x or more. A wrong formula, a wrong index or a
// missed time step gives errors of order 1e-2 relative to the scale, far
// outside every tolerance here.

// Tolerance eps relative to the scale of the reference values: atol =
// eps * max|ref| (entries near 0 carry the rounding error of the large
// terms that cancelled in them), rtol = eps.
template <class V>
Tolerance scaled(double eps, const V& ref) {
  return Tolerance{eps * std::max(max_abs(ref), 1e-30), eps};
}

// eps for values fed by a chain of n roundings (see above).
template <class T>
double chain_eps(double n) {
  return unit_roundoff<T> * (4 * std::sqrt(n) + 256);
}

// Accumulating: old + g rounds once more (1 ulp of the result); g's own
// error is relative to |g|, which may exceed the sum, so it becomes
// absolute: atol + rtol * max|g|.
inline Tolerance accumulated(Tolerance t, double max_abs_g, double u) {
  return Tolerance{t.atol + t.rtol * max_abs_g, t.rtol + 2 * u};
}

// 96: three warps, not a power of two; 256: the default.
inline const std::vector<int> kBlocks = {96, 256};

template <class T>
std::vector<T> uniform(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  const auto u = random_floats(n, seed, float(lo), float(hi));
  return std::vector<T>(u.begin(), u.end());
}

// Owns a cuBLAS handle, bound to the default stream.
struct Cublas {
  cublasHandle_t h = nullptr;
  Cublas() { CUBLAS_CHECK(cublasCreate(&h)); }
  ~Cublas() { cublasDestroy(h); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
};

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Finite differences (double) of a layer's own device forward, so that a
// formula shared by the kernels and the reference cannot be wrong in both:
// L = sum w . outputs for random w (the upstream gradients), and dL/dp_k ~
// (L(p + h e_k) - L(p - h e_k)) / 2h with h = 1e-6. The truncation error
// (h^2 / 6 times the third derivative) is ~1e-13; the rounding error
// ~u |L| / h ~ 1e-16 * 10 / 1e-6 = 1e-9. 1e-7 + 1e-6 |ref| checks the
// formulas (a wrong one is off by O(0.01) or more), not the rounding.
inline const Tolerance kFiniteDifferenceTol{1e-7, 1e-6};
constexpr double kStep = 1e-6;
inline const char* const kFiniteDifferenceWhy =
    "central differences, h = 1e-6: truncation ~1e-13, rounding ~1e-9";

// Runs f and checks it throws std::invalid_argument with exactly `message`.
template <class F>
void expect_invalid(F&& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected: " << message;
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

}  // namespace timbre::testing::recurrent
