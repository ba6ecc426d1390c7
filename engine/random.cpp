#include "engine/random.h"

#include <stdexcept>
#include <string>

#include "engine/context.h"
#include "kernels/cuda_check.h"
#include "kernels/philox.cuh"

namespace timbre {
namespace {

// (fan_in, fan_out) of a weight tensor: dim 0 is the output, dim 1 the
// input, the rest the receptive field.
std::pair<int64_t, int64_t> fans(const Tensor& w) {
  if (w.rank() < 2) throw ShapeError("initialiser: weight " + w.str() + " needs 2+ dimensions");
  int64_t field = 1;
  for (int i = 2; i < w.rank(); ++i) field *= w.size(i);
  return {w.size(1) * field, w.size(0) * field};
}

template <class F>
void floating(const char* op, Tensor& t, F&& f) {
  check_float(op, t);
  if (t.dtype() == DType::f32)
    f(t.data<float>(), float{});
  else
    f(t.data<double>(), double{});
}

}  // namespace

uint64_t Generator::take(int64_t n) {
  const uint64_t first = offset_;
  offset_ += uint64_t(kernels::philox_counters(n));
  return first;
}

void Generator::set_shard(int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks)
    throw std::invalid_argument("Generator::set_shard: rank " + std::to_string(rank) + " of " +
                                std::to_string(ranks));
  shard_ = rank, shards_ = ranks;
}

PhiloxDraw Generator::draw(int64_t n) {
  if (!in_step_) return {seed_, take(n), nullptr};
  uint64_t first = offset_;
  if (shards_ == 1) {
    first = take(n);
  } else {
    const uint64_t per = uint64_t(kernels::philox_counters(n));
    first += per * uint64_t(shard_);
    offset_ += per * uint64_t(shards_);
  }
  return {seed_, first - step_first_, static_cast<const unsigned long long*>(word_.raw())};
}

void Generator::begin_step() {
  if (in_step_) throw std::logic_error("Generator::begin_step: a step is already open");
  if (word_value_ != offset_) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(stream(), &capture));
    if (capture != cudaStreamCaptureStatusNone)
      throw std::logic_error("Generator::begin_step: counters were drawn outside a step since "
                             "the last one; a captured step would reset them at every replay "
                             "(run a step uncaptured first)");
    if (!word_.defined()) word_ = Tensor::empty(Shape{2}, DType::i32);
    kernels::philox_base_set(static_cast<unsigned long long*>(word_.raw()), offset_, stream());
    word_value_ = offset_;
  }
  in_step_ = true;
  step_first_ = offset_;
}

uint64_t Generator::end_step() {
  if (!in_step_) throw std::logic_error("Generator::end_step: no step is open");
  in_step_ = false;
  const uint64_t k = offset_ - step_first_;
  if (k > 0) kernels::philox_base_add(static_cast<unsigned long long*>(word_.raw()), k, stream());
  word_value_ += k;
  return k;
}

void Generator::uniform(Tensor& t, double lo, double hi) {
  const uint64_t off = take(t.numel());
  floating("uniform", t, [&](auto* p, auto tag) {
    using T = decltype(tag);
    kernels::fill_uniform<T>(p, t.numel(), T(lo), T(hi), seed_, off, stream());
  });
}

void Generator::normal(Tensor& t, double mean, double std) {
  const uint64_t off = take(t.numel());
  floating("normal", t, [&](auto* p, auto tag) {
    using T = decltype(tag);
    kernels::fill_normal<T>(p, t.numel(), T(mean), T(std), seed_, off, stream());
  });
}

void Generator::glorot_uniform(Tensor& w) {
  const auto f = fans(w);  // named, not bound: the lambda captures them
  const auto fan_in = f.first, fan_out = f.second;
  const uint64_t off = take(w.numel());
  floating("glorot_uniform", w, [&](auto* p, auto tag) {
    using T = decltype(tag);
    kernels::glorot_uniform<T>(p, w.numel(), fan_in, fan_out, seed_, off, stream());
  });
}

void Generator::he_uniform(Tensor& w) {
  const auto fan_in = fans(w).first;
  const uint64_t off = take(w.numel());
  floating("he_uniform", w, [&](auto* p, auto tag) {
    using T = decltype(tag);
    kernels::he_uniform<T>(p, w.numel(), fan_in, seed_, off, stream());
  });
}

void Generator::orthogonal(Tensor& w, double gain) {
  if (w.rank() < 2) throw ShapeError("orthogonal: weight " + w.str() + " needs 2+ dimensions");
  const int64_t rows = w.size(0), cols = w.numel() / rows;
  const uint64_t off = take(rows * cols);  // one normal matrix of that size
  floating("orthogonal", w, [&](auto* p, auto tag) {
    using T = decltype(tag);
    kernels::orthogonal<T>(p, rows, cols, gain, seed_, off, stream());
  });
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

}  // namespace timbre
