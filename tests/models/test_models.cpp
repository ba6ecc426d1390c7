// The three networks: ten Adam steps against PyTorch (fixtures from
// tests/fixtures/make_model_fixtures.py at reduced sizes), the default-size
// models' shapes and parameter counts, configuration round trips and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "engine/ops.h"
#include "engine/optim.h"
#include "models/crnn.h"
#include "models/parallel.h"
#include "models/registry.h"
#include "models/rescnn.h"
#include "tests/fixtures/npy.h"
#include "tests/testing.h"

namespace {

using nlohmann::json;
using timbre::Generator;
using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
namespace ops = timbre::ops;
namespace models = timbre::models;

const std::string kDir = timbre::testing::fixtures_dir() + "/models/";

json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open (run tests/fixtures/make_model_fixtures.py)");
  return json::parse(f);
}

timbre::testing::NpyArray npy(const std::string& model, const std::string& name) {
  return timbre::testing::load_npy(kDir + model + "/" + name + ".npy");
}

// Copies fixture values into a parameter or buffer, checking the shape.
void load_into(Tensor t, const timbre::testing::NpyArray& a, const std::string& what) {
  ASSERT_EQ(Shape(a.shape), t.shape()) << what;
  t.copy_from(Tensor::from_host(t.shape(), a.as<float>()));
}

// Parameters whose true gradient is zero: the bias of a convolution that
// feeds a training-mode batch norm (directly, or through a max pool, which
// commutes with a per-channel shift) is removed again by the normalisation.
// Their computed gradient is rounding noise (~1e-9) of either sign, which
// Adam's normalisation m / (sqrt(v) + eps) turns into steps of up to ~lr in
// a random direction, in PyTorch and in timbre alike. The same drift enters
// the running mean of the batch norm they feed.
bool noise_driven(const std::string& model, const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (model == "crnn") return ends(".conv.bias") || ends(".bn.running_mean");
  return ends("conv1.bias") || ends("conv2.bias") || ends("bn1.running_mean") ||
         ends("bn2.running_mean");
}

class PyTorchFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchFixture, TenAdamStepsMatch) {
  const std::string name = GetParam();
  const json config = read_json(kDir + name + "/config.json");
  Generator g(1);
  auto model = models::make_model(name, config, g);
  model->train();

