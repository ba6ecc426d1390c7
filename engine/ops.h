// ops.h: differentiable operations on Variables. Each op checks its inputs
// (names itself and the shapes in a ShapeError), runs the forward kernels,
// and records its backward rule; the rules are in ops.cpp beside their
// forward, with the derivative they implement. f32 and f64 tensors are both
// accepted (f64 for gradient checks); both operands of an op share a dtype.
#pragma once

#include "engine/autograd.h"
#include "engine/random.h"
#include "kernels/batchnorm.cuh"
#include "kernels/pooling.cuh"

namespace timbre::ops {

// Elementwise activations (kernels/activation.cuh).
Variable relu(const Variable& x);
Variable elu(const Variable& x, double alpha = 1.0);
Variable tanh(const Variable& x);
Variable sigmoid(const Variable& x);

// a + b, same shapes (residual connections).
Variable add(const Variable& a, const Variable& b);

// Dense layer: y = x W^T + b, x (N, in), W (out, in), b (out) or undefined.
// Three cuBLAS GEMMs forward and backward (the bias enters as a rank-1
// update with a vector of ones).
Variable linear(const Variable& x, const Variable& w, const Variable& b);

// 2-D convolution (cross-correlation, as PyTorch): x (N, C, H, W), weight
// (K, C, R, S), bias (K) or undefined; zero padding. im2col + cuBLAS GEMM
// (kernels/conv2d.cuh); the column workspace comes from the allocator.
struct Conv2dOptions {
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};
Variable conv2d(const Variable& x, const Variable& w, const Variable& b, Conv2dOptions o = {});

// A view with another shape (one -1 allowed); the gradient is reshaped back.
Variable reshape(const Variable& x, const std::vector<int64_t>& dims);
// (N, d1, d2, ...) -> (N, d1*d2*...).
Variable flatten(const Variable& x);
// Swaps the last two dimensions: (..., R, C) -> (..., C, R), a copy.
Variable transpose_last2(const Variable& x);

// Concatenation along the last dimension: (..., F1) and (..., F2) with
// equal leading dimensions give (..., F1 + F2).
Variable concat_last(const Variable& a, const Variable& b);

// x[:, t] of a (B, T, F) sequence: (B, F).
Variable time_step(const Variable& x, int t);

// One GRU layer, batch-first x (B, T, I), PyTorch weights w_ih (3H, I),
// w_hh (3H, H), b_ih, b_hh (3H), gate order r, z, n (kernels/gru.cuh).
// Returns every hidden state (B, T, H); with reverse the sequence is read
// from the end, and state t is still the one after reading x[:, t]. The last
// state is time_step(out, reverse ? 0 : T - 1). h0: (B, H) or undefined (zeros).
Variable gru(const Variable& x, const Variable& w_ih, const Variable& w_hh,
             const Variable& b_ih, const Variable& b_hh, const Variable& h0, bool reverse);

// Additive attention over time: h (B, T, D), W (A, D), b (A), v (A):
// u_t = tanh(W h_t + b), alpha = softmax_t(v . u_t), out = sum_t alpha_t h_t (B, D).
Variable attention(const Variable& h, const Variable& w, const Variable& b, const Variable& v);

// Inverted dropout: in training, each element is kept with probability
// 1 - p and scaled by 1/(1 - p); the mask comes from the generator's Philox
// stream and is regenerated, not stored, for backward. Identity when not
// training or p == 0.
Variable dropout(const Variable& x, double p, bool training, Generator& g);

// Batch normalisation over (N, C, H, W) or (N, C): per channel, statistics
// over every other dimension (kernels/batchnorm.cuh). Training normalises
// with the batch's statistics and updates running_mean / running_var in place
// (running = keep * running + (1 - keep) * batch, see BatchNormRunning for
// the Keras and PyTorch conventions); evaluation uses the running statistics.
// With relu or a residual, the same pass applies what would follow it:
//   y = relu(batch_norm(x) + residual)
// (residual undefined: none; relu false: no ReLU), one pass over the data
// forward and backward where batch_norm, add and relu are three each way
// (kernels/batchnorm.cuh, BatchNormEpilogue). The residual gets its
// gradient like add's input; ReLU's derivative is read from y.
// With pool {h, w}, max pooling with disjoint h x w windows follows in the
// same pass: y = max_pool2d(relu(batch_norm(x) + residual), {h, w, h, w}),
// (N, C, H/h, W/w), and the full-size activation is never written; the
// backward passes read the pooled gradient and the argmax directly.
struct BatchNormOptions {
  double eps = 1e-3;                                              // Keras's default
  kernels::BatchNormRunning running = kernels::keras_running();  // momentum 0.99
  bool relu = false;
  kernels::BatchNormPool pool{};  // {0, 0}: none
};
Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta,
                    Tensor& running_mean, Tensor& running_var, bool training,
                    BatchNormOptions o = {}, const Variable& residual = Variable());

// Data-parallel training with --sync-batchnorm (engine/distributed.h):
// while a scope lives, every training-mode batch_norm queued on this thread
// takes its statistics over all the ranks' slices (kernels::BatchNormSync),
// and so does its backward, whenever it runs. Scopes do not nest.
class SyncBatchNormScope {
 public:
  explicit SyncBatchNormScope(kernels::BatchNormSync sync);
  ~SyncBatchNormScope();
  SyncBatchNormScope(const SyncBatchNormScope&) = delete;
  SyncBatchNormScope& operator=(const SyncBatchNormScope&) = delete;
};

// Pooling over (N, C, H, W) with a (kh, kw) window moved by (sh, sw), no
// padding, floor output size (kernels/pooling.cuh). Max pooling remembers its
// argmax; both backward passes are gathers (deterministic).
Variable max_pool2d(const Variable& x, kernels::PoolWindow w);
Variable avg_pool2d(const Variable& x, kernels::PoolWindow w);
// (N, C, H, W) -> (N, C): the mean over H, W.
Variable global_avg_pool(const Variable& x);

// Softmax and log-softmax over the last dimension (kernels/softmax.cuh).
Variable softmax(const Variable& x);
Variable log_softmax(const Variable& x);

// Mean cross-entropy of logits (N, C) against i32 labels (N): a scalar.
// Labels outside [0, C) are an error (ShapeError naming how many): the
// kernel counts them and the count is read back (one host
// synchronisation). A caller that checked the labels on the host when it
// read them (the trainer) passes Labels::checked to skip the read-back.
enum class Labels { check, checked };
Variable cross_entropy(const Variable& logits, const Tensor& labels, Labels labels_are = Labels::check);

}  // namespace timbre::ops
