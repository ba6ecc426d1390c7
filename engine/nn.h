// nn.h: the layers the models are built from, each a Module that owns its
// parameters (and buffers) and applies one or more ops (engine/ops.h).
//
// Parameter names follow PyTorch's so that a PyTorch state_dict maps onto a
// timbre module name for name (tests/fixtures/make_model_fixtures.py):
//
//   Conv2d     weight (K, C, R, S), bias (K)
//   Linear     weight (out, in), bias (out)
//   BatchNorm  weight = gamma (C), bias = beta (C); buffers running_mean,
//              running_var (C)
//   GRU        weight_ih_l0 (3H, I), weight_hh_l0 (3H, H), bias_ih_l0,
//              bias_hh_l0 (3H), and the same with a _reverse suffix for the
//              backward direction of a bidirectional GRU; gate order r, z, n
//   Attention  weight (A, D), bias (A), v (A)
//
// Initialisation is Keras's default (the reference paper trained in Keras):
// glorot_uniform for every kernel (conv, dense, GRU input weights, attention
// W and v), orthogonal for recurrent kernels, zeros for biases, gamma = 1,
// beta = 0, running mean 0 and running variance 1. Every draw comes from the
// Generator passed to the constructor, in construction order, so one seed
// fixes every weight of a model.
//
// Batch norm has two conventions (kernels/batchnorm.cuh):
//   keras    eps 1e-3, running = 0.99 running + 0.01 batch (biased variance)
//   pytorch  eps 1e-5, running = 0.9 running + 0.1 batch (unbiased variance)
// Keras is the default (the paper's); the PyTorch fixtures use pytorch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/module.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace timbre::nn {

enum class BatchNormConvention { keras, pytorch };
ops::BatchNormOptions batchnorm_options(BatchNormConvention c);
// "keras" or "pytorch"; anything else throws std::invalid_argument naming it.
BatchNormConvention parse_batchnorm_convention(const std::string& s);
const char* batchnorm_convention_name(BatchNormConvention c);

// 2-D convolution with bias, stride 1 and the given zero padding (the
// models use 3x3 'same', pad 1, and 1x1 shortcuts, pad 0).
class Conv2d : public Module {
 public:
  Conv2d(int in_channels, int out_channels, int kernel, int pad, Generator& g);
  Variable forward(const Variable& x) const;
  int in_channels() const { return in_; }
  int out_channels() const { return out_; }
  int kernel() const { return k_; }
  int pad() const { return pad_; }

  Variable weight, bias;

 private:
  int in_, out_, k_, pad_;
};

// y = x W^T + b for x (N, in); a higher-rank x (N, ..., in) is applied row
// by row (a per-time-step dense layer) and keeps its leading dimensions.
class Linear : public Module {
 public:
  Linear(int in_features, int out_features, Generator& g);
  Variable forward(const Variable& x) const;
  int in_features() const { return in_; }
  int out_features() const { return out_; }

  Variable weight, bias;

 private:
  int in_, out_;
};

// Batch normalisation over (N, C, H, W) (2-D) or (N, C) (1-D): training()
// normalises with batch statistics and updates the running ones, evaluation
// uses the running statistics.
class BatchNorm : public Module {
 public:
  BatchNorm(int channels, BatchNormConvention c = BatchNormConvention::keras);
  Variable forward(const Variable& x);
  // relu(forward(x) + residual) in one pass (residual may be undefined),
  // then max pooling with disjoint pool.h x pool.w windows when pool is set:
  // the models' batch norm -> ReLU and batch norm -> add -> ReLU -> max pool
  // (ops::batch_norm with relu, a residual and a pool).
  Variable forward_relu(const Variable& x, const Variable& residual = Variable(),
                        kernels::BatchNormPool pool = {});
  int channels() const { return c_; }
  BatchNormConvention convention() const { return conv_; }
  // The weight of the old running value in each training step's update
  // (0.99 for Keras, 0.9 for PyTorch).
  double running_keep() const { return batchnorm_options(conv_).running.keep; }

