#include "kernels/common.cuh"

#include "kernels/optim.cuh"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/activation.cuh"  // max_grid_threads()
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

namespace {

// ---------------------------------------------------------------------------
// Kernels. One thread per element in a grid-stride loop (thread t of G
// handles t, t + G, ...): every array is read and written coalesced, each
// element by one thread, so there is no barrier (simcuda's fast path), no
// atomic, and no order in which results could differ.

// Adam, either form (a compile-time choice). a: the step size (pytorch:
// lr / (1 - b1^t); keras: lr_t); c: sqrt(1 - b2^t) (pytorch only).
// check: the fused finite check (AdamCheck); gi - gi is 0 for every finite
// gi and NaN for NaN and infinities.
// st: the step's scalars on the device (AdamDeviceStep), read once per
// thread instead of a and c; the check's step count likewise.
template <class T, AdamForm F>
__global__ void adam_kernel(T* p, const T* g, T* m, T* v, long long n, T b1, T omb1, T b2,
                            T omb2, T a, T c, T eps, const AdamDeviceStep* st,
                            AdamCheck check) {
  if (st != nullptr) a = T(st->a), c = T(st->c);
  const unsigned long long tag =
      check.tag + (check.counted != nullptr ? (*check.counted - 1) << check.counted_shift : 0ull);
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const T gi = g[i];
    if (check.first_nonfinite != nullptr && !(gi - gi == T(0)))
      atomicMin(check.first_nonfinite, tag + (unsigned long long)i);
    const T mi = b1 * m[i] + omb1 * gi;
    const T vi = b2 * v[i] + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (F == AdamForm::pytorch) {
      p[i] = p[i] - a * (mi / (sqrt_of(vi) / c + eps));
    } else {
      p[i] = p[i] - a * mi / (sqrt_of(vi) + eps);
    }
  }
}

// SGD. momentum = 0: buf is not touched (may be null). first: the buffer
// is set to g, not read.
template <class T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, long long n, T lr, T momentum,
                           T one_minus_dampening, bool use_momentum, bool first,
                           bool nesterov) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const T gi = g[i];
    T d = gi;
    if (use_momentum) {
      const T b = first ? gi : momentum * buf[i] + one_minus_dampening * gi;
      buf[i] = b;
      d = nesterov ? gi + momentum * b : b;
    }
    p[i] = p[i] - lr * d;
  }
}

// The per-step scalars of Adam, in double: the host's and the device's
// (adam_advance_kernel) are this one function.
struct AdamScalars {
  double a;  // pytorch: lr / (1 - b1^t); keras: lr sqrt(1 - b2^t) / (1 - b1^t)
  double c;  // pytorch: sqrt(1 - b2^t); keras: 1 (unused)
};

__host__ __device__ inline AdamScalars adam_scalars_of(double lr, double beta1, double beta2,
                                                       bool pytorch, long long step) {
  const double t = double(step);
  const double bias1 = 1 - pow(beta1, t);
  const double bias2_sqrt = sqrt(1 - pow(beta2, t));
  if (pytorch) return {lr / bias1, bias2_sqrt};
  return {lr * bias2_sqrt / bias1, 1.0};
}

// Keras's decay as keras_decayed_lr computes it.
__host__ __device__ inline double decayed_lr_of(double lr, double decay, long long iterations) {
  return lr * (1.0 / (1.0 + decay * double(iterations)));
}

// One thread: the next step's count and scalars (AdamDeviceStep).
__global__ void adam_advance_kernel(AdamDeviceStep* st, double lr, double decay, double beta1,
                                    double beta2, bool pytorch) {
  const long long t = st->t + 1;
  const AdamScalars k = adam_scalars_of(decayed_lr_of(lr, decay, t - 1), beta1, beta2, pytorch, t);
  st->t = t;
  st->a = k.a;
  st->c = k.c;
}

// ---------------------------------------------------------------------------
// Host scalars and argument checks.

void check_step(const char* op, long long step) {
  if (step < 1)
    throw std::invalid_argument(std::string(op) +
                                ": step must be >= 1 (the first update is 1), not " +
                                std::to_string(step));
}

void check_nonnegative(const char* op, const char* name, double x) {
  if (!(x >= 0) || !std::isfinite(x))
    throw std::invalid_argument(std::string(op) + ": " + name + " must be finite and >= 0, not " +
                                std::to_string(x));
}

