#include "kernels/batchnorm.cuh"

#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"
#include "kernels/pooling.cuh"
#include "kernels/reference.h"

namespace timbre::kernels {

// ===========================================================================
// CPU references: plain loops, double accumulation, two-pass statistics.

namespace {

// f(offset) for every value of channel ch of an NCHW tensor, in (n, h, w) order.
template <class F>
void for_channel_cpu(int n, int c, long long hw, int ch, F&& f) {
  for (long long b = 0; b < n; ++b)
    for (long long i = 0; i < hw; ++i) f((b * c + ch) * hw + i);
}

// The epilogue of the normalised value v at offset o, in double.
template <class T>
double epilogue_cpu(double v, const BatchNormEpilogue<T>& e, long long o) {
  if (e.residual) v += double(e.residual[o]);
  return e.relu && v < 0 ? 0.0 : v;
}

// dy at offset o as the normalisation sees it (ReLU's mask applied), and
// the residual's gradient written.
template <class T>
double epilogue_grad_cpu(const T* dy, const BatchNormEpilogueGrad<T>& e, bool acc_residual,
                         long long o) {
  const double g = e.relu_out && !(double(e.relu_out[o]) > 0) ? 0.0 : double(dy[o]);
  if (e.dresidual) store_cpu(e.dresidual + o, g, acc_residual);
  return g;
}

PoolWindow window_of(BatchNormPool p) { return {p.h, p.w, p.h, p.w}; }

// A fused pooling in the forward references: the full-size output goes to
// `full` (returned as where to write), then pool_output_cpu pools it into y
// with max pooling's own reference.
template <class T>
T* output_cpu(T* y, const BatchNormEpilogue<T>& e, BatchNormShape s, std::vector<T>& full) {
  if (!e.pool.on()) return y;
  full.resize(size_t(s.n) * s.c * s.h * s.w);
  return full.data();
}
template <class T>
void pool_output_cpu(const std::vector<T>& full, T* y, const BatchNormEpilogue<T>& e,
                     BatchNormShape s) {
  if (e.pool.on())
    max_pool2d_forward_cpu(full.data(), y, e.argmax, s.n, s.c, s.h, s.w, window_of(e.pool));
}

// A fused pooling in the backward references: the pooled dy, masked by the
// pooled ReLU output, scattered to full size by max pooling's own backward
// reference. The caller then runs the unpooled reference on it, with no
// ReLU (already applied).
template <class T>
std::vector<T> unpool_grad_cpu(const T* dy, const BatchNormEpilogueGrad<T>& e, BatchNormShape s) {
  const PoolWindow p = window_of(e.pool);
  const size_t pooled = size_t(s.n) * s.c * pool_out_size(s.h, p.kh, p.sh) *
                        pool_out_size(s.w, p.kw, p.sw);
  std::vector<T> masked(pooled), full(size_t(s.n) * s.c * s.h * s.w);
  for (size_t i = 0; i < pooled; ++i)
    masked[i] = e.relu_out && !(e.relu_out[i] > T(0)) ? T(0) : dy[i];
  max_pool2d_backward_cpu<T>({masked.data(), e.argmax, full.data()}, s.n, s.c, s.h, s.w, p,
                             false);
  return full;
}
template <class Backward>
Backward without_pool(Backward t, const void* full_dy) {
  t.dy = static_cast<decltype(t.dy)>(full_dy);
  t.epilogue.relu_out = nullptr;
  t.epilogue.pool = {};
  t.epilogue.argmax = nullptr;
  return t;
}

}  // namespace

template <class T>
void batchnorm_forward_train_cpu(const BatchNormTrainForward<T>& t, BatchNormShape shape,
                                 double eps, BatchNormRunning running) {
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  const long long hw = (long long)h * w;
  const double m = double(n * hw);
  std::vector<T> full;
  T* y = output_cpu(t.y, t.epilogue, shape, full);
  for (int ch = 0; ch < c; ++ch) {
    double sum = 0;
    for_channel_cpu(n, c, hw, ch, [&](long long o) { sum += t.x[o]; });
    const double mean = sum / m;
    double squares = 0;
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      const double d = double(t.x[o]) - mean;
      squares += d * d;
    });
    const double var = squares / m, inv_std = 1.0 / std::sqrt(var + eps);
    t.save_mean[ch] = T(mean);
    t.save_inv_std[ch] = T(inv_std);
    if (t.running_mean) {
      const double v = running.unbiased_var ? var * m / (m - 1) : var;
      t.running_mean[ch] = T(running.keep * t.running_mean[ch] + (1 - running.keep) * mean);
      t.running_var[ch] = T(running.keep * t.running_var[ch] + (1 - running.keep) * v);
    }
    const double g = t.gamma[ch], b = t.beta[ch];
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      y[o] = T(epilogue_cpu(g * (double(t.x[o]) - mean) * inv_std + b, t.epilogue, o));
    });
  }
  pool_output_cpu(full, t.y, t.epilogue, shape);
}

template <class T>
void batchnorm_forward_eval_cpu(const BatchNormEvalForward<T>& t, BatchNormShape shape,
                                double eps) {
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  const long long hw = (long long)h * w;
  std::vector<T> full;
  T* y = output_cpu(t.y, t.epilogue, shape, full);
  for (int ch = 0; ch < c; ++ch) {
    const double mean = t.running_mean[ch], inv_std = 1.0 / std::sqrt(t.running_var[ch] + eps);
    const double g = t.gamma[ch], b = t.beta[ch];
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      y[o] = T(epilogue_cpu(g * (double(t.x[o]) - mean) * inv_std + b, t.epilogue, o));
    });
  }
  pool_output_cpu(full, t.y, t.epilogue, shape);
}

