#include "kernels/conv2d.cuh"

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/blas.h"
#include "kernels/common.cuh"
#include "kernels/grid.h"
#include "kernels/launcher.h"
#include "kernels/reference.h"

namespace timbre::kernels {

// ===========================================================================
// The shape.

std::string Conv2dShape::str() const {
  auto tuple = [](std::initializer_list<long long> v) {
    std::string s = "(";
    for (long long e : v) s += (s.size() > 1 ? ", " : "") + std::to_string(e);
    return s + ")";
  };
  return "x " + tuple({N, C, H, W}) + ", w " + tuple({K, C, R, S}) + ", stride " +
         tuple({stride_h, stride_w}) + ", pad " + tuple({pad_h, pad_w}) + " -> y " +
         tuple({N, K, P(), Q()});
}

void Conv2dShape::validate(const std::string& op) const {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(op + ": " + what + " (" + str() + ")");
  };
  auto pair = [](long long a, long long b) {
    return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
  };
  if (N < 1 || C < 1 || H < 1 || W < 1)
    fail("x (N, C, H, W) = (" + std::to_string(N) + ", " + std::to_string(C) + ", " +
         std::to_string(H) + ", " + std::to_string(W) + "): every size must be >= 1");
  if (K < 1 || R < 1 || S < 1)
    fail("w (K, C, R, S) = (" + std::to_string(K) + ", " + std::to_string(C) + ", " +
         std::to_string(R) + ", " + std::to_string(S) + "): every size must be >= 1");
  if (stride_h < 1 || stride_w < 1)
    fail("stride (stride_h, stride_w) = " + pair(stride_h, stride_w) + " must be >= 1");
  if (pad_h < 0 || pad_w < 0)
    fail("pad (pad_h, pad_w) = " + pair(pad_h, pad_w) + " must be >= 0");
  const long long padded_h = H + 2LL * pad_h, padded_w = W + 2LL * pad_w;
  constexpr long long kIntMax = 0x7fffffffLL;
  if (padded_h > kIntMax || padded_w > kIntMax)
    fail("padded input (H + 2*pad_h, W + 2*pad_w) = " + pair(padded_h, padded_w) +
         " exceeds 2^31 - 1");
  if (R > padded_h || S > padded_w)
    fail("kernel (R, S) = " + pair(R, S) + " is larger than the padded input (H + 2*pad_h, " +
         "W + 2*pad_w) = " + pair(padded_h, padded_w));
  // GEMM dimensions are ints in cuBLAS; sizes are long long (double avoids
  // overflow in the check itself).
  if (double(C) * R * S > double(kIntMax))
    fail("C*R*S = " + std::to_string(col_rows()) + " exceeds 2^31 - 1");
  if (double(P()) * Q() > double(kIntMax))
    fail("P*Q = " + std::to_string(col_cols()) + " exceeds 2^31 - 1");
  constexpr double kMaxElements = 0x1p62;
  if (double(N) * C * H * W > kMaxElements || double(N) * K * P() * Q() > kMaxElements ||
      double(K) * C * R * S > kMaxElements)
    fail("a tensor has more than 2^62 elements");
}

long long conv2d_col_elements(const Conv2dShape& shape) {
  return shape.pointwise() ? 0 : (shape.col_rows() + 1) * shape.col_cols();
}

long long conv2d_workspace_elements(const Conv2dShape& shape) {
  return conv2d_col_elements(shape) + shape.K * (shape.col_rows() + 1);
}

// ===========================================================================
// CPU references: plain loops, double accumulation.

namespace {

// Index helpers for contiguous NCHW / KCRS arrays.
struct Index4 {
  long long d1, d2, d3;  // sizes of dimensions 1..3
  long long operator()(long long a, long long b, long long c, long long d) const {
    return ((a * d1 + b) * d2 + c) * d3 + d;
  }
};

}  // namespace

template <class T>
void conv2d_forward_cpu(const Conv2dShape& sh, const T* x, const T* w, const T* b, T* y) {
  sh.validate("conv2d_forward_cpu");
  const int P = sh.P(), Q = sh.Q();
  const Index4 X{sh.C, sh.H, sh.W}, Wt{sh.C, sh.R, sh.S}, Y{sh.K, P, Q};
  for (int n = 0; n < sh.N; ++n)
    for (int k = 0; k < sh.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          double acc = b ? double(b[k]) : 0.0;
          for (int c = 0; c < sh.C; ++c)
            for (int r = 0; r < sh.R; ++r)
              for (int s = 0; s < sh.S; ++s) {
                const int ih = p * sh.stride_h - sh.pad_h + r, iw = q * sh.stride_w - sh.pad_w + s;
                if (ih < 0 || ih >= sh.H || iw < 0 || iw >= sh.W) continue;  // padding: 0
                acc += double(w[Wt(k, c, r, s)]) * double(x[X(n, c, ih, iw)]);
              }
          y[Y(n, k, p, q)] = T(acc);
        }
}

// Scatter: every product w * dy goes to the input pixel it was multiplied
// with in forward.
template <class T>
void conv2d_backward_data_cpu(const Conv2dShape& sh, const T* w, const T* dy, T* dx,
                              bool accumulate) {
  sh.validate("conv2d_backward_data_cpu");
  const int P = sh.P(), Q = sh.Q();
  const Index4 X{sh.C, sh.H, sh.W}, Wt{sh.C, sh.R, sh.S}, Y{sh.K, P, Q};
  std::vector<double> acc(size_t(sh.x_size()), 0.0);
  for (int n = 0; n < sh.N; ++n)
    for (int k = 0; k < sh.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          const double g = dy[Y(n, k, p, q)];
          for (int c = 0; c < sh.C; ++c)
            for (int r = 0; r < sh.R; ++r)
              for (int s = 0; s < sh.S; ++s) {
                const int ih = p * sh.stride_h - sh.pad_h + r, iw = q * sh.stride_w - sh.pad_w + s;
                if (ih < 0 || ih >= sh.H || iw < 0 || iw >= sh.W) continue;
                acc[size_t(X(n, c, ih, iw))] += double(w[Wt(k, c, r, s)]) * g;
              }
        }
  for (size_t i = 0; i < acc.size(); ++i) store_cpu(dx + i, acc[i], accumulate);
}

