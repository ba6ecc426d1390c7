#include "engine/nn.h"

#include <stdexcept>

namespace timbre::nn {
namespace {

void check_positive(const char* layer, const char* what, int v) {
  if (v < 1)
    throw std::invalid_argument(std::string(layer) + ": " + what + " must be >= 1, got " +
                                std::to_string(v));
}

// A glorot_uniform draw into a fresh tensor of the given shape.
Tensor glorot(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s);
  g.glorot_uniform(t);
  return t;
}

}  // namespace

ops::BatchNormOptions batchnorm_options(BatchNormConvention c) {
  ops::BatchNormOptions o;
  if (c == BatchNormConvention::pytorch) {
    o.eps = kernels::kPyTorchBatchNormEps;
    o.running = kernels::pytorch_running(0.1);
  } else {
    o.eps = kernels::kKerasBatchNormEps;
    o.running = kernels::keras_running(0.99);
  }
  return o;
}

BatchNormConvention parse_batchnorm_convention(const std::string& s) {
  if (s == "keras") return BatchNormConvention::keras;
  if (s == "pytorch") return BatchNormConvention::pytorch;
  throw std::invalid_argument("batchnorm convention '" + s + "' is unknown: use \"keras\" or \"pytorch\"");
}

const char* batchnorm_convention_name(BatchNormConvention c) {
  return c == BatchNormConvention::pytorch ? "pytorch" : "keras";
}

Conv2d::Conv2d(int in_channels, int out_channels, int kernel, int pad, Generator& g)
    : in_(in_channels), out_(out_channels), k_(kernel), pad_(pad) {
  check_positive("Conv2d", "in_channels", in_channels);
  check_positive("Conv2d", "out_channels", out_channels);
  check_positive("Conv2d", "kernel", kernel);
  if (pad < 0) throw std::invalid_argument("Conv2d: pad must be >= 0, got " + std::to_string(pad));
  // Keras Conv2D: glorot_uniform with fan_in = C*R*S, fan_out = K*R*S.
  weight = register_parameter("weight", glorot(Shape{out_, in_, k_, k_}, g));
  bias = register_parameter("bias", Tensor::zeros(Shape{out_}));
}

Variable Conv2d::forward(const Variable& x) const {
  return ops::conv2d(x, weight, bias, {1, 1, pad_, pad_});
}

Linear::Linear(int in_features, int out_features, Generator& g)
    : in_(in_features), out_(out_features) {
  check_positive("Linear", "in_features", in_features);
  check_positive("Linear", "out_features", out_features);
  weight = register_parameter("weight", glorot(Shape{out_, in_}, g));
  bias = register_parameter("bias", Tensor::zeros(Shape{out_}));
}

Variable Linear::forward(const Variable& x) const {
  const Shape& s = x.value().shape();
  if (s.rank() == 2) return ops::linear(x, weight, bias);
  if (s.rank() < 2 || s.dim(-1) != in_)
    throw ShapeError("Linear: input " + s.str() + " must end in " + std::to_string(in_) +
                     " features");
  // (N, ..., in) as (rows, in), then the leading dimensions back.
  std::vector<int64_t> dims = s.dims();
  Variable y = ops::linear(ops::reshape(x, {-1, in_}), weight, bias);
  dims.back() = out_;
  return ops::reshape(y, dims);
}

BatchNorm::BatchNorm(int channels, BatchNormConvention c) : c_(channels), conv_(c) {
  check_positive("BatchNorm", "channels", channels);
  weight = register_parameter("weight", Tensor::full(Shape{c_}, 1.0));
  bias = register_parameter("bias", Tensor::zeros(Shape{c_}));
  running_mean = register_buffer("running_mean", Tensor::zeros(Shape{c_}));
  running_var = register_buffer("running_var", Tensor::full(Shape{c_}, 1.0));
}

Variable BatchNorm::forward(const Variable& x) { return run(x, Variable(), false); }

Variable BatchNorm::forward_relu(const Variable& x, const Variable& residual,
                                 kernels::BatchNormPool pool) {
  return run(x, residual, true, pool);
}

