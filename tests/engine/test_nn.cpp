// nn modules (engine/nn.h): parameter names and shapes, Keras initialiser
// statistics, train/eval behaviour, and each module's forward against a
// plain-loop host reference on random nonzero inputs at odd shapes, under
// several simcuda thread orders.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/nn.h"
#include "tests/testing.h"

namespace {

using timbre::Generator;
using timbre::Module;
using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
namespace nn = timbre::nn;

Tensor random_tensor(const Shape& s, uint64_t seed) {
  return Tensor::from_host(s, timbre::testing::random_nonzero<float>(size_t(s.numel()), seed));
}

std::vector<double> host(const Tensor& t) { return timbre::testing::widen(t.to_host<float>()); }

std::vector<std::string> names(const Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, v] : m.named_parameters()) out.push_back(n);
  return out;
}

// Uniform(-limit, limit) draws: inside the interval, mean ~0 and variance
// ~limit^2 / 3 (n >= 1000 draws: the sample variance is within 10%).
void expect_uniform(const Tensor& t, double limit, const char* what) {
  const auto v = host(t);
  double mean = 0, var = 0;
  for (double x : v) {
    ASSERT_LE(std::fabs(x), limit) << what;
    mean += x;
  }
  mean /= double(v.size());
  for (double x : v) var += (x - mean) * (x - mean);
  var /= double(v.size());
  EXPECT_NEAR(mean, 0, 0.1 * limit) << what;
  EXPECT_NEAR(var, limit * limit / 3, 0.1 * limit * limit / 3) << what;
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// ---- Conv2d -------------------------------------------------------------------

TEST(Conv2d, NamesShapesAndGlorotInit) {
  Generator g(1);
  nn::Conv2d conv(16, 32, 3, 1, g);
  EXPECT_EQ(names(conv), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(conv.weight.value().shape(), (Shape{32, 16, 3, 3}));
  EXPECT_EQ(conv.parameter_count(), 32 * 16 * 9 + 32);
  expect_uniform(conv.weight.value(), std::sqrt(6.0 / (16 * 9 + 32 * 9)), "conv weight");
  for (double b : host(conv.bias.value())) EXPECT_EQ(b, 0);
  // The same seed draws the same weights; the next draw differs.
  Generator same(1);
  nn::Conv2d again(16, 32, 3, 1, same);
  EXPECT_EQ(host(again.weight.value()), host(conv.weight.value()));
  nn::Conv2d next(16, 32, 3, 1, same);
  EXPECT_NE(host(next.weight.value()), host(conv.weight.value()));
  EXPECT_THROW(nn::Conv2d(0, 4, 3, 1, g), std::invalid_argument);
}

TEST(Conv2d, SamePaddingMatchesLoops) {
  const int N = 2, C = 3, H = 5, W = 7, K = 4;
  Generator g(2);
  nn::Conv2d conv(C, K, 3, 1, g);
  Tensor b = conv.bias.value();
  b.copy_from(random_tensor(Shape{K}, 3));  // a nonzero bias, to see it added
  const Tensor x = random_tensor(Shape{N, C, H, W}, 4);
  const auto xh = host(x), wh = host(conv.weight.value()), bh = host(b);
  std::vector<double> ref(size_t(N * K * H * W));
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < W; ++j) {
          double s = bh[size_t(k)];
          for (int c = 0; c < C; ++c)
            for (int r = 0; r < 3; ++r)
              for (int q = 0; q < 3; ++q) {
                const int ii = i + r - 1, jj = j + q - 1;
                if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                s += xh[size_t(((n * C + c) * H + ii) * W + jj)] * wh[size_t(((k * C + c) * 3 + r) * 3 + q)];
              }
          ref[size_t(((n * K + k) * H + i) * W + j)] = s;
        }
  timbre::testing::for_each_thread_order([&] {
    EXPECT_TRUE(timbre::testing::all_close(host(conv.forward(Variable(x)).value()), ref, {1e-5, 1e-5}));
  });
}

// ---- Linear -------------------------------------------------------------------

TEST(Linear, PerRowOnSequencesMatchesLoops) {
  const int B = 3, T = 5, I = 7, O = 4;
  Generator g(5);
  nn::Linear lin(I, O, g);
  EXPECT_EQ(names(lin), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(lin.weight.value().shape(), (Shape{O, I}));
  Tensor b = lin.bias.value();
  b.copy_from(random_tensor(Shape{O}, 6));
  const Tensor x = random_tensor(Shape{B, T, I}, 7);
  const auto xh = host(x), wh = host(lin.weight.value()), bh = host(b);
  std::vector<double> ref(size_t(B * T * O));
  for (int r = 0; r < B * T; ++r)
    for (int o = 0; o < O; ++o) {
      double s = bh[size_t(o)];
      for (int i = 0; i < I; ++i) s += xh[size_t(r * I + i)] * wh[size_t(o * I + i)];
      ref[size_t(r * O + o)] = s;
    }
  timbre::testing::for_each_thread_order([&] {
    const Tensor y = lin.forward(Variable(x)).value();
    EXPECT_EQ(y.shape(), (Shape{B, T, O}));
    EXPECT_TRUE(timbre::testing::all_close(host(y), ref, {1e-5, 1e-5}));
  });
  // Rank 2 as well, and a wrong feature count is an error naming Linear.
  EXPECT_EQ(lin.forward(Variable(random_tensor(Shape{2, I}, 8))).value().shape(), (Shape{2, O}));
  try {
    lin.forward(Variable(random_tensor(Shape{2, 3, I + 1}, 9)));
    ADD_FAILURE() << "accepted a wrong feature count";
  } catch (const timbre::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("Linear"), std::string::npos) << e.what();
  }
}

// ---- BatchNorm -------------------------------------------------------------------

// Runs a training and an evaluation forward of a BatchNorm2d on
// (N, C, H, W) and compares outputs and running statistics with loops.
void check_batchnorm(nn::BatchNormConvention conv, double eps, double keep, bool unbiased) {
  const int N = 3, C = 5, H = 3, W = 7, M = N * H * W;
  nn::BatchNorm bn(C, conv);
  EXPECT_EQ(names(bn), (std::vector<std::string>{"weight", "bias"}));
  ASSERT_EQ(bn.named_buffers().size(), 2u);
  EXPECT_EQ(bn.named_buffers()[0].first, "running_mean");
  EXPECT_EQ(bn.named_buffers()[1].first, "running_var");
  Tensor gamma = bn.weight.value(), beta = bn.bias.value();
  for (double v : host(gamma)) EXPECT_EQ(v, 1);
  for (double v : host(beta)) EXPECT_EQ(v, 0);
  gamma.copy_from(random_tensor(Shape{C}, 10));
  beta.copy_from(random_tensor(Shape{C}, 11));
  const Tensor x = random_tensor(Shape{N, C, H, W}, 12);
  const auto xh = host(x), gh = host(gamma), bh = host(beta);
  std::vector<double> y(xh.size()), rm(C), rv(C), yeval(xh.size());
  auto at = [&](int n, int c, int i) { return size_t((n * C + c) * H * W + i); };
  for (int c = 0; c < C; ++c) {
    double mean = 0, var = 0;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < H * W; ++i) mean += xh[at(n, c, i)];
    mean /= M;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < H * W; ++i) var += (xh[at(n, c, i)] - mean) * (xh[at(n, c, i)] - mean);
    var /= M;
    rm[size_t(c)] = (1 - keep) * mean;  // from running mean 0
    rv[size_t(c)] = keep * 1 + (1 - keep) * (unbiased ? var * M / (M - 1) : var);
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < H * W; ++i) {
        y[at(n, c, i)] = gh[size_t(c)] * (xh[at(n, c, i)] - mean) / std::sqrt(var + eps) + bh[size_t(c)];
        yeval[at(n, c, i)] = gh[size_t(c)] * (xh[at(n, c, i)] - rm[size_t(c)]) /
                             std::sqrt(rv[size_t(c)] + eps) + bh[size_t(c)];
      }
  }
  ASSERT_TRUE(bn.training());
  EXPECT_TRUE(timbre::testing::all_close(host(bn.forward(Variable(x)).value()), y, {1e-5, 1e-5}));
  EXPECT_TRUE(timbre::testing::all_close(host(bn.running_mean), rm, {1e-6, 1e-5}));
  EXPECT_TRUE(timbre::testing::all_close(host(bn.running_var), rv, {1e-6, 1e-5}));
  bn.eval();
  EXPECT_TRUE(timbre::testing::all_close(host(bn.forward(Variable(x)).value()), yeval, {1e-5, 1e-5}));
  EXPECT_TRUE(timbre::testing::all_close(host(bn.running_mean), rm, {1e-6, 1e-5})) << "eval leaves them";
}

