#include "kernels/common.cuh"

#include "kernels/philox.cuh"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/device_math.cuh"
#include "kernels/grid.h"
#include "kernels/launcher.h"

namespace timbre::kernels {

namespace {

// ---------------------------------------------------------------------------
// Element functions, shared by the kernels and the CPU references so that
// both compute the same expression (fma_of: kernels/device_math.cuh).

// The four normals of one counter: Box-Muller on (w0, w1) and (w2, w3).
template <class T>
__host__ __device__ __forceinline__ void normals_of(const PhiloxWords& r, T z[4]) {
  box_muller(r.w[0], r.w[1], &z[0], &z[1]);
  box_muller(r.w[2], r.w[3], &z[2], &z[3]);
}

// ---------------------------------------------------------------------------
// Kernels. Every one: thread t of the grid handles counters (groups of four
// elements) g = t, t + G, t + 2G, ... (G = threads in the grid), i.e.
// elements 4g .. 4g + 3 (fewer in the last group). One Philox evaluation
// serves four outputs. A warp writes 512 contiguous bytes (float) in four
// store instructions of stride 16 bytes; no barrier (simcuda's fast path),
// no shared memory, no atomics.

__global__ void fill_bits_kernel(uint32_t* x, long long n, uint64_t seed, uint64_t offset) {
  const long long groups = philox_counters(n);
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const PhiloxWords r = philox_group(seed, offset, uint64_t(g));
    const long long base = 4 * g;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (base + j < n) x[base + j] = r.w[j];
  }
}

template <class T>
__global__ void fill_uniform_kernel(T* x, long long n, T lo, T width, uint64_t seed,
                                    uint64_t offset) {
  const long long groups = philox_counters(n);
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const PhiloxWords r = philox_group(seed, offset, uint64_t(g));
    const long long base = 4 * g;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (base + j < n) x[base + j] = fma_of(width, uniform_of<T>(r.w[j]), lo);
  }
}

// The last group of an odd n computes a normal it does not store: the
// values of the stored ones do not depend on n.
template <class T>
__global__ void fill_normal_kernel(T* x, long long n, T mean, T std, uint64_t seed,
                                   uint64_t offset) {
  const long long groups = philox_counters(n);
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    T z[4];
    normals_of(philox_group(seed, offset, uint64_t(g)), z);
    const long long base = 4 * g;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (base + j < n) x[base + j] = fma_of(std, z[j], mean);
  }
}

// Forward (in = x, out = y) and backward (in = dy, out = dx): out = in * m,
// m = keep ? scale : 0, or out += in * m. Written as a multiply, not a
// select, so a NaN input stays NaN even where dropped (as PyTorch's
// x * mask * scale). out may be in: each element is read, then written, by
// one thread. out is read only when accumulating.
template <class T>
__global__ void dropout_kernel(const T* in, T* out, long long n, uint32_t threshold, T scale,
                               uint64_t seed, uint64_t offset, const unsigned long long* base,
                               bool accumulate) {
  if (base != nullptr) offset += *base;  // PhiloxBase: a step replayed from a graph
  const long long groups = philox_counters(n);
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const PhiloxWords r = philox_group(seed, offset, uint64_t(g));
    const long long base = 4 * g;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const long long i = base + j;
      if (i < n) {
        const T m = scale * T(r.w[j] >= threshold);  // scale or 0, branch-free
        out[i] = accumulate ? fma_of(in[i], m, out[i]) : in[i] * m;
      }
    }
  }
}

// One thread: *word = value, or *word += value (PhiloxBase).
__global__ void offset_word_kernel(unsigned long long* word, unsigned long long value, bool add) {
  *word = add ? *word + value : value;
}

// ---------------------------------------------------------------------------

// p in [0, 1); NaN fails both comparisons.
void check_probability(const char* op, double p) {
  if (!(p >= 0.0 && p < 1.0))
    throw std::invalid_argument(std::string(op) + ": p must be in [0, 1), not " +
                                std::to_string(p));
}

