#include "kernels/pooling.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

// ===========================================================================
// CPU references: plain loops, double sums. The backward references scatter
// (each output adds into its window), the kernels gather: two different
// loops for the same sums.

namespace {

template <class T>
void store_cpu(T* dst, double v, bool accumulate) {
  *dst = accumulate ? T(double(*dst) + v) : T(v);
}

}  // namespace

template <class T>
void max_pool2d_forward_cpu(const T* x, T* y, int* argmax, int n, int c, int h, int w,
                            PoolWindow p) {
  const int oh = pool_out_size(h, p.kh, p.sh), ow = pool_out_size(w, p.kw, p.sw);
  for (long long plane = 0; plane < (long long)n * c; ++plane) {
    const T* xp = x + plane * h * w;
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j) {
        int best_at = i * p.sh * w + j * p.sw;
        T best = -INFINITY;
        for (int r = 0; r < p.kh; ++r)
          for (int q = 0; q < p.kw; ++q) {
            const int at = (i * p.sh + r) * w + j * p.sw + q;
            if (xp[at] > best || std::isnan(xp[at])) {
              best = xp[at];
              best_at = at;
            }
          }
        const long long o = (plane * oh + i) * ow + j;
        y[o] = best;
        argmax[o] = best_at;
      }
  }
}

template <class T>
void max_pool2d_backward_cpu(const MaxPoolGradTensors<T>& t, int n, int c, int h, int w,
                             PoolWindow p, bool accumulate) {
  const T* dy = t.dy;
  const int* argmax = t.argmax;
  T* dx = t.dx;
  const int oh = pool_out_size(h, p.kh, p.sh), ow = pool_out_size(w, p.kw, p.sw);
  const long long hw = (long long)h * w;
  std::vector<double> g(static_cast<size_t>(hw));
  for (long long plane = 0; plane < (long long)n * c; ++plane) {
    std::fill(g.begin(), g.end(), 0.0);
    for (long long o = plane * oh * ow; o < (plane + 1) * oh * ow; ++o) g[argmax[o]] += dy[o];
    for (long long i = 0; i < hw; ++i) store_cpu(dx + plane * hw + i, g[size_t(i)], accumulate);
  }
}

template <class T>
void avg_pool2d_forward_cpu(const T* x, T* y, int n, int c, int h, int w, PoolWindow p) {
  const int oh = pool_out_size(h, p.kh, p.sh), ow = pool_out_size(w, p.kw, p.sw);
  for (long long plane = 0; plane < (long long)n * c; ++plane) {
    const T* xp = x + plane * h * w;
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j) {
        double sum = 0;
        for (int r = 0; r < p.kh; ++r)
          for (int q = 0; q < p.kw; ++q) sum += xp[(i * p.sh + r) * w + j * p.sw + q];
        y[(plane * oh + i) * ow + j] = T(sum / (p.kh * p.kw));
      }
  }
}

template <class T>
void avg_pool2d_backward_cpu(const T* dy, T* dx, int n, int c, int h, int w, PoolWindow p,
                             bool accumulate) {
  const int oh = pool_out_size(h, p.kh, p.sh), ow = pool_out_size(w, p.kw, p.sw);
  const long long hw = (long long)h * w;
  std::vector<double> g(static_cast<size_t>(hw));
  for (long long plane = 0; plane < (long long)n * c; ++plane) {
    std::fill(g.begin(), g.end(), 0.0);
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j) {
        const double d = double(dy[(plane * oh + i) * ow + j]) / (p.kh * p.kw);
        for (int r = 0; r < p.kh; ++r)
          for (int q = 0; q < p.kw; ++q) g[size_t((i * p.sh + r) * w + j * p.sw + q)] += d;
      }
    for (long long i = 0; i < hw; ++i) store_cpu(dx + plane * hw + i, g[size_t(i)], accumulate);
  }
}

template <class T>
void global_avg_pool_forward_cpu(const T* x, T* y, int n, int c, int h, int w) {
  const long long hw = (long long)h * w;
  for (long long plane = 0; plane < (long long)n * c; ++plane) {
    double sum = 0;
    for (long long i = 0; i < hw; ++i) sum += x[plane * hw + i];
    y[plane] = T(sum / double(hw));
  }
}

