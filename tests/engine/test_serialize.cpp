// Tensor files and checkpoints (engine/serialize.h): bitwise round trips,
// resume equivalence, refusal of foreign or damaged files, and crash safety
// of the atomic write under SIGKILL.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "engine/module.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "engine/serialize.h"
#include "tests/testing.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace ops = timbre::ops;
using nlohmann::json;
using timbre::DType;
using timbre::Generator;
using timbre::NamedTensors;
using timbre::SerializeError;
using timbre::Shape;
using timbre::Tensor;
using timbre::TrainingState;
using timbre::Variable;

// ------------------------------- helpers -----------------------------------
// A fresh directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "timbre-serialize-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// The device bytes of a tensor, for bitwise comparisons (NaN payloads, -0).
std::string bytes_of(const Tensor& t) {
  std::string out(t.bytes(), '\0');
  if (t.bytes()) CUDA_CHECK(cudaMemcpy(out.data(), t.raw(), t.bytes(), cudaMemcpyDeviceToHost));
  return out;
}

// The message of the SerializeError that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const SerializeError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(expr, ...)                                                  \
  do {                                                                           \
    const std::string msg_ = error_of([&] { (void)(expr); });                    \
    EXPECT_FALSE(msg_.empty()) << #expr << " did not throw SerializeError";      \
    for (const char* want_ : {__VA_ARGS__})                                      \
      EXPECT_NE(msg_.find(want_), std::string::npos)                             \
          << "message \"" << msg_ << "\" lacks \"" << want_ << "\"";             \
  } while (0)

std::vector<std::string> temp_files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".timbre-tmp-") != std::string::npos)
      out.push_back(e.path().filename().string());
  return out;
}

// A few tensors of every dtype at odd shapes, with the values a careless
// format would lose: NaN payloads, -0, infinities, denormals, extremes.
NamedTensors odd_tensors() {
  auto f = timbre::testing::random_nonzero<float>(3 * 5 * 7, 1);
  f[0] = -0.0f;
  f[1] = std::numeric_limits<float>::infinity();
  f[2] = std::numeric_limits<float>::denorm_min();
  uint32_t payload = 0x7fc12345u;  // a quiet NaN with a payload
  std::memcpy(&f[3], &payload, 4);
  auto d = timbre::testing::random_nonzero<double>(2 * 3 * 1 * 5 * 3, 2);
  d[0] = -std::numeric_limits<double>::infinity();
  d[1] = std::numeric_limits<double>::denorm_min();
  d[2] = std::numeric_limits<double>::quiet_NaN();
  std::vector<int32_t> i(11);
  for (size_t k = 0; k < i.size(); ++k) i[k] = int32_t(k * 2654435761u);
  i[0] = std::numeric_limits<int32_t>::min();
  return {{"conv.weight", Tensor::from_host(Shape{3, 5, 7}, f)},
          {"rank5", Tensor::from_host(Shape{2, 3, 1, 5, 3}, d)},
          {"labels", Tensor::from_host(Shape{11}, i)},
          {"scalar", Tensor::from_host(Shape(std::vector<int64_t>{}), std::vector<double>{-1.5})},
          {"empty", Tensor::from_host(Shape{0, 4}, std::vector<float>{})},
          {"one", Tensor::from_host(Shape{1, 1}, std::vector<int32_t>{7})}};
}

// ------------------------------ tensor files -------------------------------
TEST(TensorFile, RoundTripIsBitwise) {
  TempDir dir;
  const NamedTensors in = odd_tensors();
  const json meta = {{"note", "héllo ✓"},
                     {"big", std::numeric_limits<uint64_t>::max()},
                     {"third", 1.0 / 3.0},
                     {"nested", {{"a", {1, 2, 3}}, {"b", nullptr}}}};
  timbre::save_tensor_file(dir / "t.bin", in, meta);
  json got_meta;
  const NamedTensors out = timbre::load_tensor_file(dir / "t.bin", &got_meta);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].first);
    EXPECT_EQ(out[i].first, in[i].first);  // file order = given order
    EXPECT_EQ(out[i].second.dtype(), in[i].second.dtype());
    EXPECT_EQ(out[i].second.shape(), in[i].second.shape());
    EXPECT_EQ(bytes_of(out[i].second), bytes_of(in[i].second));
  }
  EXPECT_EQ(got_meta, meta);
  EXPECT_EQ(got_meta["third"].get<double>(), 1.0 / 3.0);  // doubles survive JSON exactly

  // The header alone: entries aligned to 64 bytes, sizes and offsets as promised.
  const timbre::TensorFileHeader h = timbre::read_tensor_file_header(dir / "t.bin");
  EXPECT_EQ(h.version, timbre::kTensorFileVersion);
  EXPECT_EQ(h.data_offset % 64, 0u);
  EXPECT_EQ(h.metadata, meta);
  ASSERT_EQ(h.tensors.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(h.tensors[i].offset % 64, 0u);
    EXPECT_EQ(h.tensors[i].bytes, in[i].second.bytes());
  }
  EXPECT_EQ(fs::file_size(dir / "t.bin"), h.data_offset + h.data_bytes);
  EXPECT_TRUE(temp_files_in(dir.str()).empty());
}