template <class T>
void conv2d_backward_filter_cpu(const Conv2dShape& sh, const T* x, const T* dy, T* dw,
                                bool accumulate) {
  sh.validate("conv2d_backward_filter_cpu");
  const int P = sh.P(), Q = sh.Q();
  const Index4 X{sh.C, sh.H, sh.W}, Wt{sh.C, sh.R, sh.S}, Y{sh.K, P, Q};
  for (int k = 0; k < sh.K; ++k)
    for (int c = 0; c < sh.C; ++c)
      for (int r = 0; r < sh.R; ++r)
        for (int s = 0; s < sh.S; ++s) {
          double acc = 0;
          for (int n = 0; n < sh.N; ++n)
            for (int p = 0; p < P; ++p)
              for (int q = 0; q < Q; ++q) {
                const int ih = p * sh.stride_h - sh.pad_h + r, iw = q * sh.stride_w - sh.pad_w + s;
                if (ih < 0 || ih >= sh.H || iw < 0 || iw >= sh.W) continue;
                acc += double(dy[Y(n, k, p, q)]) * double(x[X(n, c, ih, iw)]);
              }
          store_cpu(dw + Wt(k, c, r, s), acc, accumulate);
        }
}

template <class T>
void conv2d_backward_bias_cpu(const Conv2dShape& sh, const T* dy, T* db, bool accumulate) {
  sh.validate("conv2d_backward_bias_cpu");
  const long long PQ = sh.col_cols();
  for (int k = 0; k < sh.K; ++k) {
    double acc = 0;
    for (int n = 0; n < sh.N; ++n)
      for (long long j = 0; j < PQ; ++j) acc += double(dy[(n * (long long)sh.K + k) * PQ + j]);
    store_cpu(db + k, acc, accumulate);
  }
}

// ===========================================================================
// Kernels. In an anonymous namespace: other kernel files may use the same
// names.

namespace {

// The geometry as kernels read it: plain ints, P and Q computed once.
struct Dims {
  int N, C, H, W, K, R, S, stride_h, stride_w, pad_h, pad_w, P, Q;
};

Dims dims_of(const Conv2dShape& s) {
  return Dims{s.N,        s.C,        s.H,     s.W,     s.K,   s.R,  s.S,
              s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.P(), s.Q()};
}

// Index helpers on the device.
__device__ __forceinline__ long long nchw(long long plane, int h, int w, int H, int W) {
  return (plane * H + h) * W + w;  // plane = n * channels + c
}

// ---------------------------------------------------------------------------
// v1_direct.

// One thread per output y[n,k,p,q] (grid-strided over N*K*P*Q, consecutive
// threads on consecutive q: coalesced writes, and reads of x at stride
// stride_w). Each sums its C*R*S products in the order c, r, s; taps in the
// padding are skipped. No barrier: simcuda's fast path.
template <class T>
__global__ void forward_direct_kernel(Dims d, const T* __restrict__ x, const T* __restrict__ w,
                                      const T* __restrict__ b, T* __restrict__ y) {
  const long long total = (long long)d.N * d.K * d.P * d.Q;
  const long long step = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    long long t = i;
    const int q = int(t % d.Q);
    t /= d.Q;
    const int p = int(t % d.P);
    t /= d.P;
    const int k = int(t % d.K);
    const long long n = t / d.K;
    T acc = b ? b[k] : T(0);
    for (int c = 0; c < d.C; ++c) {
      const T* wc = w + ((long long)k * d.C + c) * d.R * d.S;
      const long long plane = n * d.C + c;
      for (int r = 0; r < d.R; ++r) {
        const int ih = p * d.stride_h - d.pad_h + r;
        if (ih < 0 || ih >= d.H) continue;
        for (int s = 0; s < d.S; ++s) {
          const int iw = q * d.stride_w - d.pad_w + s;
          if (iw < 0 || iw >= d.W) continue;
          acc += wc[r * d.S + s] * x[nchw(plane, ih, iw, d.H, d.W)];
        }
      }
    }
    y[i] = acc;
  }
}

// One thread per input pixel dx[n,c,h,w] (grid-strided over N*C*H*W). It
// gathers the outputs whose windows covered it: tap (r, s) of output (p, q)
// read pixel (h, w) when h = p*stride_h - pad_h + r, i.e. p = (h + pad_h -
// r) / stride_h must be a whole number in [0, P) (q likewise). Sum order: k,
// then r, then s. Each thread writes only its own pixel: no atomics.
template <class T>
__global__ void backward_data_direct_kernel(Dims d, const T* __restrict__ w,
                                            const T* __restrict__ dy, T* __restrict__ dx,
                                            bool accumulate) {
  const long long total = (long long)d.N * d.C * d.H * d.W;
  const long long step = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    long long t = i;
    const int iw = int(t % d.W);
    t /= d.W;
    const int ih = int(t % d.H);
    t /= d.H;
    const int c = int(t % d.C);
    const long long n = t / d.C;
    T acc = T(0);
    for (int k = 0; k < d.K; ++k) {
      const T* wk = w + ((long long)k * d.C + c) * d.R * d.S;
      const T* dyk = dy + (n * d.K + k) * d.P * d.Q;
      for (int r = 0; r < d.R; ++r) {
        const int hp = ih + d.pad_h - r;  // p * stride_h, if tap r of some row p read ih
        if (hp < 0 || hp % d.stride_h != 0 || hp / d.stride_h >= d.P) continue;
        const int p = hp / d.stride_h;
        for (int s = 0; s < d.S; ++s) {
          const int wq = iw + d.pad_w - s;
          if (wq < 0 || wq % d.stride_w != 0 || wq / d.stride_w >= d.Q) continue;
          acc += wk[r * d.S + s] * dyk[(long long)p * d.Q + wq / d.stride_w];
        }
      }
    }
    dx[i] = accumulate ? dx[i] + acc : acc;
  }
}

