// softmax: row-wise softmax and log-softmax over the last dimension of a
// (rows x cols) row-major matrix, and the cross-entropy loss with integer
// labels fused with them. T is float or double (double for finite-difference
// gradient checks). Derivations: docs/kernels/softmax.md.
//
// For row i, with m_i = max_j x_ij and s_i = sum_j exp(x_ij - m_i):
//   softmax        y_ij = exp(x_ij - m_i) / s_i
//   log-softmax    y_ij = (x_ij - m_i) - log s_i
// Backward, from the upstream gradient dy to dx:
//   softmax        dx_ij = y_ij * (dy_ij - sum_k dy_ik y_ik)
//   log-softmax    dx_ij = dy_ij - exp(y_ij) * sum_k dy_ik
// Cross-entropy, labels l_i in [0, cols), mean over the batch:
//   loss_i = -log softmax(x)_{i,l_i} = log s_i - (x_{i,l_i} - m_i)
//   L      = (1/rows) sum_i loss_i
//   dL/dx_ij = (softmax(x)_ij - [j == l_i]) / rows, times the upstream dL.
// Subtracting m_i keeps every exp argument <= 0: nothing overflows, and the
// largest term of s_i is 1, so s_i >= 1 and log s_i never sees 0.
//
// Who owns a row (RowStrategy); each thread handles columns r, r + size, ...
// of its row (r: its rank in the row's team of `size` threads):
//   thread: one thread per row, a plain loop: no shuffle, no barrier (under
//           simcuda the barrier-free fast path).
//   warp  : a slice of W lanes of one warp per row, W = the smallest power of
//           two >= cols, at most 32 (cols = 8 -> 4 rows per warp). Reductions
//           are __shfl_xor_sync butterflies of width W: no shared memory, no
//           barrier.
//   block : one block per row; each warp reduces by shuffles, the warp results
//           meet in a 32-entry shared array, one __syncthreads per reduction.
//   automatic: row_strategy_for(cols): the smallest team that leaves each
//           thread at most 32 columns: thread for cols <= 32, warp for
//           cols <= 1024, block above.
// All give the same results up to rounding, and each is deterministic: the
// same inputs and launch configuration give the same bits (docs/kernels/softmax.md).
//
// Gradients: backward launchers assign dx (accumulate = false) or add into
// it (accumulate = true); the caller chooses (the engine assigns a
// gradient's first contribution and adds the later ones).
//
// Arguments, for every launcher: cols >= 1; rows >= 0, rows = 0 is a no-op
// (except cross-entropy, whose mean over no rows is undefined: rows >= 1);
// block = threads per block, a multiple of 32 in [32, 1024]; device pointers
// not null when there is work. Violations throw std::invalid_argument.
// Inputs are expected finite; a NaN in a row makes that row's outputs NaN.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

enum class RowStrategy { automatic, thread, warp, block };

// Largest cols that RowStrategy::automatic gives to the thread and warp paths.
constexpr int kThreadPathMaxCols = 32;
constexpr int kWarpPathMaxCols = 1024;

// What RowStrategy::automatic picks for rows of `cols` columns.
inline RowStrategy row_strategy_for(int cols) {
  return cols <= kThreadPathMaxCols ? RowStrategy::thread
         : cols <= kWarpPathMaxCols ? RowStrategy::warp
                                    : RowStrategy::block;
}

// ---------------------------------------------------------------------------
// Softmax and log-softmax.
// y may alias x (in-place forward): every element is read before it is
// written, by the thread that writes it.

template <class T>
void softmax_forward(const T* d_x, T* d_y, int rows, int cols, cudaStream_t s, int block = 256,
                     RowStrategy strategy = RowStrategy::automatic);
template <class T>
void log_softmax_forward(const T* d_x, T* d_y, int rows, int cols, cudaStream_t s,
                         int block = 256, RowStrategy strategy = RowStrategy::automatic);

// d_y: the forward's output (softmax or log-softmax respectively).
template <class T>
void softmax_backward(const T* d_y, const T* d_dy, T* d_dx, int rows, int cols, bool accumulate,
                      cudaStream_t s, int block = 256,
                      RowStrategy strategy = RowStrategy::automatic);
template <class T>
void log_softmax_backward(const T* d_y, const T* d_dy, T* d_dx, int rows, int cols,
                          bool accumulate, cudaStream_t s, int block = 256,
                          RowStrategy strategy = RowStrategy::automatic);

// ---------------------------------------------------------------------------
// Cross-entropy with integer labels, mean over rows.

// The tensors of the cross-entropy forward: device pointers for the
// launcher, host pointers for the reference. Aggregate:
// CrossEntropyForwardTensors<T>{logits, labels, loss, probs, row_loss, bad_labels}.
template <class T>
struct CrossEntropyForwardTensors {
  const T* logits;    // rows*cols: the scores x, one row per example
  const int* labels;  // rows: the class l_i of each example
  T* loss;            // one T: the mean loss L
  T* probs;           // rows*cols: softmax(logits), what backward needs
  T* row_loss;        // rows: loss_i (workspace; kept for inspection)
  int* bad_labels;    // one int: the number of rows whose label is outside [0, cols)
};