template <class T>
void batchnorm_backward_train_cpu(const BatchNormTrainBackward<T>& t, BatchNormShape shape,
                                  BatchNormAccumulate acc) {
  if (t.epilogue.pool.on()) {
    const std::vector<T> full = unpool_grad_cpu(t.dy, t.epilogue, shape);
    return batchnorm_backward_train_cpu(without_pool(t, full.data()), shape, acc);
  }
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  const long long hw = (long long)h * w;
  const double m = double(n * hw);
  for (int ch = 0; ch < c; ++ch) {
    const double mean = t.save_mean[ch], inv_std = t.save_inv_std[ch], g = t.gamma[ch];
    // dy through the epilogue first (it may alias dx, which is written below).
    std::vector<double> gy;
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      gy.push_back(epilogue_grad_cpu(t.dy, t.epilogue, acc.dresidual, o));
    });
    double sum_dy = 0, sum_dy_xhat = 0;
    size_t k = 0;
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      sum_dy += gy[k];
      sum_dy_xhat += gy[k++] * (double(t.x[o]) - mean) * inv_std;
    });
    if (t.dbeta) store_cpu(t.dbeta + ch, sum_dy, acc.dbeta);
    if (t.dgamma) store_cpu(t.dgamma + ch, sum_dy_xhat, acc.dgamma);
    k = 0;
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      const double xhat = (double(t.x[o]) - mean) * inv_std;
      store_cpu(t.dx + o, g * inv_std / m * (m * gy[k++] - sum_dy - xhat * sum_dy_xhat), acc.dx);
    });
  }
}

template <class T>
void batchnorm_backward_eval_cpu(const BatchNormEvalBackward<T>& t, BatchNormShape shape,
                                 double eps, BatchNormAccumulate acc) {
  if (t.epilogue.pool.on()) {
    const std::vector<T> full = unpool_grad_cpu(t.dy, t.epilogue, shape);
    return batchnorm_backward_eval_cpu(without_pool(t, full.data()), shape, eps, acc);
  }
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  const long long hw = (long long)h * w;
  for (int ch = 0; ch < c; ++ch) {
    const double mean = t.running_mean[ch], inv_std = 1.0 / std::sqrt(t.running_var[ch] + eps);
    const double g = t.gamma[ch];
    double sum_dy = 0, sum_dy_xhat = 0;
    for_channel_cpu(n, c, hw, ch, [&](long long o) {
      const double gy = epilogue_grad_cpu(t.dy, t.epilogue, acc.dresidual, o);
      if (t.dgamma || t.dbeta) {  // x and running_mean are read only for these
        sum_dy += gy;
        sum_dy_xhat += gy * (double(t.x[o]) - mean) * inv_std;
      }
      store_cpu(t.dx + o, g * inv_std * gy, acc.dx);
    });
    if (t.dbeta) store_cpu(t.dbeta + ch, sum_dy, acc.dbeta);
    if (t.dgamma) store_cpu(t.dgamma + ch, sum_dy_xhat, acc.dgamma);
  }
}

// ===========================================================================
// Device side.
//
// Every kernel runs on the grid (c, chunks): block (ch, k) owns the values
// m in [k*chunk, min(M, (k+1)*chunk)) of channel ch, where m = b*H*W + i
// numbers the channel's values (batch b, position i in the plane). Within
// the block, warp w owns the w-th of blockDim.x/32 contiguous segments of the
// chunk (each a multiple of 32 long), and lane l takes m = s0 + l, s0 + l +
// 32, ...: at every step a warp reads 32 consecutive values (one coalesced
// 128-byte transaction for float), and each warp walks its own contiguous
// stretch of the tensor. The usual block-wide interleave (a stride of
// blockDim.x values) coalesces just as well on a GPU; the two shapes cost
// the same there, and this one also keeps simcuda's CPU caches apart
// (power-of-two strides of 1 KiB fell into a few L1 sets: 3.5x slower).

namespace {

struct Geometry {
  long long width;  // W
  FastDiv by_width; // divides by W (a fused pooling's index math)
  long long hw;     // H*W
  long long plane;  // C*H*W: from (b, ch) to (b + 1, ch)
  long long m;      // N*H*W: values per channel
  long long chunk;  // values per chunk, a multiple of 32 (the last may be shorter, or empty)
  int chunks;
};

// NCHW offsets of channel ch's values m, m + step, m + 2 step, ... without a
// division per step: (b, i) advances by (step / hw, step % hw) with a carry.
struct ChannelWalk {
  long long b, i, db, di, hw, plane, base;
  __device__ ChannelWalk(const Geometry& g, int ch, long long m, long long step)
      : b(m / g.hw), i(m % g.hw), db(step / g.hw), di(step % g.hw), hw(g.hw), plane(g.plane),
        base(ch * g.hw) {}
  __device__ long long offset() const { return b * plane + base + i; }
  __device__ void advance() {
    b += db;
    i += di;
    if (i >= hw) {
      i -= hw;
      ++b;
    }
  }
};

// f(offset, walk) for each value this thread owns in its block's chunk, in
// increasing m (walk: its batch b and position i in the plane).
template <class F>
__device__ __forceinline__ void for_my_values(const Geometry& g, F&& f) {
  const long long m0 = (long long)blockIdx.y * g.chunk;
  const long long m1 = m0 + g.chunk < g.m ? m0 + g.chunk : g.m;
  const long long warps = blockDim.x / 32;
  const long long segment = ceil_div(ceil_div(g.chunk, warps), 32) * 32;
  const long long s0 = m0 + (threadIdx.x / 32) * segment;
  const long long s1 = s0 + segment < m1 ? s0 + segment : m1;
  const long long first = s0 + threadIdx.x % 32;
  if (first >= s1) return;
  ChannelWalk walk(g, int(blockIdx.x), first, 32);
  for (long long m = first; m < s1; m += 32, walk.advance()) f(walk.offset(), walk);
}

// The block's sums of a and b, returned in thread 0 (other threads: their
// own values, unchanged). Every thread stores its pair, one __syncthreads;
// lane l of warp 0 adds entries l, l + 32, l + 64, ... (it alone reads those,
// so it may then overwrite entry l with its sum), one __syncwarp, and thread
// 0 adds the 32 lane sums in lane order. The order of every addition is
// fixed by blockDim.x alone. One barrier and one warp sync, where a
// shared-memory tree would take log2(blockDim.x) barriers; the fold reads
// shared memory without bank conflicts (lane l, entries l + 32j).
// blockDim.x: a multiple of 32.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[1024], sb[1024];
  const int t = threadIdx.x;
  sa[t] = a;
  sb[t] = b;
  __syncthreads();
  if (t < 32) {
    double pa = 0, pb = 0;
    for (int j = t; j < int(blockDim.x); j += 32) {
      pa += sa[j];
      pb += sb[j];
    }
    sa[t] = pa;
    sb[t] = pb;
    __syncwarp();
    if (t == 0) {
      a = 0;
      b = 0;
      for (int l = 0; l < 32; ++l) {
        a += sa[l];
        b += sb[l];
      }
    }
  }
}

