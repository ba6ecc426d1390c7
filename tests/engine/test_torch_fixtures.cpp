// The engine's ops against PyTorch: golden inputs, outputs and gradients
// written by tests/fixtures/make_engine_fixtures.py (torch on the CPU,
// float32). Each case runs the op forward, backpropagates the saved
// grad_output, and compares the output and every gradient.
//
// Tolerance: relative error <= 1e-5 in the norm sense,
//   max_i |got_i - ref_i| <= 1e-5 * max_i |ref_i|  (+ 1e-7 absolute),
// because two float32 implementations that sum in different orders agree to
// a few ulp of the largest terms, not of each (possibly cancelled) element.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/ops.h"
#include "tests/fixtures/npy.h"
#include "tests/testing.h"

namespace {

using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
namespace ops = timbre::ops;

std::string dir(const std::string& c) { return timbre::testing::fixtures_dir() + "/engine/" + c + "/"; }

Tensor load(const std::string& c, const std::string& name) {
  const auto a = timbre::testing::load_npy(dir(c) + name + ".npy");
  if (a.dtype == "<i4" || a.dtype == "<i8")
    return Tensor::from_host(Shape(a.shape), a.as<int32_t>());
  return Tensor::from_host(Shape(a.shape), a.as<float>());
}

::testing::AssertionResult close_to_torch(const Tensor& got, const std::string& c,
                                          const std::string& name) {
  const auto ref = timbre::testing::load_npy(dir(c) + name + ".npy").as<double>();
  if (!got.defined()) return ::testing::AssertionFailure() << name << ": no tensor";
  const auto g = got.to_host<float>();
  if (g.size() != ref.size())
    return ::testing::AssertionFailure() << name << ": " << g.size() << " values, torch has "
                                         << ref.size();
  double scale = 0, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    const double d = std::fabs(g[i] - ref[i]);
    if (!(d <= worst)) worst = d, at = i;
  }
  if (worst <= 1e-5 * scale + 1e-7) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << c << "/" << name << ": max |diff| " << worst << " at ["
                                       << at << "] (timbre " << g[at] << ", torch " << ref[at]
                                       << "), scale " << scale;
}

// Runs y = f(inputs), backpropagates grad_output, checks y and the gradients.
template <class F>
void check_case(const std::string& c, const std::vector<std::string>& names, F f) {
  SCOPED_TRACE(c);
  std::vector<Variable> in;
  for (const auto& n : names) in.emplace_back(load(c, n), true);
  Variable y = f(in);
  EXPECT_TRUE(close_to_torch(y.value(), c, "output"));
  y.backward(load(c, "grad_output").reshape(y.value().shape().dims()));
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(close_to_torch(in[i].grad(), c, "grad_" + names[i]));
}

TEST(TorchFixtures, Linear) {
  for (const char* c : {"linear_head", "linear_parallel_head", "linear_embedding"})
    check_case(c, {"x", "weight", "bias"}, [](auto& v) { return ops::linear(v[0], v[1], v[2]); });
}

TEST(TorchFixtures, Conv2d) {
  const ops::Conv2dOptions pad1{1, 1, 1, 1}, none{}, stride2{2, 2, 0, 0};
  for (const char* c : {"conv3x3_first", "conv3x3_block"})
    check_case(c, {"x", "weight", "bias"},
               [&](auto& v) { return ops::conv2d(v[0], v[1], v[2], pad1); });
  check_case("conv1x1_shortcut", {"x", "weight", "bias"},
             [&](auto& v) { return ops::conv2d(v[0], v[1], v[2], none); });
  check_case("conv_strided_odd", {"x", "weight", "bias"},
             [&](auto& v) { return ops::conv2d(v[0], v[1], v[2], stride2); });
}

TEST(TorchFixtures, Gru) {
  check_case("gru_crnn", {"x", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"},
             [](auto& v) { return ops::gru(v[0], v[1], v[2], v[3], v[4], Variable(), false); });
  check_case("bigru_parallel",
             {"x", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
              "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
              "bias_hh_l0_reverse"},
             [](auto& v) {
               return ops::concat_last(ops::gru(v[0], v[1], v[2], v[3], v[4], Variable(), false),
                                       ops::gru(v[0], v[5], v[6], v[7], v[8], Variable(), true));
             });
}

TEST(TorchFixtures, Attention) {
  check_case("attention", {"h", "weight", "bias", "v"},
             [](auto& v) { return ops::attention(v[0], v[1], v[2], v[3]); });
}

TEST(TorchFixtures, BatchNorm) {
  const ops::BatchNormOptions pytorch{1e-5, timbre::kernels::pytorch_running(0.1)};
  for (std::string c : {"batchnorm2d", "batchnorm1d"}) {
    Tensor rm = load(c + "_train", "running_mean"), rv = load(c + "_train", "running_var");
    check_case(c + "_train", {"x", "gamma", "beta"},
               [&](auto& v) { return ops::batch_norm(v[0], v[1], v[2], rm, rv, true, pytorch); });
    EXPECT_TRUE(close_to_torch(rm, c + "_train", "running_mean_after"));
    EXPECT_TRUE(close_to_torch(rv, c + "_train", "running_var_after"));
    Tensor erm = load(c + "_eval", "running_mean"), erv = load(c + "_eval", "running_var");
    check_case(c + "_eval", {"x", "gamma", "beta"},
               [&](auto& v) { return ops::batch_norm(v[0], v[1], v[2], erm, erv, false, pytorch); });
  }
}

TEST(TorchFixtures, MaxPool) {
  const std::pair<const char*, timbre::kernels::PoolWindow> cases[] = {
      {"maxpool_2x2", {2, 2, 2, 2}}, {"maxpool_4x2", {4, 2, 4, 2}},
      {"maxpool_4x1", {4, 1, 4, 1}}, {"maxpool_4x2_input", {4, 2, 4, 2}}};
  for (const auto& [c, w] : cases)
    check_case(c, {"x"}, [&](auto& v) { return ops::max_pool2d(v[0], w); });
}

TEST(TorchFixtures, Activations) {
  check_case("relu", {"x"}, [](auto& v) { return ops::relu(v[0]); });
  check_case("elu", {"x"}, [](auto& v) { return ops::elu(v[0], 1.0); });
  check_case("tanh", {"x"}, [](auto& v) { return ops::tanh(v[0]); });
  check_case("sigmoid", {"x"}, [](auto& v) { return ops::sigmoid(v[0]); });
}

TEST(TorchFixtures, SoftmaxAndLogSoftmax) {
  check_case("softmax_time", {"x"}, [](auto& v) { return ops::softmax(v[0]); });
  check_case("log_softmax_classes", {"x"}, [](auto& v) { return ops::log_softmax(v[0]); });
}

TEST(TorchFixtures, CrossEntropy) {
  const Tensor labels = load("cross_entropy", "labels");
  check_case("cross_entropy", {"logits"},
             [&](auto& v) { return ops::cross_entropy(v[0], labels); });
}

}  // namespace