// One thread per weight dw[k,c,r,s] (grid-strided over K*C*R*S), summing
// dy * x over n, p, q in that order. Little parallelism (K*C*R*S threads,
// N*P*Q terms each): a reference, not a fast kernel.
template <class T>
__global__ void backward_filter_direct_kernel(Dims d, const T* __restrict__ x,
                                              const T* __restrict__ dy, T* __restrict__ dw,
                                              bool accumulate) {
  const long long total = (long long)d.K * d.C * d.R * d.S;
  const long long step = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    long long t = i;
    const int s = int(t % d.S);
    t /= d.S;
    const int r = int(t % d.R);
    t /= d.R;
    const int c = int(t % d.C);
    const int k = int(t / d.C);
    T acc = T(0);
    for (int n = 0; n < d.N; ++n) {
      const T* dyk = dy + ((long long)n * d.K + k) * d.P * d.Q;
      const long long plane = (long long)n * d.C + c;
      for (int p = 0; p < d.P; ++p) {
        const int ih = p * d.stride_h - d.pad_h + r;
        if (ih < 0 || ih >= d.H) continue;
        for (int q = 0; q < d.Q; ++q) {
          const int iw = q * d.stride_w - d.pad_w + s;
          if (iw < 0 || iw >= d.W) continue;
          acc += dyk[(long long)p * d.Q + q] * x[nchw(plane, ih, iw, d.H, d.W)];
        }
      }
    }
    dw[i] = accumulate ? dw[i] + acc : acc;
  }
}

// One thread per channel k (K threads), summing dy over n, then p*Q + q.
template <class T>
__global__ void backward_bias_direct_kernel(Dims d, const T* __restrict__ dy, T* __restrict__ db,
                                            bool accumulate) {
  const long long PQ = (long long)d.P * d.Q;
  const long long step = (long long)blockDim.x * gridDim.x;
  for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < d.K; k += step) {
    T acc = T(0);
    for (int n = 0; n < d.N; ++n) {
      const T* plane = dy + ((long long)n * d.K + k) * PQ;
      for (long long j = 0; j < PQ; ++j) acc += plane[j];
    }
    db[k] = accumulate ? db[k] + acc : acc;
  }
}

// ---------------------------------------------------------------------------
// v2_im2col's own kernels.
//
// They walk "planes" (one channel of one image: an H x W input plane or a
// P x Q output plane) with a 3-D grid: x along the columns of a plane
// (consecutive threads on consecutive addresses: coalesced), y along its
// rows, z over planes, each a grid-stride loop. A thread's indices come
// straight from the grid, with no division to decompose a flat index (which
// dominated im2col's cost under simcuda).

// Grid of a plane kernel with 2-D blocks `block`: x and y cover the cols x
// rows of one plane (at most 65535 blocks each; the loops stride beyond), z
// covers planes, capped so that a launch has about max_grid_threads() threads (at
// least one plane, at most 65535).
dim3 plane_grid(long long planes, long long rows, long long cols, dim3 block) {
  const long long gx = std::min<long long>(ceil_div(cols, block.x), 65535);
  const long long gy = std::min<long long>(ceil_div(rows, block.y), 65535);
  const long long per_plane = gx * gy * block.x * block.y;
  const long long gz = std::min<long long>({planes, 65535, std::max(1LL, max_grid_threads() / per_plane)});
  return dim3(unsigned(gx), unsigned(gy), unsigned(gz));
}

// im2col, col2im and the bias fill take a run of columns per thread:
// columns_per_thread (kernels/grid.h) picks 1 on a GPU, a whole row under
// simcuda; row_launch (there too) shapes im2col's and col2im's launches.

// im2col for `planes` = images*C input planes starting at x:
//   col[(plane*R + r)*S + s][p*Q + q] = x[plane][p*stride_h - pad_h + r][q*stride_w - pad_w + s]
// (0 in the padding), i.e. for each image i, channel c the rows (c, r, s) of
// image i's (C*R*S) x (P*Q) column matrix. A thread (x index t, row p of a
// plane) handles output pixels (p, q) for q in [t*span, (t+1)*span) and
// writes their R*S entries, tap by tap: for each tap the columns whose input
// falls left of the image, inside it, and right of it are three plain runs
// (zeros, a strided copy, zeros). Every entry is written, zeros included.
// No barrier.
// ones_row (0 or 1): each image's matrix has one more row, all ones, after
// its C*R*S rows (written by the threads of channel C - 1): the filter
// gradient's GEMM then also sums dy over p, q, which is the bias gradient.
// fill (the forward's bias, fused in: no launch of its own): the same
// threads then write fill.planes = images*K output planes y[image][k] =
// b[k], pixel (p, q) by the thread of (p, q), before the forward GEMM adds
// w * col into them (beta = 1). The grid covers the larger of the two plane
// counts (row_launch); each loop strides over its own.
template <class T>
struct BiasFill {
  const T* b = nullptr;
  T* y = nullptr;         // the chunk's first output plane
  long long planes = 0;   // images * K; 0: no fill
};

