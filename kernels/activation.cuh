// activation: elementwise activations, their backward passes, and the
// elementwise helpers the engine needs (add, scale, fill). T is float or
// double (double exists so the engine can check gradients by finite
// differences).
//
// Forward, y = f(x):
//   relu     f(x) = max(x, 0)                  f'(x) = x > 0 ? 1 : 0
//   elu      f(x) = x > 0 ? x : alpha*(e^x - 1) f'(x) = x > 0 ? 1 : y + alpha
//   tanh     f(x) = tanh(x)                     f'(x) = 1 - y^2
//   sigmoid  f(x) = 1 / (1 + e^-x)              f'(x) = y (1 - y)
//
// Backward, dx = dy * f'(x), or dx += dy * f'(x) with accumulate (the
// autograd sums the gradients of every use of a tensor). Each derivative is
// taken from whichever of x and y is cheaper and at least as accurate: relu
// and elu branch on x (elu's negative side as y + alpha = alpha*e^x, no
// second exp), tanh and sigmoid use y only (no transcendental at all).
// Kinks, as PyTorch: relu'(0) = 0 and elu'(0) = alpha (the left side).
// NaN inputs give NaN outputs in forward.
//
// Helpers: add  out = alpha*x + beta*y,  scale  y = alpha*x,  fill  x = value.
//
// Every kernel is one pass over n elements, one thread per element in a
// grid-stride loop, with no barrier (simcuda's fast path) and no atomics.
// Outputs may alias inputs: an element is read and written by one thread,
// reads first. See docs/kernels/activation.md.
#pragma once

#include "kernels/grid.h"

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

enum class Activation { relu, elu, tanh, sigmoid };

// "relu", "elu", "tanh", "sigmoid"; throws std::invalid_argument otherwise.
const char* activation_name(Activation a);

// A launch uses at most max_grid_threads() threads (kernels/grid.h: 2^19 on
// a GPU, about two waves of a large one; uncapped under simcuda); a thread
// handles n / threads elements, rounded up.

// Launchers. n >= 0 (0 is a no-op); block a multiple of 32 in [32, 1024].
// Bad arguments throw std::invalid_argument.
//
// forward: y[i] = f(x[i]) for i < n; alpha is used by elu only.
template <class T>
void activation_forward(Activation a, const T* d_x, T* d_y, long long n, T alpha,
                        cudaStream_t s, int block = 256);

// backward: dx[i] = dy[i] * f'(x[i])  (accumulate: dx[i] += ...).
// Reads d_x for relu and elu, d_y for elu, tanh and sigmoid; the pointer an
// activation does not read may be null.
template <class T>
void activation_backward(Activation a, const T* d_x, const T* d_y, const T* d_dy, T* d_dx,
                         long long n, T alpha, bool accumulate, cudaStream_t s,
                         int block = 256);

// out[i] = alpha*x[i] + beta*y[i]; out may be x or y.
template <class T>
void add(const T* d_x, const T* d_y, T* d_out, long long n, T alpha, T beta, cudaStream_t s,
         int block = 256);

// y[i] = alpha*x[i]; y may be x.
template <class T>
void scale(const T* d_x, T* d_y, long long n, T alpha, cudaStream_t s, int block = 256);

// x[i] = value.
template <class T>
void fill(T* d_x, long long n, T value, cudaStream_t s, int block = 256);

// CPU references: plain loops of the textbook formulas above (sigmoid as
// 1 / (1 + exp(-x)), tanh' as 1 - y*y), computed in T. Tests call the double
// versions on widened float inputs to get a reference that is exact to
// float precision.
template <class T>
void activation_forward_cpu(Activation a, const T* x, T* y, long long n, T alpha);
template <class T>
void activation_backward_cpu(Activation a, const T* x, const T* y, const T* dy, T* dx,
                             long long n, T alpha, bool accumulate);
template <class T>
void add_cpu(const T* x, const T* y, T* out, long long n, T alpha, T beta);
template <class T>
void scale_cpu(const T* x, T* y, long long n, T alpha);
template <class T>
void fill_cpu(T* x, long long n, T value);

// Work of one launch, for benchmarks. elem: bytes per value (4 float, 8
// double). A transcendental (exp, expm1, tanh) and a division count as one
// operation each; bytes are the arrays the kernel actually reads and writes.
Cost activation_forward_cost(Activation a, long long n, int elem = 4);
Cost activation_backward_cost(Activation a, long long n, bool accumulate, int elem = 4);
Cost add_cost(long long n, int elem = 4);
Cost scale_cost(long long n, int elem = 4);
Cost fill_cost(long long n, int elem = 4);

}  // namespace timbre::kernels
