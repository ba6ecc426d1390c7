#include "engine/module.h"

namespace timbre {

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Variable>>* p,
                     std::vector<std::pair<std::string, Tensor>>* b) const {
  if (p)
    for (const auto& [name, v] : params_) p->emplace_back(prefix + name, v);
  if (b)
    for (const auto& [name, t] : buffers_) b->emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", p, b);
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Variable>> out;
  collect("", &out, nullptr);
  return out;
}

std::vector<Variable> Module::parameters() const {
  std::vector<Variable> out;
  for (auto& [name, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", nullptr, &out);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, v] : named_parameters()) n += v.value().numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::apply(const std::function<void(Module&)>& f) {
  f(*this);
  for (auto& [name, child] : children_) child->apply(f);
}

void Module::zero_grad() {
  for (auto& [name, v] : named_parameters()) v.zero_grad();
}

Variable Module::register_parameter(const std::string& name, Tensor value) {
  for (auto& [n, v] : params_)
    if (n == name) throw ShapeError("register_parameter: '" + name + "' registered twice");
  params_.emplace_back(name, Variable(std::move(value), true));
  return params_.back().second;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, std::move(value));
  return buffers_.back().second;
}

}  // namespace timbre