template <class T>
__global__ void im2col_kernel(Dims d, long long planes, int span, int ones_row,
                              const T* __restrict__ x, T* __restrict__ col, BiasFill<T> fill) {
  const long long PQ = (long long)d.P * d.Q, RS = (long long)d.R * d.S;
  const long long image_rows = (long long)d.C * RS + ones_row;
  const long long qstep = (long long)gridDim.x * blockDim.x * span;
  for (long long plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const T* xp = x + plane * d.H * d.W;
    const long long image = plane / d.C, c = plane - image * d.C;
    const bool last_channel = ones_row != 0 && c == d.C - 1;
    for (long long p = (long long)blockIdx.y * blockDim.y + threadIdx.y; p < d.P;
         p += (long long)gridDim.y * blockDim.y)
      for (long long qa = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * span; qa < d.Q;
           qa += qstep) {
        const int q0 = int(qa), q1 = int(qa + span < d.Q ? qa + span : d.Q);
        T* out = col + (image * image_rows + c * RS) * PQ + p * d.Q;
        const int h0 = int(p) * d.stride_h - d.pad_h;
        for (int r = 0; r < d.R; ++r) {
          const int ih = h0 + r;
          const bool row_inside = ih >= 0 && ih < d.H;
          for (int s = 0; s < d.S; ++s, out += PQ) {
            // Columns q0 <= q < lo read left of the image, hi <= q < q1 right of it.
            const int off = s - d.pad_w;  // iw = q*stride_w + off
            int lo = q0, hi = q1;
            if (!row_inside) {
              lo = hi = q1;
            } else {
              while (lo < hi && lo * d.stride_w + off < 0) ++lo;
              while (hi > lo && (hi - 1) * d.stride_w + off >= d.W) --hi;
            }
            for (int q = q0; q < lo; ++q) out[q] = T(0);
            if (lo < hi) {
              const T* xr = xp + (long long)ih * d.W + off;
              for (int q = lo; q < hi; ++q) out[q] = xr[(long long)q * d.stride_w];
            }
            for (int q = hi > lo ? hi : lo; q < q1; ++q) out[q] = T(0);
          }
        }
        if (last_channel)  // out is now the image's ones row
          for (int q = q0; q < q1; ++q) out[q] = T(1);
      }
  }
  for (long long plane = blockIdx.z; plane < fill.planes; plane += gridDim.z) {
    const T v = fill.b[plane % d.K];
    for (long long p = (long long)blockIdx.y * blockDim.y + threadIdx.y; p < d.P;
         p += (long long)gridDim.y * blockDim.y)
      for (long long qa = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * span; qa < d.Q;
           qa += qstep) {
        const int q1 = int(qa + span < d.Q ? qa + span : d.Q);
        T* out = fill.y + plane * PQ + p * d.Q;
        for (int q = int(qa); q < q1; ++q) out[q] = v;
      }
  }
}

// col2im as a gather, for `planes` = images*C planes: dx[plane][h][w] (=, or
// +=) the sum of the column entries im2col copied from pixel (h, w):
// dcol[(plane*R + r)*S + s][p*Q + q] over the taps with h = p*stride_h -
// pad_h + r and w = q*stride_w - pad_w + s, (p, q) in [0, P) x [0, Q).
// A thread (x index t, row h of a plane) handles the pixels (h, w) for w in
// [t*span, (t+1)*span), CHUNK at a time with one accumulator each: for
// every tap (r, s) in order (r, then s) whose output row p is whole and in
// range, each pixel adds the entry of its column q = (w + pad_w - s) /
// stride_w when that division is exact and q in [0, Q). So each pixel sums
// its at most R*S terms in the order r, s, whatever the span: the result is
// the same bits for every launch shape. Each thread writes only its own
// pixels: no atomics, and the result does not depend on the schedule. No
// barrier.
// CHUNK, pixels summed at a time, follows the launch shape, not the backend:
// 1 when a thread owns one column (span 1, the GPU's shape: the accumulator
// is one register), 32 when it owns a run of columns (a 32-entry array; on a
// GPU that array would sit in local memory: ptxas reports 256 bytes of stack
// for the double kernel). The launcher picks the instantiation from span;
// the sums are the same bits either way.
// __launch_bounds__(kCol2imMaxBlock, 1): the 32-pixel instantiation takes
// 73-104 registers (ptxas, sm_80/sm_90), which caps a block at 608 threads;
// the bound keeps every instantiation launchable at 512 and the launcher
// refuses larger blocks. The ", 1" (one resident block is enough) matters:
// without it ptxas aimed at two blocks of 512, cut the float kernel to 64
// registers and spilled 24 bytes.
constexpr int kCol2imMaxBlock = 512;

template <class T, int CHUNK>
__global__ void __launch_bounds__(kCol2imMaxBlock, 1)
    col2im_kernel(Dims d, long long planes, int span, const T* __restrict__ dcol,
                  T* __restrict__ dx, bool accumulate) {
  constexpr int kChunk = CHUNK;
  const long long PQ = (long long)d.P * d.Q, RS = (long long)d.R * d.S;
  const long long wstep = (long long)gridDim.x * blockDim.x * span;
  for (long long plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const T* dc = dcol + plane * RS * PQ;
    for (long long h = (long long)blockIdx.y * blockDim.y + threadIdx.y; h < d.H;
         h += (long long)gridDim.y * blockDim.y)
      for (long long wa = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * span; wa < d.W;
           wa += wstep) {
        const int wend = int(wa + span < d.W ? wa + span : d.W);
        T* out = dx + (plane * d.H + h) * d.W;
        for (int w0 = int(wa); w0 < wend; w0 += kChunk) {
          const int n = wend - w0 < kChunk ? wend - w0 : kChunk;
          T acc[kChunk];
          for (int j = 0; j < n; ++j) acc[j] = T(0);
          for (int r = 0; r < d.R; ++r) {
            const int hp = int(h) + d.pad_h - r;  // = p * stride_h
            if (hp < 0 || hp % d.stride_h != 0 || hp / d.stride_h >= d.P) continue;
            const T* row = dc + (long long)r * d.S * PQ + (long long)(hp / d.stride_h) * d.Q;
            for (int s = 0; s < d.S; ++s, row += PQ) {
              const int base = w0 + d.pad_w - s;  // pixel j's column is (base + j) / stride_w
              if (d.stride_w == 1) {
                // The models' case: q = base + j, valid for j in [lo, hi).
                const int lo = base < 0 ? -base : 0;
                const int hi = d.Q - base < n ? d.Q - base : n;
                for (int j = lo; j < hi; ++j) acc[j] += row[base + j];
              } else {
                for (int j = 0; j < n; ++j) {
                  const int wq = base + j;  // = q * stride_w
                  if (wq >= 0 && wq % d.stride_w == 0 && wq / d.stride_w < d.Q)
                    acc[j] += row[wq / d.stride_w];
                }
              }
            }
          }
          for (int j = 0; j < n; ++j)
            out[w0 + j] = accumulate ? out[w0 + j] + acc[j] : acc[j];
        }
      }
  }
}