// Chunk partials: partial[2*(ch*chunks + k) + {0, 1}].
__device__ __forceinline__ double* partial_of(double* partial, const Geometry& g, int ch, int k) {
  return partial + 2 * ((long long)ch * g.chunks + k);
}

// The two per-channel sums each reduction needs, as functors: per_channel(g,
// ch) gives a constant of the channel (read once per thread), add(offset,
// k, a, b) accumulates one value into a and b.
//
// Statistics: shifted sums a = sum (x - K), b = sum (x - K)^2, K = the
// channel's first value x[0, ch, 0, 0], or common[ch] when set (the same K
// on every rank of a synchronised batch norm). Every chunk uses the same K,
// so the partials simply add.
template <class T>
struct StatsSums {
  const T* x;
  const T* common = nullptr;
  __device__ double per_channel(const Geometry& g, int ch) const {
    return common ? double(common[ch]) : double(x[ch * g.hw]);
  }
  __device__ void add(long long o, const ChannelWalk&, int, const Geometry&, double shift,
                      double& a, double& b) const {
    const double d = double(x[o]) - shift;
    a += d;
    b += d * d;
  }
};

// dy at offset o through a fused ReLU: dy where the fused output y > 0, else
// 0 (relu_out null: no ReLU).
// Written as selects, not short-circuit branches: half the values of a
// normalised activation are negative, so a branch on each would be
// unpredictable (on a CPU; a GPU predicates either form).
template <class T>
__device__ __forceinline__ T masked_dy(const T* dy, const T* relu_out, long long o) {
  const T y = relu_out ? relu_out[o] : T(1);
  const T g = dy[o];
  return y > T(0) ? g : T(0);
}

// The gradient the normalisation sees at offset o of channel ch (walk: its
// batch b and plane position i; g: the full planes): dy masked by a fused
// ReLU's output. With a fused pooling (argmax set), dy and relu_out are the
// pooled planes: o's window's (masked) dy if the window chose o, else 0 (a
// value outside every window too), which is what max pooling's backward
// would have written at o. Three divisions find the window, each a
// multiply-high (FastDiv: the divisors are fixed at launch).
template <class T>
struct GradIn {
  const T* dy;
  const T* relu_out;  // null: no ReLU
  const int* argmax;  // null: no pooling
  FastDiv by_pool_h, by_pool_w;
  unsigned pooled_h, pooled_w;
  int channels;
  __device__ __forceinline__ T at(long long o, const ChannelWalk& w, int ch,
                                  const Geometry& g) const {
    if (!argmax) return masked_dy(dy, relu_out, o);
    const unsigned i = unsigned(w.i);  // < H*W < 2^31
    const unsigned row = g.by_width.div(i), col = i - row * unsigned(g.width);
    const unsigned wr = by_pool_h.div(row), wc = by_pool_w.div(col);
    if (wr >= pooled_h || wc >= pooled_w) return T(0);
    const long long po = ((w.b * channels + ch) * pooled_h + wr) * pooled_w + wc;
    return argmax[po] == w.i ? masked_dy(dy, relu_out, po) : T(0);
  }
};

// Backward: a = sum dy, b = sum dy (x - mean), mean per channel; dy as the
// normalisation sees it (GradIn).
template <class T>
struct GradSums {
  const T* x;
  GradIn<T> in;
  const T* mean;
  __device__ double per_channel(const Geometry&, int ch) const { return mean[ch]; }
  __device__ void add(long long o, const ChannelWalk& w, int ch, const Geometry& g, double mu,
                      double& a, double& b) const {
    const double gv = in.at(o, w, ch, g);
    a += gv;
    b += gv * (double(x[o]) - mu);
  }
};

// Block path: block (ch, k) sums chunk k of channel ch (each thread its
// values in order, then block_sum2) into partial_of(ch, k).
// When `constants` is not null, block (ch, 0) also stores the channel's
// constant there (the statistics' shift K, which an in-place
// normalisation would otherwise overwrite before the next pass reads it).
template <class Sums>
__global__ void sums_by_block_kernel(Sums sums, Geometry g, double* partial, double* constants) {
  const int ch = blockIdx.x;
  const double k = sums.per_channel(g, ch);
  if (constants && blockIdx.y == 0 && threadIdx.x == 0) constants[ch] = k;
  double a = 0, b = 0;
  for_my_values(g, [&](long long o, const ChannelWalk& w) { sums.add(o, w, ch, g, k, a, b); });
  block_sum2(a, b);
  if (threadIdx.x == 0) {
    double* p = partial_of(partial, g, ch, blockIdx.y);
    p[0] = a;
    p[1] = b;
  }
}

