// Ops: forward against the kernels' CPU references through the engine, and
// every backward rule against finite differences in double.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "kernels/activation.cuh"
#include "kernels/softmax.cuh"
#include "tests/engine/gradcheck.h"
#include "tests/testing.h"

namespace {

using timbre::DType;
using timbre::Shape;
using timbre::ShapeError;
using timbre::Tensor;
using timbre::Variable;
using timbre::testing::gradcheck;
namespace ops = timbre::ops;

// Random doubles in [lo, hi), kept at least `gap` away from 0 (the kink of
// relu and elu) so that finite differences never straddle it.
Tensor random_f64(const Shape& s, uint64_t seed, double lo = -2, double hi = 2, double gap = 0.05) {
  auto f = timbre::testing::random_floats(size_t(s.numel()), seed, float(lo), float(hi));
  std::vector<double> d(f.begin(), f.end());
  for (double& v : d)
    if (std::fabs(v) < gap) v = v < 0 ? -gap : gap;
  return Tensor::from_host(s, d);
}

TEST(Ops, ActivationGradients) {
  const Tensor x = random_f64(Shape{3, 5, 7}, 1);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::relu(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::elu(in[0], 0.7); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::tanh(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::sigmoid(in[0]); }, {x}));
}

TEST(Ops, AddGradients) {
  const Tensor a = random_f64(Shape{4, 3}, 2), b = random_f64(Shape{4, 3}, 3);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::add(in[0], in[1]); }, {a, b}));
  EXPECT_THROW(ops::add(Variable(a), Variable(random_f64(Shape{3, 4}, 4))), ShapeError);
}

TEST(Ops, LinearGradients) {
  const Tensor x = random_f64(Shape{5, 7}, 5), w = random_f64(Shape{3, 7}, 6),
               b = random_f64(Shape{3}, 7);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::linear(in[0], in[1], Variable()); }, {x, w}));
  // A composite: a two-layer perceptron with tanh in between.
  const Tensor w2 = random_f64(Shape{2, 3}, 8);
  EXPECT_TRUE(gradcheck(
      [](auto& in) { return ops::linear(ops::tanh(ops::linear(in[0], in[1], in[2])), in[3], Variable()); },
      {x, w, b, w2}));
}

TEST(Ops, LinearForwardMatchesLoops) {
  const int N = 9, in = 13, out = 6;
  const auto xs = timbre::testing::random_floats(N * in, 11), ws = timbre::testing::random_floats(out * in, 12),
             bs = timbre::testing::random_floats(out, 13);
  Variable y = ops::linear(Variable(Tensor::from_host(Shape{N, in}, xs)),
                           Variable(Tensor::from_host(Shape{out, in}, ws)),
                           Variable(Tensor::from_host(Shape{out}, bs)));
  EXPECT_EQ(y.value().shape(), (Shape{N, out}));
  std::vector<double> want(N * out);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      double acc = bs[o];
      for (int i = 0; i < in; ++i) acc += double(xs[n * in + i]) * ws[o * in + i];
      want[n * out + o] = acc;
    }
  // float GEMM over 13 products of magnitude <= 1 against double: 1e-5.
  EXPECT_TRUE(timbre::testing::all_close(y.value().to_host<float>(), want, {1e-5, 1e-5}));
}

TEST(Ops, LinearShapeErrorsNameTheShapes) {
  Variable x(Tensor::zeros(Shape{4, 5})), w(Tensor::zeros(Shape{3, 6}));
  try {
    ops::linear(x, w, Variable());
    FAIL();
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("linear"), std::string::npos) << m;
    EXPECT_NE(m.find("f32(4, 5)"), std::string::npos) << m;
    EXPECT_NE(m.find("f32(3, 6)"), std::string::npos) << m;
  }
}

TEST(Ops, ActivationForwardMatchesReferenceInFloat) {
  const auto xs = timbre::testing::random_floats(1001, 21, -5, 5);
  Variable x(Tensor::from_host(Shape{7, 11, 13}, xs));
  const auto got = ops::elu(x, 1.0).value().to_host<float>();
  std::vector<float> want(xs.size());
  timbre::kernels::activation_forward_cpu<float>(timbre::kernels::Activation::elu, xs.data(),
                                                 want.data(), (long long)xs.size(), 1.f);
  // expf differs between libm and a GPU by a few ulp.
  EXPECT_TRUE(timbre::testing::all_close(got, want, {1e-6, 1e-6}));
}

