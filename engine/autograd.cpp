#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "kernels/profile.h"

namespace timbre {

struct Variable::Node {
  Tensor value;
  Tensor grad;
  Tensor grad_storage;  // where a bound leaf's gradient goes (bind_storage)
  bool requires_grad = false;
  const char* op = "leaf";
  Inputs inputs;        // empty for leaves and after backward
  BackwardFn backward;  // empty for leaves
  ~Node();
};

// Destroying the last reference to a long chain (a graph never passed to
// backward) would recurse once per node; unlink iteratively instead.
Variable::Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  auto take = [&](Inputs& in) {
    for (Variable& v : in)
      if (v.node_ && v.node_.use_count() == 1) pending.push_back(std::move(v.node_));
    in.clear();
  };
  take(inputs);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    take(n->inputs);
  }  // n is destroyed here, with no inputs left to recurse into
}

namespace {
thread_local bool t_grad_enabled = true;

// A trace group's label (kernels/profile.h), built only while tracing:
//   "forward conv2d (32, 1, 128, 128), (16, 1, 3, 3) -> (32, 16, 128, 128)"
//   "backward conv2d (32, 16, 128, 128) -> (32, 1, 128, 128), (16, 1, 3, 3)"
// (the gradient flows from the output's shape to the inputs').
std::string trace_label(bool backward, const char* op, const Inputs& inputs,
                        const Tensor& out) {
  std::string ins;
  for (const Variable& in : inputs)
    if (in.defined()) ins += (ins.empty() ? "" : ", ") + in.value().shape().str();
  const std::string o = out.shape().str();
  return std::string(backward ? "backward " : "forward ") + op + " " +
         (backward ? o + " -> " + ins : ins + " -> " + o);
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : saved_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = saved_; }

Variable::Variable(Tensor value, bool requires_grad) : node_(std::make_shared<Node>()) {
  if (requires_grad) check_float("Variable", value);
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
}

Variable Variable::from_op(const char* op, Tensor value, Inputs inputs, BackwardFn backward) {
  // The kernels the op launched before recording itself are its forward.
  if (kernels::profile::tracing())
    kernels::profile::mark(trace_label(false, op, inputs, value));
  Variable v(std::move(value));
  v.node_->op = op;
  bool any = false;
  for (const Variable& in : inputs) any |= in.defined() && in.requires_grad();
  if (any && t_grad_enabled) {
    v.node_->requires_grad = true;
    v.node_->inputs = std::move(inputs);
    v.node_->backward = std::move(backward);
  }
  return v;
}

const Tensor& Variable::value() const {
  if (!node_) throw ShapeError("Variable: used before being given a value");
  return node_->value;
}
bool Variable::requires_grad() const { return node_ && node_->requires_grad; }
const char* Variable::op() const { return node_ ? node_->op : "undefined"; }
const Tensor& Variable::grad() const {
  if (!node_) throw ShapeError("Variable: used before being given a value");
  return node_->grad;
}
void Variable::zero_grad() {
  if (node_) node_->grad = Tensor();
}

Tensor& Variable::grad_for_update(bool* accumulate) {
  Node& n = *node_;
  *accumulate = n.grad.defined();
  if (!n.grad.defined())
    n.grad = n.grad_storage.defined() ? n.grad_storage
                                      : Tensor::empty(n.value.shape(), n.value.dtype());
  return n.grad;
}

void Variable::bind_storage(const Tensor& value, const Tensor& grad) {
  Node& n = *node_;
  if (n.backward || std::string(n.op) != "leaf")
    throw ShapeError(std::string("bind_storage: ") + n.op + " is not a leaf");
  check_same_shape("bind_storage", n.value, value);
  check_same_shape("bind_storage", n.value, grad);
  Tensor v = value, g = grad;
  if (v.raw() != n.value.raw()) v.copy_from(n.value);
  n.value = v;
  n.grad_storage = g;
  if (n.grad.defined()) {  // a gradient already computed moves along
    if (g.raw() != n.grad.raw()) g.copy_from(n.grad);
    n.grad = g;
  }
}

void Variable::backward(const LeafHook& leaf_done) {
  if (value().numel() != 1)
    throw ShapeError(std::string("backward: without a seed the output must hold one element; ") +
                     op() + " gave " + value().str());
  backward(Tensor::full(value().shape(), 1.0, value().dtype()), leaf_done);
}

void Variable::backward(const Tensor& seed, const LeafHook& leaf_done) {
  check_same_shape("backward", value(), seed);
  if (!requires_grad())
    throw ShapeError(std::string("backward: ") + op() +
                     " does not depend on any Variable that requires a gradient");
  if (!node_->backward && std::string(node_->op) != "leaf")
    throw ShapeError(std::string("backward: the graph of ") + op() +
                     " was released by an earlier backward()");

  // Topological order by an iterative depth-first search (deep graphs, such
  // as a GRU unrolled over time, must not overflow the stack).
  // `order` owns its nodes: releasing a node's inputs below must not free a
  // node the walk has still to visit.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{node_, 0}};
  seen.insert(node_.get());
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      const std::shared_ptr<Node>& in = n->inputs[next++].node_;
      if (in && in->requires_grad && seen.insert(in.get()).second) stack.push_back({in, 0});
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }

  // For leaf_done: the leaves whose last contribution comes from the op at
  // each position of the walk below (outputs before inputs).
  std::vector<std::vector<std::shared_ptr<Node>>> finishes;
  if (leaf_done) {
    std::unordered_map<Node*, size_t> last;  // leaf -> position of its last consumer
    for (size_t k = 0; k < order.size(); ++k) {
      const Node& n = *order[order.size() - 1 - k];
      if (!n.backward) continue;
      for (const Variable& in : n.inputs)
        if (in.node_ && in.node_->requires_grad && !in.node_->backward) last[in.node_.get()] = k;
    }
    finishes.resize(order.size());
    for (const auto& n : order)  // in the walk's order, so the calls' order is the graph's
      if (auto it = last.find(n.get()); it != last.end()) finishes[it->second].push_back(n);
  }

  // Seed, then outputs before inputs.
  node_->grad = seed.clone();
  if (kernels::profile::tracing()) kernels::profile::mark("backward seed " + seed.shape().str());
  for (size_t k = 0; k < order.size(); ++k) {
    Node* n = order[order.size() - 1 - k].get();
    if (!n->backward) continue;  // a leaf
    if (n->grad.defined()) {
      n->backward(n->grad, n->inputs);
      if (kernels::profile::tracing())
        kernels::profile::mark(trace_label(true, n->op, n->inputs, n->grad));
    }
    // Release the graph as we go: activations and non-leaf gradients are
    // freed as soon as their gradients have been passed on.
    n->inputs.clear();
    n->backward = nullptr;
    n->grad = Tensor();
    if (leaf_done)
      for (const std::shared_ptr<Node>& leaf : finishes[k]) {
        Variable v;
        v.node_ = leaf;
        leaf_done(v);
      }
  }
}

}  // namespace timbre