// The two sums of channel ch: its `chunks` partial pairs from the reduce
// pass, added in chunk order.
__device__ __forceinline__ void channel_sums(const double* partial, int chunks, int ch,
                                             double& a, double& b) {
  const double* p = partial + 2 * (long long)ch * chunks;
  a = 0;
  b = 0;
  for (int k = 0; k < chunks; ++k) {
    a += p[2 * k];
    b += p[2 * k + 1];
  }
}

// Statistics, from the reduce pass's sums of channel ch and its shift K
// over m values (this batch's, or every rank's): mean = K + s1/m, var =
// (s2 - s1^2/m)/m (biased; clamped at 0 against rounding, a NaN stays NaN).
__device__ __forceinline__ void channel_stats(const double* partial, const double* shift,
                                              int chunks, double m, int ch, double& mean,
                                              double& var) {
  double s1, s2;
  channel_sums(partial, chunks, ch, s1, s2);
  const double d = s1 / m;
  mean = shift[ch] + d;
  var = (s2 - s1 * d) / m;
  var = var < 0 ? 0 : var;
}

// inv_std of channel ch: saved by the training forward (FromVar = false), or
// 1/sqrt(var + eps) from the running variance (FromVar = true), in double.
template <bool FromVar, class T>
__device__ __forceinline__ double inv_std_of(const T* second, int ch, double eps) {
  return FromVar ? 1.0 / sqrt(double(second[ch]) + eps) : double(second[ch]);
}

// y = (x - mean) * scale + beta with scale = gamma * inv_std, per channel
// constants computed once per thread. One pass, no barrier. y may alias x:
// each value is read, then written, by one thread. Evaluation: mean and
// the running variance (FromVar = true).
// The forward epilogue (BatchNormEpilogue) of the normalised value v at o.
// (Selects, as masked_dy.)
template <class T>
__device__ __forceinline__ T epilogue_of(T v, const BatchNormEpilogue<T>& e, long long o) {
  if (e.residual) v += e.residual[o];
  const T clamped = v < T(0) ? T(0) : v;  // a NaN is not < 0: it passes through
  return e.relu ? clamped : v;
}

// The pass's outputs for channel ch, from v(o) = the epilogue of the
// normalised x[o]. Without pooling y[o] = v(o), value by value over the
// planes g. With pooling, window by window over the pooled planes pg: y and
// argmax of each window as max pooling would choose them (window_max).
template <class T, class V>
__device__ __forceinline__ void write_outputs(const Geometry& g, const Geometry& pg, int ch,
                                              const BatchNormEpilogue<T>& e, T* y, const V& v) {
  if (!e.argmax) {
    for_my_values(g, [&](long long o, const ChannelWalk&) { y[o] = v(o); });
    return;
  }
  for_my_values(pg, [&](long long po, const ChannelWalk& w) {
    const unsigned i = unsigned(w.i);
    const long long row = pg.by_width.div(i), col = i - row * pg.width;
    const long long plane = w.b * g.plane + (long long)ch * g.hw;
    T best;
    int best_at;
    window_max(int(row * e.pool.h * g.width + col * e.pool.w), int(g.width), e.pool.h, e.pool.w,
               [&](int at) { return v(plane + at); }, best, best_at);
    y[po] = best;
    e.argmax[po] = best_at;
  });
}

template <class T, bool FromVar>
__global__ void normalize_kernel(const T* x, const T* gamma, const T* beta, const T* mean,
                                 const T* second, double eps, T* y, Geometry g, Geometry pg,
                                 BatchNormEpilogue<T> e) {
  const int ch = blockIdx.x;
  const T mu = mean[ch], b = beta[ch];
  const T scale = T(double(gamma[ch]) * inv_std_of<FromVar>(second, ch, eps));
  write_outputs(g, pg, ch, e, y,
                [&](long long o) { return epilogue_of((x[o] - mu) * scale + b, e, o); });
}

// Training forward, pass 2: the statistics and the normalisation in one
// launch. Every thread of every block of channel ch adds the channel's
// reduce partials itself (at most kBatchNormMaxChunks pairs, the same
// addresses in every thread: broadcast loads, cached), so no block waits
// for another and there is no barrier; all of them get the same bits.
// Block (ch, 0)'s thread 0 also stores save_mean, save_inv_std and the
// running statistics. Then the normalisation as normalize_kernel, from the
// saved (rounded to T) values.
template <class T>
struct NormalizeTrain {
  const T* x;
  const T* gamma;
  const T* beta;
  const double* partial;  // the reduce pass's partials
  const double* shift;    // the reduce pass's shifts K, one per channel
  int chunks;             // partials per channel
  double count;           // values the statistics are over (M; times the ranks when synchronised)
  double eps;
  T* y;
  T* save_mean;
  T* save_inv_std;
  T* running_mean;  // null: not tracked
  T* running_var;
  BatchNormRunning running;
  BatchNormEpilogue<T> epilogue;
};

