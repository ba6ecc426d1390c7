// Data-parallel training through `mpirun -np 2 timbre train` (engine/
// distributed.h), against one process on the same global batch: the
// losses step by step and the final weights, for the three models;
// resuming on another number of ranks; a killed rank; the usage errors.
// The ranks run under simcuda here, NCCL's calls over MPI
// (kernels/sim/nccl.cpp); tiny data (16 mel bands x 16 frames) and tiny
// models keep each run to seconds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/serialize.h"
#include "features/h5store.h"
#include "tests/testing.h"
#include "tests/tools/command.h"
#include "tests/tools/tiny_data.h"
#include "tools/extract.h"

namespace {

using nlohmann::json;
using timbre::testing::sh;
using timbre::testing::TempDir;
namespace tt = timbre::tools;

const std::string kTimbre = timbre::testing::timbre_exe();

// How far two runs' weights may part after 20 steps that compute the same
// arithmetic in another order, relative to a tensor's largest weight (at
// least 1): measured 6e-8 at most. Not for the conv biases that feed a batch
// norm: their gradient is 0 in exact arithmetic (the batch norm subtracts
// any constant), so in floats it is rounding noise, which Adam, dividing
// by the gradient's own running size, turns into steps of up to lr; the
// two runs' biases part by up to 2 lr (1.75e-3 measured), and the batch
// norm takes them out of every output again.
constexpr float kWeightTolerance = 1e-6f;

// mpirun with N ranks on this machine: --oversubscribe (CI has 2 cores,
// and a rank's simcuda workers follow its share); root allowed (CI runs as
// root), through Open MPI's variables.
std::string mpirun(int ranks) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + std::string(TIMBRE_MPIEXEC) +
         " -np " + std::to_string(ranks) + " --oversubscribe ";
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// A checkpoint's f32 tensors by name, those whose name starts with `prefix`.
std::map<std::string, std::vector<float>> f32_tensors(const std::string& checkpoint,
                                                      const std::string& prefix = "") {
  std::map<std::string, std::vector<float>> m;
  for (const auto& [name, t] : timbre::load_tensor_file(checkpoint))
    if (name.rfind(prefix, 0) == 0 && t.dtype() == timbre::DType::f32) m[name] = t.to_host<float>();
  return m;
}
std::map<std::string, std::vector<float>> parameters(const std::string& checkpoint) {
  return f32_tensors(checkpoint, "param/");
}

// The models, tiny, with batch norm, dropout (crnn) and the GRU (crnn and
// parallel) in them.
const std::map<std::string, json> kConfigs{
    {"rescnn", {{"input_height", 16}, {"input_width", 16}, {"channels", {4, 8}}}},
    {"crnn", {{"input_height", 16}, {"input_width", 16}, {"channels", {4, 8}},
              {"pools", {{2, 2}, {2, 2}}}, {"gru_hidden", 6}, {"dropout", 0.25}}},
    {"parallel", {{"input_height", 16}, {"input_width", 16}, {"channels", {4}},
                  {"pools", {{2, 2}}}, {"branch_pool", {2, 2}}, {"embedding", 6},
                  {"gru_hidden", 5}, {"attention", 4}}}};

class Distributed : public ::testing::Test {
 protected:
  // 3 labels x 24 clips of 1 s: 288 segments of 16 x 16, about 230 to train on.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const std::string audio = *dir_ / "audio";
    timbre::testing::write_three_label_audio(audio, 24);
    tt::ExtractOptions e;
    e.dataset = "folder";
    e.audio_dir = audio;
    e.out = data();
    e.params = timbre::testing::tiny_params();
    e.seed = 5;
    tt::run_extract(e);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string data() { return *dir_ / "features.h5"; }

