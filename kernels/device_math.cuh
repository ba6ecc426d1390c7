// device_math.cuh: device math for float and double, written once.
//
// Named overloads (exp_of(float) calls expf, exp_of(double) calls exp), so
// that a kernel templated on T never calls a double function from a float
// kernel by accident: on a GPU that would run at the double rate (1/64 of
// float on consumer parts) and silently widen registers.
#pragma once

#include <cmath>

#include "kernels/sim/simcuda.h"

namespace timbre::kernels {

__host__ __device__ __forceinline__ float exp_of(float x) { return expf(x); }
__host__ __device__ __forceinline__ double exp_of(double x) { return exp(x); }
__host__ __device__ __forceinline__ float expm1_of(float x) { return expm1f(x); }
__host__ __device__ __forceinline__ double expm1_of(double x) { return expm1(x); }
__host__ __device__ __forceinline__ float tanh_of(float x) { return tanhf(x); }
__host__ __device__ __forceinline__ double tanh_of(double x) { return tanh(x); }
__host__ __device__ __forceinline__ float abs_of(float x) { return fabsf(x); }
__host__ __device__ __forceinline__ double abs_of(double x) { return fabs(x); }
__host__ __device__ __forceinline__ float sqrt_of(float x) { return sqrtf(x); }
__host__ __device__ __forceinline__ double sqrt_of(double x) { return sqrt(x); }
// One rounding in both flavours: nvcc would contract a*b + c into an fma on
// its own, g++ would not.
__host__ __device__ __forceinline__ float fma_of(float a, float b, float c) {
  return fmaf(a, b, c);
}
__host__ __device__ __forceinline__ double fma_of(double a, double b, double c) {
  return fma(a, b, c);
}

// sigmoid without overflow for any x: e = exp(-|x|) is in (0, 1], so
// x >= 0: 1 / (1 + e); x < 0: e / (1 + e) (= 1 / (1 + e^-x) times e/e).
template <class T>
__host__ __device__ __forceinline__ T sigmoid_of(T x) {
  const T e = exp_of(-abs_of(x));
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

// n / d for a divisor d fixed before the launch, without a divide: a GPU
// has no integer divide instruction (a 32-bit n / d compiles to a sequence
// of about 20 instructions, 64-bit to a call of about 70), and index math
// that divides per element can cost more than the element's memory
// traffic. With s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1,
//   n / d = (umulhi(n, m) + n) >> s      for 0 <= n < 2^31
// (Granlund and Montgomery, "Division by invariant integers using
// multiplication", PLDI 1994): one multiply-high, an add and a shift.
// umulhi(a, b) = the high 32 bits of the 64-bit product: the __umulhi
// instruction on the device, the 64-bit product on the host (and so under
// simcuda), the same value.
struct FastDiv {
  unsigned d = 1, m = 1, s = 0;
  FastDiv() = default;
  __host__ __device__ explicit FastDiv(unsigned divisor) : d(divisor) {
    while ((1ull << s) < d) ++s;
    m = unsigned((1ull << 32) * ((1ull << s) - d) / d + 1);
  }
  __host__ __device__ __forceinline__ unsigned div(unsigned n) const {
#if defined(__CUDA_ARCH__)
    const unsigned hi = __umulhi(n, m);
#else
    const unsigned hi = unsigned((unsigned long long)n * m >> 32);
#endif
    return (hi + n) >> s;
  }
};

// Max pooling's choice in one window: the values value(at) for at = corner
// + r*width + q (0 <= r < kh, 0 <= q < kw, an index within the plane), in
// row-major order (r, then q). best is the first maximum, except that a NaN
// wins over everything and a later NaN over an earlier one (v != v is the
// NaN test: timbre never compiles with fast-math); best_at where it is (the
// corner for a window of -inf). Shared by max pooling (kernels/pooling.cu)
// and batch norm's fused pooling (kernels/batchnorm.cu), so both choose
// alike, bit for bit.
template <class T, class Value>
__host__ __device__ __forceinline__ void window_max(int corner, int width, int kh, int kw,
                                                    const Value& value, T& best, int& best_at) {
  best_at = corner;
  best = T(-INFINITY);
  for (int r = 0; r < kh; ++r)
    for (int q = 0; q < kw; ++q) {
      const int at = corner + r * width + q;
      const T v = value(at);
      if (v > best || v != v) {
        best = v;
        best_at = at;
      }
    }
}

}  // namespace timbre::kernels