template <class T>
__global__ void normalize_train_kernel(NormalizeTrain<T> p, Geometry g, Geometry pg) {
  const int ch = blockIdx.x;
  double mean, var;
  channel_stats(p.partial, p.shift, p.chunks, p.count, ch, mean, var);
  const T saved_mean = T(mean), saved_inv_std = T(1.0 / sqrt(var + p.eps));
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    p.save_mean[ch] = saved_mean;
    p.save_inv_std[ch] = saved_inv_std;
    if (p.running_mean) {
      const double m = p.count, k = p.running.keep;
      const double v = p.running.unbiased_var ? var * m / (m - 1) : var;
      p.running_mean[ch] = T(k * double(p.running_mean[ch]) + (1 - k) * mean);
      p.running_var[ch] = T(k * double(p.running_var[ch]) + (1 - k) * v);
    }
  }
  const T b = p.beta[ch], scale = T(double(p.gamma[ch]) * double(saved_inv_std));
  const T* x = p.x;
  const BatchNormEpilogue<T> e = p.epilogue;
  write_outputs(g, pg, ch, e, p.y,
                [&](long long o) { return epilogue_of((x[o] - saved_mean) * scale + b, e, o); });
}

template <class T>
__device__ __forceinline__ void store_param_grad(T* dst, double v, bool accumulate) {
  *dst = accumulate ? T(double(*dst) + v) : T(v);
}

// Evaluation backward with parameter gradients, pass 2: one thread per
// channel: dbeta = sum dy, dgamma = inv_std * sum dy (x - mean), with the
// running statistics' inv_std.
template <class T>
__global__ void grad_finalize_eval_kernel(const double* partial, const T* running_var,
                                          double eps, int chunks, int channels, T* dgamma,
                                          T* dbeta, BatchNormAccumulate acc) {
  const int stride = blockDim.x * gridDim.x;
  for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < channels; ch += stride) {
    double sum_dy, sum_dy_xc;
    channel_sums(partial, chunks, ch, sum_dy, sum_dy_xc);
    const double inv_std = inv_std_of<true>(running_var, ch, eps);
    if (dbeta) store_param_grad(dbeta + ch, sum_dy, acc.dbeta);
    if (dgamma) store_param_grad(dgamma + ch, sum_dy_xc * inv_std, acc.dgamma);
  }
}

// Training backward, pass 2: the parameter gradients and dx in one launch.
// Like normalize_train_kernel, every thread adds its channel's partials
// itself (no barrier); block (ch, 0)'s thread 0 stores dbeta = sum dy and
// dgamma = inv_std * sum dy (x - mean). Then
//   dx = a * ((dy - b) - (x - mean) * k),
//   a = gamma inv_std, b = sum dy / M, k = inv_std^2 sum dy (x - mean) / M
// (= gamma inv_std / M (M dy - dbeta - xhat dgamma) rearranged). dx may
// alias dy when assigning.
template <class T>
struct DxTrain {
  const T* x;
  GradIn<T> in;
  const T* gamma;
  const T* save_mean;
  const T* save_inv_std;
  const double* partial;  // the reduce pass's partials
  int chunks;             // partials per channel
  double count;           // M (times the ranks when synchronised)
  double param_scale;     // dgamma, dbeta: 1, or 1/ranks when synchronised (see BatchNormSync)
  T* dx;
  T* dgamma;  // null: not computed
  T* dbeta;   // null: not computed
  BatchNormAccumulate acc;
  T* dresidual;  // null: not wanted
};

template <class T>
__global__ void dx_train_kernel(DxTrain<T> p, Geometry g) {
  const int ch = blockIdx.x;
  double sum_dy, sum_dy_xc;
  channel_sums(p.partial, p.chunks, ch, sum_dy, sum_dy_xc);
  const double inv_std = double(p.save_inv_std[ch]), m = p.count;
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    if (p.dbeta) store_param_grad(p.dbeta + ch, sum_dy * p.param_scale, p.acc.dbeta);
    if (p.dgamma)
      store_param_grad(p.dgamma + ch, sum_dy_xc * inv_std * p.param_scale, p.acc.dgamma);
  }
  const T a = T(double(p.gamma[ch]) * inv_std), b = T(sum_dy / m),
          k = T(sum_dy_xc * inv_std * inv_std / m), mu = p.save_mean[ch];
  const T* x = p.x;
  T* dx = p.dx;
  const bool accumulate = p.acc.dx, acc_res = p.acc.dresidual;
  T* dres = p.dresidual;
  for_my_values(g, [&](long long o, const ChannelWalk& w) {
    const T gy = p.in.at(o, w, ch, g);  // read before dx (which may alias dy) is written
    if (dres) dres[o] = acc_res ? dres[o] + gy : gy;
    const T v = a * ((gy - b) - (x[o] - mu) * k);
    dx[o] = accumulate ? dx[o] + v : v;
  });
}

// Evaluation backward: dx = a * dy, a = gamma / sqrt(running_var + eps).
// Does not read x. No barrier.
template <class T>
__global__ void dx_eval_kernel(GradIn<T> in, const T* gamma, const T* running_var, double eps,
                               Geometry g, T* dx, BatchNormAccumulate acc, T* dres) {
  const int ch = blockIdx.x;
  const T a = T(double(gamma[ch]) * inv_std_of<true>(running_var, ch, eps));
  for_my_values(g, [&](long long o, const ChannelWalk& w) {
    const T gy = in.at(o, w, ch, g);
    if (dres) dres[o] = acc.dresidual ? dres[o] + gy : gy;
    const T v = a * gy;
    dx[o] = acc.dx ? dx[o] + v : v;
  });
}

// ---------------------------------------------------------------------------
// Host side.

// A grid for n, c, h, w, at most `block` threads and about `per_thread`
// values per thread: enough threads per channel for that (a multiple of 32,
// at least 32, at most block), and enough chunks for the rest (at most
// max_chunks; beyond that threads take more values).
struct Plan {
  Geometry g;
  dim3 grid;
  int threads;
};

