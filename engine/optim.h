// optim.h: optimisers over a module's parameters (kernels/optim.cuh).
//
//   Adam adam(model.parameters(), kernels::keras_adam(1e-3), /*decay=*/0);
//   loss.backward();
//   adam.step();        // one elementwise kernel over every parameter
//   model.zero_grad();
//
// Adam lays float parameters out contiguously when it is constructed: their
// values, gradients and both moments each live in one device buffer, every
// tensor starting on a 256-byte boundary (Variable::bind_storage), so a step
// is one launch over the whole buffer, not one per tensor, and the
// gradients are one block for a collective or a memset. The padding between
// tensors is zero in all four buffers and stays zero (a zero gradient leaves
// a zero parameter and zero moments). Parameters without a gradient in a
// step (unused) are skipped: the step then runs one launch per parameter
// that has one, over its slice. The state (step count, first and second
// moments) is exposed for checkpoints.
//
// step(check) fuses the finite check into the same launch: see
// kernels::AdamCheck; the element index it records is the parameter's
// flat_offset() plus the index within it.
//
// The step count lives on the device too (kernels::AdamDeviceStep): step()
// queues adam_advance (one thread: t += 1, the bias corrections and the
// decayed lr of step t), and the update reads them there. So a step captured
// once in a CUDA graph is right at every replay; the host's count (steps())
// follows by replayed(), and set_steps() writes both.
#pragma once

#include <vector>

#include "engine/autograd.h"
#include "kernels/optim.cuh"

namespace timbre {

class Adam {
 public:
  // decay: Keras-style time decay, lr_t = lr / (1 + decay * iterations),
  // iterations = steps taken before this one.
  Adam(std::vector<Variable> params, kernels::AdamConfig config, double decay = 0);
  void step(kernels::AdamCheck check = {});
  long long steps() const { return step_; }
  void set_steps(long long s);  // a blocking upload (a resume, not a step)
  // A step queued by replaying a graph that captured step(): counted on
  // the host (the device counts it itself).
  void replayed() { ++step_; }
  // Element offset of parameter i in the flat layout (cumulative, padded
  // to 64 elements, also when the parameters are not laid out flat), and
  // the parameter holding flat element e (its index; -1 if none).
  int64_t flat_offset(size_t i) const { return offsets_[i]; }
  int parameter_at(int64_t element) const;
  bool is_flat() const { return flat_values_.defined(); }
  // The gradients, one contiguous f32 buffer (is_flat() only): what the
  // data-parallel all-reduce sums (engine/distributed.h).
  const Tensor& flat_gradients() const { return flat_grads_; }
  double current_lr() const;
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }
  const std::vector<Variable>& parameters() const { return params_; }

 private:
  std::vector<Variable> params_;
  std::vector<Tensor> m_, v_;  // slices of flat_m_, flat_v_ when flat
  std::vector<int64_t> offsets_;  // one per parameter, then the total
  Tensor flat_values_, flat_grads_, flat_m_, flat_v_;  // undefined unless every parameter is f32
  Tensor device_step_;  // one kernels::AdamDeviceStep, as bytes
  kernels::AdamConfig config_;
  double decay_;
  long long step_ = 0;
};

class Sgd {
 public:
  Sgd(std::vector<Variable> params, kernels::SgdConfig config);
  void step();
  long long steps() const { return step_; }

 private:
  std::vector<Variable> params_;
  std::vector<Tensor> buf_;
  kernels::SgdConfig config_;
  long long step_ = 0;
};

}  // namespace timbre