template <class T>
void global_avg_pool_backward_cpu(const T* dy, T* dx, int n, int c, int h, int w,
                                  bool accumulate) {
  const long long hw = (long long)h * w;
  for (long long plane = 0; plane < (long long)n * c; ++plane)
    for (long long i = 0; i < hw; ++i)
      store_cpu(dx + plane * hw + i, double(dy[plane]) / double(hw), accumulate);
}

// ===========================================================================
// Device side: grid-stride loops, no barrier (except the warp path of global
// average pooling). Indices are 32-bit: the launchers require n*c*h*w <
// 2^31, so every flat index fits, and adding the grid stride (< 2^20) to one
// cannot wrap an unsigned. (64-bit division is a slow software routine on a
// GPU and several times slower than 32-bit on a CPU; these kernels divide
// per output or per cell.)

namespace {

struct PoolGeometry {
  unsigned planes;       // n*c
  int h, w;              // input plane
  int oh, ow;            // output plane
  PoolWindow p;
  int cells_h, cells_w;  // the input plane in sh x sw cells: ceil(h/sh) x ceil(w/sw)
  int reach_h, reach_w;  // (kh - 1)/sh, (kw - 1)/sw: see backward_cells
};

__device__ __forceinline__ unsigned first_index() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned grid_stride() { return blockDim.x * gridDim.x; }

// The window's maximum and where it is, for output (i, j) of a plane
// (window_max, kernels/device_math.cuh: the first maximum; NaN wins).
template <class T>
__device__ __forceinline__ void max_window(const T* xp, const PoolGeometry& g, int i, int j,
                                           T* y, int* argmax) {
  T best;
  int best_at;
  window_max(i * g.p.sh * g.w + j * g.p.sw, g.w, g.p.kh, g.p.kw,
             [xp](int at) { return xp[at]; }, best, best_at);
  *y = best;
  *argmax = best_at;
}

// A 3-D grid with no division per output: z over planes, y over output rows
// i, x over runs of `span` consecutive outputs j of a row (columns_per_thread,
// kernels/grid.h: 1 on a GPU, the whole row under simcuda). Each output is
// computed by exactly one thread, in the same way for any span.
template <class T>
__global__ void max_pool_forward_kernel(const T* x, T* y, int* argmax, PoolGeometry g, int span) {
  const unsigned jstep = gridDim.x * blockDim.x * unsigned(span);
  for (unsigned plane = blockIdx.z; plane < g.planes; plane += gridDim.z) {
    const T* xp = x + plane * unsigned(g.h * g.w);
    for (unsigned i = blockIdx.y * blockDim.y + threadIdx.y; i < unsigned(g.oh);
         i += gridDim.y * blockDim.y) {
      const unsigned row = (plane * unsigned(g.oh) + i) * unsigned(g.ow);
      for (unsigned ja = (blockIdx.x * blockDim.x + threadIdx.x) * unsigned(span);
           ja < unsigned(g.ow); ja += jstep) {
        const unsigned jb = ja + unsigned(span) < unsigned(g.ow) ? ja + unsigned(span) : unsigned(g.ow);
        for (unsigned j = ja; j < jb; ++j)
          max_window(xp, g, int(i), int(j), y + row + j, argmax + row + j);
      }
    }
  }
}

// One thread per output: the window's sum in T, in row-major order, divided
// by kh*kw.
template <class T>
__global__ void avg_pool_forward_kernel(const T* x, T* y, PoolGeometry g) {
  const unsigned total = g.planes * g.oh * g.ow, stride = grid_stride();
  const T count = T(g.p.kh * g.p.kw);
  for (unsigned o = first_index(); o < total; o += stride) {
    const unsigned t = o / g.ow, plane = t / g.oh;
    const int j = int(o - t * g.ow), i = int(t - plane * g.oh);
    const T* xp = x + plane * g.h * g.w + i * g.p.sh * g.w + j * g.p.sw;
    T sum = T(0);
    for (int r = 0; r < g.p.kh; ++r)
      for (int q = 0; q < g.p.kw; ++q) sum += xp[r * g.w + q];
    y[o] = sum / count;
  }
}

// The backward passes are gathers over cells: the input plane is tiled by
// sh x sw cells, cell (a, b) holding rows a*sh .. a*sh + sh - 1 and columns
// b*sw .. b*sw + sw - 1 (clipped at h and w), and one thread owns a cell: it
// computes dx for each of its inputs from the windows containing it, in
// window order (oh, then ow), and writes only those dx. Window oh covers
// rows oh*sh .. oh*sh + kh - 1, so it contains row ih = a*sh + r (0 <= r <
// sh) only if oh <= a (oh*sh <= ih) and oh >= a - (kh - 1)/sh (otherwise it
// ends above a*sh): the candidates are oh in [a - reach_h, a] within [0,
// OH), and each is kept if oh*sh + kh > ih. Likewise for columns. The index
// arithmetic (two divisions) is per cell, not per input; consecutive threads
// own consecutive cells of a row of cells, so their writes are contiguous
// (coalesced on a GPU). Inputs in no window (dropped partial windows, gaps
// when the stride exceeds the window) get 0.
//
// take(o, self) is dy[o] if input `self` (its index in the plane) gets
// window o's gradient, else 0: max pooling compares argmax[o] with self;
// average pooling always takes dy[o]. take.finish(sum) gives dx (average:
// sum / (kh*kw), one division as in the reference).
//
// Disjoint (kh <= sh and kw <= sw, every window of the models): reach is 0,
// the only candidate is window (a, b), and input (a*sh + r, b*sw + q) is in
// it iff a < OH, b < OW, r < kh and q < kw. The compile-time flag drops the
// candidate loops (under simcuda the general loop cost 2x here).
template <bool Disjoint, class T, class Contribution>
__device__ __forceinline__ void backward_cell(const PoolGeometry& g, const Contribution& take,
                                              T* dx, bool accumulate, unsigned plane, int a,
                                              int b) {
  const unsigned out0 = plane * g.oh * g.ow;
  T* dxp = dx + plane * g.h * g.w;
  const int i0 = a - g.reach_h > 0 ? a - g.reach_h : 0, i1 = a < g.oh - 1 ? a : g.oh - 1;
  const int j0 = b - g.reach_w > 0 ? b - g.reach_w : 0, j1 = b < g.ow - 1 ? b : g.ow - 1;
  const int ih0 = a * g.p.sh, iw0 = b * g.p.sw;
  for (int ih = ih0; ih < ih0 + g.p.sh && ih < g.h; ++ih)
    for (int iw = iw0; iw < iw0 + g.p.sw && iw < g.w; ++iw) {
      const int self = ih * g.w + iw;
      T sum = T(0);
      if (Disjoint) {
        if (a < g.oh && b < g.ow && ih - ih0 < g.p.kh && iw - iw0 < g.p.kw)
          sum = take(out0 + unsigned(a * g.ow + b), self);
      } else {
        for (int i = i0; i <= i1; ++i) {
          if (i * g.p.sh + g.p.kh <= ih) continue;  // window row i ends above ih
          for (int j = j0; j <= j1; ++j)
            if (j * g.p.sw + g.p.kw > iw) sum += take(out0 + unsigned(i * g.ow + j), self);
        }
      }
      const T v = take.finish(sum);
      dxp[self] = accumulate ? dxp[self] + v : v;
    }
}

// Every cell (a, b) of every plane, on a 3-D grid without divisions: z over
// planes, y over cell rows a, x over runs of `span` consecutive cells b
// (columns_per_thread, kernels/grid.h).
template <bool Disjoint, class T, class Contribution>
__device__ __forceinline__ void backward_cells(const PoolGeometry& g, const Contribution& take,
                                               T* dx, bool accumulate, int span) {
  const unsigned bstep = gridDim.x * blockDim.x * unsigned(span);
  for (unsigned plane = blockIdx.z; plane < g.planes; plane += gridDim.z)
    for (unsigned a = blockIdx.y * blockDim.y + threadIdx.y; a < unsigned(g.cells_h);
         a += gridDim.y * blockDim.y)
      for (unsigned ba = (blockIdx.x * blockDim.x + threadIdx.x) * unsigned(span);
           ba < unsigned(g.cells_w); ba += bstep) {
        const unsigned bb =
            ba + unsigned(span) < unsigned(g.cells_w) ? ba + unsigned(span) : unsigned(g.cells_w);
        for (unsigned b = ba; b < bb; ++b)
          backward_cell<Disjoint, T>(g, take, dx, accumulate, plane, int(a), int(b));
      }
}

template <class T>
struct MaxContribution {
  const T* dy;
  const int* argmax;
  __device__ T operator()(unsigned o, int self) const {
    return argmax[o] == self ? dy[o] : T(0);
  }
  __device__ T finish(T sum) const { return sum; }
};

template <class T>
struct AvgContribution {
  const T* dy;
  T count;  // kh*kw
  __device__ T operator()(unsigned o, int) const { return dy[o]; }
  __device__ T finish(T sum) const { return sum / count; }
};

// dx = the sum of dy over the windows whose argmax is this input (exact
// when at most one window contributes: non-overlapping windows).
template <class T, bool Disjoint>
__global__ void max_pool_backward_kernel(const T* dy, const int* argmax, T* dx, PoolGeometry g,
                                         bool accumulate, int span) {
  backward_cells<Disjoint, T>(g, MaxContribution<T>{dy, argmax}, dx, accumulate, span);
}

// dx = (the sum of dy over the windows containing this input) / (kh*kw).
template <class T, bool Disjoint>
__global__ void avg_pool_backward_kernel(const T* dy, T* dx, PoolGeometry g, bool accumulate,
                                         int span) {
  backward_cells<Disjoint, T>(g, AvgContribution<T>{dy, T(g.p.kh * g.p.kw)}, dx, accumulate,
                              span);
}

// Global average, thread path: one thread per plane sums it in double, in
// order. No barrier.
template <class T>
__global__ void global_avg_thread_kernel(const T* x, T* y, unsigned planes, unsigned hw) {
  const unsigned stride = grid_stride();
  for (unsigned p = first_index(); p < planes; p += stride) {
    const T* xp = x + p * hw;
    double sum = 0;
    for (unsigned i = 0; i < hw; ++i) sum += xp[i];
    y[p] = T(sum / double(hw));
  }
}

// Global average, warp path: one warp per plane (grid-strided over planes;
// the plane index is the same for all 32 lanes, so whole warps enter and
// leave the loop together). Lane l sums elements l, l + 32, ... in double,
// then a __shfl_xor_sync butterfly (partners fixed at each level: the same
// bits every run) and lane 0 writes.
template <class T>
__global__ void global_avg_warp_kernel(const T* x, T* y, unsigned planes, unsigned hw) {
  const unsigned lane = threadIdx.x % 32, warps = grid_stride() / 32;
  for (unsigned p = first_index() / 32; p < planes; p += warps) {
    const T* xp = x + p * hw;
    double sum = 0;
    for (unsigned i = lane; i < hw; i += 32) sum += xp[i];
    for (int offset = 16; offset > 0; offset >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) y[p] = T(sum / double(hw));
  }
}

// One thread per input: dx = dy / (h*w).
template <class T>
__global__ void global_avg_backward_kernel(const T* dy, T* dx, unsigned planes, unsigned hw,
                                           bool accumulate) {
  const unsigned total = planes * hw, stride = grid_stride();
  const T count = T(hw);
  for (unsigned e = first_index(); e < total; e += stride) {
    const T v = dy[e / hw] / count;
    dx[e] = accumulate ? dx[e] + v : v;
  }
}

// ---------------------------------------------------------------------------
// Host side.

std::string shape_of(int n, int c, int h, int w) {
  return "(shape n=" + std::to_string(n) + ", c=" + std::to_string(c) + ", h=" +
         std::to_string(h) + ", w=" + std::to_string(w) + ")";
}

void check_shape(const char* op, int n, int c, int h, int w, int block) {
  const auto fail = [&](const char* what, int v, const char* rule) {
    throw std::invalid_argument(std::string(op) + ": " + what + " must be " + rule + ", not " +
                                std::to_string(v) + " " + shape_of(n, c, h, w));
  };
  if (n < 0) fail("n", n, ">= 0");
  if (c < 1) fail("c", c, ">= 1");
  if (h < 1) fail("h", h, ">= 1");
  if (w < 1) fail("w", w, ">= 1");
  // 32-bit indexing (see the device side). With n = 0 nothing runs, but a
  // plane must still fit.
  const long long values = (long long)(n > 0 ? n : 1) * c * h * w;
  if (values > INT_MAX)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(values) +
                                " input values are too many: n*c*h*w must be below 2^31 "
                                "(32-bit indexing) " + shape_of(n, c, h, w));
  check_block(op, block);
}

