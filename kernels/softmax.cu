#include "kernels/softmax.cuh"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common.cuh"
#include "kernels/launcher.h"
#include "kernels/profile.h"

namespace timbre::kernels {

// ===========================================================================
// CPU references: plain loops, double accumulation.

namespace {
template <class T>
double row_max_cpu(const T* x, int cols) {
  double m = x[0];
  for (int j = 1; j < cols; ++j) m = x[j] > m ? double(x[j]) : m;
  return m;
}
template <class T>
double row_sum_exp_cpu(const T* x, int cols, double m) {
  double s = 0;
  for (int j = 0; j < cols; ++j) s += std::exp(double(x[j]) - m);
  return s;
}
template <class T>
void store(T* dst, double v, bool accumulate) {
  *dst = accumulate ? T(double(*dst) + v) : T(v);
}
bool label_ok(int label, int cols) { return label >= 0 && label < cols; }
}  // namespace

template <class T>
void softmax_forward_cpu(const T* x, T* y, int rows, int cols) {
  for (long long i = 0; i < rows; ++i) {
    const T* xr = x + i * cols;
    const double m = row_max_cpu(xr, cols), s = row_sum_exp_cpu(xr, cols, m);
    for (int j = 0; j < cols; ++j) y[i * cols + j] = T(std::exp(double(xr[j]) - m) / s);
  }
}

template <class T>
void log_softmax_forward_cpu(const T* x, T* y, int rows, int cols) {
  for (long long i = 0; i < rows; ++i) {
    const T* xr = x + i * cols;
    const double m = row_max_cpu(xr, cols), log_s = std::log(row_sum_exp_cpu(xr, cols, m));
    for (int j = 0; j < cols; ++j) y[i * cols + j] = T((double(xr[j]) - m) - log_s);
  }
}

template <class T>
void softmax_backward_cpu(const T* y, const T* dy, T* dx, int rows, int cols, bool accumulate) {
  for (long long i = 0; i < rows; ++i) {
    double dot = 0;
    for (int j = 0; j < cols; ++j) dot += double(dy[i * cols + j]) * y[i * cols + j];
    for (int j = 0; j < cols; ++j) {
      const long long k = i * cols + j;
      store(dx + k, double(y[k]) * (double(dy[k]) - dot), accumulate);
    }
  }
}

template <class T>
void log_softmax_backward_cpu(const T* y, const T* dy, T* dx, int rows, int cols,
                              bool accumulate) {
  for (long long i = 0; i < rows; ++i) {
    double sum = 0;
    for (int j = 0; j < cols; ++j) sum += dy[i * cols + j];
    for (int j = 0; j < cols; ++j) {
      const long long k = i * cols + j;
      store(dx + k, double(dy[k]) - std::exp(double(y[k])) * sum, accumulate);
    }
  }
}

template <class T>
double cross_entropy_forward_cpu(const CrossEntropyForwardTensors<T>& t, int rows, int cols) {
  const T* logits = t.logits;
  const int* labels = t.labels;
  T *probs = t.probs, *row_loss = t.row_loss;
  int* bad_labels = t.bad_labels;
  double total = 0;
  int bad = 0;
  for (long long i = 0; i < rows; ++i) {
    const T* xr = logits + i * cols;
    const double m = row_max_cpu(xr, cols), s = row_sum_exp_cpu(xr, cols, m);
    if (probs)
      for (int j = 0; j < cols; ++j) probs[i * cols + j] = T(std::exp(double(xr[j]) - m) / s);
    double loss = NAN;
    if (label_ok(labels[i], cols))
      loss = std::log(s) - (double(xr[labels[i]]) - m);
    else
      ++bad;
    if (row_loss) row_loss[i] = T(loss);
    total += loss;
  }
  if (bad_labels) *bad_labels = bad;
  if (t.loss) *t.loss = T(total / rows);
  return total / rows;
}

template <class T>
void cross_entropy_backward_cpu(const T* probs, const int* labels, T dloss, T* dlogits, int rows,
                                int cols, bool accumulate) {
  const double scale = double(dloss) / rows;
  for (long long i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const long long k = i * cols + j;
      const double g = label_ok(labels[i], cols)
                           ? (double(probs[k]) - (j == labels[i] ? 1.0 : 0.0)) * scale
                           : NAN;
      store(dlogits + k, g, accumulate);
    }
}

// ===========================================================================
// Device side.
//
// Each row operation below is written once, as a functor that processes one
// row with a "team" of threads: the team member of rank r handles columns
// j = r, r + size, r + 2*size, ... and the team combines per-member partial
// results with team.max(v) / team.sum(v), which return the row's result to
// every member. Two kernels decide who the team is:
//   rows_by_warp_slices : a power-of-two slice of a warp (WarpSlice); a slice
//                         of width 1 is the thread strategy;
//   rows_by_blocks      : a whole block (BlockTeam).

namespace {

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return exp(x); }
__device__ __forceinline__ float log_t(float x) { return logf(x); }
__device__ __forceinline__ double log_t(double x) { return log(x); }
// fmax ignores a NaN operand; a NaN in a row still reaches the row's sum (and
// so every output) through exp(NaN - m).
__device__ __forceinline__ float max_t(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_t(double a, double b) { return fmax(a, b); }

struct MaxOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return max_t(a, b); }
};
struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// `size` lanes of one warp (a power of two <= 32; the slices tile the warp).
// A butterfly of __shfl_xor_sync of width `size`: after log2(size) steps
// every lane of the slice holds the combination of all of them, with the same
// bits (a + b == b + a in IEEE arithmetic, at every level). Every lane of the
// warp must call it the same number of times, so slices past the last row
// still join in (with no columns). size = 1: no shuffle at all.
struct WarpSlice {
  int rank, size;

