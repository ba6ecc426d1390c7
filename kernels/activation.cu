#include "kernels/activation.cuh"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common.cuh"
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

// Kernels and helpers in an anonymous namespace: other kernel files may use
// the same names.
namespace {

// f(x).
template <Activation A, class T>
__device__ __forceinline__ T activate(T x, T alpha) {
  if constexpr (A == Activation::relu) {
    return x < T(0) ? T(0) : x;  // a NaN is not < 0: it passes through
  } else if constexpr (A == Activation::elu) {
    return x > T(0) ? x : alpha * expm1_of(x);  // expm1: no cancellation near 0
  } else if constexpr (A == Activation::tanh) {
    return tanh_of(x);
  } else {
    return sigmoid_of(x);  // kernels/device_math.cuh: no overflow for any x
  }
}

// dy * f'(x) for element i, reading only the arrays this activation needs.
template <Activation A, class T>
__device__ __forceinline__ T input_grad(const T* x, const T* y, T dy, long long i, T alpha) {
  if constexpr (A == Activation::relu) {
    return x[i] > T(0) ? dy : T(0);  // relu'(0) = 0
  } else if constexpr (A == Activation::elu) {
    return x[i] > T(0) ? dy : dy * (y[i] + alpha);  // elu'(0) = alpha; y + alpha = alpha*e^x
  } else if constexpr (A == Activation::tanh) {
    const T v = y[i];
    // 1 - y^2 as (1 - y)(1 + y): 1 - y is exact for y near 1, where 1 - y*y
    // would carry the rounding of y*y into a small result (up to 9e-5
    // relative in float).
    return dy * ((T(1) - v) * (T(1) + v));
  } else {
    const T v = y[i];
    return dy * (v * (T(1) - v));
  }
}

// Grid-stride loop: thread t of the grid handles t, t + G, t + 2G, ... (G =
// threads in the grid). Consecutive threads touch consecutive elements
// (coalesced). No barrier: simcuda runs it on its fast path.
template <class T, Activation A>
__global__ void activation_forward_kernel(const T* x, T* y, long long n, T alpha) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = activate<A>(x[i], alpha);
}

// Same loop. dx is read only when accumulating, so with accumulate = false it
// may hold anything (even NaN) before the launch.
template <class T, Activation A>
__global__ void activation_backward_kernel(const T* x, const T* y, const T* dy, T* dx,
                                           long long n, T alpha, bool accumulate) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const T g = input_grad<A>(x, y, dy[i], i, alpha);
    dx[i] = accumulate ? dx[i] + g : g;
  }
}

// The helpers: same grid-stride loop.
template <class T>
__global__ void add_kernel(const T* x, const T* y, T* out, long long n, T alpha, T beta) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = alpha * x[i] + beta * y[i];
}

template <class T>
__global__ void scale_kernel(const T* x, T* y, long long n, T alpha) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = alpha * x[i];
}

template <class T>
__global__ void fill_kernel(T* x, long long n, T value) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    x[i] = value;
}

// ---------------------------------------------------------------------------

void check_activation(const char* op, Activation a) {
  if (a != Activation::relu && a != Activation::elu && a != Activation::tanh &&
      a != Activation::sigmoid)
    throw std::invalid_argument(std::string(op) + ": unknown activation " +
                                std::to_string(int(a)));
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers.
const char* activation_name(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::elu: return "elu";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
  }
  throw std::invalid_argument("unknown activation " + std::to_string(int(a)));
}

template <class T>
void activation_forward(Activation a, const T* d_x, T* d_y, long long n, T alpha,
                        cudaStream_t s, int block) {
  const char* op = "activation_forward";
  check_size_and_block(op, n, block);
  check_activation(op, a);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_y, "d_y");
  const unsigned grid = blocks_for(n, block);
  switch (a) {
    case Activation::relu:
      LAUNCH((activation_forward_kernel<T, Activation::relu>), grid, block, 0, s, d_x, d_y, n,
             alpha);
      break;
    case Activation::elu:
      LAUNCH((activation_forward_kernel<T, Activation::elu>), grid, block, 0, s, d_x, d_y, n,
             alpha);
      break;
    case Activation::tanh:
      LAUNCH((activation_forward_kernel<T, Activation::tanh>), grid, block, 0, s, d_x, d_y, n,
             alpha);
      break;
    case Activation::sigmoid:
      LAUNCH((activation_forward_kernel<T, Activation::sigmoid>), grid, block, 0, s, d_x, d_y,
             n, alpha);
      break;
  }
}

