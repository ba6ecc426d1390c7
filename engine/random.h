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

// Draws in a step that a CUDA graph replays. A graph replays its kernels
// with the arguments they had when it was captured, so a dropout mask drawn
// from an offset argument would be the same at every replay. Within a step
// (begin_step() .. end_step()), draw() therefore returns offsets relative to
// the step's first counter, and the device word `base` holds that first
// counter when the kernels run (kernels::dropout_forward's d_base):
// begin_step() sets the word if the host has drawn elsewhere since the last
// step, end_step() queues word += the counters the step took. A replay of
// the captured step moves the word on by itself; replayed(k) moves the
// host's offset with it. The counters, and so the masks, are those of the
// same steps run one by one.
struct PhiloxDraw {
  uint64_t seed, offset;
  const unsigned long long* base;  // device; null outside a step
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  // Reserves the counters for n values; returns the first one.
  uint64_t take(int64_t n);
  // take(n) as a kernel's arguments: absolute outside a step, relative to
  // the device word within one.
  PhiloxDraw draw(int64_t n);
  // Brackets one training step's work on stream() (see PhiloxDraw). Under
  // stream capture, begin_step() throws std::logic_error if the word would
  // need setting (draws outside a step since the last one: run one step
  // uncaptured first). end_step() returns the counters the step took.
  void begin_step();
  uint64_t end_step();
  void replayed(uint64_t counters) { offset_ += counters, word_value_ += counters; }
  // Data-parallel training (engine/distributed.h): inside a step, each of
  // `ranks` ranks holds one slice of a global batch. A draw of n values
  // then reserves the counters of all the ranks' slices, rank after rank,
  // and returns this rank's: for a batch-major tensor (dropout's masks)
  // whose n is a multiple of 4 (philox_counters: 4 values a counter), rank
  // r draws exactly the values that one process drawing for the global
  // batch gives its slice r. Outside a step draws are not sharded (every
  // rank initialises the same weights).
  void set_shard(int rank, int ranks);

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
  Tensor word_;                  // the device word (one u64 as two i32), made by begin_step
  uint64_t word_value_ = ~0ull;  // what the word holds once the queued work is done
  bool in_step_ = false;
  int shard_ = 0, shards_ = 1;
  uint64_t step_first_ = 0;
};

// The process's default generator (models and dropout use it unless given one).
Generator& default_generator();

}  // namespace timbre
