// module.h: the unit models are built from. A Module owns named parameters
// (leaf Variables that require gradients) and child modules, and knows
// whether it is training (dropout active, batch statistics in batch norm)
// or evaluating. Names are dotted paths, "block1.conv1.weight", in
// registration order: the keys of checkpoints.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"

namespace timbre {

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter of this module and its children, depth first.
  std::vector<std::pair<std::string, Variable>> named_parameters() const;
  std::vector<Variable> parameters() const;
  // Non-trainable state saved with the parameters (running statistics).
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  int64_t parameter_count() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  void zero_grad();
  // Calls f on this module, then on every descendant, depth first in
  // registration order (PyTorch's Module.apply).
  void apply(const std::function<void(Module&)>& f);

 protected:
  // Return handles that share the registered value (a Variable and a Tensor
  // are references to their data), so modules keep them as members.
  Variable register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Variable>>* p,
               std::vector<std::pair<std::string, Tensor>>* b) const;
  std::vector<std::pair<std::string, Variable>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace timbre