Plan make_plan(int n, int c, int h, int w, int block, int per_thread, int max_chunks) {
  Plan p{};
  p.g.width = w;
  p.g.by_width = FastDiv(unsigned(w));
  p.g.hw = (long long)h * w;
  p.g.plane = c * p.g.hw;
  p.g.m = n * p.g.hw;
  const long long want = ceil_div(ceil_div(p.g.m, per_thread), 32) * 32;
  p.threads = int(want < 32 ? 32 : want > block ? block : want);
  const long long chunks = ceil_div(p.g.m, (long long)p.threads * per_thread);
  p.g.chunks = int(chunks < 1 ? 1 : chunks > max_chunks ? max_chunks : chunks);
  p.g.chunk = ceil_div(ceil_div(p.g.m, p.g.chunks), 32) * 32;
  p.grid = dim3(unsigned(c), unsigned(p.g.chunks));
  return p;
}

// The reductions: about kBatchNormElemsPerThread values per thread, so that
// the loads, not the block fold, dominate each block; at most
// kBatchNormMaxChunks partials per channel (the workspace). At the models'
// shapes and batch 32 that is 128-256 blocks of up to 256 threads.
Plan reduce_plan(int n, int c, int h, int w, int block) {
  return make_plan(n, c, h, w, block, kBatchNormElemsPerThread, kBatchNormMaxChunks);
}
// The barrier-free passes: fewer values per thread and more blocks, to fill
// the device; gridDim.y <= 65535.
Plan pass_plan(int n, int c, int h, int w, int block) {
  return make_plan(n, c, h, w, block, kBatchNormPassElemsPerThread, 65535);
}

// The forward's output pass: pass_plan's, or with a fused pooling the same
// over the pooled planes, with about as many values per thread (each
// window is pool.h * pool.w of them).
Plan output_plan(const BatchNormShape& s, BatchNormPool pool, int block) {
  if (!pool.on()) return pass_plan(s.n, s.c, s.h, s.w, block);
  const int per_window = pool.h * pool.w;
  return make_plan(s.n, s.c, s.h / pool.h, s.w / pool.w, block,
                   std::max(1, kBatchNormPassElemsPerThread / per_window), 65535);
}

// The backward passes' view of dy (see GradIn).
template <class T>
GradIn<T> grad_in(const T* dy, const BatchNormEpilogueGrad<T>& e, const BatchNormShape& s) {
  const bool pooled = e.pool.on();
  return {dy,
          e.relu_out,
          pooled ? e.argmax : nullptr,
          FastDiv(unsigned(pooled ? e.pool.h : 1)),
          FastDiv(unsigned(pooled ? e.pool.w : 1)),
          unsigned(pooled ? s.h / e.pool.h : 0),
          unsigned(pooled ? s.w / e.pool.w : 0),
          s.c};
}

// One thread per channel for the finalize kernels.
constexpr int kFinalizeThreads = 128;
unsigned finalize_blocks(int c) { return unsigned(ceil_div(c, kFinalizeThreads)); }

// Pass 1 of a reduction: a block per (channel, chunk), for channels of any
// size (a small channel is one chunk of a 32-thread block).
template <class Sums>
void launch_sums(const Sums& sums, const Plan& r, double* partial, cudaStream_t s,
                 double* constants = nullptr) {
  LAUNCH(sums_by_block_kernel<Sums>, r.grid, r.threads, 0, s, sums, r.g, partial, constants);
}

// Where the statistics' shifts live in the workspace: after the partials.
double* shifts_of(double* d_workspace, int c) { return d_workspace + 2LL * c * kBatchNormMaxChunks; }

void check_sync(const char* op, const BatchNormSync& sync) {
  if (sync.ranks < 1 || (sync.ranks > 1 && !sync.comm))
    throw std::invalid_argument(std::string(op) + ": sync.ranks " + std::to_string(sync.ranks) +
                                (sync.ranks < 1 ? " must be at least 1"
                                                : " needs sync.comm, an NCCL communicator"));
  if (sync.stream && (!sync.fork || !sync.join))
    throw std::invalid_argument(std::string(op) + ": sync.stream needs the events sync.fork and "
                                                  "sync.join");
}

// The chunk partials (2 c chunks doubles, the same layout on every rank:
// the same shapes give the same plan) summed over the ranks, in place,
// between the reduction and the pass that reads them: on s, or on
// sync.stream between s's fork and join.
void all_reduce_partials(const BatchNormSync& sync, double* partial, int c, int chunks,
                         cudaStream_t s) {
  const cudaStream_t on = sync.stream ? sync.stream : s;
  if (on != s) {
    CUDA_CHECK(cudaEventRecord(sync.fork, s));
    CUDA_CHECK(cudaStreamWaitEvent(on, sync.fork, 0));
  }
  const ncclResult_t r = ncclAllReduce(partial, partial, size_t(2) * c * chunks, ncclFloat64,
                                       ncclSum, sync.comm, on);
  if (r != ncclSuccess)
    throw std::runtime_error(std::string("batch norm's all-reduce over the ranks failed: ") +
                             ncclGetErrorString(r));
  if (on != s) {
    CUDA_CHECK(cudaEventRecord(sync.join, on));
    CUDA_CHECK(cudaStreamWaitEvent(s, sync.join, 0));
  }
}

std::string str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_shape(const char* op, int n, int c, int h, int w, int block) {
  const auto fail = [&](const char* what, int v, const char* rule) {
    throw std::invalid_argument(std::string(op) + ": " + what + " must be " + rule + ", not " +
                                std::to_string(v) + " (shape n=" + std::to_string(n) +
                                ", c=" + std::to_string(c) + ", h=" + std::to_string(h) +
                                ", w=" + std::to_string(w) + ")");
  };
  if (n < 0) fail("n", n, ">= 0");
  if (c < 1) fail("c", c, ">= 1");
  if (h < 1) fail("h", h, ">= 1");
  if (w < 1) fail("w", w, ">= 1");
  check_block(op, block);
}