// The byte layout of docs/checkpoints.md, checked by hand on a tiny file.
TEST(TensorFile, LayoutMatchesTheDocs) {
  TempDir dir;
  timbre::save_tensor_file(dir / "t.bin", {{"x", Tensor::from_host(Shape{2}, std::vector<int32_t>{1, -2})}},
                           {{"k", 1}});
  const std::string b = read_bytes(dir / "t.bin");
  ASSERT_GE(b.size(), 32u);
  EXPECT_EQ(b.substr(0, 8), std::string("\x89TIMBRE\n", 8));
  uint32_t version;
  uint64_t json_len, data_len;
  std::memcpy(&version, b.data() + 8, 4);
  std::memcpy(&json_len, b.data() + 16, 8);
  std::memcpy(&data_len, b.data() + 24, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(data_len, 8u);
  const json doc = json::parse(b.substr(32, json_len));
  EXPECT_EQ(doc["format"], "timbre-tensors");
  EXPECT_EQ(doc["tensors"][0]["shape"], json({2}));
  const uint64_t data_offset = (32 + json_len + 63) / 64 * 64;
  ASSERT_EQ(b.size(), data_offset + 8);
  int32_t v[2];
  std::memcpy(v, b.data() + data_offset, 8);
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[1], -2);  // raw little-endian two's complement
}