  template <class T, class Op>
  __device__ T allreduce(T v, Op op) const {
    for (int offset = size / 2; offset > 0; offset >>= 1)
      v = op(v, __shfl_xor_sync(0xffffffffu, v, offset, size));
    return v;
  }
  template <class T>
  __device__ T max(T v) const { return allreduce(v, MaxOp{}); }
  template <class T>
  __device__ T sum(T v) const { return allreduce(v, SumOp{}); }
};

// The whole block (blockDim.x a multiple of 32). A reduction: a butterfly in
// each warp, lane 0 of warp w stores scratch[slot][w], one __syncthreads(),
// then every thread folds scratch[slot][0..warps) in index order (all get the
// same bits). Reductions alternate between two slots: the next reduction's
// stores cannot overwrite values a slow thread has yet to read, and a slot is
// reused only behind the barrier of the reduction in between.
template <class S>
struct BlockTeam {
  int rank, size;
  S (*scratch)[32];  // [2][32], shared memory
  int slot = 0;

  template <class Op>
  __device__ S allreduce(S v, Op op) {
    for (int offset = 16; offset > 0; offset >>= 1)
      v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    S* s = scratch[slot];
    slot ^= 1;
    if (rank % 32 == 0) s[rank / 32] = v;
    __syncthreads();
    v = s[0];
    for (int w = 1; w < size / 32; ++w) v = op(v, s[w]);
    return v;
  }
  __device__ S max(S v) { return allreduce(v, MaxOp{}); }
  __device__ S sum(S v) { return allreduce(v, SumOp{}); }
};

// m = max_j x_j and s = sum_j exp(x_j - m) over the n columns of row x.
template <class T, class Team>
__device__ void row_max_sum(Team& team, const T* x, int n, T& m, T& s) {
  m = T(-INFINITY);
  for (int j = team.rank; j < n; j += team.size) m = max_t(m, x[j]);
  m = team.max(m);
  s = T(0);
  for (int j = team.rank; j < n; j += team.size) s += exp_t(x[j] - m);
  s = team.sum(s);
}

// The row functors: operator()(team, row, n) processes row `row` over its n
// columns; n = 0 for a warp slice past the last row (it only joins the
// shuffles; `row` is then a valid index that it does not touch).

template <class T, bool Log>
struct SoftmaxForwardRow {
  using value_type = T;
  const T* x;
  T* y;
  int cols;
  template <class Team>
  __device__ void operator()(Team& team, long long row, int n) const {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    T m, s;
    row_max_sum(team, xr, n, m, s);
    if (Log) {
      const T log_s = log_t(s);
      for (int j = team.rank; j < n; j += team.size) yr[j] = (xr[j] - m) - log_s;
    } else {
      for (int j = team.rank; j < n; j += team.size) yr[j] = exp_t(xr[j] - m) / s;
    }
  }
};

