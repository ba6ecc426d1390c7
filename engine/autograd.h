// autograd.h: define-by-run reverse-mode differentiation.
//
// A Variable is a Tensor (its value) plus, when it takes part in gradient
// computation, a node of the graph: the Variables it was computed from and a
// backward rule. Ops (engine/ops.h) build the graph as they run:
//
//   Variable y = ops::tanh(x);
//   // inside ops::tanh:
//   //   Tensor out = ...forward kernel...;
//   //   return Variable::from_op("tanh", out, {x}, [out](const Tensor& dy, Inputs& in) {
//   //     ...backward kernel: in[0]'s gradient += dy * (1 - out^2)...
//   //   });
//
// y.backward() seeds dL/dy = 1 (y must hold one element), sorts the graph
// topologically once and walks it in reverse, calling each node's rule with
// the gradient of its output. Rules add into their inputs' gradients
// (Variable::grad_for_update), so a Variable used twice receives the sum.
// Leaves created with requires_grad (parameters) keep their gradient; the
// graph itself, and the gradients of non-leaf Variables, are released during
// the walk (a second backward() through it is an error). Under a NoGradGuard, ops record
// nothing (evaluation).
//
// Every derivative rule lives next to its forward in engine/ops.cpp.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace timbre {

class Variable;
using Inputs = std::vector<Variable>;
// Receives the gradient of the op's output; adds into the inputs' gradients.
using BackwardFn = std::function<void(const Tensor& grad_output, Inputs& inputs)>;

class Variable {
 public:
  Variable() = default;
  // A leaf. requires_grad: backward() computes its gradient (parameters).
  explicit Variable(Tensor value, bool requires_grad = false);

  // The result of an op. Records the inputs and the rule unless gradients
  // are off (NoGradGuard) or no input requires a gradient.
  static Variable from_op(const char* op, Tensor value, Inputs inputs, BackwardFn backward);

  const Tensor& value() const;
  bool defined() const { return node_ != nullptr; }
  bool requires_grad() const;
  const char* op() const;  // "leaf" for leaves

  // The accumulated gradient; undefined until backward reaches this Variable.
  const Tensor& grad() const;
  void zero_grad();  // forgets the gradient (the next backward assigns)

  // Parameters laid out contiguously (Adam, engine/optim.h): this leaf's
  // data is copied into `value`, which becomes its value, and from then on
  // its gradient is written into `grad` instead of a fresh tensor per step.
  // Both must have the leaf's shape and dtype (slices of flat buffers).
  void bind_storage(const Tensor& value, const Tensor& grad);

  // For backward rules: the gradient tensor to update and whether to add to
  // it (true) or assign (false, first contribution: the tensor is freshly
  // allocated and uninitialised).
  Tensor& grad_for_update(bool* accumulate);

  // Called by backward once for each leaf that requires a gradient, as
  // soon as no op left in the graph adds to that gradient: from then on
  // the gradient's tensor holds its final value (once the work queued on
  // the stream so far has run). A data-parallel step starts the all-reduce
  // of a bucket of gradients there, overlapping the rest of the backward
  // pass (engine/distributed.h, GradientBuckets).
  using LeafHook = std::function<void(const Variable& leaf)>;

  // dL/d(this) for a one-element Variable: seeds 1 and runs the graph.
  void backward(const LeafHook& leaf_done = {});
  // Same with an explicit seed of this Variable's shape.
  void backward(const Tensor& seed, const LeafHook& leaf_done = {});

  // Whether two handles name the same Variable (a map key for leaves).
  const void* id() const { return node_.get(); }

 private:
  struct Node;
  std::shared_ptr<Node> node_;
};

// Turns graph recording off for the scope (evaluation, optimiser steps).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool saved_;
};
bool grad_enabled();

}  // namespace timbre