TEST(TensorFile, DamagedFilesGiveClearErrors) {
  TempDir dir;
  const std::string good = dir / "good.bin";
  timbre::save_tensor_file(good, odd_tensors(), {{"epoch", 3}});
  const std::string bytes = read_bytes(good);
  const timbre::TensorFileHeader h = timbre::read_tensor_file_header(good);
  const std::string p = dir / "bad.bin";

  write_bytes(p, "");
  EXPECT_ERROR(timbre::load_tensor_file(p), "bad.bin", "empty file");
  EXPECT_ERROR(timbre::read_checkpoint_metadata(p), "bad.bin", "empty file");

  write_bytes(p, "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False}");
  EXPECT_ERROR(timbre::load_tensor_file(p), "bad.bin", "not a timbre checkpoint", "wrong magic",
               "NUMPY");
  write_bytes(p, "hi");
  EXPECT_ERROR(timbre::load_tensor_file(p), "wrong magic");

  // Truncated anywhere: inside the magic, the fixed header, the JSON, the
  // padding, the data, one byte short.
  for (size_t cut : {size_t(3), size_t(20), size_t(40), size_t(h.data_offset - 1),
                     size_t(h.data_offset + 100), bytes.size() - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    write_bytes(p, bytes.substr(0, cut));
    EXPECT_ERROR(timbre::load_tensor_file(p), "bad.bin", "truncated");
  }
  write_bytes(p, bytes + "x");
  EXPECT_ERROR(timbre::load_tensor_file(p), "unexpected bytes after the data");

  auto flipped = [&](size_t at, unsigned char mask = 0x10) {
    std::string b = bytes;
    b[at] = char(b[at] ^ mask);
    write_bytes(p, b);
  };
  flipped(40);  // inside the JSON
  EXPECT_ERROR(timbre::load_tensor_file(p), "corrupt", "header checksum");
  EXPECT_ERROR(timbre::read_checkpoint_metadata(p), "header checksum");
  flipped(size_t(h.data_offset + h.tensors[1].offset + 5));  // inside "rank5"
  EXPECT_ERROR(timbre::load_tensor_file(p), "corrupt", "tensor 'rank5' fails its checksum");
  // The header-only read does not look at the data (that is what makes it cheap).
  EXPECT_NO_THROW(timbre::read_tensor_file_header(p));
  flipped(size_t(h.data_offset + h.tensors[0].bytes + 1));  // padding after tensor 0
  EXPECT_ERROR(timbre::load_tensor_file(p), "nonzero padding");
  flipped(8, 0x02);  // version 1 -> 3
  EXPECT_ERROR(timbre::load_tensor_file(p), "format version 3 is newer");

  // Every single-byte corruption anywhere in the file is caught. (The byte
  // is patched in place: rewriting the file 2,000 times through truncation
  // makes ext4 flush each one to disk, which takes seconds.)
  write_bytes(p, bytes);
  const int fd = open(p.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  for (size_t at = 0; at < bytes.size(); ++at) {
    const char bad = char(bytes[at] ^ 0x01);
    ASSERT_EQ(pwrite(fd, &bad, 1, off_t(at)), 1);
    bool threw = false;
    try {
      timbre::load_tensor_file(p);
    } catch (const SerializeError&) {
      threw = true;
    }
    ASSERT_EQ(pwrite(fd, &bytes[at], 1, off_t(at)), 1);
    ASSERT_TRUE(threw) << "flipping bit 0 of byte " << at << " of " << bytes.size()
                       << " went unnoticed";
  }
  close(fd);
  EXPECT_NO_THROW(timbre::load_tensor_file(p)) << "every byte was restored";

  EXPECT_ERROR(timbre::load_tensor_file(dir / "missing.bin"), "missing.bin",
               "No such file or directory");
  EXPECT_ERROR(timbre::load_tensor_file(dir.str()), "is a directory");
}

TEST(TensorFile, BadArgumentsAndUnwritablePlaces) {
  TempDir dir;
  const Tensor t = Tensor::from_host(Shape{2}, std::vector<float>{1, 2});
  EXPECT_ERROR(timbre::save_tensor_file(dir / "a.bin", {{"x", t}, {"x", t}}), "a.bin",
               "two tensors are named 'x'");
  EXPECT_ERROR(timbre::save_tensor_file(dir / "a.bin", {{"", t}}), "empty name");
  EXPECT_ERROR(timbre::save_tensor_file(dir / "a.bin", {{"u", Tensor()}}), "'u' is undefined");
  EXPECT_ERROR(timbre::save_tensor_file(dir / "no/such/dir/a.bin", {{"x", t}}),
               "no/such/dir/a.bin", "cannot create a temporary file", "No such file or directory");
  fs::create_directory(dir / "sub");
  EXPECT_ERROR(timbre::save_tensor_file(dir / "sub", {{"x", t}}), "renaming", "Is a directory");
  EXPECT_ERROR(timbre::save_tensor_file(dir.str() + "/", {{"x", t}}), "not a file name");
  EXPECT_FALSE(fs::exists(dir / "a.bin"));
  EXPECT_TRUE(temp_files_in(dir.str()).empty()) << "a failed save leaves nothing behind";
}

// Drops, for the calling thread only, the capabilities that let root write
// anywhere (capabilities are per thread in Linux; the raw syscall does not
// broadcast to the process as glibc's setuid does).
bool drop_dac_override_in_this_thread() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  const uint32_t drop = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH) | (1u << CAP_FOWNER);
  data[0].effective &= ~drop;
  return syscall(SYS_capset, &hdr, data) == 0;
}

TEST(TensorFile, UnwritableDirectoryGivesAClearError) {
  TempDir dir;
  const std::string p = dir / "ro/weights.bin";
  fs::create_directory(dir / "ro");
  const Tensor t = Tensor::from_host(Shape{3}, std::vector<float>{1, 2, 3});
  timbre::save_tensor_file(p, {{"x", t}}, {{"v", 1}});
  fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  std::string msg;
  bool could_write = false;
  std::thread worker([&] {
    drop_dac_override_in_this_thread();  // a no-op for non-root users
    const int fd = open((dir / "ro/probe").c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) {
      could_write = true;
      close(fd);
      return;
    }
    msg = error_of([&] { timbre::save_tensor_file(p, {{"x", t}}, {{"v", 2}}); });
  });
  worker.join();
  if (could_write) GTEST_SKIP() << "cannot make a directory unwritable here";
  EXPECT_NE(msg.find("weights.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Permission denied"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir / "ro"), std::string::npos) << msg;
  json meta;
  timbre::load_tensor_file(p, &meta);
  EXPECT_EQ(meta["v"], 1) << "the previous file is untouched";
}