void check_window(const char* op, int h, int w, PoolWindow p) {
  const auto fail = [&](const char* what, int v) {
    throw std::invalid_argument(std::string(op) + ": " + what + " must be >= 1, not " +
                                std::to_string(v));
  };
  if (p.kh < 1) fail("window kh", p.kh);
  if (p.kw < 1) fail("window kw", p.kw);
  if (p.sh < 1) fail("stride sh", p.sh);
  if (p.sw < 1) fail("stride sw", p.sw);
  if (p.kh > h || p.kw > w)
    throw std::invalid_argument(std::string(op) + ": window " + std::to_string(p.kh) + "x" +
                                std::to_string(p.kw) + " does not fit in the " +
                                std::to_string(h) + "x" + std::to_string(w) +
                                " input plane (needs kh <= h and kw <= w)");
}

// Checks everything; returns the geometry.
PoolGeometry pool_geometry(const char* op, int n, int c, int h, int w, PoolWindow p,
                           int block) {
  check_shape(op, n, c, h, w, block);
  check_window(op, h, w, p);
  return PoolGeometry{unsigned(n) * unsigned(c),
                      h,
                      w,
                      pool_out_size(h, p.kh, p.sh),
                      pool_out_size(w, p.kw, p.sw),
                      p,
                      int(ceil_div(h, p.sh)),
                      int(ceil_div(w, p.sw)),
                      (p.kh - 1) / p.sh,
                      (p.kw - 1) / p.sw};
}