  // `timbre train` of `model` into out: global batch 32, 5 steps an epoch,
  // each step's loss in out/step_losses.json.
  static std::string train(const std::string& model, const std::string& out, int epochs) {
    return kTimbre + " train --model " + model + " --model-config '" + kConfigs.at(model).dump() +
           "' --data " + data() + " --out " + out + " --epochs " + std::to_string(epochs) +
           " --max-steps 5 --batch-size 32 --lr 1e-3 --seed 7 --precise-bn off"
           " --debug-step-losses";
  }
  static TempDir* dir_;
};
TempDir* Distributed::dir_ = nullptr;

// Expects two checkpoints' weights within kWeightTolerance (but the conv
// biases before batch norms); returns the largest gap found.
double expect_same_weights(const std::string& a, const std::string& b) {
  const auto wa = parameters(a), wb = parameters(b);
  EXPECT_EQ(wa.size(), wb.size());
  float worst = 0;
  for (const auto& [name, va] : wa) {
    if (!wb.count(name)) continue;
    const auto& vb = wb.at(name);
    EXPECT_EQ(va.size(), vb.size()) << name;
    const bool conv_bias = name.find("conv") != std::string::npos && name.size() > 5 &&
                           name.compare(name.size() - 5, 5, ".bias") == 0;
    if (conv_bias || va.size() != vb.size()) continue;
    float scale = 1, gap = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      scale = std::max(scale, std::abs(va[i]));
      gap = std::max(gap, std::abs(va[i] - vb[i]));
    }
    EXPECT_LE(gap, kWeightTolerance * scale) << name;
    worst = std::max(worst, gap / scale);
  }
  return worst;
}

// Largest relative difference of two runs' step losses, which must be as many.
double loss_gap(const json& a, const json& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / std::abs(double(a[i])));
  return worst;
}

// 2 ranks with --sync-batchnorm on slices of 16 compute what 1 process
// computes on the batch of 32: each step's loss within 1e-4 relative over
// 20 steps (measured: 3e-7 at most), and the weights at the end. The two
// add the same terms in another order (a GEMM over 32 samples against two
// over 16 and their average; batch norm's sums by chunks of another size),
// so they part in the last bits.
TEST_F(Distributed, TwoRanksMatchOneRank) {
  for (const char* model : {"rescnn", "crnn", "parallel"}) {
    SCOPED_TRACE(model);
    TempDir t;
    const auto one = sh(train(model, t / "one", 4));
    ASSERT_EQ(one.first, 0) << one.second;
    const auto two = sh(mpirun(2) + train(model, t / "two", 4) + " --sync-batchnorm");
    ASSERT_EQ(two.first, 0) << two.second;
    const json a = read_json(t / "one/step_losses.json"), b = read_json(t / "two/step_losses.json");
    ASSERT_EQ(a.size(), 20u);
    const double gap = loss_gap(a, b);
    std::printf("%s: step losses %.4f .. %.4f, largest relative gap %.2e\n", model, double(a[0]),
                double(a[19]), gap);
    EXPECT_LT(gap, 1e-4) << "1 rank: " << a.dump() << "\n2 ranks: " << b.dump();
    std::printf("%s: largest weight gap %.2e (of the largest weight, at least 1)\n", model,
                expect_same_weights(t / "one/last.ckpt", t / "two/last.ckpt"));
    // Rank 0 alone writes: one set of run files.
    EXPECT_TRUE(std::filesystem::exists(t / "two/best.ckpt"));
    EXPECT_EQ(read_json(t / "two/run.json").at("ranks"), 2);
  }
}

// The gradients' all-reduce in small buckets, each started by autograd's
// leaf hook while backward goes on (on the comm stream, forked from and
// joined to the compute stream; captured into the step's graph), gives the
// same bits as one all-reduce after backward: each element is averaged the
// same way. A bucket reduced before backward finished writing it, or
// missed, would change the losses. CI runs this under
// SIMCUDA_STREAMS=adversarial too, where the graph replays the comm
// stream's work as early, then as late, as its event waits allow.
TEST_F(Distributed, BucketedAllReduceGivesTheSameBits) {
  for (const char* model : {"rescnn", "crnn", "parallel"}) {
    SCOPED_TRACE(model);
    TempDir t;
    const auto one = sh(mpirun(2) + train(model, t / "one", 2) + " --sync-batchnorm --bucket-mib 0");
    ASSERT_EQ(one.first, 0) << one.second;
    EXPECT_NE(one.second.find("in 1 bucket after the backward pass"), std::string::npos)
        << one.second;
    // 512 bytes: about one bucket per parameter tensor of these tiny models.
    const auto many =
        sh(mpirun(2) + train(model, t / "many", 2) + " --sync-batchnorm --bucket-mib 0.00049");
    ASSERT_EQ(many.first, 0) << many.second;
    EXPECT_NE(many.second.find("buckets overlapping the backward pass"), std::string::npos)
        << many.second;
    EXPECT_EQ(read_json(t / "one/step_losses.json"), read_json(t / "many/step_losses.json"));
    const auto wa = parameters(t / "one/last.ckpt"), wb = parameters(t / "many/last.ckpt");
    for (const auto& [name, va] : wa)
      EXPECT_TRUE(timbre::testing::same_bits(va, wb.at(name))) << name;
  }
}