TEST(BatchNorm, KerasConventionTrainAndEval) {
  check_batchnorm(nn::BatchNormConvention::keras, 1e-3, 0.99, false);
}

TEST(BatchNorm, PyTorchConventionTrainAndEval) {
  check_batchnorm(nn::BatchNormConvention::pytorch, 1e-5, 0.9, true);
}

// A module holding a dropout before a batch norm, as the models do.
struct DropoutThenBatchNorm : Module {
  explicit DropoutThenBatchNorm(nn::BatchNormConvention c)
      : drop(register_module("drop", std::make_shared<nn::Dropout>(0.5))),
        bn(register_module("bn", std::make_shared<nn::BatchNorm>(5, c))) {}
  Variable forward(const Variable& x, Generator& g) { return bn->forward(drop->forward(x, g)); }
  std::shared_ptr<nn::Dropout> drop;
  std::shared_ptr<nn::BatchNorm> bn;
};

// The statistics pass sets the running statistics to the mean of the
// batches' statistics (biased or unbiased variance by convention), in
// evaluation mode for everything else (no dropout), normalises each batch
// with its own statistics, and restores the module's mode.
void check_precise_statistics(nn::BatchNormConvention conv, bool unbiased) {
  const int C = 5, H = 3, W = 7;
  const int sizes[] = {4, 3, 2};  // the last batch smaller, as at a split's end
  DropoutThenBatchNorm m(conv);
  EXPECT_EQ(nn::batch_norms(m).size(), 1u);
  m.bn->running_mean.copy_from(random_tensor(Shape{C}, 30));  // overwritten by the pass
  Generator g(5);
  std::vector<double> mean_ref(C, 0.0), var_ref(C, 0.0);
  {
    timbre::NoGradGuard no_grad;
    const nn::PreciseBatchNorm pass(m);
    EXPECT_FALSE(m.training());
    for (int b = 0; b < 3; ++b) {
      const int N = sizes[b], M = N * H * W;
      const Tensor x = random_tensor(Shape{N, C, H, W}, 40 + uint64_t(b));
      const auto xh = host(x);
      const auto y = host(m.forward(Variable(x), g).value());
      for (int c = 0; c < C; ++c) {
        double mean = 0, var = 0;
        for (int n = 0; n < N; ++n)
          for (int i = 0; i < H * W; ++i) mean += xh[size_t((n * C + c) * H * W + i)];
        mean /= M;
        for (int n = 0; n < N; ++n)
          for (int i = 0; i < H * W; ++i) {
            const double d = xh[size_t((n * C + c) * H * W + i)] - mean;
            var += d * d;
          }
        var /= M;
        // gamma 1, beta 0: batch statistics and no dropout give (x - mean) / sd.
        const size_t k = size_t((0 * C + c) * H * W);
        EXPECT_NEAR(y[k], (xh[k] - mean) / std::sqrt(var + (unbiased ? 1e-5 : 1e-3)), 1e-4);
        mean_ref[size_t(c)] += mean / 3;
        var_ref[size_t(c)] += (unbiased ? var * M / (M - 1) : var) / 3;
      }
    }
  }
  EXPECT_TRUE(m.training()) << "the pass restores the mode";
  EXPECT_TRUE(timbre::testing::all_close(host(m.bn->running_mean), mean_ref, {1e-6, 1e-5}));
  EXPECT_TRUE(timbre::testing::all_close(host(m.bn->running_var), var_ref, {1e-6, 1e-5}));
  // After the pass, training updates them with the convention's momentum again.
  const Tensor x = random_tensor(Shape{2, C, H, W}, 50);
  m.bn->forward(Variable(x));
  EXPECT_FALSE(timbre::testing::all_close(host(m.bn->running_mean), mean_ref, {1e-6, 1e-5}));
}