// ------------------------------- checkpoints -------------------------------
// A small network with the parts whose state matters for resuming: conv
// weights, batch norm (parameters and running-statistics buffers), dropout
// (the generator) and a child module (dotted names).
class Dense : public timbre::Module {
 public:
  Dense(int64_t in, int64_t out, Generator& g) {
    Tensor w0 = Tensor::empty(Shape{out, in});
    g.glorot_uniform(w0);
    w = register_parameter("weight", w0);
    b = register_parameter("bias", Tensor::zeros(Shape{out}));
  }
  Variable w, b;
};

class TinyNet : public timbre::Module {
 public:
  TinyNet(int64_t channels, Generator& g) {
    Tensor w0 = Tensor::empty(Shape{channels, 1, 3, 3});
    g.glorot_uniform(w0);
    conv_w = register_parameter("conv.weight", w0);
    conv_b = register_parameter("conv.bias", Tensor::zeros(Shape{channels}));
    gamma = register_parameter("bn.gamma", Tensor::full(Shape{channels}, 1.0));
    beta = register_parameter("bn.beta", Tensor::zeros(Shape{channels}));
    mean = register_buffer("bn.running_mean", Tensor::zeros(Shape{channels}));
    var = register_buffer("bn.running_var", Tensor::full(Shape{channels}, 1.0));
    fc = register_module("fc", std::make_shared<Dense>(channels * 4 * 4, 3, g));
  }
  Variable forward(const Tensor& x, Generator& g) {
    Variable h = ops::conv2d(Variable(x), conv_w, conv_b, {1, 1, 1, 1});
    h = ops::relu(ops::batch_norm(h, gamma, beta, mean, var, training()));
    h = ops::dropout(ops::max_pool2d(h, {2, 2, 2, 2}), 0.25, training(), g);
    return ops::linear(ops::flatten(h), fc->w, fc->b);
  }
  Variable conv_w, conv_b, gamma, beta;
  Tensor mean, var;
  std::shared_ptr<Dense> fc;
};

const timbre::AdamSettings kAdam{timbre::kernels::keras_adam(1e-2), 0.01};
const json kConfig = {{"channels", 4}, {"dropout", 0.25}};

// One training step on batch number `step` (its data depends only on the
// step, as a seeded data loader's would).
void train_step(TinyNet& net, timbre::Adam& adam, Generator& g, int step) {
  Generator data(1000 + uint64_t(step));
  Tensor x = Tensor::empty(Shape{6, 1, 8, 8});
  data.normal(x, 0, 1);
  const Tensor labels = Tensor::from_host(Shape{6}, std::vector<int32_t>{0, 1, 2, 2, 1, 0});
  Variable loss = ops::cross_entropy(net.forward(x, g), labels);
  net.zero_grad();
  loss.backward();
  adam.step();
}

std::string weights_of(TinyNet& net) {
  std::string s;
  for (const auto& [n, v] : net.named_parameters()) s += n + bytes_of(v.value());
  return s;
}

// Everything a resumed run must reproduce, as bytes.
std::string snapshot(TinyNet& net, timbre::Adam& adam, const Generator& g) {
  std::string s;
  for (const auto& [n, v] : net.named_parameters()) s += n + bytes_of(v.value());
  for (const auto& [n, t] : net.named_buffers()) s += n + bytes_of(t);
  for (const Tensor& m : adam.first_moments()) s += bytes_of(m);
  for (const Tensor& v : adam.second_moments()) s += bytes_of(v);
  s += std::to_string(adam.steps()) + "/" + std::to_string(g.seed()) + "/" +
       std::to_string(g.offset());
  return s;
}

