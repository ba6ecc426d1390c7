// pooling: max and average pooling with rectangular windows and strides, and
// global average pooling, over NCHW tensors. T is float or double (double for
// finite-difference checks). Design: docs/kernels/pooling.md.
//
// Window (kh, kw), stride (sh, sw), no padding, no dilation. The output plane
// is OH x OW with OH = floor((H - kh)/sh) + 1, OW = floor((W - kw)/sw) + 1
// (PyTorch's ceil_mode=False; Keras's padding="valid"): rows and columns that
// do not fill a whole window are dropped. Output (oh, ow) of plane p = n*C + c
// sees the inputs (oh*sh + r, ow*sw + q), 0 <= r < kh, 0 <= q < kw.
//
//   max   y = max of the window; argmax = ih*W + iw of the chosen input
//         (an index within the input plane, int32), for backward.
//         Ties: the first maximum in row-major window order (r, then q),
//         like PyTorch. NaN: a NaN is taken over any number and over an
//         earlier NaN, so y is NaN and argmax is the window's last NaN
//         (PyTorch's rule `v > best || isnan(v)`). A window of -inf gives
//         -inf with argmax at its first element.
//   avg   y = (sum of the window) / (kh*kw).
//   global average: (N, C, H, W) -> (N, C), y = (sum of the plane) / (H*W).
//
// Backward, from dy to dx, as a gather: each input element adds up the dy of
// the windows that used it, in window order (oh, then ow):
//   max   dx[ih, iw] = sum of dy[oh, ow] over windows with argmax == ih*W + iw
//   avg   dx[ih, iw] = (sum of dy[oh, ow] over windows containing it) / (kh*kw)
//   global average: dx[h, w] = dy / (H*W)
// An input element's dx is written by one thread only, so overlapping
// windows (stride < window) need no atomics and the result is deterministic;
// inputs outside every window (the dropped rows and columns, gaps when the
// stride exceeds the window) get 0. accumulate = false assigns dx (never
// reading it), true adds to it.
//
// Parallel strategy, no barrier and no shared memory anywhere (simcuda's
// fast path), grid-stride loops with 32-bit indices:
//   max forward and every backward: a 3-D grid, z over planes, y over rows,
//     x over runs of consecutive columns (kernels/grid.h columns_per_thread:
//     1 on a GPU, the whole row under simcuda), so no thread divides to
//     find its row and plane; one output (forward) or one cell (backward)
//     is computed the same way whatever the run;
//   avg forward: one thread per output element;
//   backward: one thread per run of sh x sw cells of the input plane (rows a*sh ..
//     a*sh + sh - 1, columns b*sw .. b*sw + sw - 1), whose inputs share
//     their candidate windows: oh in [a - (kh - 1)/sh, a], ow likewise, each
//     kept if it contains the input; a compile-time path for disjoint
//     windows (kh <= sh and kw <= sw: all the models' ones), where the only
//     candidate is (a, b);
//   global average forward: one thread per plane, or one warp per plane
//     reducing with __shfl_xor_sync (GlobalPoolStrategy), summing in double;
//     backward: one thread per input.
//
// Arguments, for every launcher: n >= 0 (0 is a no-op), c, h, w >= 1,
// n*c*h*w < 2^31 (32-bit indexing); kh, kw, sh, sw >= 1 with kh <= h and
// kw <= w; block a multiple of 32 in [32, 1024]; device pointers not null
// when there is work. Violations throw std::invalid_argument naming the
// launcher, the argument and its value.
#pragma once

#include "kernels/grid.h"

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

struct PoolWindow {
  int kh, kw;  // window rows, columns
  int sh, sw;  // stride between windows, rows and columns
};

// The tensors of max pooling's backward pass: device pointers for the
// launcher, host pointers for the reference. Aggregate:
// MaxPoolGradTensors<T>{dy, argmax, dx}.
template <class T>
struct MaxPoolGradTensors {
  const T* dy;        // dL/dy, n*c*OH*OW: the upstream gradient
  const int* argmax;  // n*c*OH*OW: the forward's argmax (an index within the input plane)
  T* dx;              // dL/dx, n*c*h*w (=, or += when accumulate)
};

// Output length along one dimension (in >= k >= 1, s >= 1).
constexpr int pool_out_size(int in, int k, int s) { return (in - k) / s + 1; }

// One thread per plane (barrier-free: simcuda's fast path), or one warp per
// plane (coalesced loads and a shuffle reduction: best on a GPU for large
// planes, ~4 us per plane under simcuda). automatic: thread for h*w <=
// kGlobalPoolThreadMaxHW (up to 16x16 maps: a few microseconds on a GPU
// either way, 40x faster under simcuda), warp above.
enum class GlobalPoolStrategy { automatic, thread, warp };
constexpr long long kGlobalPoolThreadMaxHW = 256;

// A launch uses at most max_grid_threads() threads (kernels/grid.h); a
// grid-stride loop does the rest.