void check_adam(const char* op, const AdamConfig& c) {
  check_nonnegative(op, "lr", c.lr);
  check_nonnegative(op, "eps", c.eps);
  if (!(c.beta1 >= 0 && c.beta1 < 1))
    throw std::invalid_argument(std::string(op) + ": beta1 must be in [0, 1), not " +
                                std::to_string(c.beta1));
  if (!(c.beta2 >= 0 && c.beta2 < 1))
    throw std::invalid_argument(std::string(op) + ": beta2 must be in [0, 1), not " +
                                std::to_string(c.beta2));
  adam_form_name(c.form);  // throws for an unknown form
}

void check_sgd(const char* op, const SgdConfig& c) {
  check_nonnegative(op, "lr", c.lr);
  check_nonnegative(op, "momentum", c.momentum);
  if (!std::isfinite(c.dampening))
    throw std::invalid_argument(std::string(op) + ": dampening must be finite, not " +
                                std::to_string(c.dampening));
  if (c.nesterov && (c.momentum <= 0 || c.dampening != 0))
    throw std::invalid_argument(std::string(op) +
                                ": nesterov needs momentum > 0 and dampening = 0");
}

AdamScalars adam_scalars(const AdamConfig& c, long long step) {
  return adam_scalars_of(c.lr, c.beta1, c.beta2, c.form == AdamForm::pytorch, step);
}

}  // namespace

const char* adam_form_name(AdamForm f) {
  switch (f) {
    case AdamForm::pytorch: return "pytorch";
    case AdamForm::keras: return "keras";
  }
  throw std::invalid_argument("unknown Adam form " + std::to_string(int(f)));
}

double keras_decayed_lr(double lr, double decay, long long iterations) {
  const char* op = "keras_decayed_lr";
  check_nonnegative(op, "lr", lr);
  check_nonnegative(op, "decay", decay);
  if (iterations < 0)
    throw std::invalid_argument(std::string(op) + ": iterations must be >= 0, not " +
                                std::to_string(iterations));
  return decayed_lr_of(lr, decay, iterations);
}

// ---------------------------------------------------------------------------
// Launchers.
namespace {
// Both adam_step overloads: the scalars k, or those of *d_step when set.
template <class T>
void launch_adam(T* d_param, const T* d_grad, T* d_m, T* d_v, long long n, const AdamConfig& c,
                 AdamScalars k, const AdamDeviceStep* d_step, cudaStream_t s, int block,
                 AdamCheck check) {
  const char* op = "adam_step";
  check_pointer(op, d_param, "d_param");
  check_pointer(op, d_grad, "d_grad");
  check_pointer(op, d_m, "d_m");
  check_pointer(op, d_v, "d_v");
  const unsigned grid = blocks_for(n, block);
  if (c.form == AdamForm::pytorch)
    LAUNCH((adam_kernel<T, AdamForm::pytorch>), grid, block, 0, s, d_param, d_grad, d_m, d_v,
           n, T(c.beta1), T(1 - c.beta1), T(c.beta2), T(1 - c.beta2), T(k.a), T(k.c),
           T(c.eps), d_step, check);
  else
    LAUNCH((adam_kernel<T, AdamForm::keras>), grid, block, 0, s, d_param, d_grad, d_m, d_v, n,
           T(c.beta1), T(1 - c.beta1), T(c.beta2), T(1 - c.beta2), T(k.a), T(k.c), T(c.eps),
           d_step, check);
}
}  // namespace

template <class T>
void adam_step(T* d_param, const T* d_grad, T* d_m, T* d_v, long long n, const AdamConfig& c,
               long long step, cudaStream_t s, int block, AdamCheck check) {
  const char* op = "adam_step";
  check_size_and_block(op, n, block);
  check_adam(op, c);
  check_step(op, step);
  if (n == 0) return;
  launch_adam(d_param, d_grad, d_m, d_v, n, c, adam_scalars(c, step), nullptr, s, block, check);
}

template <class T>
void adam_step(T* d_param, const T* d_grad, T* d_m, T* d_v, long long n, const AdamConfig& c,
               const AdamDeviceStep* d_step, cudaStream_t s, int block, AdamCheck check) {
  const char* op = "adam_step";
  check_size_and_block(op, n, block);
  check_adam(op, c);
  if (n == 0) return;
  check_pointer(op, d_step, "d_step");
  launch_adam(d_param, d_grad, d_m, d_v, n, c, AdamScalars{0, 1}, d_step, s, block, check);
}

void adam_advance(AdamDeviceStep* d_step, const AdamConfig& c, double decay, cudaStream_t s) {
  const char* op = "adam_advance";
  check_adam(op, c);
  check_nonnegative(op, "decay", decay);
  check_pointer(op, d_step, "d_step");
  LAUNCH(adam_advance_kernel, 1, 1, 0, s, d_step, c.lr, decay, c.beta1, c.beta2,
         c.form == AdamForm::pytorch);
}