TEST(Checkpoint, ResumeIsBitIdentical) {
  TempDir dir;
  const std::string path = dir / "last.ckpt";
  constexpr int kBefore = 3, kAfter = 4;
  // The uninterrupted run: 3 steps, checkpoint, 4 more.
  Generator g(42);
  TinyNet net(4, g);
  timbre::Adam adam(net.parameters(), kAdam.config, kAdam.decay);
  for (int s = 0; s < kBefore; ++s) train_step(net, adam, g, s);
  const json extra = {{"epoch", 2},
                      {"step", kBefore},
                      {"early_stopping", {{"best", 0.75}, {"bad_epochs", 1}}},
                      {"normalisation", {{"mean", {-41.25, -39.5}}, {"std", {11.0, 12.5}}}},
                      {"timbre_version", "0.1.0"}};
  TrainingState st{"tinynet", kConfig, &net, &adam, kAdam, &g, extra};
  timbre::save_checkpoint(path, st);
  const std::string at_save = snapshot(net, adam, g);
  for (int s = kBefore; s < kBefore + kAfter; ++s) train_step(net, adam, g, s);
  const std::string uninterrupted = snapshot(net, adam, g), uninterrupted_weights = weights_of(net);

  // The resumed run: fresh objects, initialised differently, then loaded.
  auto resume = [&](bool with_adam, bool with_generator) {
    Generator g2(7);
    TinyNet net2(4, g2);
    timbre::Adam adam2(net2.parameters(), kAdam.config, kAdam.decay);
    TrainingState st2{"tinynet", kConfig, &net2, with_adam ? &adam2 : nullptr, kAdam,
                      with_generator ? &g2 : nullptr, {}};
    EXPECT_NE(snapshot(net2, adam2, g2), at_save);
    const json meta = timbre::load_checkpoint(path, st2);
    EXPECT_EQ(st2.extra, extra);
    EXPECT_EQ(meta["extra"], extra);
    if (with_adam && with_generator) {
      EXPECT_EQ(snapshot(net2, adam2, g2), at_save);
    }
    for (int s = kBefore; s < kBefore + kAfter; ++s) train_step(net2, adam2, g2, s);
    return std::make_pair(snapshot(net2, adam2, g2), weights_of(net2));
  };
  EXPECT_TRUE(resume(true, true).first == uninterrupted)
      << "the resumed run differs from the uninterrupted one";
  // Controls: the comparison can fail. Without the optimizer state or the
  // dropout generator, the weights after the same steps differ.
  EXPECT_FALSE(resume(false, true).second == uninterrupted_weights);
  EXPECT_FALSE(resume(true, false).second == uninterrupted_weights);
}

TEST(Checkpoint, RefusesForeignAndMismatchedCheckpoints) {
  TempDir dir;
  const std::string path = dir / "c.ckpt";
  Generator g(1);
  TinyNet net(4, g);
  timbre::Adam adam(net.parameters(), kAdam.config, kAdam.decay);
  train_step(net, adam, g, 0);
  timbre::save_checkpoint(path, {"tinynet", kConfig, &net, &adam, kAdam, &g, {{"epoch", 0}}});

  Generator g2(2);
  TinyNet other(4, g2);
  const std::string before = bytes_of(other.conv_w.value());
  timbre::Adam other_adam(other.parameters(), kAdam.config, kAdam.decay);
  TrainingState s{"rescnn", kConfig, &other, &other_adam, kAdam, &g2, {}};
  EXPECT_ERROR(timbre::load_checkpoint(path, s), "c.ckpt", "checkpoint of model 'tinynet'",
               "not of model 'rescnn'");
  s.model_name = "tinynet";
  s.model_config = {{"channels", 8}, {"dropout", 0.25}};
  EXPECT_ERROR(timbre::load_checkpoint(path, s), "\"channels\":4", "\"channels\":8");
  s.model_config = kConfig;
  s.adam_settings.config.lr = 1e-3;
  EXPECT_ERROR(timbre::load_checkpoint(path, s), "Adam hyper-parameters differ", "0.01", "0.001");
  s.adam_settings = kAdam;

  // A model built differently under the same identity: every mismatch is named.
  Generator g3(3);
  TinyNet wider(5, g3);
  TrainingState w{"tinynet", kConfig, &wider, nullptr, kAdam, nullptr, {}};
  EXPECT_ERROR(timbre::load_checkpoint(path, w), "does not fit",
               "parameter 'conv.weight': the checkpoint has f32(4, 1, 3, 3), the model f32(5, 1, 3, 3)",
               "buffer 'bn.running_mean'", "parameter 'fc.weight'");
  EXPECT_EQ(bytes_of(other.conv_w.value()), before) << "a refused load changes nothing";

  // Missing and extra names.
  NamedTensors t = timbre::load_tensor_file(path);
  json meta = timbre::read_checkpoint_metadata(path);
  t.erase(t.begin());  // param/conv.weight
  t.emplace_back("param/extra.weight", Tensor::zeros(Shape{2}));
  timbre::save_tensor_file(dir / "edited.ckpt", t, meta);
  EXPECT_ERROR(timbre::load_checkpoint(dir / "edited.ckpt", s), "missing parameter 'conv.weight'",
               "unexpected parameter 'extra.weight'");
  EXPECT_EQ(bytes_of(other.conv_w.value()), before);

  // Weights only (evaluation) works; resuming from a weights-only file does not.
  TrainingState eval{"tinynet", kConfig, &other, nullptr, {}, nullptr, {}};
  const json m = timbre::load_checkpoint(path, eval);
  EXPECT_EQ(bytes_of(other.conv_w.value()), bytes_of(net.conv_w.value()));
  EXPECT_EQ(eval.extra["epoch"], 0);
  timbre::save_checkpoint(dir / "weights.ckpt", eval);
  EXPECT_ERROR(timbre::load_checkpoint(dir / "weights.ckpt", s), "no optimizer state");

  // A plain tensor file is not a checkpoint.
  timbre::save_tensor_file(dir / "plain.bin", {{"x", Tensor::zeros(Shape{1})}});
  EXPECT_ERROR(timbre::read_checkpoint_metadata(dir / "plain.bin"), "plain.bin", "not a checkpoint");
  EXPECT_ERROR(timbre::load_checkpoint(dir / "plain.bin", eval), "not a checkpoint");
}