// y[n][k][j] = b[k] for every j < P*Q: the bias of a pointwise layer (which
// has no im2col to carry the fill), written before the forward GEMM adds
// w * x into y (beta = 1). x along j (span consecutive j per
// thread: 1 on a GPU, the whole plane under simcuda, as for im2col), y over
// channels k, z over images n. No barrier.
template <class T>
__global__ void bias_fill_kernel(Dims d, int span, const T* __restrict__ b, T* __restrict__ y) {
  const long long PQ = (long long)d.P * d.Q;
  const long long jstep = (long long)gridDim.x * blockDim.x * span;
  for (long long n = blockIdx.z; n < d.N; n += gridDim.z)
    for (long long k = blockIdx.y; k < d.K; k += gridDim.y) {
      const T v = b[k];
      T* yp = y + (n * d.K + k) * PQ;
      for (long long ja = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * span; ja < PQ;
           ja += jstep) {
        const long long jb = ja + span < PQ ? ja + span : PQ;
        for (long long j = ja; j < jb; ++j) yp[j] = v;
      }
    }
}

// Sums of dy over (n, p, q) per channel, in slots: block (k, i) adds the
// planes dy[n][k] of the images n = i, i + slots, i + 2 slots, ... and
// writes (=, or += when accumulate) out[i * slot_stride + k * k_stride].
// slots = 1, strides (0, 1): db itself (one block per channel). A
// pointwise layer's filter gradient uses the slots: its bias partials go
// where the GEMM of a layer with a column matrix writes them (see
// sum_slots_kernel), so the same slot sum finishes both, and K x slots
// blocks fill the device. Thread t adds, in T, the entries j = t, t +
// blockDim, ... of each plane (coalesced); each warp then folds its 32
// partial sums with a __shfl_down_sync tree, lane 0 of each warp stores its
// result in shared memory, one __syncthreads, and warp 0 folds those the
// same way. Every addition has a fixed place in that order: the same bits on
// every run, whatever the schedule. blockDim.x: a multiple of 32.
template <class T>
__global__ void bias_grad_kernel(Dims d, int slots, const T* __restrict__ dy, T* __restrict__ out,
                                 long long slot_stride, long long k_stride, bool accumulate) {
  __shared__ T warp_sums[32];
  const int k = blockIdx.x;
  const long long PQ = (long long)d.P * d.Q;
  T acc = T(0);
  for (int n = blockIdx.y; n < d.N; n += slots) {
    const T* plane = dy + ((long long)n * d.K + k) * PQ;
    for (long long j = threadIdx.x; j < PQ; j += blockDim.x) acc += plane[j];
  }
  for (int offset = 16; offset > 0; offset >>= 1)
    acc += __shfl_down_sync(0xffffffffu, acc, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    T v = lane < int(blockDim.x / 32) ? warp_sums[lane] : T(0);
    for (int offset = 16; offset > 0; offset >>= 1)
      v += __shfl_down_sync(0xffffffffu, v, offset);
    T* o = out + blockIdx.y * slot_stride + k * k_stride;
    if (lane == 0) *o = accumulate ? *o + v : v;
  }
}

// The last step of the filter (and bias) gradient: sums the per-slot
// partials of the batched GEMM, in the order i = 0, 1, .... Slot i is a K x
// row matrix (row-major, slot after slot): columns [0, crs) are the filter
// gradient's row k, and when row = crs + 1 the last column is the bias
// gradient's entry k (the column matrix's ones row). dw[k][r] (=, or +=
// when accumulate_w) and db[k] (likewise) get the sums. Block row y takes
// rows k = y, y + gridDim.y, ...; the x threads take consecutive columns:
// in each of its `slots` reads a warp reads consecutive addresses
// (coalesced). No barrier, no atomics: every element has one fixed order
// of additions.
template <class T>
__global__ void sum_slots_kernel(int K, int row, int crs, int slots, const T* __restrict__ partial,
                                 T* __restrict__ dw, T* __restrict__ db, bool accumulate_w,
                                 bool accumulate_b) {
  const long long n = (long long)K * row;
  for (int k = blockIdx.y; k < K; k += gridDim.y)
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < row; r += gridDim.x * blockDim.x) {
      const long long e = (long long)k * row + r;
      T acc = partial[e];
      for (int i = 1; i < slots; ++i) acc += partial[i * n + e];
      T* o = r < crs ? dw + (long long)k * crs + r : db + k;
      const bool accumulate = r < crs ? accumulate_w : accumulate_b;
      *o = accumulate ? *o + acc : acc;
    }
}

// ---------------------------------------------------------------------------
// Argument checks (the common ones: kernels/launcher.h, kernels/blas.h).

// Images per chunk that the workspace holds: workspace_bytes over one
// image's share, conv2d_workspace_elements (its column matrix and its slot
// of filter-gradient partials). Pointwise forward and backward-data passes
// need no workspace (filter = false): the whole batch is one chunk. Throws
// if the workspace holds less than one image's share.
template <class T>
int chunk_images(const char* op, const Conv2dShape& sh, const T* d_workspace,
                 size_t workspace_bytes, bool filter) {
  if (sh.pointwise() && !filter) return sh.N;
  const size_t per_image = size_t(conv2d_workspace_elements(sh)) * sizeof(T);
  if (workspace_bytes < per_image)
    fail(op, "workspace of " + std::to_string(workspace_bytes) +
                 " bytes is smaller than one image's share (column matrix (C*R*S + 1) x P*Q = " +
                 std::to_string(conv2d_col_elements(sh) ? sh.col_rows() + 1 : 0) + " x " +
                 std::to_string(conv2d_col_elements(sh) ? sh.col_cols() : 0) +
                 " plus a gradient slot K x (C*R*S + 1) = " +
                 std::to_string(sh.K * (sh.col_rows() + 1)) + ": " +
                 std::to_string(per_image) + " bytes); see conv2d_workspace_bytes");
  check_pointer(op, d_workspace, "d_workspace");
  return int(std::min<size_t>(size_t(sh.N), workspace_bytes / per_image));
}

}  // namespace

// ===========================================================================
// v1 launchers.

