// batchnorm: batch normalisation over NCHW tensors, per channel c, with the
// statistics taken over N, H and W. "1-D" batch norm over (N, C) is the same
// with h = w = 1. T is float or double (double for finite-difference checks).
// Derivations and design: docs/kernels/batchnorm.md.
//
// For channel c, with M = N*H*W values x_m:
//   mean    = (1/M) sum_m x_m
//   var     = (1/M) sum_m (x_m - mean)^2             (biased: what normalises)
//   inv_std = 1 / sqrt(var + eps)
//   xhat_m  = (x_m - mean) * inv_std
//   y_m     = gamma_c * xhat_m + beta_c
// Training uses the batch's mean and var, saves mean and inv_std (T, one per
// channel) for backward, and updates the running statistics (below).
// Evaluation uses the running statistics instead of the batch's.
//
// Backward, training mode (mean and var depend on x), g = dL/dy:
//   dbeta_c  = sum_m g_m
//   dgamma_c = sum_m g_m xhat_m
//   dx_m     = gamma_c inv_std / M * (M g_m - dbeta_c - xhat_m dgamma_c)
// Backward, evaluation mode (running statistics are constants):
//   dx_m = gamma_c inv_std_running g_m; dgamma, dbeta as above with xhat from
//   the running statistics.
//
// Running statistics (training forward), with one factor `keep`:
//   running_mean = keep*running_mean + (1 - keep)*mean
//   running_var  = keep*running_var  + (1 - keep)*v,
//   v = var*M/(M - 1) (unbiased) when unbiased_var, else var (biased).
// PyTorch (momentum 0.1, eps 1e-5) updates with the unbiased variance; Keras
// (tf.keras 2.x and Keras 3: momentum 0.99, eps 1e-3) with the biased one.
// pytorch_running() and keras_running() build the two conventions.
//
// Parallel strategy (docs/kernels/batchnorm.md):
//   * a channel's M values m = n*H*W + i are split into `chunks` contiguous
//     ranges; block (c, k) owns chunk k of channel c, each of its warps a
//     contiguous segment of the chunk, and lane l every 32nd value of the
//     segment from l (coalesced; a 128-byte stride per thread).
//   * reductions (the statistics, the two backward sums) are two passes in a
//     fixed order: each thread sums its values in double, the block folds
//     its threads' sums (one __syncthreads, one __syncwarp), the chunk
//     partials (at most kBatchNormMaxChunks per channel, about
//     kBatchNormElemsPerThread values per thread) go to a workspace, and
//     every thread of the pass that follows (normalisation, dx) adds its
//     channel's partials in chunk order itself, so the finishing step needs
//     no launch of its own. No atomics: the same inputs and `block` give the
//     same bits on every run.
//   * the statistics are shifted sums, sum (x - K) and sum (x - K)^2 with K
//     the channel's first value, accumulated in double: no cancellation when
//     |mean| >> std (see the docs).
//   * normalisation and dx are barrier-free passes (about
//     kBatchNormPassElemsPerThread values per thread). Training forward and
//     backward are 2 launches each.
//   * a fused max pooling changes only what the passes walk: the forward's
//     normalisation walks the pooled planes instead (lane l takes window
//     m' = s0 + l, s0 + l + 32, ...: a warp reads 32 windows side by side,
//     rows of 32*w consecutive values), normalises each window's values and
//     writes its max and argmax; the backward passes walk the full planes
//     as before, each value finding its window's dy (a read of the pooled
//     dy and argmax, a quarter the size for 2 x 2) instead of reading a
//     full-size dy that max pooling's backward would have scattered. Same
//     launches, same bits as batch norm then max pooling.
//
// Gradients: each of dx, dgamma and dbeta is assigned (false) or added to
// (true) according to BatchNormAccumulate. The parameter gradients are added
// in double and rounded once.
//
// Arguments, for every launcher: c, h, w >= 1; n >= 0. Training needs M =
// n*h*w >= 1 value per channel, and M >= 2 when it updates a running
// variance with unbiased_var. In evaluation n = 0 is an empty batch: nothing
// to normalise, and parameter gradients that are sums over nothing (0).
// eps >= 0 and finite; keep in [0, 1]; block (the most threads per block) a
// multiple of 32 in [32, 1024]; device pointers not null except where said.
// A fused pooling (the forward's epilogue.pool, the backward's
// epilogue.pool: the same) has 1 <= pool.h <= h and 1 <= pool.w <= w, and
// its argmax set. Violations throw std::invalid_argument naming the launcher, the argument
// and its value. Inputs are expected finite: a NaN in a channel makes its
// statistics, and so all its outputs, NaN.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "kernels/cost.h"