// Forward writes all four outputs of t:
//   *t.loss        the mean loss L;
//   t.probs        softmax(logits);
//   t.row_loss     loss_i;
//   *t.bad_labels  the count of bad labels. The launcher sets it to 0 (on
//                  stream s) before counting, so after the call it
//                  describes this batch only.
// A bad label is never used as an index: its row's loss_i is NaN, so L is
// NaN; its probs row is still the softmax. L is the mean of the loss_i
// summed in double by one block in a fixed order: the same inputs give the
// same bits on every run, whatever the thread schedule.
template <class T>
void cross_entropy_forward(const CrossEntropyForwardTensors<T>& t, int rows, int cols,
                           cudaStream_t s, int block = 256,
                           RowStrategy strategy = RowStrategy::automatic);

// dlogits_ij (=, or += when accumulate) (probs_ij - [j == l_i]) * (*d_dloss) / rows.
// d_probs: what forward saved; d_dloss: the upstream gradient dL (a device
// scalar, 1 when L is the final loss). A row with a bad label gets NaN
// (its loss was NaN; the row is not counted again here). Elementwise,
// barrier-free: one thread per element, grid-strided.
template <class T>
void cross_entropy_backward(const T* d_probs, const int* d_labels, const T* d_dloss,
                            T* d_dlogits, int rows, int cols, bool accumulate, cudaStream_t s,
                            int block = 256);

// ---------------------------------------------------------------------------
// References: plain loops, double accumulation, results rounded to T.

template <class T>
void softmax_forward_cpu(const T* x, T* y, int rows, int cols);
template <class T>
void log_softmax_forward_cpu(const T* x, T* y, int rows, int cols);
template <class T>
void softmax_backward_cpu(const T* y, const T* dy, T* dx, int rows, int cols, bool accumulate);
template <class T>
void log_softmax_backward_cpu(const T* y, const T* dy, T* dx, int rows, int cols,
                              bool accumulate);
// Returns L in double (NaN if a label is bad). t.loss (L rounded to T),
// t.probs, t.row_loss and t.bad_labels are written when not null.
template <class T>
double cross_entropy_forward_cpu(const CrossEntropyForwardTensors<T>& t, int rows, int cols);
template <class T>
void cross_entropy_backward_cpu(const T* probs, const int* labels, T dloss, T* dlogits, int rows,
                                int cols, bool accumulate);

// ---------------------------------------------------------------------------
// Costs, for benchmarks. exp and log count as one operation each; bytes are
// the ideal traffic (each array once, although the kernels re-read a row from
// cache); elem = sizeof(T).

inline Cost softmax_forward_cost(double rows, double cols, int elem = 4) {
  // max (1), exp(x - m) summed (3), exp(x - m) * (1/s) (3) per element.
  return Cost{rows * cols * 7 + rows, rows * cols * elem * 2.0};
}
inline Cost log_softmax_forward_cost(double rows, double cols, int elem = 4) {
  // max (1), exp(x - m) summed (3), (x - m) - log s (2) per element; a log per row.
  return Cost{rows * cols * 6 + rows, rows * cols * elem * 2.0};
}
inline Cost softmax_backward_cost(double rows, double cols, bool accumulate, int elem = 4) {
  // dot (2), y * (dy - dot) (2), + dx (1); reads y, dy (and dx), writes dx.
  const double n = rows * cols;
  return Cost{n * (accumulate ? 5 : 4), n * elem * (accumulate ? 4.0 : 3.0)};
}
inline Cost log_softmax_backward_cost(double rows, double cols, bool accumulate, int elem = 4) {
  // sum (1), dy - exp(y) * sum (3), + dx (1).
  const double n = rows * cols;
  return Cost{n * (accumulate ? 5 : 4), n * elem * (accumulate ? 4.0 : 3.0)};
}
inline Cost cross_entropy_forward_cost(double rows, double cols, int elem = 4) {
  // The softmax, plus per row: log, two subtractions, one addition to the mean.
  // Reads logits and labels; writes probs and row_loss, which the mean reads.
  Cost c = softmax_forward_cost(rows, cols, elem);
  c.flops += rows * 4;
  c.bytes += rows * (4.0 + 2.0 * elem) + elem;
  return c;
}
inline Cost cross_entropy_backward_cost(double rows, double cols, bool accumulate, int elem = 4) {
  // (p - onehot) * scale (2), + dlogits (1); reads probs (and dlogits), labels.
  const double n = rows * cols;
  return Cost{n * (accumulate ? 3 : 2), n * elem * (accumulate ? 3.0 : 2.0) + rows * 4.0 + elem};
}

}  // namespace timbre::kernels