  // A statistics pass (see PreciseBatchNorm below): from begin_statistics()
  // to end_statistics(), forward normalises with the batch's statistics,
  // whatever the mode, and sets the running ones to the mean of the batch
  // statistics seen since begin_statistics() (batch b enters with weight
  // 1/b: keep = (b-1)/b, the first batch replaces the old values). The
  // variance follows the convention (biased for Keras, unbiased for PyTorch).
  void begin_statistics() { counting_ = true, counted_ = 0; }
  void end_statistics() { counting_ = false; }

  Variable weight, bias;          // gamma, beta
  Tensor running_mean, running_var;

 private:
  Variable run(const Variable& x, const Variable& residual, bool relu,
               kernels::BatchNormPool pool = {});
  int c_;
  BatchNormConvention conv_;
  bool counting_ = false;
  int64_t counted_ = 0;  // batches of the current statistics pass
};

// Precise batch-norm statistics: the running statistics recomputed with
// the network's final weights, as the mean over a number of training
// batches (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021; what
// torch.optim.swa_utils.update_bn does). Training updates them a little per
// step (Keras keeps 99% of the old value), so after a few dozen steps they
// still mostly hold their start and lag behind weights that keep moving: the
// network in evaluation mode is then not the one that was trained.
//
// While an object lives, every BatchNorm of the module counts (see
// begin_statistics) and the module is in evaluation mode otherwise (no
// dropout: the statistics describe the activations that evaluation will
// see); the caller runs forward passes without gradients over the batches.
// The destructor ends the pass and restores the module's mode.
class PreciseBatchNorm {
 public:
  explicit PreciseBatchNorm(Module& m);
  ~PreciseBatchNorm();
  PreciseBatchNorm(const PreciseBatchNorm&) = delete;
  PreciseBatchNorm& operator=(const PreciseBatchNorm&) = delete;

 private:
  Module& m_;
  bool was_training_;
  std::vector<BatchNorm*> bns_;
};

// The batch norms of a module (depth first), for the tools' decisions.
std::vector<BatchNorm*> batch_norms(Module& m);

// Max pooling with a (kh, kw) window and equal stride (non-overlapping).
class MaxPool2d : public Module {
 public:
  MaxPool2d(int kh, int kw) : kh_(kh), kw_(kw) {}
  Variable forward(const Variable& x) const { return ops::max_pool2d(x, {kh_, kw_, kh_, kw_}); }
  int kh() const { return kh_; }
  int kw() const { return kw_; }

 private:
  int kh_, kw_;
};

// Inverted dropout while training (mask from g), the identity otherwise.
class Dropout : public Module {
 public:
  explicit Dropout(double p);
  Variable forward(const Variable& x, Generator& g) const {
    return ops::dropout(x, p_, training(), g);
  }
  double p() const { return p_; }

 private:
  double p_;
};

// One GRU layer over a batch-first sequence (B, T, I), zero initial state.
// forward returns every hidden state: (B, T, H), or (B, T, 2H) when
// bidirectional: [forward state t, backward state t] concatenated, where the
// backward direction reads the sequence from the end (PyTorch's layout).
// last_state gives what a Keras GRU with return_sequences=False returns:
// the forward direction's state after the last step (unidirectional only).
class GRU : public Module {
 public:
  GRU(int input_size, int hidden_size, bool bidirectional, Generator& g);
  Variable forward(const Variable& x) const;
  Variable last_state(const Variable& x) const;
  int input_size() const { return in_; }
  int hidden_size() const { return h_; }
  bool bidirectional() const { return bi_; }

  Variable w_ih, w_hh, b_ih, b_hh;              // forward direction
  Variable w_ih_r, w_hh_r, b_ih_r, b_hh_r;      // backward (bidirectional only)

 private:
  int in_, h_;
  bool bi_;
};

// Additive attention over time (ops::attention): h (B, T, D) -> (B, D),
// u_t = tanh(W h_t + b), alpha = softmax_t(v . u_t), out = sum alpha_t h_t.
class Attention : public Module {
 public:
  Attention(int dim, int attention_dim, Generator& g);
  Variable forward(const Variable& h) const { return ops::attention(h, weight, bias, v); }
  int dim() const { return d_; }
  int attention_dim() const { return a_; }

  Variable weight, bias, v;

 private:
  int d_, a_;
};

}  // namespace timbre::nn
