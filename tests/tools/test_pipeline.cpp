// The tools end to end on tiny data made by the tests: an FMA-layout
// dataset through `timbre extract`, and a folder dataset through extract ->
// train -> eval -> predict, with the failure paths the issues ask for
// (resume equivalence, foreign checkpoints, NaN, signals, usage errors,
// corrupt files). Small feature parameters (8 kHz, 16 mel bands, 16 frames)
// and small models keep every run to seconds under simcuda.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <toml++/toml.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "engine/serialize.h"
#include "features/h5store.h"
#include "tests/features/synth_audio.h"
#include "tests/tools/command.h"
#include "tests/tools/tiny_data.h"
#include "tools/export.h"
#include "tools/extract.h"
#include "tools/inference.h"
#include "tools/report.h"
#include "tools/tensorboard.h"
#include "tools/train.h"

namespace {

using timbre::testing::TempDir;
using timbre::testing::tiny_feature_flags;
using timbre::testing::tiny_params;
using timbre::testing::write_three_label_audio;
using timbre::features::Split;
namespace synth = timbre::testing::synth;
namespace tt = timbre::tools;

// A folder dataset under t/audio: a folder per label holding `clips` sine
// WAVs of `samples` samples at 8 kHz (a frequency per label), and the
// options to extract it into t/f.h5 with the tiny parameters.
tt::ExtractOptions tone_dataset(const TempDir& t, const std::vector<std::string>& labels,
                                int clips, size_t samples) {
  for (size_t l = 0; l < labels.size(); ++l) {
    std::filesystem::create_directories(t / ("audio/" + labels[l]));
    for (int k = 0; k < clips; ++k)
      synth::write_wav(t / ("audio/" + labels[l] + "/" + std::to_string(k) + ".wav"),
                       synth::sine(samples, 200.0 + 700.0 * double(l), 8000), 1, 8000,
                       synth::WavFormat::Float);
  }
  tt::ExtractOptions e;
  e.dataset = "folder";
  e.audio_dir = t / "audio";
  e.out = t / "f.h5";
  e.params = tiny_params();
  return e;
}

using timbre::testing::sh;
const std::string kTimbre = timbre::testing::timbre_exe();

// ----------------------------------------------------------------------------
// FMA layout: tracks.csv with the two-level header, quoted commas and
// newlines; MP3s made here; one track missing, one corrupt, one known bad.
struct FmaFixture {
  TempDir dir;
  std::string audio, csv;
  // id -> (genre, split, seconds)
  struct T { int64_t id; std::string genre, split; double seconds; };
  std::vector<T> tracks = {
      {2, "Hip-Hop", "training", 1.3},    {3, "Hip-Hop", "training", 1.1},
      {5, "Folk", "training", 1.2},       {10, "Folk", "training", 1.0},
      {20, "Hip-Hop", "validation", 1.0}, {26, "Folk", "validation", 1.0},
      {30, "Hip-Hop", "test", 1.0},       {46, "Folk", "test", 1.0},
      {48, "Folk", "training", 1.0},      // missing audio file
      {134, "Hip-Hop", "training", 1.0},  // corrupt audio file
      {98565, "Folk", "training", 1.0},   // a known-bad fma_small id
  };
  FmaFixture() {
    audio = dir / "fma_small";
    csv = dir / "tracks.csv";
    std::ofstream f(csv);
    f << ",album,set,set,track,track\n"
      << ",title,split,subset,genre_top,title\n"
      << "track_id,,,,,\n";
    for (const T& t : tracks) {
      f << t.id << ",\"Album " << t.id << ", with a comma\"," << t.split << ",small," << t.genre
        << ",\"Title \"\"" << t.id << "\"\"\nsecond line, too\"\n";
    }
    f << "999,\"not small\",training,medium,Folk,x\n";
    f.close();
    for (const T& t : tracks) {
      if (t.id == 48) continue;
      const std::string path = timbre::features::fma_audio_path(audio, t.id);
      std::filesystem::create_directories(std::filesystem::path(path).parent_path());
      const size_t n = size_t(t.seconds * 22050);
      const auto x = t.genre == "Folk" ? synth::chord(n, {220.0, 277.2, 329.6}, 22050)
                                       : synth::noise(n, uint32_t(t.id));
      synth::write_mp3(path, x, 1, 22050);
      if (t.id == 134) {  // keep the first 300 bytes: the tag promises far more
        auto bytes = synth::read_bytes(path);
        bytes.resize(300);
        synth::write_bytes(path, bytes);
      }
    }
  }
};

TEST(Extract, FmaLayoutThroughTheCommand) {
  FmaFixture fx;
  const std::string out = fx.dir / "features.h5";
  const auto [rc, log] = sh(kTimbre + " extract --dataset fma --audio " + fx.audio +
                             " --metadata " + fx.csv + " --out " + out + " --jobs 2" +
                             tiny_feature_flags());
  ASSERT_EQ(rc, 0) << log;
  // Each skipped track is named with its reason.
  EXPECT_NE(log.find("8 of 9 listed tracks read"), std::string::npos) << log;
  EXPECT_NE(log.find("098565"), std::string::npos) << log;
  EXPECT_NE(log.find("known bad"), std::string::npos) << log;
  EXPECT_NE(log.find("000048"), std::string::npos) << log;
  EXPECT_NE(log.find("000134.mp3"), std::string::npos) << log;

  auto st = timbre::features::FeatureStore::open(out);
  EXPECT_NO_THROW(st.check_params(tiny_params()));
  EXPECT_EQ(st.label_names(), (std::vector<std::string>{"Folk", "Hip-Hop"}));
  EXPECT_EQ(st.band_mean().size(), 16u);
  EXPECT_NE(st.source().find("fma"), std::string::npos);
  // Segments per track: floor(decoded samples at 8 kHz / 1920).
  const long long seg = tiny_params().segment_samples();
  std::map<int64_t, int64_t> want_segments;
  std::map<int64_t, int> want_label;
  std::map<int64_t, Split> want_split;
  for (const auto& t : fx.tracks) {
    if (t.id == 48 || t.id == 134 || t.id == 98565) continue;
    const long long n = std::llround(double(size_t(t.seconds * 22050)) * 8000 / 22050);
    want_segments[t.id] = n / seg;
    want_label[t.id] = t.genre == "Folk" ? 0 : 1;
    want_split[t.id] = t.split == "training" ? Split::train
                       : t.split == "validation" ? Split::validation : Split::test;
  }
  std::map<int64_t, int64_t> got;
  for (Split s : {Split::train, Split::validation, Split::test}) {
    const auto ids = st.read_track_id(s);
    const auto y = st.read_y(s);
    const auto starts = st.read_segment_start(s);
    ASSERT_EQ(ids.size(), y.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      ++got[ids[i]];
      EXPECT_EQ(y[i], want_label.at(ids[i])) << ids[i];
      EXPECT_EQ(want_split.at(ids[i]), s) << ids[i];
      EXPECT_EQ(starts[i] % 1, 0);
    }
  }
  EXPECT_EQ(got, want_segments);
  // The spectrograms are dB relative to each segment's own maximum.
  std::vector<int64_t> idx = {0};
  std::vector<float> x(16 * 16);
  st.read_x(Split::train, idx.data(), 1, x.data());
  EXPECT_EQ(*std::max_element(x.begin(), x.end()), 0.0f);
  EXPECT_GE(*std::min_element(x.begin(), x.end()), -80.0f);

  // A second extract onto the same file is refused (nothing is lost) ...
  const auto again = sh(kTimbre + " extract --dataset fma --audio " + fx.audio + " --metadata " +
                         fx.csv + " --out " + out + " --n-mels 32" + " --sample-rate 8000 --n-fft "
                         "256 --hop 128 --fmax 4000 --frames 16");
  EXPECT_EQ(again.first, 1);
  EXPECT_NE(again.second.find("n_mels"), std::string::npos) << again.second;
  EXPECT_NO_THROW(timbre::features::FeatureStore::open(out).check_params(tiny_params()));
}

TEST(Extract, UsageErrorsExit2) {
  EXPECT_EQ(sh(kTimbre + " extract --dataset xyz --audio a --out b").first, 2);
  EXPECT_EQ(sh(kTimbre + " extract --audio a --out b --segments 0").first, 2);
  EXPECT_EQ(sh(kTimbre + " extract --audio a --out b --augment reverb").first, 2);
  EXPECT_EQ(sh(kTimbre + " extract --out b").first, 2);
  EXPECT_EQ(sh(kTimbre + " extract --help").first, 0);
  EXPECT_EQ(sh(kTimbre + " baseline --method tree --data x.h5").first, 2);
  EXPECT_EQ(sh(kTimbre + " baseline --method knn").first, 2);
  EXPECT_EQ(sh(kTimbre + " nosuchcommand").first, 2);
  const auto missing = sh(kTimbre + " baseline --method knn --data /nonexistent.h5");
  EXPECT_EQ(missing.first, 1);
  EXPECT_NE(missing.second.find("/nonexistent.h5"), std::string::npos) << missing.second;
  // Feature parameters each flag accepts alone but the set refuses, and
  // numbers that are not finite: usage errors, before any audio is read.
  for (const char* bad : {"--n-fft 0", "--fmax 20000", "--fmin nan", "--top-db inf",
                          "--seed -1"}) {
    const auto r = sh(kTimbre + " extract --audio /nonexistent --out b.h5 " + bad);
    EXPECT_EQ(r.first, 2) << bad << ": " << r.second;
  }
  EXPECT_EQ(sh(kTimbre + " baseline --method svm --data x.h5 -C nan").first, 2);
  EXPECT_EQ(sh(kTimbre + " baseline --method svm --data x.h5 --gamma inf").first, 2);
}

// A stopped extract (SIGINT/SIGTERM reach it through `stop`) leaves neither
// the store nor its temporary file; temporary files that killed extracts
// left are removed by the next run when their process is gone, and those
// of a live process are left alone.
TEST(Extract, InterruptedAndStaleTemporariesLeaveNothing) {
  TempDir t;
  const tt::ExtractOptions e = tone_dataset(t, {"a", "b"}, 4, 8000);
  std::atomic<int> stop{SIGINT};
  try {
    tt::run_extract(e, &stop);
    FAIL() << "a stopped extract finished";
  } catch (const tt::ExtractInterrupted& err) {
    EXPECT_EQ(err.signal, SIGINT);
  }
  for (const auto& f : std::filesystem::directory_iterator(t.path()))
    EXPECT_EQ(f.path().filename().string().find("f.h5"), std::string::npos) << f.path();

  // 2147483647 is above any pid_max: no such process. The parent (ctest or
  // the shell) is alive.
  const std::string dead = t / "f.h5.tmp-2147483647";
  const std::string live = t / ("f.h5.tmp-" + std::to_string(::getppid()));
  std::ofstream(dead) << "left by a SIGKILL";
  std::ofstream(live) << "still being written";
  const auto s = tt::run_extract(e);
  EXPECT_EQ(s.stale_removed, std::vector<std::string>{dead});
  EXPECT_FALSE(std::filesystem::exists(dead));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(t / "f.h5"));
  EXPECT_NE(tt::format_summary(s, e.out).find("removed " + dead), std::string::npos);
}