template <class T>
__device__ __forceinline__ void store_grad(T* dst, T g, bool accumulate) {
  *dst = accumulate ? *dst + g : g;
}

// dx = y * (dy - dot), dot = sum_k dy_k y_k.
template <class T>
struct SoftmaxBackwardRow {
  using value_type = T;
  const T* y;
  const T* dy;
  T* dx;
  int cols;
  bool accumulate;
  template <class Team>
  __device__ void operator()(Team& team, long long row, int n) const {
    const long long o = row * cols;
    T dot = T(0);
    for (int j = team.rank; j < n; j += team.size) dot += dy[o + j] * y[o + j];
    dot = team.sum(dot);
    for (int j = team.rank; j < n; j += team.size)
      store_grad(dx + o + j, y[o + j] * (dy[o + j] - dot), accumulate);
  }
};

// dx = dy - exp(y) * sum_k dy_k.
template <class T>
struct LogSoftmaxBackwardRow {
  using value_type = T;
  const T* y;
  const T* dy;
  T* dx;
  int cols;
  bool accumulate;
  template <class Team>
  __device__ void operator()(Team& team, long long row, int n) const {
    const long long o = row * cols;
    T sum = T(0);
    for (int j = team.rank; j < n; j += team.size) sum += dy[o + j];
    sum = team.sum(sum);
    for (int j = team.rank; j < n; j += team.size)
      store_grad(dx + o + j, dy[o + j] - exp_t(y[o + j]) * sum, accumulate);
  }
};

// probs = softmax(x); loss_i = log s - (x_label - m), computed from m and s
// rather than as -log(probs[label]), which would be -log 0 = inf once the
// probability underflows. Member 0 handles the label: a bad one is counted
// and gives NaN, and is never used as an index.
template <class T>
struct CrossEntropyForwardRow {
  using value_type = T;
  const T* x;
  const int* labels;
  T* probs;
  T* row_loss;
  int* bad_labels;
  int cols;
  template <class Team>
  __device__ void operator()(Team& team, long long row, int n) const {
    const T* xr = x + row * cols;
    T* pr = probs + row * cols;
    T m, s;
    row_max_sum(team, xr, n, m, s);
    for (int j = team.rank; j < n; j += team.size) pr[j] = exp_t(xr[j] - m) / s;
    if (team.rank == 0 && n > 0) {
      const int label = labels[row];
      T loss = T(NAN);
      if (label >= 0 && label < cols)
        loss = log_t(s) - (xr[label] - m);
      else
        atomicAdd(bad_labels, 1);
      row_loss[row] = loss;
    }
  }
};

// Thread (width 1) and warp paths. Slice g = threadIdx.x / width of block b
// owns row b * (blockDim.x / width) + g. No shared memory, no barrier.
template <class RowOp>
__global__ void rows_by_warp_slices(RowOp op, int rows, int width) {
  const long long row = (long long)blockIdx.x * (blockDim.x / width) + threadIdx.x / width;
  WarpSlice team{int(threadIdx.x % width), width};
  const bool live = row < rows;
  op(team, live ? row : rows - 1, live ? op.cols : 0);
}

// Block path. Block b owns row b; one barrier per reduction.
template <class RowOp>
__global__ void rows_by_blocks(RowOp op) {
  using T = typename RowOp::value_type;
  __shared__ T scratch[2][32];
  BlockTeam<T> team{int(threadIdx.x), int(blockDim.x), scratch};
  op(team, blockIdx.x, op.cols);
}

// L = mean of v[0..n). One block: thread t adds v[t], v[t + T], ... in
// double, then one block reduction. The assignment of values to threads and
// the order of every addition are fixed: the same bits on every run.
constexpr int kMeanThreads = 256;
template <class T>
__global__ void mean_kernel(const T* v, int n, T* out) {
  __shared__ double scratch[2][32];
  BlockTeam<double> team{int(threadIdx.x), int(blockDim.x), scratch};
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += double(v[i]);
  acc = team.sum(acc);
  if (threadIdx.x == 0) *out = T(acc / n);
}

