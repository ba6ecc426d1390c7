// optim.h: optimisers over a module's parameters (kernels/optim.cuh).
//
//   Adam adam(model.parameters(), kernels::keras_adam(1e-3), /*decay=*/0);
//   loss.backward();
//   adam.step();        // one elementwise kernel per parameter tensor
//   model.zero_grad();
//
// Parameters without a gradient (unused in this step) are skipped. The state
// (step count, first and second moments) is exposed for checkpoints.
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
  void step();
  long long steps() const { return step_; }
  void set_steps(long long s) { step_ = s; }
  double current_lr() const;
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }
  const std::vector<Variable>& parameters() const { return params_; }

 private:
  std::vector<Variable> params_;
  std::vector<Tensor> m_, v_;
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