// A full disk: the temporary file is a link to /dev/full, whose writes fail
// with ENOSPC. The error names the reason, nothing is left behind, and the
// process then exits normally (HDF5's exit-time cleanup used to crash on the
// file whose close had failed: this test's process would die with SIGSEGV).
TEST(Extract, AFullDiskFailsCleanlyNamingTheReason) {
  TempDir t;
  const tt::ExtractOptions e = tone_dataset(t, {"a", "b"}, 6, 16000);
  const std::string tmp = e.out + ".tmp-" + std::to_string(::getpid());
  std::filesystem::create_symlink("/dev/full", tmp);
  try {
    tt::run_extract(e);
    FAIL() << "an extract onto a full disk succeeded";
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("No space left on device"), std::string::npos)
        << err.what();
  }
  EXPECT_FALSE(std::filesystem::exists(e.out));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(tmp)));

  // Writes that fail after the file is made (the disk fills mid-way): the
  // command, with its file size capped at 24 KiB (EFBIG past it, SIGXFSZ
  // ignored), exits 1 with the reason, not 139, and leaves nothing.
  const auto [rc, out] =
      sh("(ulimit -f 24; trap '' XFSZ; exec " + kTimbre + " extract --dataset folder --audio " +
         e.audio_dir + " --out " + e.out + " --jobs 1" + tiny_feature_flags() + ")");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;
  for (const auto& f : std::filesystem::directory_iterator(t.path()))
    EXPECT_EQ(f.path().filename().string().find("f.h5"), std::string::npos) << f.path();
}

// A dataset with one class trains a classifier that learns nothing (loss 0,
// accuracy 1): refused by extract, naming the label, and writing nothing.
TEST(Extract, OneClassIsRefused) {
  TempDir t;
  const tt::ExtractOptions e = tone_dataset(t, {"only"}, 3, 8000);
  try {
    tt::run_extract(e);
    FAIL() << "a one-class dataset was extracted";
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("one label ('only')"), std::string::npos) << err.what();
  }
  EXPECT_FALSE(std::filesystem::exists(e.out));
}

// ----------------------------------------------------------------------------
// A folder dataset of three clearly different sounds, extracted once for all
// the training tests below.
class Pipeline : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const std::string audio = *dir_ / "audio";
    write_three_label_audio(audio, 10);
    tt::ExtractOptions e;
    e.dataset = "folder";
    e.audio_dir = audio;
    e.out = data();
    e.params = tiny_params();
    e.seed = 5;
    const auto s = tt::run_extract(e);
    ASSERT_EQ(s.tracks_read, 30u);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string data() { return *dir_ / "features.h5"; }
  static std::string audio_file(const std::string& label, int k) {
    return *dir_ / ("audio/" + label + "/" + std::to_string(k) + ".wav");
  }

  static tt::TrainOptions options(const std::string& out) {
    tt::TrainOptions o;
    o.model = "rescnn";
    o.model_config = {{"channels", {4, 8}}, {"input_height", 16}, {"input_width", 16}};
    o.data = data();
    o.out = out;
    o.epochs = 3;
    o.batch_size = 8;
    o.lr = 1e-2;
    o.seed = 3;
    o.quiet = true;
    return o;
  }
  static TempDir* dir_;
};
TempDir* Pipeline::dir_ = nullptr;