// One thread per element (grid-strided): dlogits = (p - onehot) * dL / rows.
template <class T>
__global__ void cross_entropy_backward_kernel(const T* probs, const int* labels, const T* dloss,
                                              T* dlogits, int rows, int cols, bool accumulate) {
  const long long n = (long long)rows * cols;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const T scale = *dloss / T(rows);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const long long row = i / cols;
    const int j = int(i - row * cols), label = labels[row];
    T g = T(NAN);
    if (label >= 0 && label < cols) g = (probs[i] - (j == label ? T(1) : T(0))) * scale;
    store_grad(dlogits + i, g, accumulate);
  }
}

// ---------------------------------------------------------------------------
// Host side.

// Throws unless rows >= min_rows, cols >= 1 and block is a multiple of 32 in
// [32, 1024].
void check_shape(const char* op, int rows, int cols, int block, int min_rows = 0) {
  const std::string name(op);
  if (rows < min_rows)
    throw std::invalid_argument(name + ": rows must be >= " + std::to_string(min_rows) +
                                ", not " + std::to_string(rows));
  if (cols < 1)
    throw std::invalid_argument(name + ": cols must be >= 1, not " + std::to_string(cols));
  check_block(op, block);
}

// Smallest power of two >= cols, at most 32.
int slice_width(int cols) {
  int w = 1;
  while (w < cols && w < 32) w *= 2;
  return w;
}

template <class RowOp>
void launch_rows(const RowOp& op, int rows, int block, RowStrategy strategy, cudaStream_t s) {
  if (strategy == RowStrategy::automatic) strategy = row_strategy_for(op.cols);
  if (strategy == RowStrategy::block) {
    LAUNCH((rows_by_blocks<RowOp>), unsigned(rows), block, 0, s, op);
    return;
  }
  const int width = strategy == RowStrategy::thread ? 1 : slice_width(op.cols);
  const unsigned grid = unsigned(ceil_div(rows, block / width));
  LAUNCH((rows_by_warp_slices<RowOp>), grid, block, 0, s, op, rows, width);
}

}  // namespace

template <class T>
void softmax_forward(const T* d_x, T* d_y, int rows, int cols, cudaStream_t s, int block,
                     RowStrategy strategy) {
  check_shape("softmax_forward", rows, cols, block);
  if (rows == 0) return;
  check_pointer("softmax_forward", d_x, "d_x");
  check_pointer("softmax_forward", d_y, "d_y");
  launch_rows(SoftmaxForwardRow<T, false>{d_x, d_y, cols}, rows, block, strategy, s);
}

template <class T>
void log_softmax_forward(const T* d_x, T* d_y, int rows, int cols, cudaStream_t s, int block,
                         RowStrategy strategy) {
  check_shape("log_softmax_forward", rows, cols, block);
  if (rows == 0) return;
  check_pointer("log_softmax_forward", d_x, "d_x");
  check_pointer("log_softmax_forward", d_y, "d_y");
  launch_rows(SoftmaxForwardRow<T, true>{d_x, d_y, cols}, rows, block, strategy, s);
}

template <class T>
void softmax_backward(const T* d_y, const T* d_dy, T* d_dx, int rows, int cols, bool accumulate,
                      cudaStream_t s, int block, RowStrategy strategy) {
  check_shape("softmax_backward", rows, cols, block);
  if (rows == 0) return;
  check_pointer("softmax_backward", d_y, "d_y");
  check_pointer("softmax_backward", d_dy, "d_dy");
  check_pointer("softmax_backward", d_dx, "d_dx");
  launch_rows(SoftmaxBackwardRow<T>{d_y, d_dy, d_dx, cols, accumulate}, rows, block, strategy,
              s);
}

template <class T>
void log_softmax_backward(const T* d_y, const T* d_dy, T* d_dx, int rows, int cols,
                          bool accumulate, cudaStream_t s, int block, RowStrategy strategy) {
  check_shape("log_softmax_backward", rows, cols, block);
  if (rows == 0) return;
  check_pointer("log_softmax_backward", d_y, "d_y");
  check_pointer("log_softmax_backward", d_dy, "d_dy");
  check_pointer("log_softmax_backward", d_dx, "d_dx");
  launch_rows(LogSoftmaxBackwardRow<T>{d_y, d_dy, d_dx, cols, accumulate}, rows, block, strategy,
              s);
}