// ---------------------------------------------------------------------------
// Launchers. x, dx: n*c*h*w values; y, dy, argmax: n*c*OH*OW (global: n*c).

template <class T>
void max_pool2d_forward(const T* d_x, T* d_y, int* d_argmax, int n, int c, int h, int w,
                        PoolWindow p, cudaStream_t s, int block = 256);
template <class T>
void max_pool2d_backward(const MaxPoolGradTensors<T>& t, int n, int c, int h, int w, PoolWindow p,
                         bool accumulate, cudaStream_t s, int block = 256);

template <class T>
void avg_pool2d_forward(const T* d_x, T* d_y, int n, int c, int h, int w, PoolWindow p,
                        cudaStream_t s, int block = 256);
template <class T>
void avg_pool2d_backward(const T* d_dy, T* d_dx, int n, int c, int h, int w, PoolWindow p,
                         bool accumulate, cudaStream_t s, int block = 256);

template <class T>
void global_avg_pool_forward(const T* d_x, T* d_y, int n, int c, int h, int w, cudaStream_t s,
                             int block = 256,
                             GlobalPoolStrategy strategy = GlobalPoolStrategy::automatic);
template <class T>
void global_avg_pool_backward(const T* d_dy, T* d_dx, int n, int c, int h, int w,
                              bool accumulate, cudaStream_t s, int block = 256);

// ---------------------------------------------------------------------------
// References: plain loops, sums in double, results rounded to T. Same tie
// and NaN rules as the kernels.

template <class T>
void max_pool2d_forward_cpu(const T* x, T* y, int* argmax, int n, int c, int h, int w,
                            PoolWindow p);
template <class T>
void max_pool2d_backward_cpu(const MaxPoolGradTensors<T>& t, int n, int c, int h, int w,
                             PoolWindow p, bool accumulate);
template <class T>
void avg_pool2d_forward_cpu(const T* x, T* y, int n, int c, int h, int w, PoolWindow p);
template <class T>
void avg_pool2d_backward_cpu(const T* dy, T* dx, int n, int c, int h, int w, PoolWindow p,
                             bool accumulate);
template <class T>
void global_avg_pool_forward_cpu(const T* x, T* y, int n, int c, int h, int w);
template <class T>
void global_avg_pool_backward_cpu(const T* dy, T* dx, int n, int c, int h, int w,
                                  bool accumulate);

// ---------------------------------------------------------------------------
// Costs, for benchmarks: a compare or an add counts as one operation; bytes
// are the ideal traffic (each array once; overlapping windows re-read x from
// cache), elem = sizeof(T), argmax 4 bytes.

inline double pool_outputs(double n, double c, double h, double w, PoolWindow p) {
  return n * c * pool_out_size(int(h), p.kh, p.sh) * pool_out_size(int(w), p.kw, p.sw);
}

inline Cost max_pool2d_forward_cost(double n, double c, double h, double w, PoolWindow p,
                                    int elem = 4) {
  const double outs = pool_outputs(n, c, h, w, p);
  return Cost{outs * p.kh * p.kw, n * c * h * w * elem + outs * (elem + 4.0)};
}
inline Cost max_pool2d_backward_cost(double n, double c, double h, double w, PoolWindow p,
                                     bool accumulate, int elem = 4) {
  // Per input: a compare and an add per window containing it (about
  // (kh/sh)(kw/sw) of them, at least one); reads dy and argmax, (dx), writes dx.
  const double outs = pool_outputs(n, c, h, w, p);
  const double ins = n * c * h * w;
  return Cost{2 * outs * p.kh * p.kw + (accumulate ? ins : 0),
              outs * (elem + 4.0) + ins * elem * (accumulate ? 2.0 : 1.0)};
}
inline Cost avg_pool2d_forward_cost(double n, double c, double h, double w, PoolWindow p,
                                    int elem = 4) {
  const double outs = pool_outputs(n, c, h, w, p);
  return Cost{outs * p.kh * p.kw, (n * c * h * w + outs) * elem};
}
inline Cost avg_pool2d_backward_cost(double n, double c, double h, double w, PoolWindow p,
                                     bool accumulate, int elem = 4) {
  const double outs = pool_outputs(n, c, h, w, p);
  const double ins = n * c * h * w;
  return Cost{outs * p.kh * p.kw + ins * (accumulate ? 2 : 1),
              outs * elem + ins * elem * (accumulate ? 2.0 : 1.0)};
}
inline Cost global_avg_pool_forward_cost(double n, double c, double h, double w, int elem = 4) {
  return Cost{n * c * (h * w + 1), n * c * (h * w + 1) * elem};
}
inline Cost global_avg_pool_backward_cost(double n, double c, double h, double w,
                                          bool accumulate, int elem = 4) {
  const double ins = n * c * h * w;
  return Cost{ins * (accumulate ? 2 : 1), n * c * elem + ins * elem * (accumulate ? 2.0 : 1.0)};
}

}  // namespace timbre::kernels