// Every parameter, buffer and Adam moment of a checkpoint, by name.
std::map<std::string, std::vector<float>> checkpoint_values(const std::string& path) {
  std::map<std::string, std::vector<float>> m;
  for (const auto& [name, t] : timbre::load_tensor_file(path))
    if (t.dtype() == timbre::DType::f32) m[name] = t.to_host<float>();
  return m;
}

TEST_F(Pipeline, TrainsAndWritesTheRun) {
  TempDir run;
  const auto r = tt::run_train(options(run / "r"));
  EXPECT_EQ(r.epochs_done, 3);
  EXPECT_GE(r.best_epoch, 1);
  for (const char* f : {"last.ckpt", "best.ckpt", "log.csv", "run.json"})
    EXPECT_TRUE(std::filesystem::exists(run / ("r/" + std::string(f)))) << f;
  std::ifstream csv(run / "r/log.csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 4);  // header + 3 epochs
  // Three separable sounds: well above chance (1/3) after three epochs.
  EXPECT_GT(r.best_val_accuracy, 0.6);
}

TEST_F(Pipeline, ResumeIsBitIdentical) {
  TempDir run;
  tt::TrainOptions straight = options(run / "straight");
  straight.epochs = 4;
  tt::run_train(straight);

  tt::TrainOptions half = options(run / "halves");
  half.epochs = 2;
  tt::run_train(half);
  half.epochs = 4;
  half.resume = true;
  tt::run_train(half);

  // And a run stopped by a signal after its first step, then resumed.
  tt::TrainOptions sig = options(run / "signal");
  sig.epochs = 4;
  std::atomic<int> stop{SIGTERM};
  const auto stopped = tt::run_train(sig, &stop);
  EXPECT_EQ(stopped.signal, SIGTERM);
  EXPECT_EQ(stopped.epochs_done, 0);
  sig.resume = true;
  tt::run_train(sig);

  // And a signal during the first epoch's validation: the run stops there
  // (not after the next training step, nor silently at the end), saving the
  // state after the epoch's last step; the resume validates again.
  tt::TrainOptions val = options(run / "validation");
  val.epochs = 4;
  val.debug_signal_in_validation = SIGINT;
  const auto in_val = tt::run_train(val);
  EXPECT_EQ(in_val.signal, SIGINT);
  EXPECT_EQ(in_val.epochs_done, 0);
  EXPECT_FALSE(std::filesystem::exists(run / "validation/log.csv"));
  val.debug_signal_in_validation = 0;
  val.resume = true;
  tt::run_train(val);

  const auto a = checkpoint_values(run / "straight/last.ckpt");
  const auto b = checkpoint_values(run / "halves/last.ckpt");
  const auto c = checkpoint_values(run / "signal/last.ckpt");
  const auto d = checkpoint_values(run / "validation/last.ckpt");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "2 + resume + 2 epochs differ from 4 straight";
  EXPECT_TRUE(a == c) << "a signal after step 1 + resume differs from a straight run";
  EXPECT_TRUE(a == d) << "a signal in validation + resume differs from a straight run";
}

// --cuda-graph on (the default) runs each batch size's first step launch by
// launch, captures the second as a CUDA graph and replays it from then on
// (tools/train_step.h). The run is the same bits as one launched kernel by
// kernel: weights, Adam's moments, batch-norm statistics, and through the
// second epoch Adam's step count and the dropout masks (crnn), which a
// replay reads from device memory. The training split's last batch is
// smaller than the others: two batch sizes, two graphs.
TEST_F(Pipeline, CudaGraphsGiveTheSameBits) {
  for (const char* model : {"rescnn", "crnn"}) {
    TempDir run;
    tt::TrainOptions on = options(run / "on");
    on.epochs = 2;
    on.batch_size = 7;
    if (std::string(model) == "crnn") {
      on.model = "crnn";
      on.model_config = {{"channels", {4, 8}}, {"pools", {{2, 2}, {2, 2}}}, {"gru_hidden", 5},
                         {"dropout", 0.3}, {"input_height", 16}, {"input_width", 16}};
    }
    tt::TrainOptions off = on;
    off.out = run / "off";
    off.cuda_graph = "off";
    tt::run_train(on);
    tt::run_train(off);
    std::ifstream run_json(run / "on/run.json");
    const int64_t train = nlohmann::json::parse(run_json).at("data_sizes").at(0);
    ASSERT_NE(train % on.batch_size, 0) << "the test needs a smaller last batch";
    const auto a = checkpoint_values(run / "on/last.ckpt");
    ASSERT_FALSE(a.empty());
    EXPECT_TRUE(a == checkpoint_values(run / "off/last.ckpt")) << model;
    // A resumed run with graphs, against one without.
    on.out = run / "on2";
    on.epochs = 1;
    tt::run_train(on);
    on.epochs = 2;
    on.resume = true;
    tt::run_train(on);
    EXPECT_TRUE(a == checkpoint_values(run / "on2/last.ckpt")) << model << ", resumed";
  }
}

// The statistics pass after each epoch (--precise-bn) changes the batch
// norms' running statistics and nothing else: the weights, Adam's moments
// and the random stream go on exactly as without it. "auto" turns it on
// for these few steps per epoch, and run.json records the setting.
TEST_F(Pipeline, PreciseBatchNormChangesOnlyTheRunningStatistics) {
  TempDir run;
  tt::TrainOptions on = options(run / "on"), off = options(run / "off"), a = options(run / "auto");
  on.epochs = off.epochs = a.epochs = 1;
  on.precise_bn = "on";
  off.precise_bn = "off";
  EXPECT_TRUE(tt::run_train(on).precise_bn);
  EXPECT_FALSE(tt::run_train(off).precise_bn);
  EXPECT_TRUE(tt::run_train(a).precise_bn) << "a few steps per epoch: auto turns it on";
  const auto x = checkpoint_values(run / "on/last.ckpt");
  const auto y = checkpoint_values(run / "off/last.ckpt");
  EXPECT_TRUE(x == checkpoint_values(run / "auto/last.ckpt"));
  ASSERT_EQ(x.size(), y.size());
  int running = 0;
  for (const auto& [name, v] : x) {
    const bool stat = name.find("running_") != std::string::npos;
    running += stat;
    if (stat)
      EXPECT_NE(v, y.at(name)) << name;
    else
      EXPECT_EQ(v, y.at(name)) << name;
  }
  EXPECT_GT(running, 0);
  std::ifstream in(run / "on/run.json");
  EXPECT_EQ(nlohmann::json::parse(in).at("precise_bn"), "on");
  tt::TrainOptions bad = options(run / "bad");
  bad.precise_bn = "sometimes";
  EXPECT_THROW(tt::run_train(bad), tt::UsageError);
}

TEST_F(Pipeline, RefusesAForeignCheckpoint) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  tt::TrainOptions other = o;
  other.model = "crnn";
  other.model_config = {{"channels", {4, 4}}, {"pools", {{4, 4}, {4, 4}}},
                        {"input_height", 16}, {"input_width", 16}};
  other.resume = true;
  other.epochs = 2;
  try {
    tt::run_train(other);
    FAIL() << "a crnn resumed from a rescnn checkpoint";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rescnn"), std::string::npos) << msg;
    EXPECT_NE(msg.find("crnn"), std::string::npos) << msg;
  }
  // Same model, other widths: refused too.
  other.model = "rescnn";
  other.model_config = {{"channels", {4, 4}}, {"input_height", 16}, {"input_width", 16}};
  EXPECT_THROW(tt::run_train(other), std::exception);
}

