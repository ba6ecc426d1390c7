// Autograd: graph recording, topological order, accumulation over several
// uses, the no-grad scope, graph release and error messages.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/engine/gradcheck.h"
#include "tests/testing.h"

namespace {

using timbre::DType;
using timbre::Inputs;
using timbre::Shape;
using timbre::ShapeError;
using timbre::Tensor;
using timbre::Variable;
namespace ops = timbre::ops;

Tensor vec(std::vector<double> v) { return Tensor::from_host(Shape{int64_t(v.size())}, v); }

TEST(Autograd, LeafGradientsAndAccumulationOverUses) {
  Variable x(vec({0.5, -1.0, 2.0}), true);
  // y = tanh(x) + tanh(x): x is used twice, so dy/dx = 2 (1 - tanh^2 x).
  Variable t = ops::tanh(x);
  Variable y = ops::add(t, t);
  timbre::testing::weighted_sum(y, {1, 1, 1}).backward();
  const auto g = x.grad().to_host<double>();
  const double xs[] = {0.5, -1.0, 2.0};
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(g[size_t(i)], 2 * (1 - std::tanh(xs[i]) * std::tanh(xs[i])), 1e-14);
  // A second graph adds to the leaf's gradient; zero_grad forgets it.
  timbre::testing::weighted_sum(ops::tanh(x), {1, 1, 1}).backward();
  EXPECT_NEAR(x.grad().to_host<double>()[0], 3 * (1 - std::tanh(0.5) * std::tanh(0.5)), 1e-14);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, DiamondGraphVisitsEachNodeOnce) {
  // a -> b = sigmoid(a), c = tanh(b), d = relu-free sum b + c: b has two
  // consumers; its rule must run once, after both have contributed.
  Variable a(vec({0.3, -0.7}), true);
  Variable b = ops::sigmoid(a);
  Variable d = ops::add(b, ops::tanh(b));
  timbre::testing::weighted_sum(d, {1, 1}).backward();
  const auto g = a.grad().to_host<double>();
  for (int i = 0; i < 2; ++i) {
    const double av = i ? -0.7 : 0.3, s = 1 / (1 + std::exp(-av)), th = std::tanh(s);
    EXPECT_NEAR(g[size_t(i)], (1 + (1 - th * th)) * s * (1 - s), 1e-14);
  }
}

// The leaf hook (what a data-parallel step starts its gradient buckets
// from): once per leaf that requires a gradient and takes part, right after
// the last rule that adds to it, so the gradient it sees is the final one.
// x feeds the first op and the last (its last contribution comes late); w
// feeds one in the middle; `unused` is not in the graph.
TEST(Autograd, LeafHookFiresOnceAfterALeafsLastContribution) {
  Variable x(vec({0.5, -1.0, 2.0}), true), w(vec({0.25, 0.75, -0.5}), true);
  Variable unused(vec({1.0}), true);
  Variable c(vec({3.0, 1.0, -2.0}));  // a constant: no gradient, no call
  Variable y = ops::add(ops::sigmoid(ops::add(ops::add(ops::tanh(x), w), c)), x);
  std::vector<std::pair<const void*, std::vector<double>>> calls;
  timbre::testing::weighted_sum(y, {1, -2, 0.5}).backward([&](const Variable& leaf) {
    calls.emplace_back(leaf.id(), leaf.grad().to_host<double>());
  });
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].first, w.id()) << "w is done before x's first op is reached";
  EXPECT_EQ(calls[1].first, x.id());
  EXPECT_EQ(calls[0].second, w.grad().to_host<double>());
  EXPECT_EQ(calls[1].second, x.grad().to_host<double>()) << "x's gradient was not final at the call";
  EXPECT_FALSE(unused.grad().defined());
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Variable x(vec({1.0}), true);
  {
    timbre::NoGradGuard off;
    EXPECT_FALSE(timbre::grad_enabled());
    Variable y = ops::tanh(x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_THROW(y.backward(), ShapeError);
  }
  EXPECT_TRUE(timbre::grad_enabled());
  EXPECT_TRUE(ops::tanh(x).requires_grad());
}

TEST(Autograd, ConstantsGetNoGradient) {
  Variable x(vec({1.0, 2.0}), true), c(vec({3.0, 4.0}));  // c: no requires_grad
  timbre::testing::weighted_sum(ops::add(x, c), {1, 1}).backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, ErrorsAreClear) {
  Variable x(vec({1.0, 2.0}), true);
  Variable y = ops::tanh(x);
  try {
    y.backward();  // two elements, no seed
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("one element"), std::string::npos) << e.what();
  }
  Variable s = timbre::testing::weighted_sum(y, {1, 1});
  s.backward();
  try {
    s.backward();
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("released"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Variable(Tensor::zeros(Shape{2}, DType::i32), true), ShapeError);
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Variable x(vec({0.1}), true);
  Variable y = x;
  for (int i = 0; i < 20000; ++i) y = ops::add(y, x);  // y = 20001 x
  timbre::testing::weighted_sum(y, {1}).backward();
  EXPECT_DOUBLE_EQ(x.grad().to_host<double>()[0], 20001.0);
}

TEST(Autograd, DeepGraphWithoutBackwardIsFreedWithoutRecursion) {
  Variable x(vec({0.1}), true);
  {
    Variable y = x;
    for (int i = 0; i < 200000; ++i) y = ops::add(y, x);
  }  // destroying y unlinks 200000 nodes
  SUCCEED();
}

}  // namespace

namespace {

// y = x^2 elementwise on the host, with a deliberately wrong rule (3x
// instead of 2x): the gradient check must notice.
Variable square_with_wrong_rule(const Variable& x) {
  std::vector<double> v = x.value().to_host<double>();
  std::vector<double> y(v.size());
  for (size_t i = 0; i < v.size(); ++i) y[i] = v[i] * v[i];
  return Variable::from_op("wrong_square", Tensor::from_host(x.value().shape(), y), {x},
                           [v](const Tensor& dy, Inputs& in) {
                             std::vector<double> g = dy.to_host<double>();
                             for (size_t i = 0; i < g.size(); ++i) g[i] *= 3 * v[i];
                             bool acc;
                             Tensor& gx = in[0].grad_for_update(&acc);
                             gx.copy_from(Tensor::from_host(gx.shape(), g));
                           });
}

TEST(Gradcheck, CatchesAWrongRule) {
  const Tensor x = vec({0.5, -1.5, 2.0});
  EXPECT_FALSE(timbre::testing::gradcheck([](auto& in) { return square_with_wrong_rule(in[0]); }, {x}));
  EXPECT_TRUE(timbre::testing::gradcheck([](auto& in) { return ops::tanh(in[0]); }, {x}));
}

}  // namespace