TEST(BatchNorm, PreciseStatisticsKeras) {
  check_precise_statistics(nn::BatchNormConvention::keras, false);
}

TEST(BatchNorm, PreciseStatisticsPyTorch) {
  check_precise_statistics(nn::BatchNormConvention::pytorch, true);
}

TEST(BatchNorm, OneDAndConventionNames) {
  nn::BatchNorm bn(6);
  EXPECT_EQ(bn.convention(), nn::BatchNormConvention::keras) << "Keras is the default (the paper's)";
  EXPECT_EQ(bn.forward(Variable(random_tensor(Shape{4, 6}, 13))).value().shape(), (Shape{4, 6}));
  EXPECT_EQ(nn::parse_batchnorm_convention("pytorch"), nn::BatchNormConvention::pytorch);
  EXPECT_STREQ(nn::batchnorm_convention_name(nn::BatchNormConvention::keras), "keras");
  const auto o = nn::batchnorm_options(nn::BatchNormConvention::pytorch);
  EXPECT_EQ(o.eps, 1e-5);
  EXPECT_DOUBLE_EQ(o.running.keep, 0.9);
  try {
    nn::parse_batchnorm_convention("tf");
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'tf'"), std::string::npos) << e.what();
  }
}

// ---- Dropout and train/eval through a parent ---------------------------------------