// Windows that never overlap: each input is in at most one.
bool disjoint(const PoolWindow& p) { return p.kh <= p.sh && p.kw <= p.sw; }

}  // namespace

template <class T>
void max_pool2d_forward(const T* d_x, T* d_y, int* d_argmax, int n, int c, int h, int w,
                        PoolWindow p, cudaStream_t s, int block) {
  const char* op = "max_pool2d_forward";
  const PoolGeometry g = pool_geometry(op, n, c, h, w, p, block);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_y, "d_y");
  check_pointer(op, d_argmax, "d_argmax");
  const RowLaunch l = row_launch(g.planes, g.oh, g.ow, block);
  LAUNCH(max_pool_forward_kernel<T>, l.grid, l.tile, 0, s, d_x, d_y, d_argmax, g, l.span);
}

template <class T>
void max_pool2d_backward(const MaxPoolGradTensors<T>& t, int n, int c, int h, int w, PoolWindow p,
                         bool accumulate, cudaStream_t s, int block) {
  const char* op = "max_pool2d_backward";
  const T* d_dy = t.dy;
  const int* d_argmax = t.argmax;
  T* d_dx = t.dx;
  const PoolGeometry g = pool_geometry(op, n, c, h, w, p, block);
  if (n == 0) return;
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_argmax, "d_argmax");
  check_pointer(op, d_dx, "d_dx");
  const RowLaunch l = row_launch(g.planes, g.cells_h, g.cells_w, block);
  if (disjoint(p))
    LAUNCH((max_pool_backward_kernel<T, true>), l.grid, l.tile, 0, s, d_dy, d_argmax, d_dx, g,
           accumulate, l.span);
  else
    LAUNCH((max_pool_backward_kernel<T, false>), l.grid, l.tile, 0, s, d_dy, d_argmax, d_dx, g,
           accumulate, l.span);
}