TEST(Ops, Conv2dGradients) {
  // 3x3 pad 1, and 2x3 stride 2 without padding, on odd shapes.
  const Tensor x = random_f64(Shape{2, 3, 5, 7}, 51), w = random_f64(Shape{4, 3, 3, 3}, 52),
               b = random_f64(Shape{4}, 53), w23 = random_f64(Shape{2, 3, 2, 3}, 54);
  ops::Conv2dOptions same{1, 1, 1, 1}, strided{2, 2, 0, 0};
  EXPECT_TRUE(gradcheck([&](auto& in) { return ops::conv2d(in[0], in[1], in[2], same); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([&](auto& in) { return ops::conv2d(in[0], in[1], Variable(), strided); },
                        {x, w23}));
  // 1x1 (the residual shortcut) and a composite with relu.
  const Tensor w11 = random_f64(Shape{5, 3, 1, 1}, 55);
  EXPECT_TRUE(gradcheck(
      [&](auto& in) { return ops::relu(ops::conv2d(in[0], in[1], Variable())); }, {x, w11}));
}

TEST(Ops, Conv2dShapeErrors) {
  Variable x(Tensor::zeros(Shape{1, 3, 5, 5})), w(Tensor::zeros(Shape{4, 2, 3, 3}));
  EXPECT_THROW(ops::conv2d(x, w, Variable()), ShapeError);
  Variable big(Tensor::zeros(Shape{4, 3, 7, 7}));
  EXPECT_THROW(ops::conv2d(x, big, Variable()), ShapeError);  // kernel larger than the input
}

TEST(Ops, ConcatAndTimeStepGradients) {
  const Tensor a = random_f64(Shape{3, 4, 2}, 61), b = random_f64(Shape{3, 4, 5}, 62);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::concat_last(in[0], in[1]); }, {a, b}));
  // A Variable used in two slices gets both gradients.
  EXPECT_TRUE(gradcheck(
      [](auto& in) { return ops::concat_last(ops::time_step(in[0], 0), ops::time_step(in[0], 3)); },
      {b}));
  EXPECT_THROW(ops::concat_last(Variable(a), Variable(random_f64(Shape{3, 5, 2}, 63))), ShapeError);
  EXPECT_THROW(ops::time_step(Variable(a), 4), ShapeError);
}

TEST(Ops, ReshapeFlattenTransposeGradients) {
  const Tensor x = random_f64(Shape{2, 3, 4, 5}, 91);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::tanh(ops::flatten(in[0])); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::reshape(in[0], {6, -1}); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::transpose_last2(in[0]); }, {x}));
  // (N, C, 1, T) feature maps to a (N, T, C) sequence, as the C-RNN does.
  const Tensor maps = random_f64(Shape{2, 6, 1, 4}, 92);
  EXPECT_TRUE(gradcheck(
      [](auto& in) { return ops::transpose_last2(ops::reshape(in[0], {2, 6, 4})); }, {maps}));
  EXPECT_EQ(ops::transpose_last2(Variable(x)).value().shape(), (Shape{2, 3, 5, 4}));
}

TEST(Ops, BatchNormGradients) {
  const Tensor x = random_f64(Shape{3, 4, 5, 7}, 101), gamma = random_f64(Shape{4}, 102),
               beta = random_f64(Shape{4}, 103), x1d = random_f64(Shape{6, 5}, 104),
               g1d = random_f64(Shape{5}, 105), b1d = random_f64(Shape{5}, 106);
  for (bool training : {true, false}) {
    Tensor rm = random_f64(Shape{4}, 107), rv = Tensor::full(Shape{4}, 1.5, DType::f64);
    EXPECT_TRUE(gradcheck(
        [&](auto& in) { return ops::batch_norm(in[0], in[1], in[2], rm, rv, training); },
        {x, gamma, beta}))
        << "training " << training;
    Tensor rm1 = Tensor::zeros(Shape{5}, DType::f64), rv1 = Tensor::full(Shape{5}, 1.0, DType::f64);
    EXPECT_TRUE(gradcheck(
        [&](auto& in) { return ops::batch_norm(in[0], in[1], in[2], rm1, rv1, training); },
        {x1d, g1d, b1d}));
  }
  Tensor rm = Tensor::zeros(Shape{3}, DType::f64), rv = Tensor::zeros(Shape{3}, DType::f64);
  EXPECT_THROW(ops::batch_norm(Variable(x), Variable(gamma), Variable(beta), rm, rv, true),
               ShapeError);  // 3 running statistics for 4 channels
}

