// timbre export: the safetensors layout, checked against PyTorch.
//
// tests/fixtures/make_export_fixtures.py builds each network in PyTorch
// (python/timbre_torch.py), writes its weights with the loader's writer and
// computes the logits of a batch through timbre_torch.load in float64. Here
// timbre (1) reads that file and loads it into its own model, (2) computes
// the same logits within 1e-5, and (3) writes the same tensors and metadata
// back byte for byte, so the file PyTorch loaded is the file timbre exports.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/fixtures/npy.h"
#include "tests/testing.h"
#include "tools/export.h"
#include "tools/train.h"

namespace {

namespace tt = timbre::tools;
using nlohmann::json;

std::string fixture(const std::string& model, const std::string& file) {
  return std::string(TIMBRE_FIXTURES_DIR) + "/export/" + model + "/" + file;
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ExportAgainstPyTorch : public ::testing::TestWithParam<const char*> {};

TEST_P(ExportAgainstPyTorch, LogitsAndBytes) {
  const std::string name = GetParam();
  const std::string path = fixture(name, "model.safetensors");
  const tt::SafeTensors file = tt::read_safetensors(path);
  ASSERT_EQ(file.metadata.at("timbre.model"), name);
  const json cfg = json::parse(file.metadata.at("timbre.config"));

  tt::LoadedRun run;
  run.model = timbre::models::make_model(name, cfg);
  tt::load_model_tensors(*run.model, file);
  run.model->eval();
  run.label_names = json::parse(file.metadata.at("timbre.labels")).get<std::vector<std::string>>();
  run.band_mean = file.tensors.at("timbre.band_mean").data;
  run.band_std = file.tensors.at("timbre.band_std").data;
  run.params.frames = cfg.at("input_width");

  const auto x = timbre::testing::load_npy(fixture(name, "x.npy"));
  const auto want = timbre::testing::load_npy(fixture(name, "logits.npy")).as<double>();
  const std::vector<float> xs = x.as<float>();
  const std::vector<float> got = tt::predict_logits(run, xs.data(), x.shape[0], 2);  // 2 batches + 1
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    // timbre's float32 against PyTorch's float64 (the bound; measured
    // at most 2.1e-7 for these three models).
    EXPECT_NEAR(got[i], want[i], 1e-5) << "logit " << i;

  // timbre's writer gives the file PyTorch loaded, byte for byte: the same
  // tensors (read from timbre's model) and the same layout.
  tt::SafeTensors mine = tt::model_tensors(*run.model);
  mine.tensors["timbre.band_mean"] = file.tensors.at("timbre.band_mean");
  mine.tensors["timbre.band_std"] = file.tensors.at("timbre.band_std");
  mine.metadata = file.metadata;
  EXPECT_EQ(mine.tensors.size(), file.tensors.size());
  EXPECT_TRUE(tt::safetensors_bytes(mine) == bytes_of(path));
}

INSTANTIATE_TEST_SUITE_P(Models, ExportAgainstPyTorch,
                         ::testing::Values("rescnn", "crnn", "parallel"));

// A model whose names or shapes differ is refused, naming each tensor.
TEST(Export, LoadRefusesTensorsThatDoNotFit) {
  tt::SafeTensors s = tt::read_safetensors(fixture("rescnn", "model.safetensors"));
  const json cfg = json::parse(s.metadata.at("timbre.config"));
  auto model = timbre::models::make_model("rescnn", cfg);
  s.tensors.erase("dense.bias");
  s.tensors["dense.weight"].shape = {1, int64_t(s.tensors["dense.weight"].data.size())};
  s.tensors["extra"] = {{1}, {0.f}};
  try {
    tt::load_model_tensors(*model, s);
    FAIL() << "accepted";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("missing dense.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("dense.weight: the file has"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected extra"), std::string::npos) << m;
  }
}

// Damaged files are named with the problem, never read as weights.
TEST(Export, ReadRefusesDamagedFiles) {
  timbre::testing::TempDir tmp;
  const std::string good = bytes_of(fixture("crnn", "model.safetensors"));
  auto refused = [&](const std::string& bytes, const std::string& why) {
    const std::string p = tmp / "bad.safetensors";
    std::ofstream(p, std::ios::binary) << bytes;
    try {
      tt::read_safetensors(p);
      ADD_FAILURE() << why << ": accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused(good.substr(0, 5), "shorter than");
  refused(good.substr(0, 40), "runs past the end");
  refused(good.substr(0, good.size() - 4), "data_offsets");
  refused(good + "xxxx", "does not end where");
  std::string not_json = good;
  not_json[8] = '[';
  refused(not_json, "not JSON");
}

}  // namespace