template <class T>
void check_uniform_range(const char* op, T lo, T hi) {
  if (!(lo <= hi) || !std::isfinite(hi - lo))
    throw std::invalid_argument(std::string(op) + ": need lo <= hi with hi - lo finite, not [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

template <class T>
void check_normal_params(const char* op, T mean, T std) {
  if (!std::isfinite(mean) || !(std >= T(0)) || !std::isfinite(std))
    throw std::invalid_argument(std::string(op) +
                                ": need a finite mean and a finite std >= 0, not mean " +
                                std::to_string(mean) + ", std " + std::to_string(std));
}

void check_fan(const char* op, const char* name, long long fan) {
  if (fan < 1)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be >= 1, not " +
                                std::to_string(fan));
}

// rows, cols >= 1, rows * cols small enough to index, gain finite.
void check_orthogonal_args(const char* op, long long rows, long long cols, double gain) {
  if (rows < 1 || cols < 1 || rows > (1LL << 31) / cols)
    throw std::invalid_argument(std::string(op) +
                                ": need rows, cols >= 1 and rows * cols <= 2^31, not " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  if (!std::isfinite(gain))
    throw std::invalid_argument(std::string(op) + ": gain must be finite, not " +
                                std::to_string(gain));
}

// At most max_grid_threads() threads (kernels/grid.h), one per counter.
unsigned counter_blocks(long long n, int block) {
  return timbre::grid_1d(philox_counters(n), unsigned(block),
                         unsigned(max_grid_threads() / block));
}

// 1/(1-p) rounded once, to T.
template <class T>
T dropout_scale(double p) {
  return T(1.0 / (1.0 - p));
}

// ---------------------------------------------------------------------------
// Householder QR of a row-major (m x k) matrix a, m >= k, in place: returns
// the thin Q (m x k, row-major) with column j multiplied by sign(R_jj) (+1
// when R_jj = 0), i.e. the Q of the unique QR with diag(R) >= 0.
std::vector<double> orthonormal_q(std::vector<double> a, long long m, long long k) {
  std::vector<double> v(size_t(m * k), 0.0);  // reflector j in column j, rows j..m-1
  std::vector<double> beta(size_t(k), 0.0);   // H_j = I - beta_j v_j v_j^T
  std::vector<double> sign(size_t(k), 1.0);
  for (long long j = 0; j < k; ++j) {
    double norm2 = 0;
    for (long long i = j; i < m; ++i) norm2 += a[i * k + j] * a[i * k + j];
    const double norm = std::sqrt(norm2);
    const double x0 = a[j * k + j];
    // alpha = -sign(x0) ||x||: v = x - alpha e1 never cancels.
    const double alpha = x0 >= 0 ? -norm : norm;
    sign[j] = alpha > 0 ? 1.0 : alpha < 0 ? -1.0 : 1.0;  // R_jj = alpha
    double vnorm2 = 0;
    for (long long i = j; i < m; ++i) {
      const double vi = i == j ? x0 - alpha : a[i * k + j];
      v[i * k + j] = vi;
      vnorm2 += vi * vi;
    }
    beta[j] = vnorm2 > 0 ? 2.0 / vnorm2 : 0.0;
    // A[j:, j:] -= beta v (v^T A[j:, j:]).
    for (long long c = j; c < k; ++c) {
      double dot = 0;
      for (long long i = j; i < m; ++i) dot += v[i * k + j] * a[i * k + c];
      const double f = beta[j] * dot;
      for (long long i = j; i < m; ++i) a[i * k + c] -= f * v[i * k + j];
    }
  }
  // Q = H_0 H_1 ... H_{k-1} I[:, :k], applied from the last reflector.
  std::vector<double> q(size_t(m * k), 0.0);
  for (long long j = 0; j < k; ++j) q[j * k + j] = 1.0;
  for (long long j = k - 1; j >= 0; --j) {
    for (long long c = 0; c < k; ++c) {
      double dot = 0;
      for (long long i = j; i < m; ++i) dot += v[i * k + j] * q[i * k + c];
      const double f = beta[j] * dot;
      for (long long i = j; i < m; ++i) q[i * k + c] -= f * v[i * k + j];
    }
  }
  for (long long i = 0; i < m; ++i)
    for (long long j = 0; j < k; ++j) q[i * k + j] *= sign[j];
  return q;
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.
void fill_bits(uint32_t* d_x, long long n, uint64_t seed, uint64_t offset, cudaStream_t s,
               int block) {
  check_size_and_block("fill_bits", n, block);
  if (n == 0) return;
  check_pointer("fill_bits", d_x, "d_x");
  LAUNCH(fill_bits_kernel, counter_blocks(n, block), block, 0, s, d_x, n, seed, offset);
}

template <class T>
void fill_uniform(T* d_x, long long n, T lo, T hi, uint64_t seed, uint64_t offset,
                  cudaStream_t s, int block) {
  const char* op = "fill_uniform";
  check_size_and_block(op, n, block);
  check_uniform_range(op, lo, hi);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  LAUNCH(fill_uniform_kernel<T>, counter_blocks(n, block), block, 0, s, d_x, n, lo, T(hi - lo),
         seed, offset);
}

template <class T>
void fill_normal(T* d_x, long long n, T mean, T std, uint64_t seed, uint64_t offset,
                 cudaStream_t s, int block) {
  const char* op = "fill_normal";
  check_size_and_block(op, n, block);
  check_normal_params(op, mean, std);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  LAUNCH(fill_normal_kernel<T>, counter_blocks(n, block), block, 0, s, d_x, n, mean, std, seed,
         offset);
}

template <class T>
void dropout_forward(const T* d_x, T* d_y, long long n, double p, uint64_t seed,
                     uint64_t offset, cudaStream_t s, int block, const unsigned long long* d_base) {
  const char* op = "dropout_forward";
  check_size_and_block(op, n, block);
  check_probability(op, p);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_y, "d_y");
  LAUNCH(dropout_kernel<T>, counter_blocks(n, block), block, 0, s, d_x, d_y, n,
         dropout_threshold(p), dropout_scale<T>(p), seed, offset, d_base, false);
}

template <class T>
void dropout_backward(const T* d_dy, T* d_dx, long long n, double p, uint64_t seed,
                      uint64_t offset, bool accumulate, cudaStream_t s, int block,
                      const unsigned long long* d_base) {
  const char* op = "dropout_backward";
  check_size_and_block(op, n, block);
  check_probability(op, p);
  if (n == 0) return;
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  LAUNCH(dropout_kernel<T>, counter_blocks(n, block), block, 0, s, d_dy, d_dx, n,
         dropout_threshold(p), dropout_scale<T>(p), seed, offset, d_base, accumulate);
}

void philox_base_set(unsigned long long* d_word, unsigned long long value, cudaStream_t s) {
  check_pointer("philox_base_set", d_word, "d_word");
  LAUNCH(offset_word_kernel, 1, 1, 0, s, d_word, value, false);
}

void philox_base_add(unsigned long long* d_word, unsigned long long k, cudaStream_t s) {
  check_pointer("philox_base_add", d_word, "d_word");
  LAUNCH(offset_word_kernel, 1, 1, 0, s, d_word, k, true);
}

// ---------------------------------------------------------------------------
// CPU references: the kernels' loops over groups, written over elements.
void fill_bits_cpu(uint32_t* x, long long n, uint64_t seed, uint64_t offset) {
  for (long long i = 0; i < n; ++i) x[i] = philox_group(seed, offset, uint64_t(i / 4)).w[i % 4];
}

template <class T>
void fill_uniform_cpu(T* x, long long n, T lo, T hi, uint64_t seed, uint64_t offset) {
  const T width = hi - lo;
  for (long long i = 0; i < n; ++i) {
    const uint32_t word = philox_group(seed, offset, uint64_t(i / 4)).w[i % 4];
    x[i] = fma_of(width, uniform_of<T>(word), lo);
  }
}

template <class T>
void fill_normal_cpu(T* x, long long n, T mean, T std, uint64_t seed, uint64_t offset) {
  for (long long i = 0; i < n; ++i) {
    T z[4];
    normals_of(philox_group(seed, offset, uint64_t(i / 4)), z);
    x[i] = fma_of(std, z[i % 4], mean);
  }
}

template <class T>
void dropout_forward_cpu(const T* x, T* y, long long n, double p, uint64_t seed,
                         uint64_t offset) {
  check_probability("dropout_forward_cpu", p);
  const uint32_t t = dropout_threshold(p);
  const T scale = dropout_scale<T>(p);
  for (long long i = 0; i < n; ++i) {
    const bool keep = philox_group(seed, offset, uint64_t(i / 4)).w[i % 4] >= t;
    y[i] = x[i] * (keep ? scale : T(0));
  }
}

template <class T>
void dropout_backward_cpu(const T* dy, T* dx, long long n, double p, uint64_t seed,
                          uint64_t offset, bool accumulate) {
  check_probability("dropout_backward_cpu", p);
  const uint32_t t = dropout_threshold(p);
  const T scale = dropout_scale<T>(p);
  for (long long i = 0; i < n; ++i) {
    const bool keep = philox_group(seed, offset, uint64_t(i / 4)).w[i % 4] >= t;
    const T m = keep ? scale : T(0);
    dx[i] = accumulate ? fma_of(dy[i], m, dx[i]) : dy[i] * m;
  }
}

// ---------------------------------------------------------------------------
// Initialisers.
double glorot_uniform_limit(long long fan_in, long long fan_out) {
  check_fan("glorot_uniform", "fan_in", fan_in);
  check_fan("glorot_uniform", "fan_out", fan_out);
  return std::sqrt(6.0 / double(fan_in + fan_out));
}

double he_uniform_limit(long long fan_in) {
  check_fan("he_uniform", "fan_in", fan_in);
  return std::sqrt(6.0 / double(fan_in));
}

double he_normal_std(long long fan_in) {
  check_fan("he_normal", "fan_in", fan_in);
  return std::sqrt(2.0 / double(fan_in));
}

template <class T>
void glorot_uniform(T* d_w, long long n, long long fan_in, long long fan_out, uint64_t seed,
                    uint64_t offset, cudaStream_t s) {
  const T limit = T(glorot_uniform_limit(fan_in, fan_out));
  fill_uniform<T>(d_w, n, -limit, limit, seed, offset, s);
}

template <class T>
void he_uniform(T* d_w, long long n, long long fan_in, uint64_t seed, uint64_t offset,
                cudaStream_t s) {
  const T limit = T(he_uniform_limit(fan_in));
  fill_uniform<T>(d_w, n, -limit, limit, seed, offset, s);
}

template <class T>
void he_normal(T* d_w, long long n, long long fan_in, uint64_t seed, uint64_t offset,
               cudaStream_t s) {
  fill_normal<T>(d_w, n, T(0), T(he_normal_std(fan_in)), seed, offset, s);
}

template <class T>
void orthogonal_cpu(T* w, long long rows, long long cols, double gain, uint64_t seed,
                    uint64_t offset) {
  check_orthogonal_args("orthogonal_cpu", rows, cols, gain);
  const long long m = std::max(rows, cols), k = std::min(rows, cols);
  std::vector<double> a(size_t(m * k));
  fill_normal_cpu<double>(a.data(), m * k, 0.0, 1.0, seed, offset);
  const std::vector<double> q = orthonormal_q(std::move(a), m, k);
  for (long long i = 0; i < rows; ++i)
    for (long long j = 0; j < cols; ++j)
      w[i * cols + j] = T(gain * (rows >= cols ? q[i * k + j] : q[j * k + i]));
}

template <class T>
void orthogonal(T* d_w, long long rows, long long cols, double gain, uint64_t seed,
                uint64_t offset, cudaStream_t s) {
  check_orthogonal_args("orthogonal", rows, cols, gain);
  check_pointer("orthogonal", d_w, "d_w");
  std::vector<T> w(size_t(rows * cols));
  orthogonal_cpu<T>(w.data(), rows, cols, gain, seed, offset);
  CUDA_CHECK(cudaMemcpyAsync(d_w, w.data(), w.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));  // w is freed on return
}

// ---------------------------------------------------------------------------
// Costs (floating-point operations per element; see the header):
//   uniform : convert + scale (2) + fma (2) = 4
//   normal  : per pair 2 conversions (4), log, -2*, sqrt, 2pi*, cos, sin,
//             r*cos, r*sin (8), 2 fma (4) = 16, so 8 per element
//   dropout : a multiply (1); accumulating, an fma (2)
Cost fill_bits_cost(long long n) { return elementwise_cost(double(n), 0, 1, 0, 4); }
Cost fill_uniform_cost(long long n, int elem) {
  return elementwise_cost(double(n), 0, 1, 4, elem);
}
Cost fill_normal_cost(long long n, int elem) {
  return elementwise_cost(double(n), 0, 1, 8, elem);
}
Cost dropout_forward_cost(long long n, int elem) {
  return elementwise_cost(double(n), 1, 1, 1, elem);
}
Cost dropout_backward_cost(long long n, bool accumulate, int elem) {
  return elementwise_cost(double(n), 1 + accumulate, 1, accumulate ? 2 : 1, elem);
}

// ---------------------------------------------------------------------------
#define TIMBRE_PHILOX_INSTANTIATE(T)                                                          \
  template void fill_uniform<T>(T*, long long, T, T, uint64_t, uint64_t, cudaStream_t, int);  \
  template void fill_normal<T>(T*, long long, T, T, uint64_t, uint64_t, cudaStream_t, int);   \
  template void dropout_forward<T>(const T*, T*, long long, double, uint64_t, uint64_t,       \
                                   cudaStream_t, int, const unsigned long long*);             \
  template void dropout_backward<T>(const T*, T*, long long, double, uint64_t, uint64_t,      \
                                    bool, cudaStream_t, int, const unsigned long long*);      \
  template void glorot_uniform<T>(T*, long long, long long, long long, uint64_t, uint64_t,    \
                                  cudaStream_t);                                              \
  template void he_uniform<T>(T*, long long, long long, uint64_t, uint64_t, cudaStream_t);    \
  template void he_normal<T>(T*, long long, long long, uint64_t, uint64_t, cudaStream_t);     \
  template void orthogonal<T>(T*, long long, long long, double, uint64_t, uint64_t,           \
                              cudaStream_t);                                                  \
  template void fill_uniform_cpu<T>(T*, long long, T, T, uint64_t, uint64_t);                 \
  template void fill_normal_cpu<T>(T*, long long, T, T, uint64_t, uint64_t);                  \
  template void dropout_forward_cpu<T>(const T*, T*, long long, double, uint64_t, uint64_t);  \
  template void dropout_backward_cpu<T>(const T*, T*, long long, double, uint64_t, uint64_t,  \
                                        bool);                                                \
  template void orthogonal_cpu<T>(T*, long long, long long, double, uint64_t, uint64_t);

TIMBRE_PHILOX_INSTANTIATE(float)
TIMBRE_PHILOX_INSTANTIATE(double)

#undef TIMBRE_PHILOX_INSTANTIATE

}  // namespace timbre::kernels