template <class T>
void activation_backward(Activation a, const T* d_x, const T* d_y, const T* d_dy, T* d_dx,
                         long long n, T alpha, bool accumulate, cudaStream_t s, int block) {
  const char* op = "activation_backward";
  check_size_and_block(op, n, block);
  check_activation(op, a);
  if (n == 0) return;
  if (a == Activation::relu || a == Activation::elu) check_pointer(op, d_x, "d_x");
  if (a != Activation::relu) check_pointer(op, d_y, "d_y");
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  const unsigned grid = blocks_for(n, block);
  switch (a) {
    case Activation::relu:
      LAUNCH((activation_backward_kernel<T, Activation::relu>), grid, block, 0, s, d_x, d_y,
             d_dy, d_dx, n, alpha, accumulate);
      break;
    case Activation::elu:
      LAUNCH((activation_backward_kernel<T, Activation::elu>), grid, block, 0, s, d_x, d_y,
             d_dy, d_dx, n, alpha, accumulate);
      break;
    case Activation::tanh:
      LAUNCH((activation_backward_kernel<T, Activation::tanh>), grid, block, 0, s, d_x, d_y,
             d_dy, d_dx, n, alpha, accumulate);
      break;
    case Activation::sigmoid:
      LAUNCH((activation_backward_kernel<T, Activation::sigmoid>), grid, block, 0, s, d_x, d_y,
             d_dy, d_dx, n, alpha, accumulate);
      break;
  }
}

template <class T>
void add(const T* d_x, const T* d_y, T* d_out, long long n, T alpha, T beta, cudaStream_t s,
         int block) {
  check_size_and_block("add", n, block);
  if (n == 0) return;
  check_pointer("add", d_x, "d_x");
  check_pointer("add", d_y, "d_y");
  check_pointer("add", d_out, "d_out");
  LAUNCH(add_kernel<T>, blocks_for(n, block), block, 0, s, d_x, d_y, d_out, n, alpha, beta);
}

template <class T>
void scale(const T* d_x, T* d_y, long long n, T alpha, cudaStream_t s, int block) {
  check_size_and_block("scale", n, block);
  if (n == 0) return;
  check_pointer("scale", d_x, "d_x");
  check_pointer("scale", d_y, "d_y");
  LAUNCH(scale_kernel<T>, blocks_for(n, block), block, 0, s, d_x, d_y, n, alpha);
}

template <class T>
void fill(T* d_x, long long n, T value, cudaStream_t s, int block) {
  check_size_and_block("fill", n, block);
  if (n == 0) return;
  check_pointer("fill", d_x, "d_x");
  LAUNCH(fill_kernel<T>, blocks_for(n, block), block, 0, s, d_x, n, value);
}

// ---------------------------------------------------------------------------
// CPU references: the textbook formulas, one loop each.
template <class T>
void activation_forward_cpu(Activation a, const T* x, T* y, long long n, T alpha) {
  check_activation("activation_forward_cpu", a);
  for (long long i = 0; i < n; ++i) {
    const T v = x[i];
    switch (a) {
      case Activation::relu: y[i] = std::max(v, T(0)); break;
      case Activation::elu: y[i] = v > 0 ? v : alpha * std::expm1(v); break;
      case Activation::tanh: y[i] = std::tanh(v); break;
      case Activation::sigmoid: y[i] = 1 / (1 + std::exp(-v)); break;
    }
  }
}

template <class T>
void activation_backward_cpu(Activation a, const T* x, const T* y, const T* dy, T* dx,
                             long long n, T alpha, bool accumulate) {
  check_activation("activation_backward_cpu", a);
  for (long long i = 0; i < n; ++i) {
    T d = 0;  // f'
    switch (a) {
      case Activation::relu: d = x[i] > 0 ? 1 : 0; break;
      case Activation::elu: d = x[i] > 0 ? 1 : y[i] + alpha; break;
      case Activation::tanh: d = 1 - y[i] * y[i]; break;
      case Activation::sigmoid: d = y[i] * (1 - y[i]); break;
    }
    const T g = dy[i] * d;
    dx[i] = accumulate ? dx[i] + g : g;
  }
}

