// batchnorm: the training forward, the evaluation forward and the training
// backward, Keras's convention (eps 1e-3, momentum 0.99: the models'
// default), at every batch-norm site of the models, per sample: rescnn (and
// the parallel model's trunk) blocks 1-5, crnn blocks 1-4 (after pooling).
#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/batchnorm.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

using Site = BatchNormSite;  // the sites: kBatchNormSites (shapes.h)

enum class Op { forward_train, forward_eval, backward_train };
const char* op_name(Op op) {
  switch (op) {
    case Op::forward_train: return "forward_train";
    case Op::forward_eval: return "forward_eval";
    default: return "backward_train";
  }
}

const double kEps = k::kKerasBatchNormEps;
const k::BatchNormRunning kRunning = k::keras_running();

// x, dy (n*c*h*w), gamma, beta and running statistics (c, the variance
// positive); the backward reads what the training forward saved.
struct BatchNormRun : Run {
  Site site;
  Op op;
  int n;
  size_t count;
  std::vector<float> x, dy, gamma, beta, run_mean, run_var;
  DeviceBuffer<float> d_x, d_dy, d_gamma, d_beta, d_run_mean, d_run_var, d_y, d_mean, d_inv_std,
      d_dx, d_dgamma, d_dbeta;
  DeviceBuffer<double> d_work;
  BatchNormRun(const Site& s, Op o, int batch)
      : site(s), op(o), n(batch), count(size_t(batch) * s.c * s.h * s.w),
        x(random_values<float>(count, 21)), dy(random_values<float>(count, 22)),
        gamma(random_values<float>(size_t(s.c), 23, 0.5, 1.5)),
        beta(random_values<float>(size_t(s.c), 24)),
        run_mean(random_values<float>(size_t(s.c), 25, -0.5, 0.5)),
        run_var(random_values<float>(size_t(s.c), 26, 0.5, 1.5)), d_x(x), d_dy(dy),
        d_gamma(gamma), d_beta(beta), d_run_mean(run_mean), d_run_var(run_var), d_y(count),
        d_mean(size_t(s.c)), d_inv_std(size_t(s.c)), d_dx(count), d_dgamma(size_t(s.c)),
        d_dbeta(size_t(s.c)), d_work(size_t(k::batchnorm_workspace_size(s.c))) {
    if (op == Op::backward_train) forward_train(256);
  }
  k::BatchNormShape shape() const { return {n, site.c, site.h, site.w}; }
  void forward_train(int block) {
    k::batchnorm_forward_train<float>({d_x.get(), d_gamma.get(), d_beta.get(), d_y.get(),
                                       d_mean.get(), d_inv_std.get(), d_run_mean.get(),
                                       d_run_var.get()},
                                      shape(), kEps, kRunning, d_work.get(), nullptr, block);
  }
  void run(int block) override {
    switch (op) {
      case Op::forward_train:
        forward_train(block);
        ++runs;
        break;
      case Op::forward_eval:
        k::batchnorm_forward_eval<float>({d_x.get(), d_gamma.get(), d_beta.get(),
                                          d_run_mean.get(), d_run_var.get(), d_y.get()},
                                         shape(), kEps, nullptr, block);
        break;
      case Op::backward_train:
        k::batchnorm_backward_train<float>({d_x.get(), d_dy.get(), d_gamma.get(), d_mean.get(),
                                            d_inv_std.get(), d_dx.get(), d_dgamma.get(),
                                            d_dbeta.get()},
                                           shape(), k::BatchNormAccumulate{}, d_work.get(),
                                           nullptr, block);
        break;
    }
  }
  // The references, computed once (forward_train's running statistics
  // follow the device's: one CPU update per run so far).
  std::vector<float> ref_y, ref_mean, ref_inv_std, ref_rm, ref_rv, ref_dx, ref_dgamma, ref_dbeta;
  int runs = 0, ref_runs = 0;
  void forward_train_cpu() {
    k::batchnorm_forward_train_cpu<float>({x.data(), gamma.data(), beta.data(), ref_y.data(),
                                           ref_mean.data(), ref_inv_std.data(), ref_rm.data(),
                                           ref_rv.data()},
                                          shape(), kEps, kRunning);
  }
  std::string check() override {
    const size_t cs = gamma.size();
    if (op == Op::forward_eval) {
      if (ref_y.empty()) {
        ref_y.resize(count);
        k::batchnorm_forward_eval_cpu<float>(
            {x.data(), gamma.data(), beta.data(), run_mean.data(), run_var.data(), ref_y.data()},
            shape(), kEps);
      }
      // y = x*scale + shift in float against the double formula: a few ulps of |y|.
      return compare(d_y.to_host(), widen(ref_y), 1e-5);
    }
    if (ref_y.empty()) {
      ref_y.resize(count), ref_mean.resize(cs), ref_inv_std.resize(cs);
      ref_rm = run_mean, ref_rv = run_var;
      forward_train_cpu();
      ref_runs = 1;
    }
    if (op == Op::forward_train) {
      // Every run moves the running statistics (in place): replay as many.
      for (; ref_runs < runs; ++ref_runs)
        forward_train_cpu();
      // The statistics are double sums rounded once to float (an ulp at most);
      // y is normalised in float from them (a few ulps of |y|); the running
      // statistics are one double update of the float values, rounded.
      std::string e = compare(d_y.to_host(), widen(ref_y), 1e-5);
      if (e.empty()) e = compare(d_mean.to_host(), widen(ref_mean), 1e-6);
      if (e.empty()) e = compare(d_inv_std.to_host(), widen(ref_inv_std), 1e-6);
      if (e.empty()) e = compare(d_run_mean.to_host(), widen(ref_rm), 1e-6);
      if (e.empty()) e = compare(d_run_var.to_host(), widen(ref_rv), 1e-6);
      return e;
    }
    if (ref_dx.empty()) {
      ref_dx.resize(count), ref_dgamma.resize(cs), ref_dbeta.resize(cs);
      k::batchnorm_backward_train_cpu<float>({x.data(), dy.data(), gamma.data(), ref_mean.data(),
                                              ref_inv_std.data(), ref_dx.data(),
                                              ref_dgamma.data(), ref_dbeta.data()},
                                             shape(), k::BatchNormAccumulate{});
    }
    // dx = a (M g - dbeta - xhat dgamma) / M: float arithmetic on the double
    // sums, a few ulps of the larger terms; dgamma, dbeta: double sums
    // rounded once (but the device's xhat comes from the float saved
    // statistics: relative 1e-6).
    std::string e = compare(d_dx.to_host(), widen(ref_dx), 1e-5);
    if (e.empty()) e = compare(d_dgamma.to_host(), widen(ref_dgamma), 1e-5);
    if (e.empty()) e = compare(d_dbeta.to_host(), widen(ref_dbeta), 1e-6);
    return e;
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(batchnorm) {
  using namespace timbre::lab;
  for (const Site& s : kBatchNormSites)
    for (Op op : {Op::forward_train, Op::forward_eval, Op::backward_train})
      add({"batchnorm", op_name(op), s.shape,
           [s, op](int b) {
             switch (op) {
               case Op::forward_train: return k::batchnorm_forward_train_cost(b, s.c, s.h, s.w);
               case Op::forward_eval: return k::batchnorm_forward_eval_cost(b, s.c, s.h, s.w);
               default: return k::batchnorm_backward_train_cost(b, s.c, s.h, s.w, false);
             }
           },
           block_sweep(), [s, op](int b) { return std::make_unique<BatchNormRun>(s, op, b); }});
}