template <class T>
void sgd_step(T* d_param, const T* d_grad, T* d_buf, long long n, const SgdConfig& c,
              long long step, cudaStream_t s, int block) {
  const char* op = "sgd_step";
  check_size_and_block(op, n, block);
  check_sgd(op, c);
  check_step(op, step);
  if (n == 0) return;
  check_pointer(op, d_param, "d_param");
  check_pointer(op, d_grad, "d_grad");
  const bool use_momentum = c.momentum != 0;
  if (use_momentum) check_pointer(op, d_buf, "d_buf");
  LAUNCH(sgd_kernel<T>, blocks_for(n, block), block, 0, s, d_param, d_grad, d_buf, n, T(c.lr),
         T(c.momentum), T(1 - c.dampening), use_momentum, step == 1, c.nesterov);
}

// ---------------------------------------------------------------------------
// CPU references.
template <class T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, long long n, const AdamConfig& c,
                   long long step) {
  const char* op = "adam_step_cpu";
  check_adam(op, c);
  check_step(op, step);
  const AdamScalars k = adam_scalars(c, step);
  const T b1 = T(c.beta1), b2 = T(c.beta2), omb1 = T(1 - c.beta1), omb2 = T(1 - c.beta2);
  const T a = T(k.a), bias2_sqrt = T(k.c), eps = T(c.eps);
  for (long long i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + omb1 * grad[i];
    v[i] = b2 * v[i] + omb2 * grad[i] * grad[i];
    if (c.form == AdamForm::pytorch)
      param[i] -= a * (m[i] / (std::sqrt(v[i]) / bias2_sqrt + eps));
    else
      param[i] -= a * m[i] / (std::sqrt(v[i]) + eps);
  }
}

template <class T>
void sgd_step_cpu(T* param, const T* grad, T* buf, long long n, const SgdConfig& c,
                  long long step) {
  const char* op = "sgd_step_cpu";
  check_sgd(op, c);
  check_step(op, step);
  const T lr = T(c.lr), mu = T(c.momentum), omd = T(1 - c.dampening);
  for (long long i = 0; i < n; ++i) {
    T d = grad[i];
    if (c.momentum != 0) {
      buf[i] = step == 1 ? grad[i] : mu * buf[i] + omd * grad[i];
      d = c.nesterov ? grad[i] + mu * buf[i] : buf[i];
    }
    param[i] -= lr * d;
  }
}

// ---------------------------------------------------------------------------
// Costs. Adam per element: m (2 multiplies, 1 add), v (3 multiplies, 1 add),
// sqrt, then pytorch: divide, add eps, divide, multiply, subtract (5);
// keras: add eps, multiply, divide, subtract (4). Reads p, g, m, v; writes
// p, m, v. SGD: p -= lr d (2); momentum: buffer 3 (2 on the first step,
// counted as later steps), nesterov +2; reads p, g (+ buf), writes p (+ buf).
Cost adam_step_cost(AdamForm form, long long n, int elem) {
  const double flops = 3 + 4 + 1 + (form == AdamForm::pytorch ? 5 : 4);
  return elementwise_cost(double(n), 4, 3, flops, elem);
}

Cost sgd_step_cost(const SgdConfig& c, long long n, int elem) {
  const bool mom = c.momentum != 0;
  const double flops = 2 + (mom ? 3 : 0) + (mom && c.nesterov ? 2 : 0);
  return elementwise_cost(double(n), 2 + mom, 1 + mom, flops, elem);
}

// ---------------------------------------------------------------------------
#define TIMBRE_OPTIM_INSTANTIATE(T)                                                          \
  template void adam_step<T>(T*, const T*, T*, T*, long long, const AdamConfig&, long long,  \
                             cudaStream_t, int, AdamCheck);                                  \
  template void adam_step<T>(T*, const T*, T*, T*, long long, const AdamConfig&,             \
                             const AdamDeviceStep*, cudaStream_t, int, AdamCheck);           \
  template void sgd_step<T>(T*, const T*, T*, long long, const SgdConfig&, long long,        \
                            cudaStream_t, int);                                              \
  template void adam_step_cpu<T>(T*, const T*, T*, T*, long long, const AdamConfig&,         \
                                 long long);                                                 \
  template void sgd_step_cpu<T>(T*, const T*, T*, long long, const SgdConfig&, long long);

TIMBRE_OPTIM_INSTANTIATE(float)
TIMBRE_OPTIM_INSTANTIATE(double)

#undef TIMBRE_OPTIM_INSTANTIATE

}  // namespace timbre::kernels