// The fused epilogue, max_pool(relu(batch_norm(x) + residual)) as one op
// (with and without each part; the 2x3 pool leaves a row and a column out
// of every window): its gradients against finite differences (for x, gamma,
// beta and the residual), and its values and gradients against the ops it
// replaces, to the bit (the same roundings in the same order).
TEST(Ops, BatchNormReluResidualGradients) {
  const Shape shape{3, 4, 5, 7};
  const Tensor x = random_f64(shape, 111), gamma = random_f64(Shape{4}, 112),
               beta = random_f64(Shape{4}, 113), r = random_f64(shape, 114);
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "evaluation");
    auto stats = [] {
      return std::make_pair(Tensor::full(Shape{4}, 0.25, DType::f64),
                            Tensor::full(Shape{4}, 1.5, DType::f64));
    };
    for (const timbre::kernels::BatchNormPool pool :
         {timbre::kernels::BatchNormPool{}, timbre::kernels::BatchNormPool{2, 3}})
    for (const bool relu : {true, false})
      for (const bool residual : {true, false}) {
        if (!relu && !residual && !pool.on()) continue;
        SCOPED_TRACE(std::string(relu ? "relu" : "") + (residual ? " residual" : "") +
                     (pool.on() ? " pool" : ""));
        ops::BatchNormOptions o;
        o.relu = relu;
        o.pool = pool;
        auto [rm, rv] = stats();
        auto fused = [&](auto& in) {
          return ops::batch_norm(in[0], in[1], in[2], rm, rv, training, o,
                                 residual ? in[3] : Variable());
        };
        EXPECT_TRUE(gradcheck(fused, residual ? std::vector<Tensor>{x, gamma, beta, r}
                                              : std::vector<Tensor>{x, gamma, beta}));
        // Against batch_norm, add and relu, same running statistics.
        auto [rm1, rv1] = stats();
        auto [rm2, rv2] = stats();
        std::vector<Variable> a, b;
        for (const Tensor& t : {x, gamma, beta, r}) {
          a.emplace_back(t.clone(), true);
          b.emplace_back(t.clone(), true);
        }
        ops::BatchNormOptions plain;
        Variable ya = ops::batch_norm(a[0], a[1], a[2], rm1, rv1, training, o,
                                      residual ? a[3] : Variable());
        Variable yb = ops::batch_norm(b[0], b[1], b[2], rm2, rv2, training, plain);
        if (residual) yb = ops::add(yb, b[3]);
        if (relu) yb = ops::relu(yb);
        if (pool.on()) yb = ops::max_pool2d(yb, {pool.h, pool.w, pool.h, pool.w});
        EXPECT_EQ(ya.value().shape(), yb.value().shape());
        EXPECT_TRUE(timbre::testing::same_bits(ya.value().to_host<double>(),
                                               yb.value().to_host<double>()));
        std::vector<double> w(size_t(ya.value().numel()));
        for (size_t i = 0; i < w.size(); ++i) w[i] = 0.5 + double((i * 7) % 11) / 10;
        timbre::testing::weighted_sum(ya, w).backward();
        timbre::testing::weighted_sum(yb, w).backward();
        for (size_t i = 0; i < (residual ? 4u : 3u); ++i)
          EXPECT_TRUE(timbre::testing::same_bits(a[i].grad().to_host<double>(),
                                                 b[i].grad().to_host<double>()))
              << "gradient of input " << i;
        EXPECT_TRUE(timbre::testing::same_bits(rm1.to_host<double>(), rm2.to_host<double>()));
      }
  }
  Tensor rm = Tensor::zeros(Shape{4}, DType::f64), rv = Tensor::full(Shape{4}, 1.0, DType::f64);
  EXPECT_THROW(ops::batch_norm(Variable(x), Variable(gamma), Variable(beta), rm, rv, true, {},
                               Variable(random_f64(Shape{3, 4, 5, 6}, 115))),
               ShapeError);  // a residual of another shape
  ops::BatchNormOptions too_big;
  too_big.pool = {6, 2};
  EXPECT_THROW(ops::batch_norm(Variable(x), Variable(gamma), Variable(beta), rm, rv, true, too_big),
               ShapeError);  // a 6x2 pool on 5x7 planes
}

TEST(Ops, PoolingGradients) {
  // Distinct values 0.01 apart so that no max-pool window has a near-tie.
  std::vector<double> v(2 * 3 * 8 * 6);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.01 * double((i * 37) % v.size());
  const Tensor x = Tensor::from_host(Shape{2, 3, 8, 6}, v);
  for (timbre::kernels::PoolWindow w : {timbre::kernels::PoolWindow{2, 2, 2, 2}, {4, 2, 4, 2},
                                        {4, 1, 4, 1}, {3, 3, 2, 2}}) {
    EXPECT_TRUE(gradcheck([&](auto& in) { return ops::max_pool2d(in[0], w); }, {x}));
    EXPECT_TRUE(gradcheck([&](auto& in) { return ops::avg_pool2d(in[0], w); }, {x}));
  }
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::global_avg_pool(in[0]); }, {x}));
  EXPECT_EQ(ops::max_pool2d(Variable(x), {4, 2, 4, 2}).value().shape(), (Shape{2, 3, 2, 3}));
  EXPECT_THROW(ops::max_pool2d(Variable(x), {9, 2, 9, 2}), ShapeError);
}

