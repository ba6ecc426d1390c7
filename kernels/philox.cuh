// philox: counter-based random numbers (Philox4x32-10), the fills, dropout
// and weight initialisers built on them. T is float or double (double for
// tests and gradient checks). See docs/kernels/philox.md.
//
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
// easy as 1, 2, 3", SC 2011) is a bijection of a 128-bit counter c = (c0, c1,
// c2, c3), keyed by 64 bits k = (k0, k1), into four 32-bit words. One round:
//   (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2      (32x32 -> 64-bit products)
//   c' = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
// with M0 = 0xD2511F53, M1 = 0xCD9E8D57; ten rounds, the key bumped by
// (W0, W1) = (0x9E3779B9, 0xBB67AE85) between rounds (mod 2^32). There is no
// state: word j of element i is a pure function of (seed, counter).
//
// timbre's convention (every kernel here and its CPU reference):
//   key     = the 64-bit seed: k0 = low 32 bits, k1 = high 32 bits;
//   counter = the 128-bit integer offset + i/4 (c0 least significant), and
//             element i takes word i % 4 of it.
// So a result depends only on (seed, offset, i): not on the thread order,
// the block size, the worker count or the flavour. A call on n elements
// uses philox_counters(n) = ceil(n/4) counters; the next call with the same
// seed should start at offset + philox_counters(n) to get fresh numbers.
//
// Conversions (exact: no rounding anywhere):
//   float  u = ((x >> 8) + 1) * 2^-24    in (0, 1], 2^24 values, the top 24 bits
//   double u = (x + 1) * 2^-32           in (0, 1], 2^32 values, all 32 bits
// Both exclude 0 so that Box-Muller's log(u) is finite. Normals, Box-Muller
// on the pairs (word 0, word 1) and (word 2, word 3) of a counter:
//   r = sqrt(-2 ln u_a),  z_a = r cos(2 pi u_b),  z_b = r sin(2 pi u_b)
// (|z| <= 5.77 in float, <= 6.66 in double, from the smallest u).
//
// Fills:    uniform  x_i = lo + (hi - lo) u_i   (one fma)
//           normal   x_i = mean + std z_i        (one fma)
//           bits     x_i = word i % 4 of counter offset + i/4
// Dropout (inverted, as Keras and PyTorch), p in [0, 1):
//   keep_i = word_i >= t,  t = floor(p 2^32)        (P(keep) = 1 - p to 2^-32)
//   forward  y_i  = x_i  * m_i,   m_i = keep_i ? 1/(1-p) : 0
//   backward dx_i = dy_i * m_i    (accumulate: dx_i += dy_i * m_i, as one fma)
// The mask is not stored: backward regenerates it from (seed, offset, p).
// Initialisers (host functions launching the fills):
//   glorot_uniform  U(-l, l), l = sqrt(6 / (fan_in + fan_out))  (Keras default)
//   he_uniform      U(-l, l), l = sqrt(6 / fan_in)   (Keras he_uniform = PyTorch
//                   kaiming_uniform_ with its defaults a = 0, fan_in)
//   he_normal       N(0, 2 / fan_in), not truncated  (PyTorch kaiming_normal_
//                   defaults; Keras's he_normal truncates at 2 sigma)
//   orthogonal      Keras/PyTorch `orthogonal`: QR of a Philox normal matrix
//                   on the host, columns signed so that diag(R) > 0
//
// Bits, uniforms and dropout are the same bits in the sim and cuda flavours
// (integer arithmetic, exact conversions, correctly rounded fma). Normals go
// through logf and sincosf, whose last bits differ between CUDA's math library
// and glibc (<= 2 ulp): within one flavour they are reproducible bit for bit.
//
// Kernels: one thread per counter (four consecutive elements), a grid-stride
// loop, no barrier, no shared memory, no atomics.
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t; __host__ __device__ for g++ (empty)

#include <cmath>
#include <cstdint>

#include "kernels/cost.h"