namespace timbre::kernels {

// How the running statistics follow the batch (see above).
struct BatchNormRunning {
  double keep = 0.9;         // weight of the old running value, in [0, 1]
  bool unbiased_var = true;  // running_var takes var*M/(M - 1)
};

// torch.nn.BatchNorm1d/2d(momentum): running = (1 - momentum)*running +
// momentum*batch, unbiased variance.
inline BatchNormRunning pytorch_running(double momentum = 0.1) {
  return BatchNormRunning{1.0 - momentum, true};
}
// keras.layers.BatchNormalization(momentum): running = momentum*running +
// (1 - momentum)*batch, biased variance (tf.keras 2.x and Keras 3; the
// multi-backend Keras 2.1.3-2.3.1 used var*M/(M - 1 - eps), which
// BatchNormRunning{momentum, true} matches to within eps/M relative).
inline BatchNormRunning keras_running(double momentum = 0.99) {
  return BatchNormRunning{momentum, false};
}
constexpr double kPyTorchBatchNormEps = 1e-5;
constexpr double kKerasBatchNormEps = 1e-3;

// Backward: false assigns a gradient, true adds to it.
struct BatchNormAccumulate {
  bool dx = false;
  bool dgamma = false;
  bool dbeta = false;
  bool dresidual = false;  // the fused residual's gradient (BatchNormEpilogue)
};

// Launch geometry (see the parallel strategy above): values per thread in
// the reductions and in the barrier-free passes, and the most chunks per
// channel in the reductions.
constexpr int kBatchNormElemsPerThread = 128;
constexpr int kBatchNormPassElemsPerThread = 32;
constexpr int kBatchNormMaxChunks = 32;

// Doubles of workspace the training forward and both backward launchers
// need for c channels: chunk partials and the statistics' shifts.
constexpr long long batchnorm_workspace_size(int c) {
  return (long long)c * (2 * kBatchNormMaxChunks + 1);
}

// ---------------------------------------------------------------------------
// Arguments. Tensors are NCHW: x, y, dy, dx hold n*c*h*w values; gamma, beta,
// the saved and running statistics and the parameter gradients c values.
// Launchers take device pointers, the CPU references host pointers, in the
// same structs.

struct BatchNormShape {
  int n, c, h, w;
};

// Max pooling fused after the activation: disjoint h x w windows (the
// stride is the window), floor output size (n, c, H/h, W/w), the max and
// argmax rules of kernels/pooling.cuh (the first maximum; NaN wins).
// {0, 0}: none. The models' residual blocks end in it.
struct BatchNormPool {
  int h = 0, w = 0;
  bool on() const { return h > 0; }
};

// What the forward pass applies after the normalisation, in the same pass
// over the data (the models' conv -> batch norm -> ReLU, and a residual
// block's batch norm -> add -> ReLU -> max pool):
//   y = pool(act(gamma xhat + beta + residual)),  act = ReLU or the identity.
// The default is plain batch normalisation. Backward needs the fused
// output y to apply ReLU's derivative (y > 0: the gradient passes; relu'(0)
// = 0 and a NaN passes no gradient, as ops::relu) and gives the residual's
// gradient, the masked dy. residual must not alias y.
// With pooling, y and argmax are the pooled planes (n, c, H/h, W/w) and
// nothing full-size is written: the pass reads each window once and writes
// a quarter of the values (2 x 2), where batch norm then pooling would
// write the full tensor and read it back.
template <class T>
struct BatchNormEpilogue {
  const T* residual = nullptr;  // (n, c, h, w) added before the activation; null: none
  bool relu = false;
  BatchNormPool pool{};
  int* argmax = nullptr;  // with pooling: each window's choice (an index within the input plane)
};

// (Below, y, dy and relu_out are (n, c, h, w), or the pooled planes with a
// fused pooling.)

// Data-parallel batch norm (synchronised; PyTorch's SyncBatchNorm): the
// statistics, and the backward's two sums, over the global batch of `ranks`
// ranks that each hold a slice of the same shape. Between the reduction and
// the pass that reads it, the launcher sums the chunk partials (2 c chunks
// doubles) over the ranks in place, one NCCL all-reduce on the launch
// stream; every rank then normalises with the global batch's mean and
// variance (M = ranks * n h w values). The shift K of the statistics' sums
// must be the same on every rank: the running mean (required). Each rank's
// dy is of its own mean loss, so the global sums in dx are those of one
// process on the global batch times `ranks`, as is every gradient the rank
// computes; dgamma and dbeta, formed from the global sums, are divided by
// `ranks` so that the gradients' all-reduce average that follows gives
// each the global batch's value. {null, 1}: this batch alone.
//
// `stream`: where the all-reduce runs when it is not the launch stream. A
// GPU may deadlock when NCCL kernels of one communicator run on two streams
// in no fixed order (each waits in its kernel for peers that wait in the
// other), so a job that queues collectives on a stream of their own (the
// gradients' buckets, engine/distributed.h) sends these there too: the
// launch stream records `fork`, the collective stream waits on it and
// all-reduces, records `join`, and the launch stream waits on that.
struct BatchNormSync {
  ncclComm_t comm = nullptr;
  int ranks = 1;
  cudaStream_t stream = nullptr;  // null: the launch stream
  cudaEvent_t fork = nullptr, join = nullptr;  // needed with a stream
};

// Training forward: reads x, gamma, beta; writes y and the batch statistics
// it normalised with (saved for the backward); updates the running
// statistics when running_mean and running_var are set (both or neither).
template <class T>
struct BatchNormTrainForward {
  const T* x;
  const T* gamma;
  const T* beta;
  T* y;             // may alias x (not with pooling)
  T* save_mean;     // the batch mean
  T* save_inv_std;  // 1 / sqrt(batch variance + eps)
  T* running_mean = nullptr;
  T* running_var = nullptr;
  BatchNormEpilogue<T> epilogue{};
  BatchNormSync sync{};
};

// Evaluation forward: y = gamma (x - running_mean) / sqrt(running_var + eps)
// + beta, then the epilogue.
template <class T>
struct BatchNormEvalForward {
  const T* x;
  const T* gamma;
  const T* beta;
  const T* running_mean;
  const T* running_var;
  T* y;  // may alias x (not with pooling)
  BatchNormEpilogue<T> epilogue{};
};

// The backward side of a fused epilogue. relu_out: the fused forward's
// output y when it applied ReLU (dy then counts only where y > 0); null:
// no ReLU. dresidual: where the residual's gradient (dy, masked) goes
// (assigned or added, acc.dresidual); null: not wanted. Must not alias dy.
// With pooling (the forward's pool and argmax), dy and relu_out are the
// pooled planes: a value's gradient is its window's dy (masked) where the
// window chose it, else 0, as max pooling's backward would have scattered
// it; dresidual and dx stay full-size.
template <class T>
struct BatchNormEpilogueGrad {
  const T* relu_out = nullptr;
  T* dresidual = nullptr;
  BatchNormPool pool{};
  const int* argmax = nullptr;
};

// Training backward, from what the training forward saved. dgamma and dbeta
// may be null (that gradient is not wanted); dx is always computed.
template <class T>
struct BatchNormTrainBackward {
  const T* x;
  const T* dy;
  const T* gamma;
  const T* save_mean;
  const T* save_inv_std;
  T* dx;  // may alias dy when acc.dx is false (not with pooling)
  T* dgamma;
  T* dbeta;
  BatchNormEpilogueGrad<T> epilogue{};
  BatchNormSync sync{};  // the forward's
};

// Evaluation backward: dx = gamma dy / sqrt(running_var + eps); dgamma and
// dbeta (each may be null) as in training, with the running statistics.
template <class T>
struct BatchNormEvalBackward {
  const T* x;  // read only for dgamma
  const T* dy;
  const T* gamma;
  const T* running_mean;  // read only for dgamma
  const T* running_var;
  T* dx;
  T* dgamma;
  T* dbeta;
  BatchNormEpilogueGrad<T> epilogue{};
};

// ---------------------------------------------------------------------------
// Launchers. d_workspace: batchnorm_workspace_size(c) doubles (the
// evaluation backward needs it only for dgamma or dbeta; it may be null
// otherwise).

template <class T>
void batchnorm_forward_train(const BatchNormTrainForward<T>& t, BatchNormShape shape, double eps,
                             BatchNormRunning running, double* d_workspace, cudaStream_t s,
                             int block = 256);
template <class T>
void batchnorm_forward_eval(const BatchNormEvalForward<T>& t, BatchNormShape shape, double eps,
                            cudaStream_t s, int block = 256);
template <class T>
void batchnorm_backward_train(const BatchNormTrainBackward<T>& t, BatchNormShape shape,
                              BatchNormAccumulate acc, double* d_workspace, cudaStream_t s,
                              int block = 256);
// Its dx is one barrier-free pass; dgamma and dbeta add the reduction.
template <class T>
void batchnorm_backward_eval(const BatchNormEvalBackward<T>& t, BatchNormShape shape, double eps,
                             BatchNormAccumulate acc, double* d_workspace, cudaStream_t s,
                             int block = 256);

// ---------------------------------------------------------------------------
// References: plain loops, two-pass statistics (mean, then the sum of squared
// deviations) in double, results rounded to T. y is computed from the double
// statistics (not from the T values saved). Null pointers as for the
// launchers.

template <class T>
void batchnorm_forward_train_cpu(const BatchNormTrainForward<T>& t, BatchNormShape shape,
                                 double eps, BatchNormRunning running);
template <class T>
void batchnorm_forward_eval_cpu(const BatchNormEvalForward<T>& t, BatchNormShape shape,
                                double eps);
template <class T>
void batchnorm_backward_train_cpu(const BatchNormTrainBackward<T>& t, BatchNormShape shape,
                                  BatchNormAccumulate acc);
template <class T>
void batchnorm_backward_eval_cpu(const BatchNormEvalBackward<T>& t, BatchNormShape shape,
                                 double eps, BatchNormAccumulate acc);

// ---------------------------------------------------------------------------
// Costs, for benchmarks: ideal traffic (each array once per kernel that
// reads it), elem = sizeof(T). Per-channel work is negligible and not
// counted.
inline Cost batchnorm_forward_train_cost(double n, double c, double h, double w, int elem = 4) {
  // Statistics: read x; (x - K), add, square, add: 4 per value. Normalise:
  // read x, write y; (x - mean) * scale + beta: 3 per value.
  const double v = n * c * h * w;
  return Cost{v * 7, v * elem * 3.0};
}
inline Cost batchnorm_forward_eval_cost(double n, double c, double h, double w, int elem = 4) {
  const double v = n * c * h * w;
  return Cost{v * 3, v * elem * 2.0};
}
inline Cost batchnorm_backward_train_cost(double n, double c, double h, double w,
                                          bool accumulate_dx, int elem = 4) {
  // Sums: read x, dy; add, subtract, multiply, add: 4. dx: read x, dy (and
  // dx), write dx; a * (dy - b - (x - mean) * k): 5 (+1).
  const double v = n * c * h * w;
  return Cost{v * (accumulate_dx ? 10 : 9), v * elem * (accumulate_dx ? 6.0 : 5.0)};
}
inline Cost batchnorm_backward_eval_cost(double n, double c, double h, double w,
                                         bool accumulate_dx, bool param_grads, int elem = 4) {
  // dx = a * dy (+ dx): read dy (and dx), write dx. The parameter gradients
  // add the sums pass: read x, dy; 4 per value.
  const double v = n * c * h * w;
  Cost cost{v * (accumulate_dx ? 2 : 1), v * elem * (accumulate_dx ? 3.0 : 2.0)};
  if (param_grads) {
    cost.flops += v * 4;
    cost.bytes += v * elem * 2.0;
  }
  return cost;
}

}  // namespace timbre::kernels
