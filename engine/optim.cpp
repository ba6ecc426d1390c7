#include "engine/optim.h"

#include <algorithm>

#include "engine/context.h"
#include "kernels/cuda_check.h"
#include "kernels/profile.h"

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
  device_step_ = Tensor::empty(Shape{int64_t(sizeof(kernels::AdamDeviceStep) / 4)}, DType::i32);
  set_steps(0);
  constexpr int64_t kAlign = 64;  // elements: 256 bytes of float
  bool all_f32 = !params_.empty();
  offsets_.push_back(0);
  for (const Variable& p : params_) {
    all_f32 &= p.value().dtype() == DType::f32;
    offsets_.push_back(offsets_.back() + (p.value().numel() + kAlign - 1) / kAlign * kAlign);
  }
  if (all_f32) {
    const Shape flat{offsets_.back()};
    flat_values_ = Tensor::zeros(flat);
    flat_grads_ = Tensor::zeros(flat);
    flat_m_ = Tensor::zeros(flat);
    flat_v_ = Tensor::zeros(flat);
    for (size_t i = 0; i < params_.size(); ++i) {
      const Shape& s = params_[i].value().shape();
      params_[i].bind_storage(flat_values_.slice(offsets_[i], s), flat_grads_.slice(offsets_[i], s));
      m_.push_back(flat_m_.slice(offsets_[i], s));
      v_.push_back(flat_v_.slice(offsets_[i], s));
    }
  } else {
    for (const Variable& p : params_) {
      m_.push_back(Tensor::zeros(p.value().shape(), p.value().dtype()));
      v_.push_back(Tensor::zeros(p.value().shape(), p.value().dtype()));
    }
  }
}

int Adam::parameter_at(int64_t element) const {
  if (element < 0 || element >= offsets_.back()) return -1;
  const auto it = std::upper_bound(offsets_.begin(), offsets_.end(), element);
  const int i = int(it - offsets_.begin()) - 1;
  return element < offsets_[size_t(i)] + params_[size_t(i)].value().numel() ? i : -1;
}

double Adam::current_lr() const {
  return kernels::keras_decayed_lr(config_.lr, decay_, step_);
}

void Adam::set_steps(long long s) {
  step_ = s;
  kernels::AdamDeviceStep h;
  h.t = s;
  kernels::profile::record_copy(kernels::profile::Copy::h2d, sizeof h, true);
  CUDA_CHECK(cudaMemcpy(device_step_.raw(), &h, sizeof h, cudaMemcpyHostToDevice));
}

void Adam::step(kernels::AdamCheck check) {
  ++step_;
  const kernels::AdamConfig& c = config_;
  auto* st = static_cast<kernels::AdamDeviceStep*>(device_step_.raw());
  kernels::adam_advance(st, c, decay_, stream());
  // One launch over the flat buffers when every parameter has its gradient
  // in its bound slice (and another Adam has not re-laid them out since).
  bool whole = is_flat();
  for (size_t i = 0; whole && i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    whole = g.defined() && g.raw() == flat_grads_.slice(offsets_[i], g.shape()).raw() &&
            params_[i].value().raw() == flat_values_.slice(offsets_[i], g.shape()).raw();
  }
  if (whole) {
    kernels::adam_step<float>(flat_values_.data<float>(), flat_grads_.data<float>(),
                              flat_m_.data<float>(), flat_v_.data<float>(), flat_values_.numel(),
                              c, st, stream(), 256, check);
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    if (!g.defined()) continue;
    const Tensor& p = params_[i].value();
    kernels::AdamCheck ci = check;
    ci.tag += (unsigned long long)offsets_[i];
    if (p.dtype() == DType::f32)
      kernels::adam_step<float>(p.data<float>(), g.data<float>(), m_[i].data<float>(),
                                v_[i].data<float>(), p.numel(), c, st, stream(), 256, ci);
    else
      kernels::adam_step<double>(p.data<double>(), g.data<double>(), m_[i].data<double>(),
                                 v_[i].data<double>(), p.numel(), c, st, stream(), 256, ci);
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