struct Parent : Module {
  std::shared_ptr<nn::BatchNorm> bn = register_module("bn", std::make_shared<nn::BatchNorm>(3));
  std::shared_ptr<nn::Dropout> drop = register_module("drop", std::make_shared<nn::Dropout>(0.5));
};

TEST(Dropout, TrainEvalThroughParent) {
  Parent p;
  EXPECT_EQ(names(p), (std::vector<std::string>{"bn.weight", "bn.bias"}));
  EXPECT_EQ(p.named_buffers()[0].first, "bn.running_mean");
  Generator g(3);
  const Tensor x = random_tensor(Shape{4, 3, 5}, 14);
  const auto xh = host(x);
  const auto yt = host(p.drop->forward(Variable(x), g).value());
  int zeros = 0;
  for (size_t i = 0; i < yt.size(); ++i) {
    if (yt[i] == 0) ++zeros;
    else EXPECT_DOUBLE_EQ(yt[i], 2 * xh[i]);
  }
  EXPECT_GT(zeros, 5);  // 60 draws at p = 0.5: 30 +- 4
  EXPECT_LT(zeros, 55);
  p.eval();
  EXPECT_FALSE(p.bn->training());
  EXPECT_FALSE(p.drop->training());
  EXPECT_EQ(host(p.drop->forward(Variable(x), g).value()), xh);
  p.train();
  EXPECT_TRUE(p.drop->training());
  EXPECT_THROW(nn::Dropout(1.0), std::invalid_argument);
  EXPECT_THROW(nn::Dropout(-0.1), std::invalid_argument);
}

// ---- GRU ------------------------------------------------------------------------

