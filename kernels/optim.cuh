// optim: one optimiser step on one parameter tensor, in place. T is float
// (training) or double (tests). See docs/kernels/optim.md.
//
// Adam (Kingma & Ba 2015), step t = 1, 2, ... (the first update is t = 1),
// gradient g, state m and v (zero before the first step):
//   m = b1 m + (1 - b1) g
//   v = b2 v + (1 - b2) g^2
// then, in one of two forms that differ only in where eps goes:
//   pytorch (torch.optim.Adam):
//     p -= (lr / (1 - b1^t)) * (m / (sqrt(v) / sqrt(1 - b2^t) + eps))
//        = lr * mhat / (sqrt(vhat) + eps),  mhat = m/(1-b1^t), vhat = v/(1-b2^t)
//   keras (Keras 2 `Adam`, tf.keras optimizer_v1/v2, TF's ApplyAdam):
//     lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)
//     p -= lr_t * m / (sqrt(v) + eps)
//        = lr * mhat / (sqrt(vhat) + eps / sqrt(1 - b2^t))
// The Keras form is the PyTorch form with eps_t = eps / sqrt(1 - b2^t): 31.6
// eps at t = 1 with b2 = 0.999, tending to eps. Defaults differ too: PyTorch
// eps = 1e-8, Keras eps = K.epsilon() = 1e-7 (both lr 1e-3, betas 0.9,
// 0.999): pytorch_adam() and keras_adam() below.
// Keras 2's `decay` argument (inverse time decay) multiplies lr before the
// bias correction: lr / (1 + decay * iterations), iterations = updates
// already applied (t - 1); keras_decayed_lr() computes it on the host, and
// the caller passes the result as AdamConfig::lr.
//
// SGD with momentum, PyTorch's torch.optim.SGD (momentum mu, dampening tau):
//   mu = 0:   p -= lr g
//   else:     b = (t == 1) ? g : mu b + (1 - tau) g    (b: the momentum buffer)
//             d = nesterov ? g + mu b : b
//             p -= lr d
// Keras 2's SGD keeps v = mu v - lr g and p += v (nesterov: p += mu v - lr g):
// v = -lr b when lr is constant and tau = 0, so the two agree then; they
// differ when lr changes (Keras's velocity remembers past learning rates).
//
// The bias corrections and step sizes are computed in double, rounded once
// to T: on the host, or on the device by adam_advance (AdamDeviceStep, for
// steps replayed from a CUDA graph) with the same function. Every kernel is elementwise: one thread per element
// in a grid-stride loop, no barrier, no atomics, so the result is the same
// bits on every run and for every launch configuration. Weight decay,
// AMSGrad and gradient clipping are not here (the engine can add an L2
// term to the gradient with kernels::add before the step).
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

enum class AdamForm { pytorch, keras };

// "pytorch", "keras"; throws std::invalid_argument otherwise.
const char* adam_form_name(AdamForm f);

struct AdamConfig {
  double lr = 1e-3;     // >= 0
  double beta1 = 0.9;   // [0, 1)
  double beta2 = 0.999; // [0, 1)
  double eps = 1e-8;    // >= 0
  AdamForm form = AdamForm::pytorch;
};

// torch.optim.Adam's defaults (eps 1e-8) and Keras 2's (eps 1e-7).
inline AdamConfig pytorch_adam(double lr = 1e-3) {
  return AdamConfig{lr, 0.9, 0.999, 1e-8, AdamForm::pytorch};
}
inline AdamConfig keras_adam(double lr = 1e-3) {
  return AdamConfig{lr, 0.9, 0.999, 1e-7, AdamForm::keras};
}

// Keras 2's inverse time decay: lr / (1 + decay * iterations), where
// iterations = updates already applied (0 at the first step, so t - 1).
// decay >= 0, iterations >= 0.
double keras_decayed_lr(double lr, double decay, long long iterations);