TEST(Ops, GruGradients) {
  const int B = 2, T = 3, I = 4, H = 3;
  const Tensor x = random_f64(Shape{B, T, I}, 71), w_ih = random_f64(Shape{3 * H, I}, 72),
               w_hh = random_f64(Shape{3 * H, H}, 73), b_ih = random_f64(Shape{3 * H}, 74),
               b_hh = random_f64(Shape{3 * H}, 75), h0 = random_f64(Shape{B, H}, 76);
  for (bool reverse : {false, true}) {
    EXPECT_TRUE(gradcheck(
        [&](auto& in) { return ops::gru(in[0], in[1], in[2], in[3], in[4], in[5], reverse); },
        {x, w_ih, w_hh, b_ih, b_hh, h0}))
        << "reverse " << reverse;
    // The last state alone, and a bidirectional pair.
    EXPECT_TRUE(gradcheck(
        [&](auto& in) {
          Variable f = ops::gru(in[0], in[1], in[2], in[3], in[4], Variable(), false);
          Variable r = ops::gru(in[0], in[1], in[2], in[3], in[4], Variable(), true);
          return ops::concat_last(ops::time_step(f, T - 1), ops::time_step(r, 0));
        },
        {x, w_ih, w_hh, b_ih, b_hh}));
  }
  EXPECT_THROW(ops::gru(Variable(x), Variable(w_ih), Variable(w_ih), Variable(b_ih), Variable(b_hh),
                        Variable(), false),
               ShapeError);  // w_hh of the wrong shape
}

TEST(Ops, AttentionGradients) {
  const Tensor h = random_f64(Shape{3, 5, 6}, 81), w = random_f64(Shape{4, 6}, 82),
               b = random_f64(Shape{4}, 83), v = random_f64(Shape{4}, 84);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::attention(in[0], in[1], in[2], in[3]); },
                        {h, w, b, v}));
}

TEST(Ops, SoftmaxGradients) {
  const Tensor x = random_f64(Shape{3, 5, 7}, 31, -3, 3, 0);
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::softmax(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return ops::log_softmax(in[0]); }, {x}));
}

TEST(Ops, CrossEntropyGradientAndValue) {
  const Tensor logits = random_f64(Shape{5, 8}, 41, -3, 3, 0);
  const Tensor labels = Tensor::from_host(Shape{5}, std::vector<int32_t>{0, 7, 3, 3, 5});
  EXPECT_TRUE(gradcheck([&](auto& in) { return ops::cross_entropy(in[0], labels); }, {logits}));
  // The value: mean of -log softmax at the label, from the kernels' reference.
  const auto x = logits.to_host<double>();
  const std::vector<int> l{0, 7, 3, 3, 5};
  const double want = timbre::kernels::cross_entropy_forward_cpu<double>(
      {x.data(), l.data(), nullptr, nullptr, nullptr, nullptr}, 5, 8);
  const double got = ops::cross_entropy(Variable(logits), labels).value().to_host<double>()[0];
  EXPECT_NEAR(got, want, 1e-14 * std::fabs(want));
  // Composite: a linear classifier's loss, through log-softmax-free CE.
  const Tensor feats = random_f64(Shape{5, 6}, 42), w = random_f64(Shape{8, 6}, 43);
  EXPECT_TRUE(gradcheck(
      [&](auto& in) { return ops::cross_entropy(ops::linear(in[0], in[1], Variable()), labels); },
      {feats, w}));
}

TEST(Ops, CrossEntropyRejectsBadLabels) {
  Variable logits(Tensor::zeros(Shape{3, 4}));
  const Tensor labels = Tensor::from_host(Shape{3}, std::vector<int32_t>{0, 4, -1});
  try {
    ops::cross_entropy(logits, labels);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("2 of 3 labels are outside [0, 4)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ops::cross_entropy(logits, Tensor::zeros(Shape{4}, DType::i32)), ShapeError);
  EXPECT_THROW(ops::cross_entropy(logits, Tensor::zeros(Shape{3}, DType::f32)), ShapeError);
}

}  // namespace