// One direction of PyTorch's GRU (gate order r, z, n) in double on the host:
// every hidden state, in time order, of x (B, T, I).
std::vector<double> gru_ref(const std::vector<double>& x, int B, int T, int I, int H,
                            const std::vector<double>& wi, const std::vector<double>& wh,
                            const std::vector<double>& bi, const std::vector<double>& bh, bool reverse) {
  std::vector<double> out(size_t(B * T * H));
  for (int b = 0; b < B; ++b) {
    std::vector<double> h(size_t(H), 0.0), hn(static_cast<size_t>(H));
    for (int s = 0; s < T; ++s) {
      const int t = reverse ? T - 1 - s : s;
      std::vector<double> gi(static_cast<size_t>(3 * H)), gh(static_cast<size_t>(3 * H));
      for (int r = 0; r < 3 * H; ++r) {
        gi[size_t(r)] = bi[size_t(r)];
        gh[size_t(r)] = bh[size_t(r)];
        for (int i = 0; i < I; ++i) gi[size_t(r)] += wi[size_t(r * I + i)] * x[size_t((b * T + t) * I + i)];
        for (int k = 0; k < H; ++k) gh[size_t(r)] += wh[size_t(r * H + k)] * h[size_t(k)];
      }
      for (int k = 0; k < H; ++k) {
        const double r = sigmoid(gi[size_t(k)] + gh[size_t(k)]);
        const double z = sigmoid(gi[size_t(H + k)] + gh[size_t(H + k)]);
        const double n = std::tanh(gi[size_t(2 * H + k)] + r * gh[size_t(2 * H + k)]);
        hn[size_t(k)] = (1 - z) * n + z * h[size_t(k)];
      }
      h = hn;
      for (int k = 0; k < H; ++k) out[size_t((b * T + t) * H + k)] = h[size_t(k)];
    }
  }
  return out;
}

TEST(GRU, NamesInitAndBidirectionalMatchesLoops) {
  const int B = 3, T = 5, I = 7, H = 6;
  Generator g(15);
  nn::GRU gru(I, H, true, g);
  EXPECT_EQ(names(gru), (std::vector<std::string>{
                            "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                            "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
                            "bias_hh_l0_reverse"}));
  EXPECT_EQ(gru.parameter_count(), 2 * (3 * H * (I + H) + 6 * H));
  EXPECT_EQ(gru.w_ih.value().shape(), (Shape{3 * H, I}));
  EXPECT_EQ(gru.w_hh_r.value().shape(), (Shape{3 * H, H}));
  // The recurrent kernel is orthogonal: its H columns are orthonormal.
  const auto q = host(gru.w_hh.value());
  for (int i = 0; i < H; ++i)
    for (int j = 0; j < H; ++j) {
      double dot = 0;
      for (int r = 0; r < 3 * H; ++r) dot += q[size_t(r * H + i)] * q[size_t(r * H + j)];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-5);  // float32 storage of a float64-exact Q
    }
  for (double b : host(gru.b_ih.value())) EXPECT_EQ(b, 0);
  // Random nonzero biases so the bias paths are exercised.
  uint64_t seed = 16;
  for (Variable* v : {&gru.b_ih, &gru.b_hh, &gru.b_ih_r, &gru.b_hh_r}) {
    Tensor t = v->value();
    t.copy_from(random_tensor(Shape{3 * H}, seed++));
  }
  const Tensor x = random_tensor(Shape{B, T, I}, 20);
  const auto xh = host(x);
  const auto f = gru_ref(xh, B, T, I, H, host(gru.w_ih.value()), host(gru.w_hh.value()),
                         host(gru.b_ih.value()), host(gru.b_hh.value()), false);
  const auto r = gru_ref(xh, B, T, I, H, host(gru.w_ih_r.value()), host(gru.w_hh_r.value()),
                         host(gru.b_ih_r.value()), host(gru.b_hh_r.value()), true);
  std::vector<double> ref;
  for (int bt = 0; bt < B * T; ++bt) {
    ref.insert(ref.end(), f.begin() + bt * H, f.begin() + (bt + 1) * H);
    ref.insert(ref.end(), r.begin() + bt * H, r.begin() + (bt + 1) * H);
  }
  timbre::testing::for_each_thread_order([&] {
    const Tensor y = gru.forward(Variable(x)).value();
    EXPECT_EQ(y.shape(), (Shape{B, T, 2 * H}));
    EXPECT_TRUE(timbre::testing::all_close(host(y), ref, {1e-5, 1e-5}));
  });
  EXPECT_THROW(gru.last_state(Variable(x)), std::logic_error);
}