TEST_F(Pipeline, ANonFiniteLossStopsTheRunNamingTheStep) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.inject_nan_step = 4;  // the fifth step: epoch 2, step 1 (3 steps per epoch... see below)
  const int64_t train_n = timbre::features::FeatureStore::open(data()).size(Split::train);
  const int steps = int((train_n + 7) / 8);
  try {
    tt::run_train(o);
    FAIL() << "a NaN input did not stop the run";
  } catch (const tt::TrainError& e) {
    const std::string msg = e.what();
    const int epoch = 4 / steps + 1, step = 4 % steps + 1;
    EXPECT_NE(msg.find("non-finite loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("epoch " + std::to_string(epoch) + ", step " + std::to_string(step)),
              std::string::npos) << msg;
    EXPECT_NE(msg.find("global step 5"), std::string::npos) << msg;
  }
}

// --profile counts a few steps and writes only profile.json: a step queues
// its kernels and one upload, and waits for the device nowhere (the loss,
// accuracy and finite checks stay on the device until the log is read).
TEST_F(Pipeline, ProfileCountsAStepWithoutHostSynchronisations) {
  TempDir run;
  tt::TrainOptions o = options(run / "p");
  o.profile = true;
  o.profile_steps = 3;
  ::testing::internal::CaptureStdout();
  const tt::TrainResult r = tt::run_train(o);
  const std::string table = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(r.profile_path, run / "p" + "/profile.json");
  std::ifstream in(r.profile_path);
  const auto p = nlohmann::json::parse(in);
  EXPECT_EQ(p.at("host_syncs_per_step"), 0.0);
  EXPECT_EQ(p.at("d2h_bytes_per_step"), 0.0);
  // One upload of 8 samples of 16 x 16 floats and their 8 labels.
  EXPECT_EQ(p.at("h2d_copies_per_step"), 1.0);
  EXPECT_EQ(p.at("h2d_bytes_per_step"), 8.0 * (16 * 16 * 4 + 4));
  EXPECT_EQ(p.at("graph_replays_per_step"), 1.0);
  // The step is one graph launch: the kernels run inside it.
  EXPECT_EQ(p.at("launch_calls_per_step"), 1.0);
  const double kernels = p.at("kernels_per_step");
  EXPECT_GT(kernels, 10);
  EXPECT_EQ(kernels, double(p.at("kernel_launches_per_step")) + double(p.at("library_calls_per_step")));
  double calls = 0;
  bool adam = false;
  for (const auto& k : p.at("kernels")) {
    calls += double(k.at("calls_per_step"));
    adam |= k.at("name").get<std::string>().find("adam_kernel") != std::string::npos;
    if (k.at("name").get<std::string>().find("adam_kernel") != std::string::npos) {
      EXPECT_EQ(k.at("calls_per_step"), 1.0) << "Adam is one launch over the flat parameters";
    }
  }
  EXPECT_TRUE(adam);
  EXPECT_DOUBLE_EQ(calls, kernels);
  EXPECT_NE(table.find("adam_kernel"), std::string::npos) << table;
  for (const char* f : {"run.json", "last.ckpt", "best.ckpt", "log.csv", "config.toml"})
    EXPECT_FALSE(std::filesystem::exists(run / "p" + "/" + f)) << f;

  // Without graphs: the same kernels, each its own launch call.
  o.out = run / "q";
  o.cuda_graph = "off";
  ::testing::internal::CaptureStdout();
  const tt::TrainResult r2 = tt::run_train(o);
  ::testing::internal::GetCapturedStdout();
  std::ifstream in2(r2.profile_path);
  const auto q = nlohmann::json::parse(in2);
  EXPECT_EQ(q.at("graph_replays_per_step"), 0.0);
  EXPECT_EQ(q.at("kernels_per_step"), kernels);
  EXPECT_EQ(q.at("launch_calls_per_step"), kernels);
  EXPECT_EQ(q.at("host_syncs_per_step"), 0.0);
  // The graph's step copies the batch into its input buffer (features and
  // labels in one copy); the copies inside the graph count at each replay.
  EXPECT_EQ(double(p.at("d2d_copies_per_step")), double(q.at("d2d_copies_per_step")) + 1);
  // Memsets (Tensor::zeros, the loss's bad-label count) are counted inside
  // the graph as well as launch by launch: the same per step.
  EXPECT_GE(double(q.at("memsets_per_step")), 1.0);
  EXPECT_EQ(p.at("memsets_per_step"), q.at("memsets_per_step"));
  EXPECT_EQ(p.at("memset_bytes_per_step"), q.at("memset_bytes_per_step"));
}

// --trace: one more step, op by op, each op with the kernels it launched;
// the same kernels as a profiled step, every one inside an op's group.
TEST_F(Pipeline, TraceListsEveryKernelUnderTheOpThatLaunchedIt) {
  TempDir run;
  tt::TrainOptions o = options(run / "t");
  o.profile = true;
  o.profile_steps = 2;
  o.trace = true;
  ::testing::internal::CaptureStdout();
  const tt::TrainResult r = tt::run_train(o);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  std::ifstream in(r.profile_path);
  const auto p = nlohmann::json::parse(in);
  const auto& trace = p.at("trace");
  ASSERT_GT(trace.size(), 5u);
  EXPECT_EQ(trace.front().at("op").get<std::string>().rfind("upload (8, 1, 16, 16)", 0), 0u)
      << trace.front().at("op");
  EXPECT_EQ(trace.back().at("op").get<std::string>().rfind("Adam over", 0), 0u)
      << trace.back().at("op");
  double kernels = 0;
  bool conv_forward = false, conv_backward = false;
  for (const auto& op : trace) {
    const std::string label = op.at("op");
    EXPECT_EQ(label.find("after the last op"), std::string::npos);
    conv_forward |= label.rfind("forward conv2d (8, 1, 16, 16), (4, 1, 3, 3)", 0) == 0;
    conv_backward |= label.rfind("backward conv2d (8, 4, 16, 16) -> (8, 1, 16, 16)", 0) == 0;
    for (const auto& k : op.at("kernels")) {
      ++kernels;
      EXPECT_FALSE(k.at("shape").get<std::string>().empty()) << k.at("name");
    }
  }
  EXPECT_TRUE(conv_forward);
  EXPECT_TRUE(conv_backward);
  EXPECT_EQ(kernels, double(p.at("kernels_per_step")));
  EXPECT_NE(printed.find("trace of one step"), std::string::npos);
}