TEST(Checkpoint, MetadataFromTheHeaderAlone) {
  TempDir dir;
  const std::string path = dir / "best.ckpt";
  Generator g(5);
  TinyNet net(4, g);
  timbre::Adam adam(net.parameters(), kAdam.config, kAdam.decay);
  train_step(net, adam, g, 0);
  timbre::save_checkpoint(path, {"tinynet", kConfig, &net, &adam, kAdam, &g, {{"epoch", 9}}});
  // Damage the data: the header-only read still answers (and does not read it).
  std::string b = read_bytes(path);
  b[b.size() - 3] = char(b[b.size() - 3] ^ 0x40);
  write_bytes(path, b);
  const json m = timbre::read_checkpoint_metadata(path);
  EXPECT_EQ(m["kind"], "timbre-checkpoint");
  EXPECT_EQ(m["model"]["name"], "tinynet");
  EXPECT_EQ(m["model"]["config"], kConfig);
  EXPECT_EQ(m["model"]["parameters"],
            json({"conv.weight", "conv.bias", "bn.gamma", "bn.beta", "fc.weight", "fc.bias"}));
  EXPECT_EQ(m["model"]["buffers"], json({"bn.running_mean", "bn.running_var"}));
  EXPECT_EQ(m["adam"]["step"], 1);
  EXPECT_EQ(m["adam"]["form"], "keras");
  EXPECT_EQ(m["adam"]["eps"].get<double>(), 1e-7);
  EXPECT_EQ(m["adam"]["decay"].get<double>(), 0.01);
  EXPECT_EQ(m["generator"]["seed"], 5u);
  EXPECT_EQ(m["generator"]["offset"], g.offset());
  EXPECT_EQ(m["extra"]["epoch"], 9);
  TrainingState s{"tinynet", kConfig, &net, nullptr, {}, nullptr, {}};
  EXPECT_ERROR(timbre::load_checkpoint(path, s), "fails its checksum");
}

// ------------------------------ crash safety -------------------------------
// A model with one large parameter, so that a write takes a while.
class Big : public timbre::Module {
 public:
  explicit Big(double value) {
    w = register_parameter("w", Tensor::full(Shape{3, 1000, 1001}, value));  // 12 MB
    b = register_parameter("b", Tensor::full(Shape{7}, value));
  }
  Variable w, b;
};

// Version v holds the value 1 + v % 2 everywhere, so two consecutive
// versions mixed in one file would show.
float value_of(int version) { return float(1 + version % 2); }
void save_version(const std::string& path, Big& m, int version) {
  timbre::save_checkpoint(path, {"big", json::object(), &m, nullptr, {}, nullptr,
                                 {{"version", version}}});
}
void save_version(const std::string& path, int version) {
  Big m(value_of(version));
  save_version(path, m, version);
}