Variable BatchNorm::run(const Variable& x, const Variable& residual, bool relu,
                        kernels::BatchNormPool pool) {
  ops::BatchNormOptions o = batchnorm_options(conv_);
  o.relu = relu;
  o.pool = pool;
  if (counting_) {  // running = the mean of this pass's batch statistics
    o.running.keep = double(counted_) / double(counted_ + 1);
    ++counted_;
    return ops::batch_norm(x, weight, bias, running_mean, running_var, true, o, residual);
  }
  return ops::batch_norm(x, weight, bias, running_mean, running_var, training(), o, residual);
}

std::vector<BatchNorm*> batch_norms(Module& m) {
  std::vector<BatchNorm*> out;
  m.apply([&](Module& c) {
    if (auto* bn = dynamic_cast<BatchNorm*>(&c)) out.push_back(bn);
  });
  return out;
}

PreciseBatchNorm::PreciseBatchNorm(Module& m)
    : m_(m), was_training_(m.training()), bns_(batch_norms(m)) {
  m_.eval();
  for (BatchNorm* bn : bns_) bn->begin_statistics();
}

PreciseBatchNorm::~PreciseBatchNorm() {
  for (BatchNorm* bn : bns_) bn->end_statistics();
  m_.train(was_training_);
}

Dropout::Dropout(double p) : p_(p) {
  if (!(p >= 0 && p < 1))
    throw std::invalid_argument("Dropout: probability " + std::to_string(p) + " is not in [0, 1)");
}

GRU::GRU(int input_size, int hidden_size, bool bidirectional, Generator& g)
    : in_(input_size), h_(hidden_size), bi_(bidirectional) {
  check_positive("GRU", "input_size", input_size);
  check_positive("GRU", "hidden_size", hidden_size);
  // Keras GRU: kernel glorot_uniform (fan_in I, fan_out 3H: the same fans
  // for our transposed (3H, I) layout), recurrent kernel orthogonal, biases
  // zero. Both directions draw in turn: forward then backward.
  auto direction = [&](const std::string& suffix, Variable* wi, Variable* wh, Variable* bi,
                       Variable* bh) {
    *wi = register_parameter("weight_ih_l0" + suffix, glorot(Shape{3 * h_, in_}, g));
    Tensor r = Tensor::empty(Shape{3 * h_, h_});
    g.orthogonal(r);
    *wh = register_parameter("weight_hh_l0" + suffix, r);
    *bi = register_parameter("bias_ih_l0" + suffix, Tensor::zeros(Shape{3 * h_}));
    *bh = register_parameter("bias_hh_l0" + suffix, Tensor::zeros(Shape{3 * h_}));
  };
  direction("", &w_ih, &w_hh, &b_ih, &b_hh);
  if (bi_) direction("_reverse", &w_ih_r, &w_hh_r, &b_ih_r, &b_hh_r);
}

Variable GRU::forward(const Variable& x) const {
  Variable fwd = ops::gru(x, w_ih, w_hh, b_ih, b_hh, Variable(), false);
  if (!bi_) return fwd;
  Variable bwd = ops::gru(x, w_ih_r, w_hh_r, b_ih_r, b_hh_r, Variable(), true);
  return ops::concat_last(fwd, bwd);
}

Variable GRU::last_state(const Variable& x) const {
  if (bi_) throw std::logic_error("GRU::last_state: defined for a unidirectional GRU only");
  Variable out = forward(x);
  return ops::time_step(out, int(out.value().size(1)) - 1);
}

Attention::Attention(int dim, int attention_dim, Generator& g) : d_(dim), a_(attention_dim) {
  check_positive("Attention", "dim", dim);
  check_positive("Attention", "attention_dim", attention_dim);
  weight = register_parameter("weight", glorot(Shape{a_, d_}, g));
  bias = register_parameter("bias", Tensor::zeros(Shape{a_}));
  // v is a (A -> 1) projection: glorot with fan_in A, fan_out 1, drawn
  // through a (1, A) view of the same storage.
  Tensor vt = Tensor::empty(Shape{a_});
  Tensor view = vt.reshape({1, a_});
  g.glorot_uniform(view);
  v = register_parameter("v", vt);
}

}  // namespace timbre::nn