template <class T>
void conv2d_forward_v1_direct(const Conv2dShape& shape, const T* d_x, const T* d_w, const T* d_b,
                              T* d_y, cudaStream_t stream, int block) {
  const char* op = "conv2d_forward_v1_direct";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_w, "d_w");
  check_pointer(op, d_y, "d_y");
  LAUNCH(forward_direct_kernel<T>, blocks_for(shape.y_size(), block), block, 0, stream,
         dims_of(shape), d_x, d_w, d_b, d_y);
}

template <class T>
void conv2d_backward_data_v1_direct(const Conv2dShape& shape, const T* d_w, const T* d_dy, T* d_dx,
                                    bool accumulate, cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_data_v1_direct";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_w, "d_w");
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  LAUNCH(backward_data_direct_kernel<T>, blocks_for(shape.x_size(), block), block, 0, stream,
         dims_of(shape), d_w, d_dy, d_dx, accumulate);
}

template <class T>
void conv2d_backward_filter_v1_direct(const Conv2dShape& shape, const T* d_x, const T* d_dy,
                                      T* d_dw, bool accumulate, cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_filter_v1_direct";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dw, "d_dw");
  LAUNCH(backward_filter_direct_kernel<T>, blocks_for(shape.w_size(), block), block, 0, stream,
         dims_of(shape), d_x, d_dy, d_dw, accumulate);
}

template <class T>
void conv2d_backward_bias_v1_direct(const Conv2dShape& shape, const T* d_dy, T* d_db,
                                    bool accumulate, cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_bias_v1_direct";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_db, "d_db");
  LAUNCH(backward_bias_direct_kernel<T>, blocks_for(shape.K, block), block, 0, stream,
         dims_of(shape), d_dy, d_db, accumulate);
}

// ===========================================================================
// v2 launchers.
//
// The GEMM mapping. cuBLAS is column-major: a row-major (r x c) matrix is,
// to cuBLAS, its transpose, a column-major (c x r) matrix with leading
// dimension c. Per image n, with CRS = C*R*S and PQ = P*Q:
//   row-major            column-major view (what cuBLAS sees)
//   w      (K x CRS)     Wc  = w^T      (CRS x K,  ld CRS)
//   col_n  (CRS x PQ)    Cc  = col_n^T  (PQ x CRS, ld PQ)
//   y_n    (K x PQ)      Yc  = y_n^T    (PQ x K,   ld PQ)   (dy_n, dYc likewise)
//   dw     (K x CRS)     dWc = dw^T     (CRS x K,  ld CRS)
// so
//   forward   y_n = w col_n        <=>  Yc  = Cc Wc      gemm(N, N, PQ, K, CRS, Cc, Wc)
//   dx        dcol_n = w^T dy_n    <=>  dCc = dYc Wc^T   gemm(N, T, PQ, CRS, K, dYc, Wc)
//   dw        dw += dy_n col_n^T   <=>  dWc += Cc^T dYc  gemm(T, N, CRS, K, PQ, Cc, dYc)
// (gemm(ta, tb, m, n, k, A, B): C (m x n) = op(A) op(B) + beta C.) A chunk of
// images is one strided-batched GEMM: Cc, Yc, dYc step by one image's matrix,
// Wc by 0 (shared). dw sums over images into one matrix, which batched GEMMs
// writing one C would race on: so each GEMM of the batch writes its own slot
// of partial sums in the workspace (beta = 0 in the first chunk, 1 after,
// so slot i collects images i, i + chunk, ...), and one kernel then sums
// the slots in order into dw. For pointwise convolutions Cc is x_n itself (CRS = C, PQ = H*W)
// and dCc is dx_n.

template <class T>
void conv2d_forward_v2_im2col(const Conv2dShape& shape, const T* d_x, const T* d_w, const T* d_b,
                              T* d_y, T* d_workspace, size_t workspace_bytes,
                              cublasHandle_t handle, cudaStream_t stream, int block) {
  const char* op = "conv2d_forward_v2_im2col";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_w, "d_w");
  check_pointer(op, d_y, "d_y");
  check_handle(op, handle, stream);
  const int images = chunk_images(op, shape, d_workspace, workspace_bytes, false);
  const Dims d = dims_of(shape);
  const int CRS = int(shape.col_rows()), PQ = int(shape.col_cols());
  const long long image_x = (long long)d.C * d.H * d.W, image_y = (long long)d.K * PQ;
  if (d_b && shape.pointwise()) {
    const int span = columns_per_thread(PQ);
    const dim3 t(span == 1 ? unsigned(block) : 1u);
    LAUNCH(bias_fill_kernel<T>, plane_grid(d.N, d.K, ceil_div(PQ, span), t), t, 0, stream, d,
           span, d_b, d_y);
  }
  const T beta = d_b ? T(1) : T(0);
  for (int n0 = 0; n0 < d.N; n0 += images) {
    const int count = std::min(images, d.N - n0);
    const T* col = d_x + n0 * image_x;
    long long col_step = image_x;
    if (!shape.pointwise()) {
      // im2col of the chunk's images, and the bias fill of their outputs.
      const long long planes = (long long)count * d.C;
      BiasFill<T> fill;
      if (d_b) fill = {d_b, d_y + n0 * image_y, (long long)count * d.K};
      const RowLaunch l = row_launch(std::max(planes, fill.planes), d.P, d.Q, block);
      LAUNCH(im2col_kernel<T>, l.grid, l.tile, 0, stream, d, planes, l.span, 0, col, d_workspace,
             fill);
      col = d_workspace;
      col_step = (long long)CRS * PQ;
    }
    gemm_batched(handle, {kN, kN, PQ, d.K, CRS, PQ, CRS, PQ}, {col_step, 0, image_y, count}, T(1),
                 col, d_w, beta, d_y + n0 * image_y);
  }
}