TEST_F(Pipeline, EvalWritesTheReportAndPredictSkipsBadFiles) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  tt::run_train(o);
  tt::EvalOptions ev;
  ev.run = run / "r";
  const auto r = tt::run_eval(ev);
  EXPECT_EQ(r.evaluation.clip.count, timbre::features::FeatureStore::open(data()).size(Split::test));
  EXPECT_GT(r.evaluation.clip.accuracy, 0.5);
  EXPECT_TRUE(std::filesystem::exists(r.report_path));
  EXPECT_TRUE(std::filesystem::exists(r.metrics_path));

  const std::string bad = run / "broken.wav";
  synth::write_bytes(bad, synth::png_bytes());
  tt::PredictOptions p;
  p.run = run / "r";
  p.files = {audio_file("low", 1), bad, audio_file("high", 2)};
  const auto preds = tt::run_predict(p);
  ASSERT_EQ(preds.size(), 3u);
  EXPECT_TRUE(preds[0].error.empty()) << preds[0].error;
  EXPECT_FALSE(preds[1].error.empty());
  EXPECT_TRUE(preds[2].error.empty()) << preds[2].error;
  EXPECT_EQ(preds[0].top.size(), 3u);
  EXPECT_GT(preds[0].windows, 1);

  // Through the command: the good files are printed, the bad one named, exit 1.
  const auto [rc, out] = sh(kTimbre + " predict --run " + (run / "r") + " " +
                             audio_file("low", 1) + " " + bad + " " + audio_file("high", 2));
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("broken.wav"), std::string::npos) << out;
  EXPECT_NE(out.find("low/1.wav"), std::string::npos) << out;
  EXPECT_NE(out.find("high/2.wav"), std::string::npos) << out;
  const auto js = sh(kTimbre + " predict --json --run " + (run / "r") + " " + audio_file("low", 1));
  EXPECT_EQ(js.first, 0) << js.second;
  EXPECT_NE(js.second.find("\"probability\""), std::string::npos) << js.second;

  // A file name that is not UTF-8 (Latin-1 "é"): escaped in the JSON, and
  // every file is still predicted.
  const std::string latin1 = run / "caf\xE9.wav";
  std::filesystem::copy_file(audio_file("high", 3), latin1);
  const auto odd = sh(kTimbre + " predict --json --run " + (run / "r") + " '" + latin1 + "' " +
                      audio_file("low", 2) + " 2>/dev/null");
  ASSERT_EQ(odd.first, 0) << odd.second;
  const auto arr = nlohmann::json::parse(odd.second);
  ASSERT_EQ(arr.size(), 2u);
  EXPECT_EQ(arr[0].at("file"), std::string(run / "caf\\xE9.wav"));
  EXPECT_TRUE(arr[0].contains("top"));
  EXPECT_TRUE(arr[1].contains("top"));
  // A path that would be stored as text (run.json, config.toml) is refused
  // up front by train, named, escaped.
  const auto bad_out = sh(kTimbre + " train --data " + data() + " --out '" + (run / "r\xE9") + "'");
  EXPECT_EQ(bad_out.first, 2) << bad_out.second;
  EXPECT_NE(bad_out.second.find("r\\xE9: the path is not valid UTF-8"), std::string::npos)
      << bad_out.second;
  EXPECT_FALSE(std::filesystem::exists(run / "r\xE9"));
}

// NaN in a validation sample's features: the run stops naming the sample,
// instead of counting it as right (argmax over NaN) and calling the epoch best.
TEST_F(Pipeline, NonFiniteValidationFeaturesStopTheRunNamingTheSample) {
  TempDir run;
  const std::string bad = run / "nan.h5";
  std::filesystem::copy_file(data(), bad);
  {
    const hid_t f = H5Fopen(bad.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t ds = H5Dopen2(f, "/validation/x", H5P_DEFAULT);
    const hid_t space = H5Dget_space(ds);
    hsize_t dims[3];
    H5Sget_simple_extent_dims(space, dims, nullptr);
    const hsize_t start[3] = {1, 0, 0}, count[3] = {1, dims[1], dims[2]};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
    const hid_t mem = H5Screate_simple(3, count, nullptr);
    std::vector<float> nan(size_t(dims[1] * dims[2]), std::nanf(""));
    EXPECT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, nan.data()), 0);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(f);
  }
  tt::TrainOptions o = options(run / "r");
  o.data = bad;
  o.epochs = 1;
  try {
    tt::run_train(o);
    FAIL() << "NaN validation features went unnoticed";
  } catch (const tt::TrainError& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite output on validation sample 1 of " + bad),
              std::string::npos) << e.what();
  }
}

// A run folder eval cannot write into (read-only, full; here the files'
// names are taken by folders, which stops root too) still gets its metrics
// printed; then the command says what it could not write and exits 1.
TEST_F(Pipeline, EvalPrintsTheMetricsWhenItCannotWriteTheReport) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  std::filesystem::create_directories(run / "r/metrics-test.json/x");
  std::filesystem::create_directories(run / "r/report-test.html/x");
  const auto [rc, out] = sh(kTimbre + " eval --run " + (run / "r"));
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("test: clip accuracy"), std::string::npos) << out;
  EXPECT_NE(out.find("the metrics above are complete, but"), std::string::npos) << out;
  EXPECT_NE(out.find("metrics-test.json"), std::string::npos) << out;
  EXPECT_NE(out.find("report-test.html"), std::string::npos) << out;
}

TEST_F(Pipeline, TrainUsageErrorsExit2) {
  TempDir run;
  const std::string base = kTimbre + " train --data " + data() + " --out " + (run / "r");
  EXPECT_EQ(sh(base + " --epochs zero").first, 2);
  EXPECT_EQ(sh(base + " --model resnet").first, 2);
  EXPECT_EQ(sh(base + " --batch-size 0").first, 2);
  EXPECT_EQ(sh(base + " --model-config '[1,2]'").first, 2);
  EXPECT_EQ(sh(base + " --model-config '{oops'").first, 2);
  {
    std::ofstream cfg(run / "bad.toml");
    cfg << "epochs = 2\nlearning_rate = 0.1\n";
  }
  const auto bad = sh(base + " --config " + (run / "bad.toml"));
  EXPECT_EQ(bad.first, 2) << bad.second;
  EXPECT_NE(bad.second.find("learning_rate"), std::string::npos) << bad.second;
  // Numbers that are not finite or not in range: refused, not replaced by
  // a default or wrapped around.
  for (const char* flag : {" --lr nan", " --lr inf", " --decay nan", " --seed -1",
                           " --seed 9223372036854775808"}) {
    const auto r = sh(base + flag);
    EXPECT_EQ(r.first, 2) << flag << ": " << r.second;
  }
  // A value the model refuses: a usage error too.
  const auto cfg = sh(base + " --model rescnn --model-config '{\"channels\": \"wide\"}'");
  EXPECT_EQ(cfg.first, 2) << cfg.second;
  EXPECT_NE(cfg.second.find("--model-config"), std::string::npos) << cfg.second;
  // A model whose input size is not the data's segments (16 x 16 here).
  const auto size = sh(base + " --model rescnn --model-config '{\"channels\": [4], "
                             "\"input_height\": 32, \"input_width\": 16}'");
  EXPECT_EQ(size.first, 2) << size.second;
  EXPECT_NE(size.second.find("takes 32 x 16 inputs"), std::string::npos) << size.second;
  EXPECT_NE(size.second.find("holds 16 x 16 segments"), std::string::npos) << size.second;
  // --config naming a directory is not an empty file.
  const auto dir = sh(base + " --config " + std::string(run.path()));
  EXPECT_EQ(dir.first, 2) << dir.second;
  EXPECT_NE(dir.second.find("a directory"), std::string::npos) << dir.second;
  // Nothing of a refused run is written: not even the folder.
  EXPECT_FALSE(std::filesystem::exists(run / "r"));
}