// The precise batch-norm pass, shared: each rank forwards its slices of
// the global batches with synchronised batch norms, and ends with the
// running statistics one process computes over the whole batches (crnn,
// against 1 rank, in the checkpoints). Without the synchronisation rank 0
// would keep the statistics of its own slices, 1e-2 apart.
//
// The running mean is compared less the conv bias before the batch norm:
// that bias is rounding noise that Adam turns into steps of up to lr
// (kWeightTolerance's comment), and it shifts the activations' mean by
// itself; the batch norm takes it out again. The variance does not see it.
TEST_F(Distributed, TheRanksShareThePreciseBatchNormPass) {
  TempDir t;
  const auto one = sh(train("crnn", t / "one", 1) + " --precise-bn on");
  ASSERT_EQ(one.first, 0) << one.second;
  const auto two = sh(mpirun(2) + train("crnn", t / "two", 1) + " --precise-bn on --sync-batchnorm");
  ASSERT_EQ(two.first, 0) << two.second;
  auto a = f32_tensors(t / "one/last.ckpt"), b = f32_tensors(t / "two/last.ckpt");
  double worst = 0;
  for (const char* block : {"block1", "block2"}) {
    const std::string bn = std::string("buffer/") + block + ".bn.";
    const std::string bias = std::string("param/") + block + ".conv.bias";
    ASSERT_TRUE(a.count(bn + "running_mean") && a.count(bias) && b.count(bn + "running_var"))
        << block;
    for (size_t i = 0; i < a[bias].size(); ++i) {
      const double mean_a = a[bn + "running_mean"][i] - a[bias][i];
      const double mean_b = b[bn + "running_mean"][i] - b[bias][i];
      const double var_a = a[bn + "running_var"][i], var_b = b[bn + "running_var"][i];
      worst = std::max({worst, std::abs(mean_a - mean_b) / std::max(1.0, std::abs(mean_a)),
                        std::abs(var_a - var_b) / std::max(1.0, var_a)});
    }
  }
  std::printf("precise batch-norm statistics, 2 ranks against 1: largest gap %.2e\n", worst);
  // Rounding: the weights the pass runs with part in the last bits (6e-8),
  // and the sums are taken in another order.
  EXPECT_LT(worst, 1e-5);
}

// Without --sync-batchnorm each rank normalises with its own slice's
// statistics: the test above would see it.
TEST_F(Distributed, WithoutSyncBatchNormTheStepsDiffer) {
  TempDir t;
  ASSERT_EQ(sh(train("crnn", t / "one", 1)).first, 0);
  const auto two = sh(mpirun(2) + train("crnn", t / "two", 1));
  ASSERT_EQ(two.first, 0) << two.second;
  const double gap =
      loss_gap(read_json(t / "one/step_losses.json"), read_json(t / "two/step_losses.json"));
  std::printf("crnn without --sync-batchnorm: largest relative gap %.2e\n", gap);
  EXPECT_GT(gap, 1e-4);
}