struct SgdConfig {
  double lr = 0.01;        // >= 0 (Keras's default; PyTorch has none)
  double momentum = 0;     // >= 0; 0: plain SGD, no buffer
  double dampening = 0;    // applies from the second step on
  bool nesterov = false;   // needs momentum > 0 and dampening = 0 (as PyTorch)
};

// Launchers. n >= 0 (0 is a no-op); step >= 1; block a multiple of 32 in
// [32, 1024]. Arrays distinct, each n long; bad arguments throw
// std::invalid_argument.
//
// The finite check fused into an Adam launch (one pass over the gradient
// instead of a reduction per tensor and a copy back): every thread that
// reads a NaN or infinite gradient element i does
//   atomicMin(first_nonfinite, tag + i)
// so after the step *first_nonfinite holds the smallest such tag + i, or
// what the caller set it to. The trainer puts the step (within its log
// interval) in tag's high bits and the element's offset in the model's
// parameters in its low bits. Aggregate: AdamCheck{first_nonfinite, tag}.
// A step captured once in a CUDA graph and replayed keeps its arguments, so
// the step's index must be read from device memory: with `counted` set,
// the tag is tag + ((*counted - 1) << counted_shift) when the kernel runs,
// where *counted is a count of steps that includes this one
// (kernels::StepMetrics::steps, which the step's metrics launch advanced).
struct AdamCheck {
  unsigned long long* first_nonfinite = nullptr;  // device; null: no check
  unsigned long long tag = 0;                     // added to the element index
  const unsigned long long* counted = nullptr;    // device; null: none
  int counted_shift = 0;
};

// Adam: updates d_param, d_m, d_v in place from d_grad. The update is
// applied whatever the gradient holds (a non-finite one makes the parameter
// non-finite: the caller stops training when the check reports it).
template <class T>
void adam_step(T* d_param, const T* d_grad, T* d_m, T* d_v, long long n, const AdamConfig& c,
               long long step, cudaStream_t s, int block = 256, AdamCheck check = {});

// The step count on the device, for steps the host does not see one by one
// (a CUDA graph replays the same launches with the same arguments, so the
// step t and the scalars that follow from it cannot be arguments):
// adam_advance queues one thread that does t += 1 and computes, in double,
// the scalars of step t (the same formulas as the host's, with Keras's decay
// applied to lr with iterations = t - 1); the adam_step overload taking a
// d_step reads them when it runs. t starts at the steps already taken (0,
// or a checkpoint's count: the caller writes it).
struct AdamDeviceStep {
  long long t = 0;
  double a = 0;  // pytorch: lr / (1 - b1^t); keras: lr sqrt(1 - b2^t) / (1 - b1^t)
  double c = 1;  // pytorch: sqrt(1 - b2^t); keras: 1
};
void adam_advance(AdamDeviceStep* d_step, const AdamConfig& c, double decay, cudaStream_t s);
template <class T>
void adam_step(T* d_param, const T* d_grad, T* d_m, T* d_v, long long n, const AdamConfig& c,
               const AdamDeviceStep* d_step, cudaStream_t s, int block = 256,
               AdamCheck check = {});

// SGD: updates d_param and, with momentum, d_buf (null when momentum = 0).
// At step 1 the buffer is written, not read (it may hold anything).
template <class T>
void sgd_step(T* d_param, const T* d_grad, T* d_buf, long long n, const SgdConfig& c,
              long long step, cudaStream_t s, int block = 256);

// CPU references: the formulas above, one loop each, with the same host
// scalars as the launchers (computed in double, rounded to T).
template <class T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, long long n, const AdamConfig& c,
                   long long step);
template <class T>
void sgd_step_cpu(T* param, const T* grad, T* buf, long long n, const SgdConfig& c,
                  long long step);

// Work of one launch, for benchmarks. elem: 4 float, 8 double. sqrt and
// division count as one operation each.
Cost adam_step_cost(AdamForm form, long long n, int elem = 4);
Cost sgd_step_cost(const SgdConfig& c, long long n, int elem = 4);

}  // namespace timbre::kernels
