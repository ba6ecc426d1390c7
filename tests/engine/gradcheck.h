// gradcheck.h: finite-difference gradient checks in double.
//
//   EXPECT_TRUE(gradcheck([](const Inputs& x) { return ops::tanh(x[0]); }, {x0}));
//
// f maps leaf Variables (f64, requires_grad) to a Variable of any shape. The
// check reduces it to the scalar L = sum_i w_i f_i with fixed random weights
// w (so every output element matters), computes dL/dx by backward(), and
// compares each element with the central difference
//   (L(x + h e_k) - L(x - h e_k)) / 2h,   h = 1e-6 * max(1, |x_k|),
// whose truncation error is O(h^2 f''') and rounding error O(eps_64 / h),
// both ~1e-10 here: the default tolerance 1e-6 + 1e-5 |ref| leaves room for
// ops whose third derivatives are large, and still catches any wrong rule
// (those are off by O(1)). Inputs must stay away from kinks (relu at 0).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace timbre::testing {

// L = sum_i w_i x_i on the host: a test-only op with its own backward, so
// the check depends on no other op of the engine.
inline Variable weighted_sum(const Variable& x, const std::vector<double>& w) {
  const std::vector<double> xs = x.value().to_host<double>();
  double s = 0;
  for (size_t i = 0; i < xs.size(); ++i) s += w[i] * xs[i];
  Tensor out = Tensor::from_host(Shape{}, std::vector<double>{s});
  return Variable::from_op("weighted_sum", out, {x}, [w](const Tensor& dy, Inputs& in) {
    const double g = dy.to_host<double>()[0];
    bool acc;
    Tensor& gx = in[0].grad_for_update(&acc);
    std::vector<double> h = acc ? gx.to_host<double>() : std::vector<double>(w.size(), 0.0);
    for (size_t i = 0; i < h.size(); ++i) h[i] += g * w[i];
    gx.copy_from(Tensor::from_host(gx.shape(), h));
  });
}

struct GradcheckOptions {
  double atol = 1e-6, rtol = 1e-5;
  uint64_t seed = 99;
};

inline ::testing::AssertionResult gradcheck(
    const std::function<Variable(const std::vector<Variable>&)>& f,
    const std::vector<Tensor>& inputs, GradcheckOptions opt = {}) {
  std::vector<Variable> leaves;
  for (const Tensor& t : inputs) {
    if (t.dtype() != DType::f64)
      return ::testing::AssertionFailure() << "gradcheck needs f64 inputs, got " << t.str();
    leaves.emplace_back(t.clone(), true);
  }
  const Variable y0 = f(leaves);
  std::mt19937_64 g(opt.seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<double> w(size_t(y0.value().numel()));
  for (auto& v : w) v = (g() & 1 ? 1 : -1) * u(g);
  // Analytic: one backward through f and the weighting.
  std::vector<Variable> fresh;
  for (const Tensor& t : inputs) fresh.emplace_back(t.clone(), true);
  weighted_sum(f(fresh), w).backward();

  auto loss_at = [&](size_t which, const std::vector<double>& values) {
    NoGradGuard off;
    std::vector<Variable> xs;
    for (size_t i = 0; i < inputs.size(); ++i)
      xs.emplace_back(i == which ? Tensor::from_host(inputs[i].shape(), values) : inputs[i]);
    const std::vector<double> y = f(xs).value().to_host<double>();
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += w[i] * y[i];
    return s;
  };

  std::ostringstream bad;
  int nbad = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::vector<double> x = inputs[i].to_host<double>();
    if (!fresh[i].grad().defined())
      return ::testing::AssertionFailure() << "input " << i << " received no gradient";
    const std::vector<double> analytic = fresh[i].grad().to_host<double>();
    for (size_t k = 0; k < x.size(); ++k) {
      const double h = 1e-6 * std::max(1.0, std::fabs(x[k]));
      std::vector<double> xp = x, xm = x;
      xp[k] += h;
      xm[k] -= h;
      const double numeric = (loss_at(i, xp) - loss_at(i, xm)) / (2 * h);
      const double err = std::fabs(analytic[k] - numeric);
      if (!(err <= opt.atol + opt.rtol * std::fabs(numeric)) && nbad++ < 8)
        bad << "\n  input " << i << " [" << k << "]: backward " << analytic[k]
            << ", finite difference " << numeric << " (diff " << err << ")";
    }
  }
  if (nbad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << nbad << " gradient elements disagree" << bad.str();
}

}  // namespace timbre::testing