// A whole epoch: its last, short batch is cut into two slices as well
// (leaving out one sample when it is odd), so the ranks take as many steps
// as one process and the same ones but perhaps the last.
TEST_F(Distributed, AnEpochsShortLastBatchIsSplitToo) {
  const int64_t n = timbre::features::FeatureStore::open(data()).size(timbre::features::Split::train);
  const int64_t tail = n % 32;
  ASSERT_GE(tail, 2) << "the data should end its epoch with a short batch";
  std::printf("%lld training samples: %lld steps and a last batch of %lld\n", (long long)n,
              (long long)(n / 32), (long long)tail);
  TempDir t;
  auto whole_epoch = [&](const std::string& out) {
    return train("crnn", out, 1) + " --max-steps 0";
  };
  ASSERT_EQ(sh(whole_epoch(t / "one")).first, 0);
  const auto two = sh(mpirun(2) + whole_epoch(t / "two") + " --sync-batchnorm");
  ASSERT_EQ(two.first, 0) << two.second;
  json a = read_json(t / "one/step_losses.json"), b = read_json(t / "two/step_losses.json");
  ASSERT_EQ(a.size(), size_t(n / 32 + 1));
  ASSERT_EQ(b.size(), a.size());
  if (tail % 2 == 1) {  // the last steps differ by a sample
    a.erase(a.size() - 1);
    b.erase(b.size() - 1);
  }
  EXPECT_LT(loss_gap(a, b), 1e-4) << a.dump() << "\n" << b.dump();
}

// A run started on 2 ranks continues on 1, and one started on 1 continues
// on 2; both end where the run on 1 rank alone ends.
TEST_F(Distributed, ResumeOnAnotherNumberOfRanks) {
  TempDir t;
  ASSERT_EQ(sh(train("crnn", t / "ref", 4)).first, 0);
  const json ref = read_json(t / "ref/step_losses.json");
  for (const int first : {2, 1}) {
    SCOPED_TRACE("first on " + std::to_string(first) + " ranks");
    const std::string out = t / ("run" + std::to_string(first));
    const std::string a = (first == 2 ? mpirun(2) : "") + train("crnn", out, 2);
    const auto r1 = sh(a + (first == 2 ? " --sync-batchnorm" : ""));
    ASSERT_EQ(r1.first, 0) << r1.second;
    const json head = read_json(out + "/step_losses.json");
    const std::string b = (first == 2 ? "" : mpirun(2)) + train("crnn", out, 4) + " --resume";
    const auto r2 = sh(b + (first == 2 ? "" : " --sync-batchnorm"));
    ASSERT_EQ(r2.first, 0) << r2.second;
    json all = head;
    for (const auto& l : read_json(out + "/step_losses.json")) all.push_back(l);
    EXPECT_LT(loss_gap(ref, all), 1e-4) << ref.dump() << "\n" << all.dump();
    expect_same_weights(t / "ref/last.ckpt", out + "/last.ckpt");
  }
}

// A rank that dies (SIGKILL at step 3) ends the whole job, with a message
// naming it, in well under a minute.
TEST_F(Distributed, AKilledRankEndsTheJob) {
  TempDir t;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sh(mpirun(2) + train("crnn", t / "run", 50) + " --debug-kill-step 3");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.first, 0) << r.second;
  EXPECT_LT(seconds, 60) << r.second;
  EXPECT_NE(r.second.find("rank 1"), std::string::npos) << r.second;
  EXPECT_NE(r.second.find("signal 9"), std::string::npos) << r.second;
}

// A rank that hangs (sleeps at step 3) ends the job too: the other rank
// waits for it, stops beating, and its watchdog (--rank-timeout 5) ends it.
TEST_F(Distributed, AHungRankEndsTheJob) {
  TempDir t;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sh(mpirun(2) + train("crnn", t / "run", 50) +
                    " --debug-hang-step 3 --rank-timeout 5");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.first, 0) << r.second;
  EXPECT_LT(seconds, 60) << r.second;
  EXPECT_NE(r.second.find("no progress in 5 s in training"), std::string::npos) << r.second;
}