template <class T>
void add_cpu(const T* x, const T* y, T* out, long long n, T alpha, T beta) {
  for (long long i = 0; i < n; ++i) out[i] = alpha * x[i] + beta * y[i];
}

template <class T>
void scale_cpu(const T* x, T* y, long long n, T alpha) {
  for (long long i = 0; i < n; ++i) y[i] = alpha * x[i];
}

template <class T>
void fill_cpu(T* x, long long n, T value) {
  for (long long i = 0; i < n; ++i) x[i] = value;
}

// ---------------------------------------------------------------------------
// Costs. Operations per element (transcendental, division, add, multiply,
// compare: one each; negation, abs and selects free; elu counts its
// negative side):
//   forward : relu 1 (compare), elu 3 (compare, expm1, multiply), tanh 1,
//             sigmoid 4 (exp, add, divide, multiply)
//   backward: relu 1 (compare), elu 3 (compare, add, multiply), tanh 4,
//             sigmoid 3; +1 add when accumulating
namespace {
double forward_flops(Activation a) {
  switch (a) {
    case Activation::relu: return 1;
    case Activation::elu: return 3;
    case Activation::tanh: return 1;
    case Activation::sigmoid: return 4;
  }
  throw std::invalid_argument("unknown activation " + std::to_string(int(a)));
}

double backward_flops(Activation a) {
  switch (a) {
    case Activation::relu: return 1;
    case Activation::elu: return 3;
    case Activation::tanh: return 4;
    case Activation::sigmoid: return 3;
  }
  throw std::invalid_argument("unknown activation " + std::to_string(int(a)));
}
}  // namespace

Cost activation_forward_cost(Activation a, long long n, int elem) {
  return elementwise_cost(double(n), 1, 1, forward_flops(a), elem);
}

Cost activation_backward_cost(Activation a, long long n, bool accumulate, int elem) {
  // dy, plus x (relu, elu) and y (elu, tanh, sigmoid), plus dx when accumulating.
  const int reads = 1 + (a == Activation::relu || a == Activation::elu) +
                    (a != Activation::relu) + accumulate;
  return elementwise_cost(double(n), reads, 1, backward_flops(a) + accumulate, elem);
}

Cost add_cost(long long n, int elem) { return elementwise_cost(double(n), 2, 1, 3, elem); }
Cost scale_cost(long long n, int elem) { return elementwise_cost(double(n), 1, 1, 1, elem); }
Cost fill_cost(long long n, int elem) { return elementwise_cost(double(n), 0, 1, 0, elem); }

// ---------------------------------------------------------------------------
#define TIMBRE_ACTIVATION_INSTANTIATE(T)                                                     \
  template void activation_forward<T>(Activation, const T*, T*, long long, T, cudaStream_t,  \
                                      int);                                                  \
  template void activation_backward<T>(Activation, const T*, const T*, const T*, T*,         \
                                       long long, T, bool, cudaStream_t, int);               \
  template void add<T>(const T*, const T*, T*, long long, T, T, cudaStream_t, int);          \
  template void scale<T>(const T*, T*, long long, T, cudaStream_t, int);                     \
  template void fill<T>(T*, long long, T, cudaStream_t, int);                                \
  template void activation_forward_cpu<T>(Activation, const T*, T*, long long, T);           \
  template void activation_backward_cpu<T>(Activation, const T*, const T*, const T*, T*,     \
                                           long long, T, bool);                              \
  template void add_cpu<T>(const T*, const T*, T*, long long, T, T);                         \
  template void scale_cpu<T>(const T*, T*, long long, T);                                    \
  template void fill_cpu<T>(T*, long long, T);

TIMBRE_ACTIVATION_INSTANTIATE(float)
TIMBRE_ACTIVATION_INSTANTIATE(double)

#undef TIMBRE_ACTIVATION_INSTANTIATE

}  // namespace timbre::kernels
