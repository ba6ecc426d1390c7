// random.h: where the engine's random numbers come from. A Generator is a
// Philox stream (kernels/philox.cuh): a seed and a counter offset. Each draw
// of n values uses counters [offset, offset + ceil(n/4)) and advances the
// offset, so a run's random numbers depend only on the seed and the order of
// draws: the same seed gives the same weights and dropout masks on every
// run, in both flavours. Its state (seed, offset) is two integers, saved in
// checkpoints so that a resumed run draws what the uninterrupted run would.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace timbre {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  // Reserves the counters for n values; returns the first one.
  uint64_t take(int64_t n);

  void uniform(Tensor& t, double lo, double hi);
  void normal(Tensor& t, double mean, double std);
  // Initialisers (kernels/philox.cuh): fans from the tensor's shape as
  // Keras and PyTorch compute them (dense (out, in): fan_in = in; conv
  // (K, C, R, S): fan_in = C*R*S, fan_out = K*R*S).
  void glorot_uniform(Tensor& w);
  void he_uniform(Tensor& w);
  void orthogonal(Tensor& w, double gain = 1.0);  // rows = dim 0, cols = the rest

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process's default generator (models and dropout use it unless given one).
Generator& default_generator();

}  // namespace timbre