void check_eps(const char* op, double eps) {
  if (!(eps >= 0) || !std::isfinite(eps))
    throw std::invalid_argument(std::string(op) + ": eps must be finite and >= 0, not " +
                                str(eps));
}

// A fused pooling: none ({0, 0} and no argmax), or a window that fits the
// planes with its argmax; the pooled output (y, or dy) must not alias the
// full-size tensor (x, or dx) that other threads still read or write.
void check_pool(const char* op, BatchNormPool pool, const BatchNormShape& s, const void* argmax,
                const void* pooled, const void* full, const char* pooled_name,
                const char* full_name) {
  if (pool.h == 0 && pool.w == 0 && !argmax) return;
  const std::string window = std::to_string(pool.h) + "x" + std::to_string(pool.w);
  if (pool.h < 1 || pool.w < 1 || pool.h > s.h || pool.w > s.w)
    throw std::invalid_argument(std::string(op) + ": the fused pool window " + window +
                                " must fit the " + std::to_string(s.h) + "x" +
                                std::to_string(s.w) + " planes (1 <= pool.h <= h, 1 <= pool.w <= w)");
  if (!argmax)
    throw std::invalid_argument(std::string(op) + ": the fused pool " + window +
                                " needs its argmax (null)");
  if (pooled == full)
    throw std::invalid_argument(std::string(op) + ": with a fused pool, " + pooled_name +
                                " must not alias " + full_name);
}

// Training needs values to take statistics of: M = n*h*w >= 1, and >= 2 for
// the unbiased variance M/(M - 1).
void check_train_count(const char* op, int n, int h, int w, bool unbiased) {
  const long long m = (long long)n * h * w;
  if (m < 1)
    throw std::invalid_argument(std::string(op) +
                                ": training needs at least one value per channel, but "
                                "n*h*w = 0 (n=" + std::to_string(n) + ")");
  if (unbiased && m < 2)
    throw std::invalid_argument(std::string(op) +
                                ": the unbiased running variance needs n*h*w >= 2 values "
                                "per channel, not 1");
}

}  // namespace

template <class T>
void batchnorm_forward_train(const BatchNormTrainForward<T>& t, BatchNormShape shape, double eps,
                             BatchNormRunning running, double* d_workspace, cudaStream_t s,
                             int block) {
  const char* op = "batchnorm_forward_train";
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  check_shape(op, n, c, h, w, block);
  check_eps(op, eps);
  if (!(running.keep >= 0 && running.keep <= 1))
    throw std::invalid_argument(std::string(op) + ": running.keep must be in [0, 1], not " +
                                str(running.keep));
  const bool tracking = t.running_mean || t.running_var;
  check_train_count(op, n, h, w, tracking && running.unbiased_var);
  check_pointer(op, t.x, "x");
  check_pointer(op, t.gamma, "gamma");
  check_pointer(op, t.beta, "beta");
  check_pointer(op, t.y, "y");
  check_pointer(op, t.save_mean, "save_mean");
  check_pointer(op, t.save_inv_std, "save_inv_std");
  check_pointer(op, d_workspace, "d_workspace");
  if (tracking && !(t.running_mean && t.running_var))
    throw std::invalid_argument(std::string(op) +
                                ": running_mean and running_var must be both null (no "
                                "running statistics) or both set");
  check_pool(op, t.epilogue.pool, shape, t.epilogue.argmax, t.y, t.x, "y", "x");
  const Plan r = reduce_plan(n, c, h, w, block), p = pass_plan(n, c, h, w, block),
             out = output_plan(shape, t.epilogue.pool, block);
  check_sync(op, t.sync);
  const bool synced = t.sync.ranks > 1;
  double* shift = shifts_of(d_workspace, c);
  // Synchronised: one K for every rank (the running mean, the same on every
  // rank), and the partials summed over the ranks before the pass reads them.
  if (synced && !t.running_mean)
    throw std::invalid_argument(std::string(op) + ": a synchronised batch norm (sync.ranks " +
                                std::to_string(t.sync.ranks) + ") needs running_mean: its "
                                "statistics' shift, the same on every rank");
  const T* common = synced ? t.running_mean : nullptr;
  launch_sums(StatsSums<T>{t.x, common}, r, d_workspace, s, shift);
  if (synced) all_reduce_partials(t.sync, d_workspace, c, r.g.chunks, s);
  const NormalizeTrain<T> pass{t.x,
                               t.gamma,
                               t.beta,
                               d_workspace,
                               shift,
                               r.g.chunks,
                               double(r.g.m) * t.sync.ranks,
                               eps,
                               t.y,
                               t.save_mean,
                               t.save_inv_std,
                               t.running_mean,
                               t.running_var,
                               running,
                               t.epilogue};
  LAUNCH(normalize_train_kernel<T>, out.grid, out.threads, 0, s, pass, p.g, out.g);
}

template <class T>
void batchnorm_forward_eval(const BatchNormEvalForward<T>& t, BatchNormShape shape, double eps,
                            cudaStream_t s, int block) {
  const char* op = "batchnorm_forward_eval";
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  check_shape(op, n, c, h, w, block);
  check_eps(op, eps);
  if (n == 0) return;
  check_pointer(op, t.x, "x");
  check_pointer(op, t.gamma, "gamma");
  check_pointer(op, t.beta, "beta");
  check_pointer(op, t.running_mean, "running_mean");
  check_pointer(op, t.running_var, "running_var");
  check_pointer(op, t.y, "y");
  check_pool(op, t.epilogue.pool, shape, t.epilogue.argmax, t.y, t.x, "y", "x");
  const Plan p = pass_plan(n, c, h, w, block), out = output_plan(shape, t.epilogue.pool, block);
  LAUNCH((normalize_kernel<T, true>), out.grid, out.threads, 0, s, t.x, t.gamma, t.beta,
         t.running_mean, t.running_var, eps, t.y, p.g, out.g, t.epilogue);
}