// A folder with best.ckpt but no last.ckpt (a kill or a full disk between
// the two saves can leave that) still holds a run: a new run must not
// replace its best weights.
TEST_F(Pipeline, BestWeightsWithoutLastAreNotOverwritten) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  std::filesystem::remove(run / "r/last.ckpt");
  const auto best = checkpoint_values(run / "r/best.ckpt");
  tt::TrainOptions again = o;
  again.seed = 99;
  try {
    tt::run_train(again);
    FAIL() << "a new run replaced a folder's best.ckpt";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos) << e.what();
  }
  again.resume = true;
  try {
    tt::run_train(again);
    FAIL() << "resumed without last.ckpt";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("best.ckpt does"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(checkpoint_values(run / "r/best.ckpt") == best);
}

// Two runs on one --out: the second is refused while the first holds the
// folder's lock (here this process holds it, as a running train would), and
// runs once the lock is released (a killed run releases it too).
TEST_F(Pipeline, ARunFolderInUseIsRefused) {
  TempDir run;
  const std::string out = run / "r";
  std::filesystem::create_directories(out);
  const int fd = ::open((out + "/.lock").c_str(), O_RDWR | O_CREAT, 0666);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  ASSERT_EQ(::write(fd, "4242", 4), 4);
  tt::TrainOptions o = options(out);
  o.epochs = 1;
  try {
    tt::run_train(o);
    FAIL() << "trained in a folder another process holds";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("in use by another timbre train (pid 4242)"), std::string::npos) << msg;
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/run.json"));
  ::close(fd);
  EXPECT_EQ(tt::run_train(o).epochs_done, 1);
}

// Resume refuses what would change the run's meaning, naming old and new,
// and allows more epochs and another patience.
TEST_F(Pipeline, ResumeRefusesOtherSettings) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  const auto before = checkpoint_values(run / "r/last.ckpt");
  o.resume = true;
  o.epochs = 2;
  auto refused = [&](tt::TrainOptions changed, const std::string& want) {
    try {
      tt::run_train(changed);
      ADD_FAILURE() << "resumed with " << want;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  tt::TrainOptions b = o;
  b.batch_size = 16;
  refused(b, "batch_size: the run has 8, this command 16");
  tt::TrainOptions s = o;
  s.seed = 4;
  refused(s, "seed: the run has 3, this command 4");
  tt::TrainOptions l = o;
  l.lr = 5e-3;
  refused(l, "0.005");  // (the checkpoint's Adam settings refuse it first)
  tt::TrainOptions p = o;
  p.precise_bn = "off";
  refused(p, "precise_bn: the run has \"auto\", this command \"off\"");
  // Another dataset with other label names (same feature parameters).
  tt::ExtractOptions other_data = tone_dataset(run, {"x", "y", "z"}, 10, 8000);
  other_data.seed = 5;
  tt::run_extract(other_data);
  tt::TrainOptions d = o;
  d.data = other_data.out;
  refused(d, "label_names: the run has [\"high\",\"low\",\"noise\"], this command "
             "[\"x\",\"y\",\"z\"]");
  EXPECT_TRUE(checkpoint_values(run / "r/last.ckpt") == before) << "a refused resume wrote";
  o.patience = 5;
  EXPECT_EQ(tt::run_train(o).epochs_done, 2);
}

TEST_F(Pipeline, AnExistingRunIsNotTouchedWithoutResume) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  std::ofstream(run / "r/config.toml") << "# the first run's\n";
  const auto before = std::filesystem::last_write_time(run / "r/last.ckpt");
  // The same model as the run's (an input size the data does not fit would
  // be refused first, as a usage error).
  const auto [rc, out] = sh(kTimbre + " train --model rescnn --model-config '{\"channels\": [4, 8], "
                            "\"input_height\": 16, \"input_width\": 16}' --data " + data() +
                            " --out " + (run / "r") + " --epochs 1");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--resume"), std::string::npos) << out;
  std::ifstream cfg(run / "r/config.toml");
  std::string first;
  std::getline(cfg, first);
  EXPECT_EQ(first, "# the first run's");
  EXPECT_EQ(std::filesystem::last_write_time(run / "r/last.ckpt"), before);
}

TEST_F(Pipeline, ConfigFileAndCommandLine) {
  TempDir run;
  {
    std::ofstream cfg(run / "c.toml");
    cfg << "model = \"rescnn\"\nepochs = 1\nbatch-size = 8\nseed = 9\n"
        << "model-config = '{\"channels\": [4], \"input_height\": 16, \"input_width\": 16}'\n";
  }
  // The command line wins over the file: 2 epochs, not 1.
  const auto [rc, out] = sh(kTimbre + " train --config " + (run / "c.toml") + " --data " + data() +
                             " --out " + (run / "r") + " --epochs 2");
  ASSERT_EQ(rc, 0) << out;
  std::ifstream j(run / "r/run.json");
  const auto rj = nlohmann::json::parse(j);
  EXPECT_EQ(rj.at("epochs"), 2);
  EXPECT_EQ(rj.at("seed"), 9);
  EXPECT_EQ(rj.at("batch_size"), 8);
  // The effective configuration is saved and is itself a valid --config.
  EXPECT_TRUE(std::filesystem::exists(run / "r/config.toml"));
  const auto again = sh(kTimbre + " train --config " + (run / "r/config.toml") + " --out " +
                         (run / "r2") + " --epochs 1");
  EXPECT_EQ(again.first, 0) << again.second;
  // Valid TOML whatever the paths hold (quotes, apostrophes, backslashes):
  // read back by toml++ and by timbre itself.
  const std::string odd = run / "it's a \"run\" \\ folder";
  const auto quoted = [](const std::string& p) {  // for sh -c: single quotes, ' as '\''
    std::string r = "'";
    for (char c : p) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return r + "'";
  };
  const auto o = sh(kTimbre + " train --config " + (run / "c.toml") + " --data " + data() +
                    " --out " + quoted(odd) + " --epochs 1");
  ASSERT_EQ(o.first, 0) << o.second;
  const toml::table t = toml::parse_file(odd + "/config.toml");
  EXPECT_EQ(t["out"].value<std::string>(), odd);
  EXPECT_EQ(t["seed"].value<int64_t>(), 9);
  EXPECT_EQ(nlohmann::json::parse(*t["model-config"].value<std::string>()).at("channels"),
            nlohmann::json::array({4}));
  const auto back = sh(kTimbre + " train --config " + quoted(odd + "/config.toml") + " --out " +
                       (run / "r3") + " --epochs 1");
  EXPECT_EQ(back.first, 0) << back.second;
}

TEST_F(Pipeline, SigtermSavesAndExits143) {
  TempDir run;
  const std::string out = run / "r";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cfg = "{\"channels\": [4, 8], \"input_height\": 16, \"input_width\": 16}";
    execl(kTimbre.c_str(), kTimbre.c_str(), "train", "--model", "rescnn", "--data",
          data().c_str(), "--out", out.c_str(), "--epochs", "100000", "--patience", "100000",
          "--batch-size", "8", "--model-config", cfg.c_str(), (char*)nullptr);
    _exit(127);
  }
  // Wait for the first epoch's checkpoint, then ask it to stop.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(out + "/log.csv") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(std::filesystem::exists(out + "/log.csv"));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  const auto meta = timbre::read_checkpoint_metadata(out + "/last.ckpt");
  EXPECT_EQ(meta.at("model").at("name"), "rescnn");
}

}  // namespace