// Loads the checkpoint and checks it is one complete version; returns it.
int load_version(const std::string& path) {
  Big m(-1);
  TrainingState s{"big", json::object(), &m, nullptr, {}, nullptr, {}};
  timbre::load_checkpoint(path, s);
  const int v = s.extra.at("version").get<int>();
  for (const Variable& p : m.parameters())
    for (float x : p.value().to_host<float>())
      if (x != value_of(v)) throw std::runtime_error("mixed versions in one checkpoint");
  return v;
}

// The child process (started by the tests below, never on its own): it
// either kills itself at a chosen step of AtomicFile, or saves versions
// 2, 3, ... onto the path until its parent kills it.
const char* g_kill_stage = nullptr;
int g_kill_count = 0;
void kill_at_stage(const char* stage) {
  if (std::strcmp(stage, g_kill_stage) == 0 && --g_kill_count == 0) kill(getpid(), SIGKILL);
}

TEST(AtomicWriteChild, Run) {
  const char* path = std::getenv("TIMBRE_SERIALIZE_CHILD_PATH");
  if (!path) GTEST_SKIP() << "helper process for the SIGKILL tests; runs only when they start it";
  const char* stage = std::getenv("TIMBRE_SERIALIZE_CHILD_STAGE");
  if (stage) {
    g_kill_stage = stage;
    g_kill_count = std::atoi(std::getenv("TIMBRE_SERIALIZE_CHILD_COUNT"));
    timbre::set_atomic_write_hook(kill_at_stage);
    save_version(path, 2);
    _exit(3);  // not reached if the hook fired
  }
  const int fd = std::atoi(std::getenv("TIMBRE_SERIALIZE_CHILD_FD"));
  Big odd(value_of(1)), even(value_of(2));  // built once: the loop only saves
  for (int v = 2;; ++v) {
    const char c = char(v);
    if (write(fd, &c, 1) != 1) _exit(4);  // "starting version v"
    save_version(path, v % 2 ? odd : even, v);
  }
}

// Starts this test binary again running only AtomicWriteChild.Run with the
// given environment; returns the child's pid.
pid_t start_child(const std::vector<std::string>& env_add, int keep_fd = -1) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.insert(env.end(), env_add.begin(), env_add.end());
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string(), filter =
                                                                     "--gtest_filter=AtomicWriteChild.Run";
  char* argv[] = {exe.data(), filter.data(), nullptr};
  // Only exec after fork: the parent has other threads (simcuda's workers),
  // and the child may safely call nothing but async-signal-safe functions.
  const pid_t pid = fork();
  if (pid == 0) {
    if (keep_fd >= 0) fcntl(keep_fd, F_SETFD, 0);
    const int null = open("/dev/null", O_WRONLY);  // keep the test's output readable
    dup2(null, 1);
    dup2(null, 2);
    execve(exe.c_str(), argv, envp.data());
    _exit(127);
  }
  return pid;
}

TEST(AtomicWrite, SigkillAtEveryStepLeavesACompleteCheckpoint) {
  TempDir dir;
  const std::string path = dir / "last.ckpt";
  save_version(path, 1);
  // The stages AtomicFile passes, in order, and which version must be on
  // disk after a kill there: before the rename the old one, after it the new.
  // (The writes: #1 prefix, #2 JSON, #3 header padding, then padding and
  // data per tensor, so "data" #5 comes right after the 12 MB tensor and
  // before the last one: the file is half written.)
  struct Case {
    const char* stage;
    int count;
    int expect;
  } cases[] = {{"created", 1, 1}, {"data", 1, 1}, {"data", 5, 1}, {"synced", 1, 1},
               {"renamed", 1, 2}, {"committed", 1, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string("killed at ") + c.stage + " #" + std::to_string(c.count));
    save_version(path, 1);
    const pid_t pid = start_child({"TIMBRE_SERIALIZE_CHILD_PATH=" + path,
                                   std::string("TIMBRE_SERIALIZE_CHILD_STAGE=") + c.stage,
                                   "TIMBRE_SERIALIZE_CHILD_COUNT=" + std::to_string(c.count)});
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the child was not killed at that stage (status " << status << ")";
    EXPECT_EQ(load_version(path), c.expect);
    // A kill before the rename leaves the temporary file: it does not matter.
    if (c.expect == 1) {
      EXPECT_EQ(temp_files_in(dir.str()).size(), 1u);
    }
  }
  // The next save removes what dead writers left behind.
  save_version(path, 5);
  EXPECT_TRUE(temp_files_in(dir.str()).empty());
  EXPECT_EQ(load_version(path), 5);
}