// An extraction rank that hangs (sleeps at its third track): its watchdog
// (--rank-timeout 3) ends it, the launcher the job; no store is left that
// looks complete.
TEST_F(Distributed, AHungExtractionRankEndsTheJob) {
  TempDir t;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sh(mpirun(2) + kTimbre + " extract --dataset folder --audio " + (*dir_ / "audio") +
                    timbre::testing::tiny_feature_flags() + " --jobs 1 --rank-timeout 3" +
                    " --debug-hang-track 2 --out " + (t / "x.h5"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.first, 0) << r.second;
  EXPECT_LT(seconds, 60) << r.second;
  EXPECT_NE(r.second.find("rank 1 of 2: no progress in 3 s in extraction"), std::string::npos)
      << r.second;
  EXPECT_FALSE(std::filesystem::exists(t / "x.h5"));
}

// `mpirun -np 2 timbre extract` writes the store one process writes: every
// dataset and attribute the same, band statistics to the bit. --batch 7
// puts batch boundaries across the two ranks' blocks.
TEST_F(Distributed, ExtractionOnTwoRanksIsTheSameStore) {
  TempDir t;
  const std::string args = " extract --dataset folder --audio " + (*dir_ / "audio") +
                           timbre::testing::tiny_feature_flags() +
                           " --seed 5 --batch 7 --jobs 1 --out ";
  const auto one = sh(kTimbre + args + (t / "one.h5"));
  ASSERT_EQ(one.first, 0) << one.second;
  const auto two = sh(mpirun(2) + kTimbre + args + (t / "two.h5"));
  ASSERT_EQ(two.first, 0) << two.second;
  EXPECT_NE(two.second.find("72 of 72 listed tracks read"), std::string::npos) << two.second;
  using timbre::features::FeatureStore;
  using timbre::features::Split;
  const FeatureStore a = FeatureStore::open(t / "one.h5"), b = FeatureStore::open(t / "two.h5");
  EXPECT_EQ(a.label_names(), b.label_names());
  EXPECT_EQ(a.source(), b.source());
  EXPECT_EQ(a.band_mean(), b.band_mean());
  EXPECT_EQ(a.band_std(), b.band_std());
  EXPECT_NO_THROW(b.check_params(a.params()));
  for (Split s : {Split::train, Split::validation, Split::test}) {
    const int64_t n = a.size(s);
    ASSERT_EQ(b.size(s), n);
    EXPECT_EQ(a.read_y(s), b.read_y(s));
    EXPECT_EQ(a.read_track_id(s), b.read_track_id(s));
    EXPECT_EQ(a.read_segment_start(s), b.read_segment_start(s));
    std::vector<int64_t> all(size_t(n), 0);
    for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
    const size_t per = size_t(a.rows()) * size_t(a.frames());
    std::vector<float> xa(size_t(n) * per), xb(size_t(n) * per);
    a.read_x(s, all.data(), all.size(), xa.data());
    b.read_x(s, all.data(), all.size(), xb.data());
    EXPECT_TRUE(xa == xb) << "x of split " << int(s);
  }
  // Nothing left beside the store (the ranks' parts are removed).
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(t.path())) entries += !e.is_directory();
  EXPECT_EQ(entries, 2);
  for (const auto& e : std::filesystem::directory_iterator(t.path()))
    EXPECT_FALSE(e.is_directory()) << e.path();
}

// What a data-parallel run refuses, each with exit code 2 and the reason.
TEST_F(Distributed, UsageErrors) {
  TempDir t;
  const std::string base = kTimbre + " train --model crnn --model-config '" +
                           kConfigs.at("crnn").dump() + "' --data " + data() + " --out " +
                           (t / "run") + " --epochs 1";
  const auto odd = sh(mpirun(2) + base + " --batch-size 33");
  EXPECT_EQ(odd.first, 2) << odd.second;
  EXPECT_NE(odd.second.find("--batch-size 33 is the global batch"), std::string::npos) << odd.second;
  const auto prof = sh(mpirun(2) + base + " --profile");
  EXPECT_EQ(prof.first, 2) << prof.second;
  EXPECT_NE(prof.second.find("--profile measures one process"), std::string::npos) << prof.second;
  const auto info = sh(mpirun(2) + kTimbre + " models crnn");
  EXPECT_EQ(info.first, 2) << info.second;
  EXPECT_NE(info.second.find("only `timbre train` and `timbre extract` run on several ranks"),
            std::string::npos)
      << info.second;
  EXPECT_FALSE(std::filesystem::exists(t / "run/run.json"));
}

}  // namespace