// A run folder stands alone: made with relative paths, then resumed and
// evaluated from another working directory by its path alone; the data file
// moved is named with a hint; reports per split.
TEST_F(Pipeline, RunFoldersStandAlone) {
  TempDir tmp;
  const std::string d = tmp.path();
  std::filesystem::copy_file(data(), d + "/features.h5");
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  auto json_of = [&](const std::string& path) { return nlohmann::json::parse(read(path)); };
  const std::string first =
      "cd " + d + " && " + kTimbre + " train --model rescnn --model-config '{\"channels\": [4], "
      "\"input_height\": 16, \"input_width\": 16}' --data features.h5 --out r --epochs 1 "
      "--batch-size 8 --lr 0.01 --seed 3";
  const auto t = sh(first);
  ASSERT_EQ(t.first, 0) << t.second;
  const std::string r = d + "/r";
  auto run = json_of(r + "/run.json");
  EXPECT_EQ(run.at("data"), d + "/features.h5");  // absolute
  for (const char* key : {"started", "commit", "device", "backend", "timbre_version"})
    EXPECT_TRUE(run.contains(key)) << key;
  EXPECT_FALSE(run.contains("resumed"));
  EXPECT_EQ(toml::parse_file(r + "/config.toml")["data"].value<std::string>(), d + "/features.h5");
  // The training report, refreshed after each epoch.
  std::string report = read(r + "/report.html");
  EXPECT_NE(report.find("(training)"), std::string::npos);
  EXPECT_NE(report.find("started (UTC)"), std::string::npos);
  EXPECT_NE(report.find("class=\"bestlabel\""), std::string::npos);

  // Resumed from elsewhere by --out alone, with more epochs.
  const auto more = sh("cd / && " + kTimbre + " train --resume --out " + r + " --epochs 2");
  ASSERT_EQ(more.first, 0) << more.second;
  EXPECT_NE(more.second.find("resumed " + r + " from epoch 2 (of 2)"), std::string::npos)
      << more.second;
  run = json_of(r + "/run.json");
  EXPECT_EQ(run.at("epochs"), 2);
  EXPECT_TRUE(run.contains("resumed"));
  EXPECT_EQ(run.at("model"), "rescnn");
  EXPECT_EQ(run.at("batch_size"), 8);
  EXPECT_EQ(toml::parse_file(r + "/config.toml")["epochs"].value<int64_t>(), 2);
  EXPECT_EQ(tt::read_training_log(r + "/log.csv").size(), 2u);
  // What the command line gives that would change the run is still refused.
  const auto other = sh(kTimbre + " train --resume --out " + r + " --epochs 3 --seed 4");
  EXPECT_EQ(other.first, 1) << other.second;
  EXPECT_NE(other.second.find("seed"), std::string::npos) << other.second;

  // Evaluation from elsewhere; one report per split, each linked from the
  // training report.
  ASSERT_EQ(sh("cd / && " + kTimbre + " eval --run " + r).first, 0);
  const std::string test_report = read(r + "/report-test.html");
  EXPECT_NE(test_report.find("Confusion matrices"), std::string::npos);
  const auto val = sh("cd / && " + kTimbre + " eval --run " + r + " --split validation");
  ASSERT_EQ(val.first, 0) << val.second;
  EXPECT_NE(val.second.find("report-validation.html"), std::string::npos) << val.second;
  EXPECT_EQ(read(r + "/report-test.html"), test_report);  // not overwritten
  report = read(r + "/report.html");
  EXPECT_NE(report.find("href=\"report-test.html\""), std::string::npos);
  EXPECT_NE(report.find("href=\"report-validation.html\""), std::string::npos);
  EXPECT_NE(read(r + "/report-validation.html").find("href=\"report-test.html\""),
            std::string::npos);

  // The data file moved: eval and resume name it and point at --data.
  std::filesystem::rename(d + "/features.h5", d + "/moved.h5");
  const auto lost = sh(kTimbre + " eval --run " + r);
  EXPECT_EQ(lost.first, 1) << lost.second;
  EXPECT_NE(lost.second.find(d + "/features.h5"), std::string::npos) << lost.second;
  EXPECT_NE(lost.second.find("--data"), std::string::npos) << lost.second;
  const auto lost2 = sh(kTimbre + " train --resume --out " + r + " --epochs 3");
  EXPECT_EQ(lost2.first, 1) << lost2.second;
  EXPECT_NE(lost2.second.find("--data"), std::string::npos) << lost2.second;
  const auto found = sh("cd " + d + " && " + kTimbre + " train --resume --out r --epochs 3 "
                        "--data moved.h5");
  ASSERT_EQ(found.first, 0) << found.second;
  EXPECT_EQ(json_of(r + "/run.json").at("data"), d + "/moved.h5");

  // Neither --data nor --resume: a usage error; --resume of a folder that
  // holds no run: named.
  const auto none = sh(kTimbre + " train --out " + d + "/r2");
  EXPECT_EQ(none.first, 2) << none.second;
  EXPECT_NE(none.second.find("--data"), std::string::npos) << none.second;
  std::filesystem::create_directories(d + "/empty");
  const auto empty = sh(kTimbre + " train --resume --out " + d + "/empty");
  EXPECT_EQ(empty.first, 1) << empty.second;
  EXPECT_NE(empty.second.find("run.json is missing"), std::string::npos) << empty.second;
}