template <class T>
void avg_pool2d_forward(const T* d_x, T* d_y, int n, int c, int h, int w, PoolWindow p,
                        cudaStream_t s, int block) {
  const char* op = "avg_pool2d_forward";
  const PoolGeometry g = pool_geometry(op, n, c, h, w, p, block);
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_y, "d_y");
  const long long outputs = (long long)g.planes * g.oh * g.ow;
  LAUNCH(avg_pool_forward_kernel<T>, blocks_for(outputs, block), block, 0, s, d_x, d_y, g);
}

template <class T>
void avg_pool2d_backward(const T* d_dy, T* d_dx, int n, int c, int h, int w, PoolWindow p,
                         bool accumulate, cudaStream_t s, int block) {
  const char* op = "avg_pool2d_backward";
  const PoolGeometry g = pool_geometry(op, n, c, h, w, p, block);
  if (n == 0) return;
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  const RowLaunch l = row_launch(g.planes, g.cells_h, g.cells_w, block);
  if (disjoint(p))
    LAUNCH((avg_pool_backward_kernel<T, true>), l.grid, l.tile, 0, s, d_dy, d_dx, g, accumulate,
           l.span);
  else
    LAUNCH((avg_pool_backward_kernel<T, false>), l.grid, l.tile, 0, s, d_dy, d_dx, g, accumulate,
           l.span);
}