  // Every fixture file has a timbre parameter or buffer of the same name
  // and shape, and the other way round.
  std::set<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(kDir + name + "/init"))
    files.insert(e.path().stem().string());
  const auto params = model->named_parameters();
  const auto buffers = model->named_buffers();
  EXPECT_EQ(files.size(), params.size() + buffers.size());
  for (const auto& [n, v] : params) load_into(v.value(), npy(name, "init/" + n), n);
  for (const auto& [n, t] : buffers) load_into(t, npy(name, "init/" + n), n);

  const auto xs = npy(name, "x"), ls = npy(name, "labels");
  const std::vector<float> xh = xs.as<float>();
  const std::vector<int32_t> lh = ls.as<int32_t>();
  const std::vector<double> want = npy(name, "losses").as<double>();
  const int64_t steps = xs.shape[0], batch = xs.shape[1];
  ASSERT_EQ(int64_t(want.size()), steps);
  const Shape xshape{batch, xs.shape[2], xs.shape[3], xs.shape[4]};
  const int64_t per = xshape.numel();

  const double lr = 1e-3;
  double worst_loss = 0, worst_weight = 0, worst_noise = 0;  // reported below
  timbre::Adam adam(model->parameters(), timbre::kernels::pytorch_adam(lr));
  for (int64_t s = 0; s < steps; ++s) {
    const Tensor x = Tensor::from_host(
        xshape, std::vector<float>(xh.begin() + s * per, xh.begin() + (s + 1) * per));
    const Tensor labels = Tensor::from_host(
        Shape{batch}, std::vector<int32_t>(lh.begin() + s * batch, lh.begin() + (s + 1) * batch));
    Variable loss = ops::cross_entropy(model->forward(Variable(x), g), labels);
    const double got = loss.value().to_host<float>()[0];
    worst_loss = std::max(worst_loss, std::fabs(got - want[size_t(s)]) / std::fabs(want[size_t(s)]));
    // The brief's bound: 1e-4 relative. float32 sums in other orders than
    // PyTorch's (im2col GEMMs, BN reductions) differ by ~1e-7 relative per
    // op; measured after ten Adam steps: at most 3.4e-7 relative.
    EXPECT_NEAR(got, want[size_t(s)], 1e-4 * std::fabs(want[size_t(s)])) << name << " step " << s;
    model->zero_grad();
    loss.backward();
    adam.step();
  }

  auto check_final = [&](const std::string& n, const Tensor& t) {
    const auto ref = npy(name, "final/" + n).as<double>();
    const auto init = npy(name, "init/" + n).as<double>();
    const auto got = t.to_host<float>();
    if (noise_driven(name, n)) {
      // See noise_driven(): only the size of the drift is defined. Adam's
      // step is at most lr * (1 - beta1) / sqrt(1 - beta2) ~ 3.2 lr per
      // step in the worst case, so after `steps` steps each run's bias lies
      // within 3.2 * steps * lr of its initial value, and the two runs'
      // biases (and the running means they shift) within twice that.
      const double drift = 3.2 * double(steps) * lr;
      for (size_t i = 0; i < ref.size(); ++i)
        worst_noise = std::max(worst_noise, std::fabs(got[i] - ref[i]));
      if (n.find("running_mean") == std::string::npos) {
        EXPECT_TRUE(timbre::testing::all_close(got, init, {drift, 0})) << n;
      }
      EXPECT_TRUE(timbre::testing::all_close(got, ref, {2 * drift, 1e-4})) << n;
      return;
    }
    double scale = 0;
    for (double r : ref) scale = std::max(scale, std::fabs(r));
    for (size_t i = 0; i < ref.size(); ++i)
      worst_weight = std::max(worst_weight, std::fabs(got[i] - ref[i]) / scale);
    // Ten steps of lr 1e-3 move a weight by ~1e-2; float32 rounding
    // differences in the gradients (other summation orders than PyTorch's)
    // reach the update through Adam's m / sqrt(v), which amplifies them
    // where a gradient is small. Measured: at most 4e-6 of a tensor's
    // largest value (the parallel model's). The bound, 5e-5 of that scale,
    // leaves 12x headroom and is still 20x below one update (lr = 1e-3 on
    // weights of scale ~1), so a missing or wrong-direction step fails.
    EXPECT_TRUE(timbre::testing::all_close(got, ref, {5e-5 * scale, 0})) << n;
  };
  for (const auto& [n, v] : params) check_final(n, v.value());
  for (const auto& [n, t] : buffers) check_final(n, t);
  std::printf("[ %s ] worst loss error %.2e relative; worst final weight error %.2e of its "
              "tensor's scale; noise-driven biases/means differ by up to %.2e\n",
              name.c_str(), worst_loss, worst_weight, worst_noise);
}

INSTANTIATE_TEST_SUITE_P(Models, PyTorchFixture, ::testing::Values("rescnn", "crnn", "parallel"),
                         [](const auto& info) { return info.param; });

// Default-size models: (N, 1, 128, 128) -> (N, 8) at batch 2, evaluation
// mode without a graph (the cheapest full pass), on two simcuda workers.
TEST(DefaultModels, ForwardShapes) {
#if TIMBRE_BACKEND_SIM
  simcuda::Options o = simcuda::options();
  o.workers = 2;
  simcuda::ScopedOptions scope(o);
#endif
  Generator g(7);
  Tensor x = Tensor::empty(Shape{2, 1, 128, 128});
  g.normal(x, 0, 1);
  for (const std::string& name : models::model_names()) {
    auto m = models::make_model(name, json::object(), g);
    m->eval();
    timbre::NoGradGuard no_grad;
    const Tensor y = m->forward(Variable(x), g).value();
    EXPECT_EQ(y.shape(), (Shape{2, 8})) << name;
    for (float v : y.to_host<float>()) EXPECT_TRUE(std::isfinite(v)) << name;
  }
}

// A CRNN training-mode forward at the default size, with dropout active:
// checks the pools reduce 128x128 to 1x16 and batch statistics run.
TEST(DefaultModels, CrnnTrainForwardAndCustomClasses) {
#if TIMBRE_BACKEND_SIM
  simcuda::Options o = simcuda::options();
  o.workers = 2;
  simcuda::ScopedOptions scope(o);
#endif
  Generator g(8);
  Tensor x = Tensor::empty(Shape{2, 1, 128, 128});
  g.normal(x, 0, 1);
  auto m = models::make_model("crnn", {{"n_classes", 5}}, g);
  const Tensor y = m->forward(Variable(x), g).value();
  EXPECT_EQ(y.shape(), (Shape{2, 5}));
  bool seq_row = false;
  for (const auto& r : m->describe())
    if (r.name == "to sequence") seq_row = (r.shape == std::vector<int64_t>{16, 128});
  EXPECT_TRUE(seq_row) << "the default C-RNN reads 16 steps of 128 features";
}