// --device chooses among the visible devices; CUDA_VISIBLE_DEVICES hides
// them as the CUDA runtime does (simcuda has one device, 0).
TEST(Device, ChoiceAndVisibility) {
  const std::string env = "env -u CUDA_VISIBLE_DEVICES ";
  const auto info = sh(env + kTimbre + " info");
  ASSERT_EQ(info.first, 0) << info.second;
  EXPECT_NE(info.second.find("1 device\n"), std::string::npos) << info.second;
  EXPECT_NE(info.second.find("* device 0: "), std::string::npos) << info.second;
  for (const std::string cmd : {" --device 1 info", " info --device 1", " kernels --device 2"}) {
    const auto r = sh(env + kTimbre + cmd);
    EXPECT_EQ(r.first, 2) << cmd << ": " << r.second;
    EXPECT_NE(r.second.find("there is one device, 0"), std::string::npos) << cmd << r.second;
  }
  EXPECT_EQ(sh(env + kTimbre + " --device 0 kernels --size 8").first, 0);
  // Visible: the devices listed before the first index that does not exist.
  const auto hidden = sh("CUDA_VISIBLE_DEVICES=1 " + kTimbre + " info");
  EXPECT_EQ(hidden.first, 1) << hidden.second;
  EXPECT_NE(hidden.second.find("0 devices"), std::string::npos) << hidden.second;
  const auto none = sh("CUDA_VISIBLE_DEVICES= " + kTimbre + " kernels --size 8");
  EXPECT_EQ(none.first, 2) << none.second;
  EXPECT_NE(none.second.find("there is no device with CUDA_VISIBLE_DEVICES="), std::string::npos)
      << none.second;
  const auto first = sh("CUDA_VISIBLE_DEVICES=0,3 " + kTimbre + " info");
  EXPECT_EQ(first.first, 0) << first.second;
  EXPECT_NE(first.second.find("1 device\n"), std::string::npos) << first.second;
  // Commands that compute nothing need no device.
  EXPECT_EQ(sh("CUDA_VISIBLE_DEVICES=1 " + kTimbre + " models rescnn").first, 0);
}

// The TFRecord framing's CRC: CRC-32C's check value (of "123456789") is
// 0xE3069283; the mask rotates it right by 15 bits and adds 0xa282ead8.
TEST(TensorBoard, MaskedCrc32cKnownAnswer) {
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(tt::tfrecord_masked_crc("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
  const std::string r = tt::tfrecord("abc");
  ASSERT_EQ(r.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(r.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(r.substr(12, 3), "abc");
}

// `timbre train` writes TensorBoard files that an independent reader
// (Debian's protobuf runtime and crc32c, tests/tools/read_tfevents.py)
// decodes into log.csv's numbers; a resumed run appends to the same files,
// and a torn record left by a kill is replaced.
TEST_F(Pipeline, TensorBoardEventsReadBackIndependently) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 2;
  tt::run_train(o);
  o.epochs = 3;
  o.resume = true;
  tt::run_train(o);
  const std::string tb = run / "r/tensorboard";
  const auto [rc, out] = sh(std::string(TIMBRE_PYTHON) + " " + TIMBRE_READ_TFEVENTS + " " + tb +
                            " 2>&1");
  ASSERT_EQ(rc, 0) << out << "\n(scripts/setup.sh installs python3-protobuf and python3-crc32c)";
  const auto files = nlohmann::json::parse(out);
  ASSERT_EQ(files.size(), 2u) << out;  // one file per part: the resume appended
  const auto log = tt::read_training_log(run / "r/log.csv");
  ASSERT_EQ(log.size(), 3u);
  const std::map<std::string, std::vector<std::pair<std::string, double tt::EpochRecord::*>>>
      expected = {{"train", {{"epoch_loss", &tt::EpochRecord::loss},
                             {"epoch_accuracy", &tt::EpochRecord::accuracy},
                             {"epoch_learning_rate", &tt::EpochRecord::lr}}},
                  {"validation", {{"epoch_loss", &tt::EpochRecord::val_loss},
                                  {"epoch_accuracy", &tt::EpochRecord::val_accuracy}}}};
  for (const auto& [file, events] : files.items()) {
    SCOPED_TRACE(file);
    const std::string part = file.substr(0, file.find('/'));
    ASSERT_TRUE(expected.count(part));
    EXPECT_EQ(events.at(0).at("file_version"), "brain.Event:2");
    std::map<std::string, std::vector<std::pair<int64_t, double>>> got;
    for (size_t i = 1; i < events.size(); ++i) {
      ASSERT_EQ(events[i].at("values").size(), 1u);
      const auto& v = events[i].at("values")[0];
      got[v.at("tag")].emplace_back(events[i].at("step"), v.at("simple_value"));
      EXPECT_GE(double(events[i].at("wall_time")), double(events[0].at("wall_time")));
    }
    if (part == "train") {
      EXPECT_EQ(got.at("epoch_ms_per_step").size(), 3u);
    }
    for (const auto& [tag, member] : expected.at(part)) {
      ASSERT_EQ(got[tag].size(), 3u) << tag;
      for (int e = 0; e < 3; ++e) {
        EXPECT_EQ(got[tag][size_t(e)].first, e + 1) << tag;
        // float32 in the events, 6 decimals (or %.6g) in the log.
        const double want = log[size_t(e)].*member;
        EXPECT_NEAR(got[tag][size_t(e)].second, want, 1e-6 + 1e-5 * std::fabs(want)) << tag;
      }
    }
  }
  // A torn last record (a kill mid-write) is replaced by the whole file.
  const std::string train_file = tb + "/train/" + std::string(files.begin().key()).substr(6);
  std::string whole;
  {
    std::ifstream in(train_file, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(train_file, std::ios::binary | std::ios::app) << "\x10\x00\x00";
  tt::update_event_file(train_file, whole);
  std::ifstream in(train_file, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), whole);
}

// `timbre export` on a trained run: the file holds every parameter and
// buffer, the normalisation and the metadata; bad requests are named.
TEST_F(Pipeline, ExportThroughTheCommand) {
  TempDir run;
  tt::TrainOptions o = options(run / "r");
  o.epochs = 1;
  tt::run_train(o);
  const auto [rc, out] = sh(kTimbre + " export --run " + (run / "r") + " 2>&1");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out, (run / "r/model.safetensors") + "\n");
  const tt::SafeTensors s = tt::read_safetensors(run / "r/model.safetensors");
  const tt::LoadedRun loaded = tt::load_run(run / "r");
  EXPECT_EQ(s.tensors.size(),
            loaded.model->named_parameters().size() + loaded.model->named_buffers().size() + 2);
  EXPECT_EQ(s.tensors.at("timbre.band_mean").data, loaded.band_mean);
  EXPECT_EQ(s.metadata.at("timbre.model"), "rescnn");
  EXPECT_EQ(nlohmann::json::parse(s.metadata.at("timbre.config")), loaded.model->config());
  EXPECT_EQ(nlohmann::json::parse(s.metadata.at("timbre.labels")), loaded.label_names);
  for (const auto& [name, v] : loaded.model->named_parameters())
    EXPECT_EQ(s.tensors.at(name).data, v.value().to_host<float>()) << name;
  const auto other = sh(kTimbre + " export --run " + (run / "r") + " --out " + (run / "w.st"));
  EXPECT_EQ(other.first, 0) << other.second;
  EXPECT_TRUE(std::filesystem::exists(run / "w.st"));
  EXPECT_EQ(sh(kTimbre + " export --run " + (run / "r") + " --format onnx").first, 2);
  const auto none = sh(kTimbre + " export --run " + std::string(run.path()));
  EXPECT_EQ(none.first, 1) << none.second;
  EXPECT_NE(none.second.find("run.json"), std::string::npos) << none.second;
}