namespace timbre::kernels {

// ---------------------------------------------------------------------------
// The generator, usable in kernels and in host code.

// Four 32-bit words: a counter or a Philox output. w[0] is the least
// significant word of a counter.
struct PhiloxWords {
  uint32_t w[4];
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;  // round multipliers
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // key bumps (golden ratio, sqrt(3) - 1)
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// Philox4x32-10 of `counter` under the key (key0, key1), as in Random123's
// philox4x32(ctr, key) with 10 rounds (its known-answer vectors apply).
__host__ __device__ __forceinline__ PhiloxWords philox4x32_10(PhiloxWords counter,
                                                              uint32_t key0, uint32_t key1) {
  uint32_t c0 = counter.w[0], c1 = counter.w[1], c2 = counter.w[2], c3 = counter.w[3];
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kPhiloxW0;
      key1 += kPhiloxW1;
    }
    const uint64_t p0 = uint64_t(kPhiloxM0) * c0;  // mul.wide.u32 on a GPU
    const uint64_t p1 = uint64_t(kPhiloxM1) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ key0;
    const uint32_t n1 = uint32_t(p1);
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ key1;
    const uint32_t n3 = uint32_t(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

// The (seed, 128-bit counter) form: key = seed (k0 = low half), counter =
// counter_hi * 2^64 + counter_lo.
__host__ __device__ __forceinline__ PhiloxWords philox(uint64_t seed, uint64_t counter_lo,
                                                       uint64_t counter_hi = 0) {
  const PhiloxWords c{{uint32_t(counter_lo), uint32_t(counter_lo >> 32), uint32_t(counter_hi),
                       uint32_t(counter_hi >> 32)}};
  return philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
}

// The words of counter `offset + group` (a 128-bit sum: the carry goes to the
// high half), i.e. of elements 4 group .. 4 group + 3 of a call at `offset`.
__host__ __device__ __forceinline__ PhiloxWords philox_group(uint64_t seed, uint64_t offset,
                                                             uint64_t group) {
  const uint64_t lo = offset + group;
  return philox(seed, lo, lo < offset ? 1u : 0u);
}

// Counters used by a call on n elements: ceil(n / 4).
__host__ __device__ constexpr long long philox_counters(long long n) {
  return n > 0 ? (n + 3) / 4 : 0;
}

// ---------------------------------------------------------------------------
// Conversions. Exact: an integer of at most 33 bits times a power of two.

// (0, 1]: the top 24 bits of x, plus one, times 2^-24.
__host__ __device__ __forceinline__ float uniform_float(uint32_t x) {
  return float((x >> 8) + 1u) * (1.0f / 16777216.0f);
}

// (0, 1]: all 32 bits of x, plus one, times 2^-32.
__host__ __device__ __forceinline__ double uniform_double(uint32_t x) {
  return (double(x) + 1.0) * (1.0 / 4294967296.0);
}

template <class T>
__host__ __device__ __forceinline__ T uniform_of(uint32_t x) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
  if constexpr (sizeof(T) == 4)
    return uniform_float(x);
  else
    return uniform_double(x);
}

// Two independent standard normals from two words (Box-Muller): a gives the
// radius, b the angle. sincosf/sincos (glibc's on the host, CUDA's on the
// device): one argument reduction for both.
__host__ __device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float* z0,
                                                    float* z1) {
  const float r = sqrtf(-2.0f * logf(uniform_float(a)));
  const float theta = 6.28318530717958648f * uniform_float(b);
  float s, c;
  sincosf(theta, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

__host__ __device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, double* z0,
                                                    double* z1) {
  const double r = sqrt(-2.0 * log(uniform_double(a)));
  const double theta = 6.28318530717958648 * uniform_double(b);
  double s, c;
  sincos(theta, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

// Dropout's threshold on a word: keep when word >= dropout_threshold(p), so
// P(keep) = 1 - t/2^32, within 2^-32 of 1 - p. p in [0, 1) (not checked
// here; the launchers check). p = 0 gives 0: every element kept.
inline uint32_t dropout_threshold(double p) {
  return uint32_t(std::floor(p * 4294967296.0));  // p < 1: at most 2^32 - 1
}

// ---------------------------------------------------------------------------
// Launchers. n >= 0 (0 is a no-op); block a multiple of 32 in [32, 1024];
// device pointers not null when n > 0. Bad arguments throw
// std::invalid_argument.

// d_x[i] = word i % 4 of counter offset + i/4.
void fill_bits(uint32_t* d_x, long long n, uint64_t seed, uint64_t offset, cudaStream_t s,
               int block = 256);

// d_x[i] = lo + (hi - lo) u_i: in [lo, hi] (u = 1 gives hi when hi - lo is
// exact in T, as for symmetric ranges). lo <= hi, hi - lo finite.
template <class T>
void fill_uniform(T* d_x, long long n, T lo, T hi, uint64_t seed, uint64_t offset,
                  cudaStream_t s, int block = 256);

// d_x[i] = mean + std z_i. mean finite, std >= 0 finite.
template <class T>
void fill_normal(T* d_x, long long n, T mean, T std, uint64_t seed, uint64_t offset,
                 cudaStream_t s, int block = 256);

// y = x * mask / (1 - p); y may be x. p in [0, 1).
// d_base: null, or a device word added to offset when the kernel runs (a
// PhiloxBase: a step captured once as a CUDA graph draws new masks at every
// replay because the word moves on, not the argument).
template <class T>
void dropout_forward(const T* d_x, T* d_y, long long n, double p, uint64_t seed,
                     uint64_t offset, cudaStream_t s, int block = 256,
                     const unsigned long long* d_base = nullptr);

// dx = dy * mask / (1 - p) (accumulate: dx += ...), with the mask of the
// forward call that had the same (n, p, seed, offset, *d_base). dx may be dy.
template <class T>
void dropout_backward(const T* d_dy, T* d_dx, long long n, double p, uint64_t seed,
                      uint64_t offset, bool accumulate, cudaStream_t s, int block = 256,
                      const unsigned long long* d_base = nullptr);

// The device word of a PhiloxBase (engine/random.h): one thread sets it to
// value, or adds k to it, in stream order.
void philox_base_set(unsigned long long* d_word, unsigned long long value, cudaStream_t s);
void philox_base_add(unsigned long long* d_word, unsigned long long k, cudaStream_t s);

// ---------------------------------------------------------------------------
// Initialisers: n weights from counters offset .. offset + philox_counters(n)
// - 1. Fans >= 1. Fans are the caller's (Keras: Dense fan_in = inputs,
// fan_out = units; Conv2D both times kh*kw).
double glorot_uniform_limit(long long fan_in, long long fan_out);  // sqrt(6/(in+out))
double he_uniform_limit(long long fan_in);                         // sqrt(6/in)
double he_normal_std(long long fan_in);                            // sqrt(2/in)

template <class T>
void glorot_uniform(T* d_w, long long n, long long fan_in, long long fan_out, uint64_t seed,
                    uint64_t offset, cudaStream_t s);
template <class T>
void he_uniform(T* d_w, long long n, long long fan_in, uint64_t seed, uint64_t offset,
                cudaStream_t s);
template <class T>
void he_normal(T* d_w, long long n, long long fan_in, uint64_t seed, uint64_t offset,
               cudaStream_t s);

// A (rows x cols) row-major matrix, gain times orthonormal columns (rows >=
// cols) or rows (rows < cols): Keras's Orthogonal(gain) and PyTorch's
// orthogonal_(gain). A = (max x min) standard normals from
// fill_normal_cpu<double>(seed, offset), row-major; A = QR by Householder in
// double on the host; column j of Q times sign(R_jj) (+1 if R_jj = 0); W = Q,
// or Q^T when rows < cols. Uses philox_counters(rows * cols) counters. Blocks
// the host until the copy to d_w on stream s is done. rows, cols >= 1.
template <class T>
void orthogonal(T* d_w, long long rows, long long cols, double gain, uint64_t seed,
                uint64_t offset, cudaStream_t s);

// ---------------------------------------------------------------------------
// CPU references: the same per-element functions (above) in a plain loop
// over i. In the sim flavour they give the kernels' bits exactly; in the
// cuda flavour so do bits, uniforms and dropout (normals: within libm ulps).
void fill_bits_cpu(uint32_t* x, long long n, uint64_t seed, uint64_t offset);
template <class T>
void fill_uniform_cpu(T* x, long long n, T lo, T hi, uint64_t seed, uint64_t offset);
template <class T>
void fill_normal_cpu(T* x, long long n, T mean, T std, uint64_t seed, uint64_t offset);
template <class T>
void dropout_forward_cpu(const T* x, T* y, long long n, double p, uint64_t seed,
                         uint64_t offset);
template <class T>
void dropout_backward_cpu(const T* dy, T* dx, long long n, double p, uint64_t seed,
                          uint64_t offset, bool accumulate);
// The host computation of orthogonal() (it is its own reference; the tests
// check orthonormality and that Q^T A is upper triangular with diag > 0).
template <class T>
void orthogonal_cpu(T* w, long long rows, long long cols, double gain, uint64_t seed,
                    uint64_t offset);

// ---------------------------------------------------------------------------
// Work of one launch, for benchmarks. Floating-point operations only: the
// Philox rounds (integer multiplies and xors, about 60 instructions per
// counter, i.e. 15 per element) are not flops. elem: 4 float, 8 double.
Cost fill_bits_cost(long long n);
Cost fill_uniform_cost(long long n, int elem = 4);
Cost fill_normal_cost(long long n, int elem = 4);
Cost dropout_forward_cost(long long n, int elem = 4);
Cost dropout_backward_cost(long long n, bool accumulate, int elem = 4);

}  // namespace timbre::kernels