TEST(GRU, LastStateIsTheFinalForwardState) {
  const int B = 2, T = 4, I = 3, H = 5;
  Generator g(21);
  nn::GRU gru(I, H, false, g);
  EXPECT_EQ(gru.named_parameters().size(), 4u);
  const Tensor x = random_tensor(Shape{B, T, I}, 22);
  const auto f = gru_ref(host(x), B, T, I, H, host(gru.w_ih.value()), host(gru.w_hh.value()),
                         host(gru.b_ih.value()), host(gru.b_hh.value()), false);
  std::vector<double> ref;
  for (int b = 0; b < B; ++b) ref.insert(ref.end(), f.begin() + (b * T + T - 1) * H, f.begin() + (b * T + T) * H);
  const Tensor y = gru.last_state(Variable(x)).value();
  EXPECT_EQ(y.shape(), (Shape{B, H}));
  EXPECT_TRUE(timbre::testing::all_close(host(y), ref, {1e-5, 1e-5}));
}

// ---- Attention -------------------------------------------------------------------

TEST(Attention, NamesInitAndForwardMatchesLoops) {
  const int B = 3, T = 7, D = 5, A = 4;
  Generator g(23);
  nn::Attention att(D, A, g);
  EXPECT_EQ(names(att), (std::vector<std::string>{"weight", "bias", "v"}));
  EXPECT_EQ(att.parameter_count(), A * D + 2 * A);
  for (double v : host(att.v.value())) EXPECT_LE(std::fabs(v), std::sqrt(6.0 / (A + 1)));
  {
    Generator big(24);
    nn::Attention wide(128, 128, big);
    expect_uniform(wide.weight.value(), std::sqrt(6.0 / 256), "attention W");
  }
  Tensor b = att.bias.value();
  b.copy_from(random_tensor(Shape{A}, 25));
  const Tensor h = random_tensor(Shape{B, T, D}, 26);
  const auto hh = host(h), wh = host(att.weight.value()), bh = host(b), vh = host(att.v.value());
  std::vector<double> ref(size_t(B * D), 0.0);
  for (int n = 0; n < B; ++n) {
    std::vector<double> e(static_cast<size_t>(T));
    double mx = -1e300, sum = 0;
    for (int t = 0; t < T; ++t) {
      double s = 0;
      for (int a = 0; a < A; ++a) {
        double u = bh[size_t(a)];
        for (int d = 0; d < D; ++d) u += wh[size_t(a * D + d)] * hh[size_t((n * T + t) * D + d)];
        s += vh[size_t(a)] * std::tanh(u);
      }
      e[size_t(t)] = s;
      mx = std::max(mx, s);
    }
    for (double& v : e) sum += (v = std::exp(v - mx));
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) ref[size_t(n * D + d)] += e[size_t(t)] / sum * hh[size_t((n * T + t) * D + d)];
  }
  timbre::testing::for_each_thread_order([&] {
    EXPECT_TRUE(timbre::testing::all_close(host(att.forward(Variable(h)).value()), ref, {1e-5, 1e-5}));
  });
}

// Backward through the modules reaches every parameter (a composed graph:
// conv -> bn -> relu -> pool -> linear).
TEST(Modules, GradientsReachEveryParameter) {
  Generator g(27);
  nn::Conv2d conv(2, 3, 3, 1, g);
  nn::BatchNorm bn(3);
  nn::MaxPool2d pool(2, 2);
  nn::Linear lin(3 * 2 * 3, 4, g);
  const Tensor x = random_tensor(Shape{3, 2, 4, 6}, 28);
  Variable y = pool.forward(timbre::ops::relu(bn.forward(conv.forward(Variable(x)))));
  EXPECT_EQ(y.value().shape(), (Shape{3, 3, 2, 3}));
  Variable loss = timbre::ops::cross_entropy(lin.forward(timbre::ops::flatten(y)),
                                             Tensor::from_host(Shape{3}, std::vector<int32_t>{0, 3, 1}));
  loss.backward();
  for (const Module* m : std::initializer_list<const Module*>{&conv, &bn, &lin})
    for (const auto& [n, v] : m->named_parameters()) {
      ASSERT_TRUE(v.grad().defined()) << n;
      double norm = 0;
      for (double d : host(v.grad())) norm += d * d;
      if (m != &conv || n != "bias") {  // conv bias: removed by BN (zero true gradient)
        EXPECT_GT(norm, 0) << n;
      }
    }
}

}  // namespace