template <class T>
void conv2d_backward_data_v2_im2col(const Conv2dShape& shape, const T* d_w, const T* d_dy,
                                    T* d_dx, bool accumulate, T* d_workspace,
                                    size_t workspace_bytes, cublasHandle_t handle,
                                    cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_data_v2_im2col";
  shape.validate(op);
  check_block(op, block);
  if (block > kCol2imMaxBlock)
    fail(op, "block must be at most " + std::to_string(kCol2imMaxBlock) +
                 " (col2im's registers), not " + std::to_string(block));
  check_pointer(op, d_w, "d_w");
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dx, "d_dx");
  check_handle(op, handle, stream);
  const int images = chunk_images(op, shape, d_workspace, workspace_bytes, false);
  const Dims d = dims_of(shape);
  const int CRS = int(shape.col_rows()), PQ = int(shape.col_cols());
  const long long image_x = (long long)d.C * d.H * d.W, image_y = (long long)d.K * PQ;
  for (int n0 = 0; n0 < d.N; n0 += images) {
    const int count = std::min(images, d.N - n0);
    const T* dy = d_dy + n0 * image_y;
    T* dx = d_dx + n0 * image_x;
    if (shape.pointwise()) {  // dcol_n is dx_n: the GEMM assigns or adds
      gemm_batched(handle, {kN, kT, PQ, CRS, d.K, PQ, CRS, PQ}, {image_y, 0, image_x, count}, T(1),
                   dy, d_w, accumulate ? T(1) : T(0), dx);
      continue;
    }
    const long long col_step = (long long)CRS * PQ;
    gemm_batched(handle, {kN, kT, PQ, CRS, d.K, PQ, CRS, PQ}, {image_y, 0, col_step, count}, T(1),
                 dy, d_w, T(0), d_workspace);
    const long long planes = (long long)count * d.C;
    const RowLaunch l = row_launch(planes, d.H, d.W, block);
    if (l.span == 1)
      LAUNCH((col2im_kernel<T, 1>), l.grid, l.tile, 0, stream, d, planes, l.span, d_workspace,
             dx, accumulate);
    else
      LAUNCH((col2im_kernel<T, 32>), l.grid, l.tile, 0, stream, d, planes, l.span, d_workspace,
             dx, accumulate);
  }
}

namespace {
// dw and, when d_db is set, db, through the slots: per chunk, im2col (with
// a ones row when db is wanted) and one strided-batched GEMM in which image
// i of the chunk writes (first chunk) or adds to (later chunks) slot i, a K
// x (CRS + 1) matrix whose last column is then the bias partial; then one
// kernel sums the slots. A pointwise layer has no column matrix (the GEMM
// reads x): its bias partials come from bias_grad_kernel over K x slots
// blocks into the same column. Arguments checked by the callers.
template <class T>
void filter_and_bias(const Conv2dShape& shape, const T* d_x, const T* d_dy, T* d_dw,
                     bool accumulate_w, T* d_db, bool accumulate_b, T* d_workspace,
                     size_t workspace_bytes, cublasHandle_t handle, cudaStream_t stream,
                     int block) {
  const char* op = "conv2d_backward_filter_v2_im2col";
  const int images = chunk_images(op, shape, d_workspace, workspace_bytes, true);
  const Dims d = dims_of(shape);
  const int CRS = int(shape.col_rows()), PQ = int(shape.col_cols());
  const long long image_x = (long long)d.C * d.H * d.W, image_y = (long long)d.K * PQ;
  const int row = CRS + (d_db ? 1 : 0);  // a slot's row: dw's, then db's entry
  const int gemm_rows = shape.pointwise() ? CRS : row;
  const long long slot = (long long)d.K * row;
  T* partial = d_workspace + images * conv2d_col_elements(shape);
  for (int n0 = 0; n0 < d.N; n0 += images) {
    const int count = std::min(images, d.N - n0);
    const T* col = d_x + n0 * image_x;
    long long col_step = image_x;
    if (!shape.pointwise()) {
      const long long planes = (long long)count * d.C;
      const RowLaunch l = row_launch(planes, d.P, d.Q, block);
      LAUNCH(im2col_kernel<T>, l.grid, l.tile, 0, stream, d, planes, l.span, d_db ? 1 : 0, col,
             d_workspace, BiasFill<T>{});
      col = d_workspace;
      col_step = (long long)row * PQ;
    }
    gemm_batched(handle, {kT, kN, gemm_rows, d.K, PQ, PQ, PQ, row}, {col_step, image_y, slot, count},
                 T(1), col, d_dy + n0 * image_y, n0 == 0 ? T(0) : T(1), partial);
  }
  if (d_db && shape.pointwise()) {
    // Block (k, slot) sums about PQ * N / images values: a thread for every
    // 32 of them (as batch norm's passes; a multiple of 32, at most
    // `block`), so that the loads, not the block's reduction, fill each
    // thread's time, and a small plane (16 x 16 in the models) is one warp
    // rather than 256 mostly idle lanes.
    const long long per_block = (long long)PQ * ceil_div(d.N, images);
    const long long want = ceil_div(ceil_div(per_block, 32), 32) * 32;
    const unsigned threads = unsigned(std::clamp<long long>(want, 32, block));
    LAUNCH(bias_grad_kernel<T>, dim3(unsigned(d.K), unsigned(images)), threads, 0, stream, d,
           images, d_dy, partial + CRS, slot, (long long)row, false);
  }
  const unsigned threads = unsigned(std::min(row, block));
  const dim3 grid(unsigned(ceil_div(row, threads)), unsigned(std::min(d.K, 65535)));
  LAUNCH(sum_slots_kernel<T>, grid, threads, 0, stream, d.K, row, CRS, images, partial, d_dw,
         d_db, accumulate_w, accumulate_b);
}
}  // namespace

template <class T>
void conv2d_backward_filter_v2_im2col(const Conv2dShape& shape, const T* d_x, const T* d_dy,
                                      T* d_dw, bool accumulate, T* d_workspace,
                                      size_t workspace_bytes, cublasHandle_t handle,
                                      cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_filter_v2_im2col";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_x, "d_x");
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_dw, "d_dw");
  check_handle(op, handle, stream);
  chunk_images(op, shape, d_workspace, workspace_bytes, true);
  filter_and_bias(shape, d_x, d_dy, d_dw, accumulate, static_cast<T*>(nullptr), false, d_workspace,
                  workspace_bytes, handle, stream, block);
}