// The child saves versions 2, 3, ... in a loop (about 60 ms each here; the
// temporary file exists for a third to a half of that, the rest is the
// device-to-host copy and the checksums). The parent times one save of the
// warm child (from the start of version 3 to the start of version 4) and
// kills it at a point spread over the following save: run k at
// ((k mod 10) + 0.5 + (k div 10)/3)/10 of the period, so the kills sample
// the whole save whatever this machine's speed (ASan, slow disks). At
// least 10 runs; more (up to 30) until 3 kills have hit a write in progress.
TEST(AtomicWrite, SigkillAtRandomMomentsLeavesACompleteCheckpoint) {
  TempDir dir;
  const std::string path = dir / "last.ckpt";
  save_version(path, 1);
  int mid_write = 0, runs = 0;
  for (int run = 0; run < 30 && (run < 10 || mid_write < 3); ++run, ++runs) {
    SCOPED_TRACE("run " + std::to_string(run));
    for (const std::string& t : temp_files_in(dir.str())) fs::remove(dir / t);
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    const pid_t pid = start_child({"TIMBRE_SERIALIZE_CHILD_PATH=" + path,
                                   "TIMBRE_SERIALIZE_CHILD_FD=" + std::to_string(fds[1])},
                                  fds[1]);
    close(fds[1]);
    ASSERT_GT(pid, 0);
    char c = 0;
    int last_started = 0;
    std::chrono::steady_clock::time_point t3, t4;
    while (last_started < 4 && read(fds[0], &c, 1) == 1) {
      last_started = c;
      (last_started == 3 ? t3 : t4) = std::chrono::steady_clock::now();
    }
    const auto period = t4 - t3;
    std::this_thread::sleep_for(period * ((run % 10) + 0.5 + (run / 10) / 3.0) / 10.0);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    while (read(fds[0], &c, 1) == 1) last_started = c;
    close(fds[0]);
    ASSERT_GE(last_started, 4) << "the child stopped before its fourth save";
    if (!temp_files_in(dir.str()).empty()) ++mid_write;
    const int v = load_version(path);  // throws if damaged or mixed
    // The version on disk is complete and is the last one started or the
    // one before it (killed mid-write).
    EXPECT_LE(v, last_started);
    EXPECT_GE(v, last_started - 1);
  }
  // The kills must have hit writes in progress, or this test proves little.
  EXPECT_GE(mid_write, 1) << "of " << runs << " kills none landed during a write";
  std::printf("%d of %d kills landed during a write (a temporary file was left)\n", mid_write,
              runs);
}

TEST(AtomicWrite, StaleTemporariesOfLiveWritersAreKept) {
  TempDir dir;
  const std::string path = dir / "x.bin";
  // A writer in progress (this object) holds its lock: another save to the
  // same target must not delete its temporary file.
  timbre::AtomicFile live(path);
  live.write("abc", 3);
  timbre::save_tensor_file(path, {{"x", Tensor::zeros(Shape{1})}});
  EXPECT_TRUE(fs::exists(live.temp_path()));
  // A file with the pattern that nobody holds is removed; unrelated files stay.
  const std::string dead = path + ".timbre-tmp-0123456789ab";
  write_bytes(dead, "partial");
  write_bytes(path + ".timbre-tmp-notours", "keep");
  write_bytes(dir / "other.bin.timbre-tmp-0123456789ab", "keep");
  timbre::save_tensor_file(path, {{"x", Tensor::zeros(Shape{1})}});
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(path + ".timbre-tmp-notours"));
  EXPECT_TRUE(fs::exists(dir / "other.bin.timbre-tmp-0123456789ab"));
  EXPECT_TRUE(fs::exists(live.temp_path()));
  live.commit();  // the live writer finishes: its content wins
  EXPECT_EQ(read_bytes(path), "abc");
  EXPECT_FALSE(fs::exists(live.temp_path()));
}

}  // namespace