template <class T>
void cross_entropy_forward(const CrossEntropyForwardTensors<T>& t, int rows, int cols,
                           cudaStream_t s, int block, RowStrategy strategy) {
  const char* op = "cross_entropy_forward";
  const T* d_logits = t.logits;
  const int* d_labels = t.labels;
  T *d_loss = t.loss, *d_probs = t.probs, *d_row_loss = t.row_loss;
  int* d_bad_labels = t.bad_labels;
  check_shape(op, rows, cols, block, /*min_rows=*/1);
  check_pointer(op, d_logits, "d_logits");
  check_pointer(op, d_labels, "d_labels");
  check_pointer(op, d_loss, "d_loss");
  check_pointer(op, d_probs, "d_probs");
  check_pointer(op, d_row_loss, "d_row_loss");
  check_pointer(op, d_bad_labels, "d_bad_labels");
  CUDA_CHECK(cudaMemsetAsync(d_bad_labels, 0, sizeof(int), s));
  profile::record_copy(profile::Copy::memset, sizeof(int), false);
  const CrossEntropyForwardRow<T> row_op{d_logits, d_labels, d_probs, d_row_loss, d_bad_labels,
                                         cols};
  launch_rows(row_op, rows, block, strategy, s);
  LAUNCH(mean_kernel<T>, 1, kMeanThreads, 0, s, d_row_loss, rows, d_loss);
}

template <class T>
void cross_entropy_backward(const T* d_probs, const int* d_labels, const T* d_dloss,
                            T* d_dlogits, int rows, int cols, bool accumulate, cudaStream_t s,
                            int block) {
  const char* op = "cross_entropy_backward";
  check_shape(op, rows, cols, block, /*min_rows=*/1);
  check_pointer(op, d_probs, "d_probs");
  check_pointer(op, d_labels, "d_labels");
  check_pointer(op, d_dloss, "d_dloss");
  check_pointer(op, d_dlogits, "d_dlogits");
  const unsigned grid = grid_1d((long long)rows * cols, unsigned(block));
  LAUNCH(cross_entropy_backward_kernel<T>, grid, block, 0, s, d_probs, d_labels, d_dloss,
         d_dlogits, rows, cols, accumulate);
}

// ===========================================================================
// Explicit instantiations: float and double.

#define TIMBRE_SOFTMAX_INSTANTIATE(T)                                                           \
  template void softmax_forward<T>(const T*, T*, int, int, cudaStream_t, int, RowStrategy);     \
  template void log_softmax_forward<T>(const T*, T*, int, int, cudaStream_t, int, RowStrategy); \
  template void softmax_backward<T>(const T*, const T*, T*, int, int, bool, cudaStream_t, int,  \
                                    RowStrategy);                                               \
  template void log_softmax_backward<T>(const T*, const T*, T*, int, int, bool, cudaStream_t,   \
                                        int, RowStrategy);                                      \
  template void cross_entropy_forward<T>(const CrossEntropyForwardTensors<T>&, int, int,        \
                                         cudaStream_t, int, RowStrategy);                       \
  template void cross_entropy_backward<T>(const T*, const int*, const T*, T*, int, int, bool,   \
                                          cudaStream_t, int);                                   \
  template void softmax_forward_cpu<T>(const T*, T*, int, int);                                 \
  template void log_softmax_forward_cpu<T>(const T*, T*, int, int);                             \
  template void softmax_backward_cpu<T>(const T*, const T*, T*, int, int, bool);                \
  template void log_softmax_backward_cpu<T>(const T*, const T*, T*, int, int, bool);            \
  template double cross_entropy_forward_cpu<T>(const CrossEntropyForwardTensors<T>&, int, int); \
  template void cross_entropy_backward_cpu<T>(const T*, const int*, T, T*, int, int, bool);

TIMBRE_SOFTMAX_INSTANTIATE(float)
TIMBRE_SOFTMAX_INSTANTIATE(double)
#undef TIMBRE_SOFTMAX_INSTANTIATE

}  // namespace timbre::kernels