template <class T>
void conv2d_backward_bias_v2_reduce(const Conv2dShape& shape, const T* d_dy, T* d_db,
                                    bool accumulate, cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_bias_v2_reduce";
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, d_dy, "d_dy");
  check_pointer(op, d_db, "d_db");
  LAUNCH(bias_grad_kernel<T>, dim3(unsigned(shape.K), 1u), block, 0, stream, dims_of(shape), 1,
         d_dy, d_db, 0LL, 1LL, accumulate);
}

template <class T>
void conv2d_backward_v2_im2col(const Conv2dShape& shape, const Conv2dGradTensors<T>& t,
                               Conv2dAccumulate acc, T* d_workspace, size_t workspace_bytes,
                               cublasHandle_t handle, cudaStream_t stream, int block) {
  const char* op = "conv2d_backward_v2_im2col";
  // Every argument is checked before anything runs, so a bad one leaves all
  // three gradients untouched.
  shape.validate(op);
  check_block(op, block);
  check_pointer(op, t.dy, "d_dy");
  if (t.dx) check_pointer(op, t.w, "d_w (needed for d_dx)");
  if (t.dw) check_pointer(op, t.x, "d_x (needed for d_dw)");
  if (t.dx || t.dw) {
    check_handle(op, handle, stream);
    chunk_images(op, shape, d_workspace, workspace_bytes, t.dw != nullptr);
  }
  // With dw, db rides in its slots (filter_and_bias); alone, it is a
  // reduction of its own.
  if (t.dw)
    filter_and_bias(shape, t.x, t.dy, t.dw, acc.dw, t.db, acc.db, d_workspace, workspace_bytes,
                    handle, stream, block);
  if (t.dx)
    conv2d_backward_data_v2_im2col(shape, t.w, t.dy, t.dx, acc.dx, d_workspace, workspace_bytes,
                                   handle, stream, block);
  if (t.db && !t.dw) conv2d_backward_bias_v2_reduce(shape, t.dy, t.db, acc.db, stream, block);
}

// ===========================================================================
// Costs.

namespace {
double macs(const Conv2dShape& s) {
  return double(s.N) * s.K * s.P() * s.Q() * double(s.C) * s.R * s.S;
}
}  // namespace

Cost conv2d_forward_cost(const Conv2dShape& s, bool bias, int elem) {
  const double y = double(s.y_size());
  return Cost{2 * macs(s) + (bias ? y : 0),
              elem * (double(s.x_size()) + double(s.w_size()) + y + (bias ? s.K : 0))};
}

Cost conv2d_backward_data_cost(const Conv2dShape& s, bool accumulate, int elem) {
  const double x = double(s.x_size());
  return Cost{2 * macs(s) + (accumulate ? x : 0),
              elem * (double(s.y_size()) + double(s.w_size()) + x * (accumulate ? 2 : 1))};
}

Cost conv2d_backward_filter_cost(const Conv2dShape& s, bool accumulate, int elem) {
  const double w = double(s.w_size());
  return Cost{2 * macs(s) + (accumulate ? w : 0),
              elem * (double(s.x_size()) + double(s.y_size()) + w * (accumulate ? 2 : 1))};
}

Cost conv2d_backward_bias_cost(const Conv2dShape& s, bool accumulate, int elem) {
  const double y = double(s.y_size());
  return Cost{y + (accumulate ? s.K : 0), elem * (y + double(s.K) * (accumulate ? 2 : 1))};
}

Cost conv2d_im2col_cost(const Conv2dShape& s, int elem) {
  // The forward's column matrix (the filter gradient's adds a ones row).
  const double col = s.pointwise() ? 0.0 : double(s.col_rows()) * double(s.col_cols());
  return Cost{0, 2.0 * elem * double(s.N) * col};
}

// ===========================================================================
// Explicit instantiations: float and double.

#define TIMBRE_CONV2D_INSTANTIATE(T)                                                            \
  template void conv2d_forward_v1_direct<T>(const Conv2dShape&, const T*, const T*, const T*,  \
                                            T*, cudaStream_t, int);                             \
  template void conv2d_backward_data_v1_direct<T>(const Conv2dShape&, const T*, const T*, T*,  \
                                                  bool, cudaStream_t, int);                     \
  template void conv2d_backward_filter_v1_direct<T>(const Conv2dShape&, const T*, const T*,    \
                                                    T*, bool, cudaStream_t, int);               \
  template void conv2d_backward_bias_v1_direct<T>(const Conv2dShape&, const T*, T*, bool,      \
                                                  cudaStream_t, int);                           \
  template void conv2d_forward_v2_im2col<T>(const Conv2dShape&, const T*, const T*, const T*,  \
                                            T*, T*, size_t, cublasHandle_t, cudaStream_t, int); \
  template void conv2d_backward_data_v2_im2col<T>(const Conv2dShape&, const T*, const T*, T*,  \
                                                  bool, T*, size_t, cublasHandle_t,             \
                                                  cudaStream_t, int);                           \
  template void conv2d_backward_filter_v2_im2col<T>(const Conv2dShape&, const T*, const T*,    \
                                                    T*, bool, T*, size_t, cublasHandle_t,       \
                                                    cudaStream_t, int);                         \
  template void conv2d_backward_bias_v2_reduce<T>(const Conv2dShape&, const T*, T*, bool,      \
                                                  cudaStream_t, int);                           \
  template void conv2d_backward_v2_im2col<T>(const Conv2dShape&, const Conv2dGradTensors<T>&,  \
                                             Conv2dAccumulate, T*, size_t, cublasHandle_t,      \
                                             cudaStream_t, int);                                \
  template void conv2d_forward_cpu<T>(const Conv2dShape&, const T*, const T*, const T*, T*);   \
  template void conv2d_backward_data_cpu<T>(const Conv2dShape&, const T*, const T*, T*, bool); \
  template void conv2d_backward_filter_cpu<T>(const Conv2dShape&, const T*, const T*, T*,      \
                                              bool);                                            \
  template void conv2d_backward_bias_cpu<T>(const Conv2dShape&, const T*, T*, bool);

TIMBRE_CONV2D_INSTANTIATE(float)
TIMBRE_CONV2D_INSTANTIATE(double)
#undef TIMBRE_CONV2D_INSTANTIATE

}  // namespace timbre::kernels