template <class T>
void batchnorm_backward_train(const BatchNormTrainBackward<T>& t, BatchNormShape shape,
                              BatchNormAccumulate acc, double* d_workspace, cudaStream_t s,
                              int block) {
  const char* op = "batchnorm_backward_train";
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  check_shape(op, n, c, h, w, block);
  check_train_count(op, n, h, w, false);
  check_pointer(op, t.x, "x");
  check_pointer(op, t.dy, "dy");
  check_pointer(op, t.gamma, "gamma");
  check_pointer(op, t.save_mean, "save_mean");
  check_pointer(op, t.save_inv_std, "save_inv_std");
  check_pointer(op, t.dx, "dx");
  check_pointer(op, d_workspace, "d_workspace");
  check_pool(op, t.epilogue.pool, shape, t.epilogue.argmax, t.dy, t.dx, "dy", "dx");
  const Plan r = reduce_plan(n, c, h, w, block), p = pass_plan(n, c, h, w, block);
  const GradIn<T> in = grad_in(t.dy, t.epilogue, shape);
  check_sync(op, t.sync);
  launch_sums(GradSums<T>{t.x, in, t.save_mean}, r, d_workspace, s);
  if (t.sync.ranks > 1) all_reduce_partials(t.sync, d_workspace, c, r.g.chunks, s);
  const DxTrain<T> pass{t.x,
                        in,
                        t.gamma,
                        t.save_mean,
                        t.save_inv_std,
                        d_workspace,
                        r.g.chunks,
                        double(r.g.m) * t.sync.ranks,
                        1.0 / t.sync.ranks,
                        t.dx,
                        t.dgamma,
                        t.dbeta,
                        acc,
                        t.epilogue.dresidual};
  LAUNCH(dx_train_kernel<T>, p.grid, p.threads, 0, s, pass, p.g);
}

template <class T>
void batchnorm_backward_eval(const BatchNormEvalBackward<T>& t, BatchNormShape shape, double eps,
                             BatchNormAccumulate acc, double* d_workspace, cudaStream_t s,
                             int block) {
  const char* op = "batchnorm_backward_eval";
  const int n = shape.n, c = shape.c, h = shape.h, w = shape.w;
  check_shape(op, n, c, h, w, block);
  check_eps(op, eps);
  const bool param_grads = t.dgamma || t.dbeta;
  if (n == 0 && !param_grads) return;
  check_pointer(op, t.dy, "dy");
  check_pointer(op, t.gamma, "gamma");
  check_pointer(op, t.running_var, "running_var");
  check_pointer(op, t.dx, "dx");
  check_pool(op, t.epilogue.pool, shape, t.epilogue.argmax, t.dy, t.dx, "dy", "dx");
  const GradIn<T> in = grad_in(t.dy, t.epilogue, shape);
  if (param_grads) {
    check_pointer(op, t.x, "x");
    check_pointer(op, t.running_mean, "running_mean");
    check_pointer(op, d_workspace, "d_workspace");
    const Plan r = reduce_plan(n, c, h, w, block);
    launch_sums(GradSums<T>{t.x, in, t.running_mean}, r, d_workspace, s);
    LAUNCH(grad_finalize_eval_kernel<T>, finalize_blocks(c), kFinalizeThreads, 0, s,
           d_workspace, t.running_var, eps, r.g.chunks, c, t.dgamma, t.dbeta, acc);
  }
  const Plan p = pass_plan(n, c, h, w, block);
  if (n > 0)
    LAUNCH(dx_eval_kernel<T>, p.grid, p.threads, 0, s, in, t.gamma, t.running_var, eps, p.g,
           t.dx, acc, t.epilogue.dresidual);
}

// ===========================================================================
// Explicit instantiations: float and double.

#define TIMBRE_BATCHNORM_INSTANTIATE(T)                                                         \
  template void batchnorm_forward_train<T>(const BatchNormTrainForward<T>&, BatchNormShape,      \
                                           double, BatchNormRunning, double*, cudaStream_t,      \
                                           int);                                                 \
  template void batchnorm_forward_eval<T>(const BatchNormEvalForward<T>&, BatchNormShape, double, \
                                          cudaStream_t, int);                                    \
  template void batchnorm_backward_train<T>(const BatchNormTrainBackward<T>&, BatchNormShape,    \
                                            BatchNormAccumulate, double*, cudaStream_t, int);    \
  template void batchnorm_backward_eval<T>(const BatchNormEvalBackward<T>&, BatchNormShape,      \
                                           double, BatchNormAccumulate, double*, cudaStream_t,   \
                                           int);                                                 \
  template void batchnorm_forward_train_cpu<T>(const BatchNormTrainForward<T>&, BatchNormShape,  \
                                               double, BatchNormRunning);                        \
  template void batchnorm_forward_eval_cpu<T>(const BatchNormEvalForward<T>&, BatchNormShape,    \
                                              double);                                           \
  template void batchnorm_backward_train_cpu<T>(const BatchNormTrainBackward<T>&,                \
                                                BatchNormShape, BatchNormAccumulate);            \
  template void batchnorm_backward_eval_cpu<T>(const BatchNormEvalBackward<T>&, BatchNormShape,  \
                                               double, BatchNormAccumulate);

TIMBRE_BATCHNORM_INSTANTIATE(float)
TIMBRE_BATCHNORM_INSTANTIATE(double)
#undef TIMBRE_BATCHNORM_INSTANTIATE

}  // namespace timbre::kernels
