// Dropout, initialisers and optimisers through the engine, and ten Adam
// steps of a small classifier against PyTorch.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/module.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "tests/engine/gradcheck.h"
#include "tests/fixtures/npy.h"
#include "tests/testing.h"

namespace {

using timbre::DType;
using timbre::Generator;
using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
namespace ops = timbre::ops;

Tensor fixture(const std::string& name) {
  const auto a = timbre::testing::load_npy(timbre::testing::fixtures_dir() + "/engine/adam_mlp/" +
                                           name + ".npy");
  if (a.dtype == "<i4") return Tensor::from_host(Shape(a.shape), a.as<int32_t>());
  return Tensor::from_host(Shape(a.shape), a.as<float>());
}

TEST(Dropout, GradientAndReproducibility) {
  const auto v = timbre::testing::random_floats(3 * 5 * 7, 1);
  const Tensor x = Tensor::from_host(Shape{3, 5, 7}, std::vector<double>(v.begin(), v.end()));
  // A generator made inside f: every evaluation draws the same mask.
  EXPECT_TRUE(timbre::testing::gradcheck(
      [](auto& in) {
        Generator g(7);
        return ops::dropout(in[0], 0.3, true, g);
      },
      {x}));
  Generator a(11), b(11), c(12);
  Variable xv(x);
  const auto ya = ops::dropout(xv, 0.5, true, a).value().to_host<double>();
  EXPECT_EQ(ya, ops::dropout(xv, 0.5, true, b).value().to_host<double>());
  EXPECT_NE(ya, ops::dropout(xv, 0.5, true, c).value().to_host<double>());
  EXPECT_NE(ya, ops::dropout(xv, 0.5, true, a).value().to_host<double>()) << "a advanced";
  int dropped = 0;
  for (size_t i = 0; i < ya.size(); ++i) {
    if (ya[i] == 0) ++dropped;
    else EXPECT_DOUBLE_EQ(ya[i], 2 * double(v[i]));
  }
  EXPECT_GT(dropped, 20);  // 105 draws at p = 0.5: 52 +- 5
  EXPECT_LT(dropped, 85);
  // Evaluation and p = 0 are the identity (the same Variable).
  EXPECT_EQ(ops::dropout(xv, 0.5, false, a).value().raw(), x.raw());
  EXPECT_THROW(ops::dropout(xv, 1.0, true, a), timbre::ShapeError);
}

TEST(Initialisers, RangesAndReproducibility) {
  Generator g(3);
  Tensor w = Tensor::empty(Shape{64, 32, 3, 3});  // fan_in 288, fan_out 576
  g.glorot_uniform(w);
  const auto h = w.to_host<float>();
  const double limit = std::sqrt(6.0 / (288 + 576));
  for (float x : h) ASSERT_LE(std::fabs(x), limit);
  Generator same(3);
  Tensor w2 = Tensor::empty(Shape{64, 32, 3, 3});
  same.glorot_uniform(w2);
  EXPECT_EQ(w2.to_host<float>(), h);
  Tensor q = Tensor::empty(Shape{96, 32}, DType::f64);  // recurrent weights: 3 gates x 32
  g.orthogonal(q);
  const auto qh = q.to_host<double>();
  // Columns are orthonormal (rows > cols): Q^T Q = I.
  for (int i = 0; i < 32; ++i)
    for (int j = 0; j < 32; ++j) {
      double dot = 0;
      for (int r = 0; r < 96; ++r) dot += qh[r * 32 + i] * qh[r * 32 + j];
      ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-12);
    }
}