// Closed-form counts of the default models.
int64_t conv(int64_t ci, int64_t co, int64_t k) { return ci * co * k * k + co; }
int64_t rescnn_trunk_params() {
  int64_t n = 0, in = 1;
  for (int64_t c : {16, 32, 64, 128, 128}) {
    n += conv(in, c, 3) + conv(c, c, 3) + 4 * c + (in != c ? conv(in, c, 1) : 0);
    in = c;
  }
  return n;
}
int64_t gru_params(int64_t in, int64_t h) { return 3 * h * (in + h) + 6 * h; }

TEST(DefaultModels, ParameterCountsMatchPyTorchAndFormula) {
  const json torch_counts = read_json(kDir + "param_counts.json");
  const int64_t rescnn = rescnn_trunk_params() + 2048 * 8 + 8;
  const int64_t crnn = conv(1, 64, 3) + conv(64, 128, 3) + 2 * conv(128, 128, 3) +
                       2 * (64 + 3 * 128) + gru_params(128, 32) + 32 * 8 + 8;
  const int64_t parallel = rescnn_trunk_params() + (32 * 128 + 128) + 2 * gru_params(128, 64) +
                           (128 * 128 + 2 * 128) + 2176 * 8 + 8;
  const std::map<std::string, int64_t> formula{{"rescnn", rescnn}, {"crnn", crnn}, {"parallel", parallel}};
  Generator g(0);
  for (const std::string& name : models::model_names()) {
    auto m = models::make_model(name, json::object(), g);
    EXPECT_EQ(m->parameter_count(), torch_counts.at(name).get<int64_t>()) << name;
    EXPECT_EQ(m->parameter_count(), formula.at(name)) << name;
    int64_t described = 0;
    for (const auto& r : m->describe()) described += r.params;
    EXPECT_EQ(described, m->parameter_count()) << name << ": describe() misses parameters";
    const std::string table = models::describe_table(*m);
    // TIMBRE_SHOW_MODELS=1 prints the tables (docs/models.md quotes them).
    if (std::getenv("TIMBRE_SHOW_MODELS")) std::printf("%s\n", table.c_str());
    EXPECT_NE(table.find("total"), std::string::npos);
    EXPECT_NE(table.find(name), std::string::npos);
  }
}

TEST(DefaultModels, DescribeShapesAndFlops) {
  Generator g(0);
  auto m = models::make_model("rescnn", json::object(), g);
  const auto rows = m->describe();
  ASSERT_GE(rows.size(), 3u);
  EXPECT_EQ(rows[rows.size() - 2].shape, std::vector<int64_t>{2048});
  EXPECT_EQ(rows.back().shape, std::vector<int64_t>{8});
  EXPECT_EQ(rows.back().flops, (2 * 2048 + 1) * 8);
  // The first convolution: 16 filters of 1x3x3 over 128x128 outputs.
  EXPECT_EQ(rows[1].name, "block1.conv1 3x3");
  EXPECT_EQ(rows[1].flops, (2 * 9 + 1) * 16 * 128 * 128);
  auto p = models::make_model("parallel", json::object(), g);
  bool concat = false;
  for (const auto& r : p->describe())
    if (r.name == "concat") concat = (r.shape == std::vector<int64_t>{2176});
  EXPECT_TRUE(concat) << "2048 CNN features + 128 attention features";
}