template <class T>
void global_avg_pool_forward(const T* d_x, T* d_y, int n, int c, int h, int w, cudaStream_t s,
                             int block, GlobalPoolStrategy strategy) {
  const char* op = "global_avg_pool_forward";
  check_shape(op, n, c, h, w, block);
  if (strategy != GlobalPoolStrategy::automatic && strategy != GlobalPoolStrategy::thread &&
      strategy != GlobalPoolStrategy::warp)
    throw std::invalid_argument(std::string(op) + ": unknown strategy " +
                                std::to_string(int(strategy)));
  if (n == 0) return;
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_y, "d_y");
  const unsigned planes = unsigned(n) * unsigned(c), hw = unsigned(h) * unsigned(w);
  if (strategy == GlobalPoolStrategy::automatic)
    strategy = hw <= kGlobalPoolThreadMaxHW ? GlobalPoolStrategy::thread
                                            : GlobalPoolStrategy::warp;
  if (strategy == GlobalPoolStrategy::thread)
    LAUNCH(global_avg_thread_kernel<T>, blocks_for(planes, block), block, 0, s, d_x, d_y, planes,
           hw);
  else
    LAUNCH(global_avg_warp_kernel<T>, blocks_for(32LL * planes, block), block, 0, s, d_x, d_y,
           planes, hw);
}

template <class T>
void global_avg_pool_backward(const T* d_dy, T* d_dx, int n, int c, int h, int w,
                              bool accumulate, cudaStream_t s, int block) {
  const char* op = "global_avg_pool_backward";
  check_shape(op, n, c, h, w, block);
  if (n == 0) return;
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  const unsigned planes = unsigned(n) * unsigned(c), hw = unsigned(h) * unsigned(w);
  LAUNCH(global_avg_backward_kernel<T>, blocks_for((long long)planes * hw, block), block, 0, s,
         d_dy, d_dx, planes, hw, accumulate);
}

// ===========================================================================
// Explicit instantiations: float and double.

#define TIMBRE_POOLING_INSTANTIATE(T)                                                           \
  template void max_pool2d_forward<T>(const T*, T*, int*, int, int, int, int, PoolWindow,       \
                                      cudaStream_t, int);                                       \
  template void max_pool2d_backward<T>(const MaxPoolGradTensors<T>&, int, int, int, int,        \
                                       PoolWindow, bool, cudaStream_t, int);                    \
  template void avg_pool2d_forward<T>(const T*, T*, int, int, int, int, PoolWindow,             \
                                      cudaStream_t, int);                                       \
  template void avg_pool2d_backward<T>(const T*, T*, int, int, int, int, PoolWindow, bool,      \
                                       cudaStream_t, int);                                      \
  template void global_avg_pool_forward<T>(const T*, T*, int, int, int, int, cudaStream_t, int, \
                                           GlobalPoolStrategy);                                 \
  template void global_avg_pool_backward<T>(const T*, T*, int, int, int, int, bool,             \
                                            cudaStream_t, int);                                 \
  template void max_pool2d_forward_cpu<T>(const T*, T*, int*, int, int, int, int, PoolWindow);  \
  template void max_pool2d_backward_cpu<T>(const MaxPoolGradTensors<T>&, int, int, int, int,    \
                                           PoolWindow, bool);                                   \
  template void avg_pool2d_forward_cpu<T>(const T*, T*, int, int, int, int, PoolWindow);        \
  template void avg_pool2d_backward_cpu<T>(const T*, T*, int, int, int, int, PoolWindow, bool); \
  template void global_avg_pool_forward_cpu<T>(const T*, T*, int, int, int, int);               \
  template void global_avg_pool_backward_cpu<T>(const T*, T*, int, int, int, int, bool);

TIMBRE_POOLING_INSTANTIATE(float)
TIMBRE_POOLING_INSTANTIATE(double)
#undef TIMBRE_POOLING_INSTANTIATE

}  // namespace timbre::kernels