// linear -> tanh -> linear -> cross-entropy, ten Adam steps from PyTorch's
// initial weights on PyTorch's batch. The loss before each step must match
// within 1e-5 relative (float32 sums in different orders drift by a few ulp
// per step); the final weights within 1e-4 of their scale (ten updates of
// lr 1e-2 amplify the drift through Adam's normalisation of small moments).
TEST(Training, TenAdamStepsMatchPyTorch) {
  std::vector<Variable> p;
  for (const char* n : {"w1_init", "b1_init", "w2_init", "b2_init"}) p.emplace_back(fixture(n), true);
  const Tensor x = fixture("x"), labels = fixture("labels");
  const auto want = timbre::testing::load_npy(timbre::testing::fixtures_dir() +
                                              "/engine/adam_mlp/losses.npy").as<double>();
  timbre::Adam adam(p, timbre::kernels::pytorch_adam(1e-2));
  for (size_t step = 0; step < want.size(); ++step) {
    Variable h = ops::tanh(ops::linear(Variable(x), p[0], p[1]));
    Variable loss = ops::cross_entropy(ops::linear(h, p[2], p[3]), labels);
    const double got = loss.value().to_host<float>()[0];
    EXPECT_NEAR(got, want[step], 1e-5 * want[step]) << "step " << step;
    for (Variable& v : p) v.zero_grad();
    loss.backward();
    adam.step();
  }
  EXPECT_LT(want.back(), want.front()) << "the fixture should show learning";
  const char* finals[] = {"w1_final", "b1_final", "w2_final", "b2_final"};
  for (size_t i = 0; i < p.size(); ++i) {
    const auto ref = timbre::testing::load_npy(timbre::testing::fixtures_dir() +
                                               "/engine/adam_mlp/" + finals[i] + ".npy").as<double>();
    double scale = 0;
    for (double r : ref) scale = std::max(scale, std::fabs(r));
    EXPECT_TRUE(timbre::testing::all_close(p[i].value().to_host<float>(), ref, {1e-4 * scale, 0}))
        << finals[i];
  }
}

// The same seed and batches give bit-identical weights, run after run: a
// small conv -> batch norm -> relu -> pool -> dropout -> linear network, five
// Adam steps, under two thread orders and two worker counts.
std::vector<float> train_small_net() {
  Generator g(42);
  Tensor w1 = Tensor::empty(Shape{4, 1, 3, 3}), w2 = Tensor::empty(Shape{3, 4 * 4 * 4});
  g.glorot_uniform(w1);
  g.glorot_uniform(w2);
  Variable cw(w1, true), cb(Tensor::zeros(Shape{4}), true), gamma(Tensor::full(Shape{4}, 1.0), true),
      beta(Tensor::zeros(Shape{4}), true), lw(w2, true);
  Tensor rm = Tensor::zeros(Shape{4}), rv = Tensor::full(Shape{4}, 1.0);
  Tensor x = Tensor::empty(Shape{6, 1, 8, 8});
  g.normal(x, 0, 1);
  const Tensor labels = Tensor::from_host(Shape{6}, std::vector<int32_t>{0, 1, 2, 0, 1, 2});
  timbre::Adam adam({cw, cb, gamma, beta, lw}, timbre::kernels::keras_adam(1e-2));
  for (int step = 0; step < 5; ++step) {
    Variable h = ops::conv2d(Variable(x), cw, cb, {1, 1, 1, 1});
    h = ops::relu(ops::batch_norm(h, gamma, beta, rm, rv, true));
    h = ops::dropout(ops::max_pool2d(h, {2, 2, 2, 2}), 0.1, true, g);
    Variable loss = ops::cross_entropy(ops::linear(ops::flatten(h), lw, Variable()), labels);
    for (Variable v : {cw, cb, gamma, beta, lw}) v.zero_grad();
    loss.backward();
    adam.step();
  }
  std::vector<float> all = lw.value().to_host<float>();
  for (const Tensor& t : {cw.value(), rm, rv}) {
    const auto h = t.to_host<float>();
    all.insert(all.end(), h.begin(), h.end());
  }
  return all;
}

TEST(Training, BitIdenticalAcrossRunsOrdersAndWorkers) {
  const std::vector<float> first = train_small_net();
  EXPECT_EQ(train_small_net(), first);
  timbre::testing::for_each_thread_order([&] { EXPECT_EQ(train_small_net(), first); });
}

TEST(Training, SgdDescends) {
  Generator g(5);
  Tensor w0 = Tensor::empty(Shape{4, 6});
  g.glorot_uniform(w0);
  Variable w(w0, true);
  Tensor xs = Tensor::empty(Shape{16, 6});
  g.normal(xs, 0, 1);
  const Tensor labels = Tensor::from_host(Shape{16}, std::vector<int32_t>{0, 1, 2, 3, 0, 1, 2, 3,
                                                                          0, 1, 2, 3, 0, 1, 2, 3});
  timbre::Sgd sgd({w}, {0.5, 0.9, 0, false});
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Variable loss = ops::cross_entropy(ops::linear(Variable(xs), w, Variable()), labels);
    last = loss.value().to_host<float>()[0];
    if (step == 0) first = last;
    w.zero_grad();
    loss.backward();
    sgd.step();
  }
  EXPECT_LT(last, first);
}

}  // namespace