TEST(Config, RoundTripAndSeeds) {
  const std::map<std::string, json> custom{
      {"rescnn", {{"n_classes", 4}, {"input_height", 16}, {"input_width", 24},
                  {"channels", {3, 5}}, {"batchnorm", "pytorch"}}},
      {"crnn", {{"n_classes", 3}, {"input_height", 16}, {"input_width", 16},
                {"channels", {3, 4}}, {"pools", {{2, 2}, {8, 2}}}, {"gru_hidden", 6},
                {"dropout", 0.25}}},
      {"parallel", {{"n_classes", 3}, {"input_height", 16}, {"input_width", 16},
                    {"channels", {3}}, {"pools", {{4, 4}}}, {"branch_pool", {2, 4}},
                    {"embedding", 5}, {"gru_hidden", 3}, {"attention", 4}}}};
  for (const auto& [name, cfg] : custom) {
    Generator g1(5), g2(5), g3(6);
    auto a = models::make_model(name, cfg, g1);
    const json full = a->config();
    for (const auto& item : cfg.items()) EXPECT_EQ(full.at(item.key()), item.value()) << name;
    auto b = models::make_model(name, full, g2);
    EXPECT_EQ(b->config(), full) << name;
    auto c = models::make_model(name, full, g3);
    const auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    bool differs = false;
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_EQ(pa[i].first, pb[i].first);
      EXPECT_EQ(pa[i].second.value().to_host<float>(), pb[i].second.value().to_host<float>())
          << name << " " << pa[i].first << ": the same seed gives the same weights";
      differs = differs || pa[i].second.value().to_host<float>() != pc[i].second.value().to_host<float>();
    }
    EXPECT_TRUE(differs) << name << ": another seed gives other weights";
    // A forward pass at the custom size gives (N, n_classes).
    Tensor x = Tensor::empty(Shape{3, 1, full["input_height"].get<int64_t>(),
                                   full["input_width"].get<int64_t>()});
    g1.normal(x, 0, 1);
    EXPECT_EQ(b->forward(Variable(x), g1).value().shape(),
              (Shape{3, full["n_classes"].get<int64_t>()})) << name;
  }
  // The defaults, written out, are the paper's networks.
  Generator g(0);
  const json d = models::make_model("crnn", json::object(), g)->config();
  EXPECT_EQ(d["channels"], json({64, 128, 128, 128}));
  EXPECT_EQ(d["pools"], json({{2, 2}, {4, 2}, {4, 2}, {4, 1}}));
  EXPECT_EQ(d["batchnorm"], "keras");
}

// Expects make_model to throw std::invalid_argument whose message contains
// every one of `parts`.
void expect_rejected(const std::string& name, const json& cfg, std::vector<std::string> parts) {
  Generator g(0);
  try {
    models::make_model(name, cfg, g);
    ADD_FAILURE() << name << " " << cfg.dump() << " was accepted";
  } catch (const std::invalid_argument& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

TEST(Config, BadInputsRejectedWithClearMessages) {
  expect_rejected("resnet", json::object(), {"unknown model 'resnet'", "rescnn", "crnn", "parallel"});
  expect_rejected("rescnn", {{"chanels", {4}}}, {"rescnn config", "unknown key 'chanels'", "channels"});
  expect_rejected("crnn", {{"gru_hiden", 3}}, {"crnn config", "unknown key 'gru_hiden'"});
  expect_rejected("parallel", {{"dropout", 0.1}}, {"parallel config", "unknown key 'dropout'"});
  expect_rejected("rescnn", {{"n_classes", 0}}, {"'n_classes'", "positive integer"});
  expect_rejected("rescnn", {{"n_classes", "8"}}, {"'n_classes'", "positive integer"});
  expect_rejected("crnn", {{"dropout", 1.0}}, {"'dropout'", "[0, 1)"});
  expect_rejected("rescnn", {{"channels", {4, 8}}, {"pools", {{2, 2}}}}, {"'pools'", "one per block"});
  expect_rejected("rescnn", {{"pools", {{2, 2}, {2, 2}, {2, 2}, {2, 2}, {2}}}}, {"pools[4]"});
  expect_rejected("rescnn", {{"input_height", 8}}, {"does not fit"});
  expect_rejected("parallel", {{"batchnorm", "tf"}}, {"'batchnorm'", "keras", "pytorch"});
  expect_rejected("crnn", json::array({1, 2}), {"crnn config", "JSON object"});
  // A wrong input shape names the model and the expected shape.
  Generator g(0);
  auto m = models::make_model("rescnn", {{"input_height", 8}, {"input_width", 8}, {"channels", {2}},
                                         {"pools", {{2, 2}}}}, g);
  try {
    m->forward(Variable(Tensor::zeros(Shape{2, 1, 8, 9})), g);
    ADD_FAILURE() << "a wrong input shape was accepted";
  } catch (const timbre::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("rescnn: input"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(N, 1, 8, 8)"), std::string::npos) << e.what();
  }
}

}  // namespace
