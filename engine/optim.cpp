#include "engine/optim.h"

#include "engine/context.h"

namespace timbre {
namespace {
void check_params(const char* who, const std::vector<Variable>& params) {
  for (const Variable& p : params)
    if (!p.defined() || !p.requires_grad())
      throw ShapeError(std::string(who) + ": every parameter must be a Variable that requires a gradient");
}
}  // namespace

Adam::Adam(std::vector<Variable> params, kernels::AdamConfig config, double decay)
    : params_(std::move(params)), config_(config), decay_(decay) {
  check_params("Adam", params_);
  for (const Variable& p : params_) {
    m_.push_back(Tensor::zeros(p.value().shape(), p.value().dtype()));
    v_.push_back(Tensor::zeros(p.value().shape(), p.value().dtype()));
  }
}

double Adam::current_lr() const {
  return kernels::keras_decayed_lr(config_.lr, decay_, step_);
}

void Adam::step() {
  ++step_;
  kernels::AdamConfig c = config_;
  c.lr = kernels::keras_decayed_lr(config_.lr, decay_, step_ - 1);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    if (!g.defined()) continue;
    const Tensor& p = params_[i].value();
    if (p.dtype() == DType::f32)
      kernels::adam_step<float>(p.data<float>(), g.data<float>(), m_[i].data<float>(),
                                v_[i].data<float>(), p.numel(), c, step_, stream());
    else
      kernels::adam_step<double>(p.data<double>(), g.data<double>(), m_[i].data<double>(),
                                 v_[i].data<double>(), p.numel(), c, step_, stream());
  }
}

Sgd::Sgd(std::vector<Variable> params, kernels::SgdConfig config)
    : params_(std::move(params)), config_(config) {
  check_params("Sgd", params_);
  for (const Variable& p : params_)
    buf_.push_back(config_.momentum != 0 ? Tensor::empty(p.value().shape(), p.value().dtype())
                                         : Tensor());
}

void Sgd::step() {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    if (!g.defined()) continue;
    const Tensor& p = params_[i].value();
    if (p.dtype() == DType::f32)
      kernels::sgd_step<float>(p.data<float>(), g.data<float>(),
                               buf_[i].defined() ? buf_[i].data<float>() : nullptr, p.numel(),
                               config_, step_, stream());
    else
      kernels::sgd_step<double>(p.data<double>(), g.data<double>(),
                                buf_[i].defined() ? buf_[i].data<double>() : nullptr, p.numel(),
                                config_, step_, stream());
  }
}

}  // namespace timbre
