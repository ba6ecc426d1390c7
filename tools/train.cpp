#include "tools/train.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "engine/autograd.h"
#include "engine/context.h"
#include "engine/distributed.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "engine/serialize.h"
#include "features/utf8.h"
#include "kernels/cuda_check.h"
#include "kernels/profile.h"
#include "tools/batches.h"
#include "tools/device.h"
#include "tools/progress.h"
#include "tools/report.h"
#include "tools/tensorboard.h"
#include "tools/train_config.h"
#include "tools/train_step.h"

namespace timbre::tools {

using features::Split;
using nlohmann::json;

namespace {

json params_to_json(const features::FeatureParams& p) {
  return {{"sample_rate", p.sample_rate}, {"n_fft", p.n_fft}, {"hop", p.hop},
          {"n_mels", p.n_mels},           {"fmin", p.fmin},   {"fmax", p.fmax},
          {"frames", p.frames},           {"top_db", p.top_db}, {"n_mfcc", p.n_mfcc}};
}

features::FeatureParams params_from_json(const json& j) {
  features::FeatureParams p;
  p.sample_rate = j.at("sample_rate");
  p.n_fft = j.at("n_fft");
  p.hop = j.at("hop");
  p.n_mels = j.at("n_mels");
  p.fmin = j.at("fmin");
  p.fmax = j.at("fmax");
  p.frames = j.at("frames");
  p.top_db = j.at("top_db");
  p.n_mfcc = j.at("n_mfcc");
  return p;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// An exclusive lock on dir/.lock for this object's life (flock: the kernel
// drops it when the process dies, so a killed run leaves no stale lock).
// The file holds the holder's pid, for the message a second process gets.
class RunFolderLock {
 public:
  explicit RunFolderLock(const std::string& dir) {
    const std::string path = dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0)
      throw std::runtime_error("cannot open the run folder's lock " + path + ": " +
                               std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
      ::close(fd_);
      if (err == EWOULDBLOCK)
        throw std::runtime_error(dir + " is in use by another timbre train" +
                                 (n > 0 ? " (pid " + std::string(pid, size_t(n)) + ")" : "") +
                                 "; wait for it to finish or choose another --out");
      throw std::runtime_error("cannot lock " + path + ": " + std::strerror(err));
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
      // The pid is only for the message; the lock holds without it.
    }
  }
  ~RunFolderLock() { ::close(fd_); }
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

 private:
  int fd_ = -1;
};

// The folder, created with its parents if missing (runs/parallel makes
// runs/), with the reason when that fails.
void make_run_folder(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create the run folder " + dir + ": " + ec.message());
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error("the run folder " + dir + " is not a directory");
}

// Resume: the run's own run.json against the options of this invocation.
// Whatever would change what the run means is refused, naming old and new;
// epochs and patience may change.
// Returns the run's run.json.
json check_resume_settings(const std::string& dir, const json& now) {
  const std::string path = dir + "/run.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("--resume: " + path + " is missing");
  json was;
  try {
    was = json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("--resume: " + path + " is not valid JSON: " + e.what());
  }
  std::string diffs;
  for (const char* key : {"model", "model_config", "batch_size", "seed", "lr", "decay", "adam",
                          "max_steps", "precise_bn", "label_names", "features", "data_sizes"}) {
    if (!was.contains(key)) continue;  // runs from older versions record fewer keys
    if (was.at(key) != now.at(key))
      diffs += std::string("\n  ") + key + ": the run has " + was.at(key).dump() +
               ", this command " + now.at(key).dump();
  }
  if (!diffs.empty())
    throw std::runtime_error("--resume: " + dir + " was trained with other settings; resuming "
                             "would change the run (only --epochs and --patience may change):" +
                             diffs);
  return was;
}

// Now, in UTC, as ISO 8601 ("2026-12-03T02:41:07Z").
std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

void write_text_atomically(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

int argmax_row(const float* row, int c) {
  return int(std::max_element(row, row + c) - row);
}

std::string history_csv(const json& history) {
  std::ostringstream os;
  os << "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,ms_per_step\n";
  char line[256];
  for (const auto& h : history) {
    std::snprintf(line, sizeof line, "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.2f,%.1f\n", int(h.at("epoch")),
                  double(h.at("loss")), double(h.at("accuracy")), double(h.at("val_loss")),
                  double(h.at("val_accuracy")), double(h.at("lr")), double(h.at("seconds")),
                  h.value("ms_per_step", NAN));  // runs from before it was recorded: nan
    os << line;
  }
  return os.str();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The run's curves as TensorBoard event files, Keras's layout: RUN/tensorboard/
// train and .../validation, so that `tensorboard --logdir RUN/tensorboard`
// (or a folder of runs) draws training and validation in one chart per tag:
// epoch_loss and epoch_accuracy in both, epoch_learning_rate and
// epoch_ms_per_step (the training steps alone) in train; the step is the
// epoch, from 1. Each file's whole content follows from the history and is
// brought up to date after every epoch (update_event_file: the new epoch's
// records appended), so a resumed run continues the same files, and a torn
// record left by a kill is replaced, never read as data.
void write_tensorboard(const std::string& run, const json& progress) {
  const double start = progress.value("start_time", 0.0);
  std::vector<TensorBoardScalar> train, validation;
  for (const json& h : progress.at("history")) {
    const int64_t step = h.at("epoch");
    const double t = h.value("wall_time", start);
    auto add = [&](std::vector<TensorBoardScalar>& v, const char* tag, const char* key) {
      if (h.contains(key)) v.push_back({tag, step, float(double(h.at(key))), t});
    };
    add(train, "epoch_loss", "loss");
    add(train, "epoch_accuracy", "accuracy");
    add(train, "epoch_learning_rate", "lr");
    add(train, "epoch_ms_per_step", "ms_per_step");
    add(validation, "epoch_loss", "val_loss");
    add(validation, "epoch_accuracy", "val_accuracy");
  }
  for (const auto& [name, scalars] : {std::pair{"train", &train}, {"validation", &validation}}) {
    const std::filesystem::path dir = std::filesystem::path(run) / "tensorboard" / name;
    std::filesystem::create_directories(dir);
    update_event_file(dir / tensorboard_file_name(start), tensorboard_events(start, *scalars));
  }
}

// Loss (mean over samples) and accuracy of the model on one split, in eval
// mode without gradients; nullopt when `stop` (may be null) turned non-zero
// before the split was done. In a data-parallel job each rank evaluates a
// contiguous shard of the split and the sums are added over the ranks
// (every rank gets the same two numbers); `stop` is then not polled (the
// ranks agree on a signal at the next training step).
std::optional<std::pair<double, double>> evaluate_split(models::Model& model, BatchLoader& loader,
                                                        Split split, const BandNormaliser& norm,
                                                        int batch, Generator& g,
                                                        const std::atomic<int>* stop) {
  const auto& st = loader.store();
  const int64_t n = st.size(split);
  if (n == 0) return std::make_pair(0.0, 0.0);
  const int64_t first = n * dist::rank() / dist::size(), last = n * (dist::rank() + 1) / dist::size();
  if (dist::active()) stop = nullptr;
  std::vector<int64_t> order;
  for (int64_t i = first; i < last; ++i) order.push_back(i);
  loader.start(split, std::move(order), batch);
  NoGradGuard no_grad;
  model.eval();
  double loss_sum = 0;
  int64_t correct = 0;
  HostBatch b;
  while (loader.next(b)) {
    if (stop != nullptr && stop->load() != 0) {  // (the next start() abandons the pass)
      model.train();
      return std::nullopt;
    }
    Tensor x = norm(b.x.data(), b.n(), st.rows(), st.frames());
    Variable logits = model.forward(Variable(x), g);
    Tensor labels = Tensor::from_host(Shape{b.n()}, b.y);
    const double loss = ops::cross_entropy(logits, labels).value().to_host<float>()[0];
    const std::vector<float> l = logits.value().to_host<float>();
    const int c = int(logits.value().size(1));
    // A non-finite output would count as right or wrong by accident (argmax
    // over NaN) and make the epoch "best": name the samples instead.
    for (int64_t i = 0; i < b.n(); ++i)
      for (int k = 0; k < c; ++k)
        if (!std::isfinite(l[size_t(i * c + k)]))
          throw TrainError("non-finite output on " + std::string(features::split_name(split)) +
                           " sample " + std::to_string(b.indices[size_t(i)]) + " of " +
                           st.path() + " (its features hold NaN or Inf?)");
    if (!std::isfinite(loss))
      throw TrainError("non-finite " + std::string(features::split_name(split)) + " loss on " +
                       st.path());
    loss_sum += loss * double(b.n());
    for (int64_t i = 0; i < b.n(); ++i) correct += argmax_row(&l[size_t(i * c)], c) == b.y[i];
    dist::heartbeat();
  }
  model.train();
  double sums[2] = {loss_sum, double(correct)};
  dist::host_sum(sums, 2);
  return std::make_pair(sums[0] / double(n), sums[1] / double(n));
}

// 3 significant digits for the profile table.
std::string fmt_number(double x) {
  char b[32];
  std::snprintf(b, sizeof b, x >= 100 ? "%.0f" : x >= 10 ? "%.1f" : "%.2f", x);
  return b;
}

kernels::AdamConfig adam_config(const TrainOptions& o, double lr) {
  return o.adam == "keras" ? kernels::keras_adam(lr) : kernels::pytorch_adam(lr);
}

// --profile: o.profile_steps training steps on the first batches of the
// training split, after two warm-up steps (allocations, cuBLAS's set-up;
// with --cuda-graph on, the second is the capture), counted by
// kernels::profile::Recorder; the log is read after the window, as the
// progress refresh would. A graph replay is timed as a whole, so with
// graphs on the per-kernel table comes from as many more steps run launch
// by launch (the same kernels). Prints the table and writes
// OUT/profile.json; trains nothing else and writes no checkpoint.
std::string profile_training(const TrainOptions& o, models::Model& model, BatchLoader& loader,
                             Generator& gen, double lr) {
  namespace prof = kernels::profile;
  constexpr int kWarmup = 2;
  const features::FeatureStore& st = loader.store();
  const int steps = o.profile_steps;
  if (steps < 1) throw UsageError("--profile-steps must be at least 1");
  make_run_folder(o.out);  // before the steps: a bad --out fails at once
  const bool graphs = o.cuda_graph == "on";
  StepParts parts(model, adam_config(o, lr), o.decay, st, gen, graphs);
  const TrainStep& step = parts.step;
  TrainStep eager = step;  // launch by launch: the per-kernel times and the trace
  eager.graphs = nullptr;
  std::vector<int64_t> order = epoch_order(st.size(Split::train), o.seed, 0);
  // Full batches only, cycling through the split when it is short.
  const int eager_steps = graphs ? steps : 0;
  const size_t want =
      size_t(kWarmup + steps + eager_steps + (o.trace ? 1 : 0)) * size_t(o.batch_size);
  std::vector<int64_t> cycled;
  while (cycled.size() < want) cycled.insert(cycled.end(), order.begin(), order.end());
  cycled.resize(want);
  loader.start(Split::train, std::move(cycled), o.batch_size);
  HostBatch b;
  int done = 0;
  for (; done < kWarmup && loader.next(b); ++done) step.run(b, StepPlace{0, done, done, b.indices});
  parts.read();
  // One window: `s` steps run by `how`; the device is done when it closes
  // (a GPU would still be running the queued steps otherwise).
  auto window = [&](const TrainStep& how, int s, double* wall_ms) {
    std::optional<prof::Recorder> rec(std::in_place);
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < s && loader.next(b); ++k, ++done)
      how.run(b, StepPlace{0, done, done, b.indices});
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    *wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    prof::Totals t = rec->stop();
    rec.reset();
    parts.read();  // the log point after the window (not counted)
    return t;
  };
  double wall_ms = 0, eager_wall_ms = 0;
  const prof::Totals counted = window(step, steps, &wall_ms);
  const prof::Totals t = graphs ? window(eager, eager_steps, &eager_wall_ms) : counted;
  // --trace: one more step, op by op (kernels/profile.h's marks).
  std::vector<prof::TraceOp> trace;
  if (o.trace && loader.next(b)) {
    prof::Recorder tr(true);
    eager.run(b, StepPlace{0, done, done, b.indices});
    trace = tr.stop().trace;
    parts.read();
  }

  const double n = steps;
  const prof::Totals& c = counted;  // what the host asked per step
  json kernels_json = json::array();
  std::string table;
  char line[512];
  std::snprintf(line, sizeof line, "%5s %8s %10s %6s %9s %8s  %s\n", "rank", "calls", "ms", "share",
                "GFLOP/s", "GB/s", "kernel (per step)");
  table += line;
  int rank = 0;
  for (const prof::KernelRow& r : t.rows) {
    const double ms = r.ms / n, share = t.device_ms > 0 ? r.ms / t.device_ms : 0;
    const double secs = r.ms * 1e-3;
    json k = {{"name", r.name},        {"library", r.library}, {"calls_per_step", r.calls / n},
              {"ms_per_step", ms},     {"share", share}};
    if (r.flops > 0 && secs > 0) k["gflops"] = r.flops / secs * 1e-9;
    if (r.bytes > 0 && secs > 0) k["gbytes_per_s"] = r.bytes / secs * 1e-9;
    kernels_json.push_back(k);
    if (++rank <= 25) {
      std::snprintf(line, sizeof line, "%5d %8.1f %10.3f %5.1f%% %9s %8s  %s\n", rank, r.calls / n,
                    ms, 100 * share,
                    k.contains("gflops") ? fmt_number(double(k["gflops"])).c_str() : "-",
                    k.contains("gbytes_per_s") ? fmt_number(double(k["gbytes_per_s"])).c_str() : "-",
                    r.name.c_str());
      table += line;
    }
  }
  json p = {
      {"model", o.model},
      {"batch_size", o.batch_size},
      {"steps", steps},
      {"warmup_steps", kWarmup},
      {"backend", backend_description()},
      {"device", device_summary()},
      {"timbre_version", features::timbre_version()},
      {"cuda_graph", o.cuda_graph},
      {"wall_ms_per_step", wall_ms / n},
      {"device_ms_per_step", t.device_ms / n},
      {"kernels_per_step", double(c.kernel_launches + c.library_calls + c.graph_kernels +
                                  c.graph_library_calls) / n},
      {"kernel_launches_per_step", double(c.kernel_launches + c.graph_kernels) / n},
      {"library_calls_per_step", double(c.library_calls + c.graph_library_calls) / n},
      {"launch_calls_per_step", double(c.kernel_launches + c.library_calls + c.graph_launches) / n},
      {"graph_replays_per_step", c.graph_launches / n},
      {"host_syncs_per_step", c.host_syncs / n},
      {"h2d_copies_per_step", c.h2d_copies / n},
      {"h2d_bytes_per_step", c.h2d_bytes / n},
      {"d2h_copies_per_step", c.d2h_copies / n},
      {"d2h_bytes_per_step", c.d2h_bytes / n},
      {"d2d_copies_per_step", c.d2d_copies / n},
      {"d2d_bytes_per_step", c.d2d_bytes / n},
      {"memsets_per_step", c.memsets / n},
      {"memset_bytes_per_step", c.memset_bytes / n},
      {"kernels", kernels_json}};
  if (graphs) {
    // The per-kernel rows and device_ms come from the steps run launch by
    // launch: a replay is one launch to the host and to the profiler.
    p["kernel_times_from"] = "steps run launch by launch (a graph replay is timed as a whole)";
    p["uncaptured_wall_ms_per_step"] = eager_wall_ms / n;
    p["graph_pool_bytes"] = parts.graphs.pool_bytes();
  }
  std::string trace_text;
  if (!trace.empty()) {
    json tj = json::array();
    trace_text = "\ntrace of one step: each op, then the kernels it launched in order\n";
    for (const prof::TraceOp& op : trace) {
      json ks = json::array();
      trace_text += op.label + "\n";
      for (const prof::TraceKernel& k : op.kernels) {
        ks.push_back({{"name", k.name}, {"shape", k.shape}, {"ms", k.ms}});
        std::snprintf(line, sizeof line, "    %9.3f ms  %-40s %s\n", k.ms, k.shape.c_str(),
                      k.name.c_str());
        trace_text += line;
      }
      tj.push_back({{"op", op.label}, {"kernels", ks}});
    }
    p["trace"] = tj;
  }
  const std::string path = o.out + "/profile.json";
  write_text_atomically(path, p.dump(2) + "\n");
  std::snprintf(line, sizeof line,
                "profile of one training step: %s, batch %d, mean of %d steps after %d warm-up "
                "steps (%s)\n",
                o.model.c_str(), o.batch_size, steps, kWarmup, backend_description().c_str());
  std::string out = line;
  std::snprintf(line, sizeof line,
                "  wall %.2f ms, device %.2f ms; kernels %.0f (launches %.0f, library calls "
                "%.0f), launch calls %.0f, graph launches %.0f, host synchronisations %.1f, "
                "host->device %.0f B, device->host %.0f B\n",
                wall_ms / n, t.device_ms / n, double(p["kernels_per_step"]),
                double(p["kernel_launches_per_step"]), double(p["library_calls_per_step"]),
                double(p["launch_calls_per_step"]), double(p["graph_replays_per_step"]),
                double(p["host_syncs_per_step"]), double(p["h2d_bytes_per_step"]),
                double(p["d2h_bytes_per_step"]));
  out += line;
  if (graphs) {
    std::snprintf(line, sizeof line,
                  "  CUDA graph: one replay per step, %.1f MiB of device memory held by the "
                  "graphs; the table's times are from %d steps run launch by launch (wall "
                  "%.2f ms per step)\n",
                  double(parts.graphs.pool_bytes()) / (1 << 20), steps, eager_wall_ms / n);
    out += line;
  }
  out += "\n" + table;
  if (t.rows.size() > 25) out += "  ... " + std::to_string(t.rows.size() - 25) + " more in " + path + "\n";
  out += trace_text;
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return path;
}

// Rank `rank`'s part of each global batch of `batch` samples in `order`:
// the slice [rank * b, (rank + 1) * b) of every batch, b = batch / ranks.
// An epoch's last, shorter batch of n samples is cut the same way after
// its last n % ranks samples are left out (they would make the slices
// unequal). Rank 0's slices come first in every global batch, so the ranks
// together see what one process sees, batch by batch.
std::vector<int64_t> rank_slices(const std::vector<int64_t>& order, int batch, int rank, int ranks) {
  std::vector<int64_t> mine;
  for (size_t start = 0; start < order.size(); start += size_t(batch)) {
    const size_t n = std::min(order.size() - start, size_t(batch));
    const size_t b = n / size_t(ranks);
    mine.insert(mine.end(), order.begin() + long(start + rank * b),
                order.begin() + long(start + (rank + 1) * b));
  }
  return mine;
}

}  // namespace

double default_lr(const std::string& model) { return model == "rescnn" ? 2e-4 : 1e-3; }

TrainResult run_train(const TrainOptions& o, const std::atomic<int>* stop) {
  if (o.data.empty()) throw std::invalid_argument("--data is required");
  if (o.out.empty()) throw std::invalid_argument("--out is required");
  if (o.epochs < 1) throw std::invalid_argument("--epochs must be at least 1");
  if (o.batch_size < 1) throw std::invalid_argument("--batch-size must be at least 1");
  if (o.patience < 1) throw std::invalid_argument("--patience must be at least 1");
  if (!(o.lr >= 0) || !std::isfinite(o.lr))
    throw UsageError("--lr must be a finite number > 0 (0: the model's default)");
  if (!(o.decay >= 0) || !std::isfinite(o.decay))
    throw UsageError("--decay must be a finite number >= 0");
  if (o.adam != "keras" && o.adam != "pytorch")
    throw std::invalid_argument("adam must be 'keras' or 'pytorch', not '" + o.adam + "'");
  if (o.precise_bn != "auto" && o.precise_bn != "on" && o.precise_bn != "off")
    throw UsageError("--precise-bn must be auto, on or off, not '" + o.precise_bn + "'");
  if (o.cuda_graph != "on" && o.cuda_graph != "off")
    throw UsageError("--cuda-graph must be on or off, not '" + o.cuda_graph + "'");
  // Data-parallel (engine/distributed.h): --batch-size is the global batch,
  // each rank trains on its slice of batch_size / ranks samples.
  const int ranks = dist::size(), me = dist::rank();
  const bool quiet = o.quiet || !dist::is_root();  // rank 0 alone prints
  if (ranks > 1 && o.batch_size % ranks != 0)
    throw UsageError("--batch-size " + std::to_string(o.batch_size) + " is the global batch and "
                     "must split evenly over the " + std::to_string(ranks) + " ranks");
  if (ranks > 1 && o.profile)
    throw UsageError("--profile measures one process's step; run it without mpirun");
  if (o.sync_batchnorm && ranks == 1 && !quiet)
    std::fprintf(stderr, "--sync-batchnorm: one rank, nothing to synchronise\n");
  for (const auto& [flag, path] : {std::pair<const char*, const std::string&>{"--data", o.data},
                                   {"--out", o.out}})
    if (!features::is_valid_utf8(path))
      throw UsageError(std::string(flag) + " " + features::escape_non_utf8(path) +
                       ": the path is not valid UTF-8 (run.json and config.toml store it as "
                       "text); rename it");

  // The data file by its absolute path: run.json and config.toml keep it, so
  // the run folder works from any working directory.
  const std::string data = std::filesystem::absolute(o.data).lexically_normal().string();
  if (o.resume && !exists(data))
    throw std::runtime_error("--resume: the feature file " + data + " does not exist (moved or "
                             "deleted?); pass --data with its new path");
  BatchLoader loader(features::FeatureStore::open(data));
  const features::FeatureStore& st = loader.store();
  const int n_classes = int(st.label_names().size());
  const int64_t n_train = st.size(Split::train);
  if (n_train == 0) throw std::runtime_error(data + ": the train split is empty");
  if (n_train < ranks)
    throw UsageError(data + ": the train split's " + std::to_string(n_train) + " samples are fewer "
                     "than the " + std::to_string(ranks) + " ranks");
  if (n_classes < 2)
    throw std::runtime_error(data + ": " + std::to_string(n_classes) +
                             " class in the file; a classifier needs at least two");
  if (st.size(Split::validation) == 0)
    throw std::runtime_error(data + ": the validation split is empty (early stopping needs it)");

  // The model: its config from the options, the classes and input size from
  // the data. A value the model refuses is a usage error, found before the
  // run folder is touched.
  json cfg = o.model_config.is_null() ? json::object() : o.model_config;
  cfg["n_classes"] = n_classes;
  Generator gen(o.seed);
  std::unique_ptr<models::Model> model;
  try {
    model = models::make_model(o.model, cfg, gen);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--model-config: ") + e.what());
  }
  // The input the model expects against the data's segments (found here,
  // not at the first forward pass after the run folder is written).
  const json full = model->config();
  if (full.value("input_height", st.rows()) != st.rows() ||
      full.value("input_width", st.frames()) != st.frames())
    throw UsageError("--model-config: " + o.model + " takes " +
                     std::to_string(int(full.value("input_height", 0))) + " x " +
                     std::to_string(int(full.value("input_width", 0))) + " inputs, but " + data +
                     " holds " + std::to_string(st.rows()) + " x " + std::to_string(st.frames()) +
                     " segments (mel bands x frames)");
  model->train();
  if (o.profile) {
    TrainResult r;
    r.profile_path = profile_training(o, *model, loader, gen, o.lr > 0 ? o.lr : default_lr(o.model));
    return r;
  }

  // The run folder: created, locked for this process's life, and checked
  // under the lock (a second run on the same --out fails here, before it
  // writes anything).
  const std::string last_path = o.out + "/last.ckpt", best_path = o.out + "/best.ckpt";
  // In a data-parallel job rank 0 alone makes, locks and writes the folder;
  // the others read last.ckpt on resume, before rank 0 can write it again
  // (it does so after an epoch of steps the ranks take together).
  std::optional<RunFolderLock> lock;
  if (dist::is_root()) {
    make_run_folder(o.out);
    lock.emplace(o.out);
  }
  if (!dist::is_root()) {
    if (o.resume && !exists(last_path))
      throw std::runtime_error("--resume: " + last_path + " does not exist");
  } else if (!o.resume) {
    for (const char* f : {"last.ckpt", "best.ckpt", "log.csv", "run.json"})
      if (exists(o.out + "/" + f))
        throw std::runtime_error(o.out + " already holds a run (" + f + "); pass --resume to "
                                 "continue it (it needs last.ckpt) or choose another --out");
  } else if (!exists(last_path)) {
    throw std::runtime_error("--resume: " + last_path + " does not exist" +
                             (exists(best_path) ? " (best.ckpt does: evaluate it with timbre eval, "
                                                  "or train anew in another --out)"
                                                : ""));
  }
  const double lr = o.lr > 0 ? o.lr : default_lr(o.model);
  const kernels::AdamConfig adam_cfg = adam_config(o, lr);
  StepParts parts(*model, adam_cfg, o.decay, st, gen, o.cuda_graph == "on");
  parts.step.sync_batchnorm = o.sync_batchnorm && ranks > 1;
  if (ranks > 1) {
    parts.buckets.emplace(parts.adam, size_t(o.bucket_mib * double(1 << 20)));
    parts.step.buckets = &*parts.buckets;
    if (!quiet)
      std::fprintf(stderr,
                   "data-parallel: %d ranks, %d samples per rank in each global batch of %d; the "
                   "gradients all-reduced in %zu bucket%s%s\n",
                   ranks, o.batch_size / ranks, o.batch_size, parts.buckets->buckets(),
                   parts.buckets->buckets() == 1 ? "" : "s",
                   parts.buckets->buckets() == 1 ? " after the backward pass"
                                                 : " overlapping the backward pass");
  }
  gen.set_shard(me, ranks);
  Adam& adam = parts.adam;
  const BandNormaliser& norm = parts.norm;
  auto last_read = std::chrono::steady_clock::now();

  TrainingState state;
  state.model_name = o.model;
  state.model_config = model->config();
  state.model = model.get();
  state.adam = &adam;
  state.adam_settings = AdamSettings{adam_cfg, o.decay};
  state.generator = &gen;

  // Everything the loop carries across epochs, saved in every checkpoint.
  json progress = {{"epoch", 0},        {"step_in_epoch", 0}, {"global_step", 0},
                   {"loss_sum", 0.0},   {"correct", 0},       {"seen", 0},
                   {"epoch_seconds", 0.0}, {"best_val_accuracy", -1.0},
                   {"best_epoch", 0},   {"bad_epochs", 0},    {"history", json::array()},
                   {"start_time", unix_now()}};
  const json fixed = {{"features", params_to_json(st.params())},
                      {"label_names", st.label_names()},
                      {"band_mean", st.band_mean()},
                      {"band_std", st.band_std()},
                      {"data", data},
                      {"timbre_version", features::timbre_version()}};
  if (o.resume) {
    load_checkpoint(last_path, state);  // refuses another model or config
    progress = state.extra.at("progress");
    if (!progress.contains("start_time")) progress["start_time"] = unix_now();  // older runs
    if (state.extra.at("features") != fixed.at("features"))
      throw std::runtime_error("--resume: " + data + " has other feature parameters than the "
                               "data the run was trained on");
  }
  auto save_state = [&](const std::string& path, bool with_optimiser) {
    if (!dist::is_root()) return;
    TrainingState s = state;
    if (!with_optimiser) s.adam = nullptr, s.generator = nullptr;
    s.extra = fixed;
    s.extra["progress"] = progress;
    save_checkpoint(path, s);
  };
  {
    json run = {{"model", o.model},
                {"model_config", model->config()},
                {"data", data},
                {"epochs", o.epochs},
                {"batch_size", o.batch_size},
                {"lr", lr},
                {"decay", o.decay},
                {"patience", o.patience},
                {"seed", o.seed},
                {"adam", o.adam},
                {"max_steps", o.max_steps},
                {"precise_bn", o.precise_bn},
                {"cuda_graph", o.cuda_graph},
                {"ranks", ranks},
                {"sync_batchnorm", o.sync_batchnorm},
                {"label_names", st.label_names()},
                {"features", params_to_json(st.params())},
                {"data_sizes", {st.size(Split::train), st.size(Split::validation),
                                st.size(Split::test)}},
                {"timbre_version", features::timbre_version()},
                {"commit", o.commit.empty() ? "unknown" : o.commit},
                {"backend", backend_description()},
                {"device", device_summary()},
                {"started", utc_now()}};
    if (o.resume) {
      json now = run;
      now.erase("ranks");  // another number of ranks may continue a run
      now.erase("sync_batchnorm");
      const json was = check_resume_settings(o.out, now);
      if (was.contains("started")) run["started"] = was.at("started");
      run["resumed"] = utc_now();
    }
    // The effective configuration as a file --config takes, beside run.json.
    TrainOptions effective = o;
    effective.data = data;
    effective.out = std::filesystem::absolute(o.out).lexically_normal().string();
    if (dist::is_root()) {
      write_text_atomically(o.out + "/config.toml", train_config_toml(effective, lr));
      write_text_atomically(o.out + "/run.json", run.dump(2) + "\n");
    }
  }
  if (o.resume && !quiet) {
    const int done = progress["epoch"];
    if (done >= o.epochs)
      std::fprintf(stderr, "%s has trained its %d epoch%s already (a higher --epochs trains on)\n",
                   o.out.c_str(), done, done == 1 ? "" : "s");
    else
      std::fprintf(stderr, "resumed %s from epoch %d%s (of %d)\n", o.out.c_str(), done + 1,
                   int(progress["step_in_epoch"]) > 0
                       ? (", step " + std::to_string(int(progress["step_in_epoch"]) + 1)).c_str()
                       : "",
                   o.epochs);
  }

  TrainResult result;
  // Saves the state of a run stopped by a signal in `epoch` (after its
  // completed steps) and says so in the result.
  // `steps_seconds`: the time of this invocation's training steps in the
  // epoch (the whole time so far when the signal came during them).
  auto stopped = [&](int epoch, std::chrono::steady_clock::time_point t0, int sig,
                     std::optional<double> steps_seconds = std::nullopt) {
    const double so_far =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress["epoch"] = epoch;
    progress["epoch_seconds"] = double(progress["epoch_seconds"]) + so_far;
    progress["steps_seconds"] = progress.value("steps_seconds", 0.0) + steps_seconds.value_or(so_far);
    save_state(last_path, true);
    result.signal = sig;
    result.epochs_done = epoch;
    result.best_epoch = progress["best_epoch"];
    result.best_val_accuracy = std::max(0.0, double(progress["best_val_accuracy"]));
    return result;
  };
  // With several ranks, an epoch's last, short batch is cut into equal
  // slices, leaving out its last (tail % ranks) samples (rank_slices); a
  // tail shorter than the ranks is left out.
  const int64_t tail = n_train % o.batch_size;
  const int steps_full = int(n_train / o.batch_size) + (tail >= ranks ? 1 : 0);
  const int steps_per_epoch = o.max_steps > 0 ? std::min(o.max_steps, steps_full) : steps_full;

  // Precise batch-norm statistics (engine/nn.h, PreciseBatchNorm): after
  // each epoch's steps and before validation, the running statistics are
  // recomputed over up to kPreciseBnBatches training batches. "auto" does it
  // when one epoch of training updates cannot have replaced them: when more
  // than 1% of their value from before the epoch is left after it,
  // keep^steps > 0.01 (Keras's keep 0.99 needs 459 steps per epoch to get
  // below, PyTorch's 0.9 needs 44). A forward pass over those batches costs
  // about a fifth of as many training steps (the demo's parallel model).
  constexpr int kPreciseBnBatches = 200;
  const auto bns = nn::batch_norms(*model);
  double keep = 0;
  for (const nn::BatchNorm* bn : bns) keep = std::max(keep, bn->running_keep());
  const double left = std::pow(keep, double(steps_per_epoch));
  result.precise_bn =
      !bns.empty() && (o.precise_bn == "on" || (o.precise_bn == "auto" && left > 0.01));
  // Whole batches only (when there is one): each batch's statistics enter
  // with the same weight, so a short last batch would count as much as a
  // whole one (and on N ranks lose its last n mod N samples).
  const int64_t bn_samples =
      n_train < o.batch_size
          ? n_train
          : std::min<int64_t>(n_train / o.batch_size, kPreciseBnBatches) * o.batch_size;
  const int bn_batches = int((bn_samples + o.batch_size - 1) / o.batch_size);
  if (!quiet && result.precise_bn)
    std::fprintf(stderr,
                 "precise batch-norm statistics: on (%s): %d step%s per epoch leave%s %.0f%% "
                 "of the running statistics from before the epoch; they are recomputed over %d "
                 "training batch%s after each epoch\n",
                 o.precise_bn == "on" ? "--precise-bn on" : "auto", steps_per_epoch,
                 steps_per_epoch == 1 ? "" : "s", steps_per_epoch == 1 ? "s" : "", 100 * left,
                 bn_batches, bn_batches == 1 ? "" : "es");
  bool report_warned = false;
  // A rank without progress for --rank-timeout seconds ends the job
  // (dist::arm_watchdog): NCCL would wait for a hung peer forever.
  dist::arm_watchdog(o.rank_timeout, "in training");
  json step_losses = json::array();  // --debug-step-losses (this invocation's steps)
  for (int epoch = int(progress["epoch"]); epoch < o.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> order = epoch_order(n_train, o.seed, epoch);
    order.resize(std::min<size_t>(order.size(), size_t(steps_per_epoch) * o.batch_size));
    int step = int(progress["step_in_epoch"]);
    order.erase(order.begin(), order.begin() + std::min<size_t>(order.size(),
                                                               size_t(step) * o.batch_size));
    if (ranks > 1) order = rank_slices(order, o.batch_size, me, ranks);
    loader.start(Split::train, std::move(order), o.batch_size / ranks);
    if (!quiet) std::fprintf(stderr, "Epoch %d/%d\n", epoch + 1, o.epochs);
    std::optional<Progress> bar;
    if (!quiet) bar.emplace("  train", steps_per_epoch, "steps", 30.0);
    // The epoch's sums live on the device (StepLog) from the values saved
    // at the last stop on: the same sequential sum of a run that never
    // stopped.
    // (With several ranks, rank 0 holds the saved sums and the others
    // start from 0: their sum over the ranks is the epoch's.)
    if (dist::is_root())
      parts.log.start({double(progress["loss_sum"]), int64_t(progress["correct"]),
                      int64_t(progress["seen"])});
    else
      parts.log.start({});
    auto refresh = [&] {  // one read: the progress line and the finite checks
      const StepTotals t = parts.read();
      progress["loss_sum"] = t.loss_sum;
      progress["correct"] = t.correct;
      progress["seen"] = t.seen;
      last_read = std::chrono::steady_clock::now();
      if (bar) {
        char status[96];
        const double seen = std::max<double>(1, double(t.seen));
        std::snprintf(status, sizeof status, "loss %.4f  accuracy %.4f", t.loss_sum / seen,
                      double(t.correct) / seen);
        bar->update(int(progress["step_in_epoch"]), status);
      }
    };
    // The epoch's sums over every rank (the one rank's own for one).
    auto all_ranks = [&] {
      refresh();
      if (ranks == 1) return;
      double v[3] = {progress["loss_sum"], double(progress["correct"]), double(progress["seen"])};
      dist::host_sum(v, 3);
      progress["loss_sum"] = v[0];
      progress["correct"] = int64_t(v[1]);
      progress["seen"] = int64_t(v[2]);
    };
    // A signal to any rank stops them all at the same step (an MPI
    // reduction on the host after each step: no wait for the device).
    auto stop_signal = [&] {
      const int sig = stop != nullptr ? stop->load() : 0;
      return ranks > 1 ? dist::host_max(sig) : sig;
    };
    HostBatch b;
    while (loader.next(b)) {
      const long long global = progress["global_step"];
      if (global == o.inject_nan_step) b.x[b.x.size() / 2] = NAN;
      if (global == o.debug_kill_step && me == ranks - 1) ::raise(SIGKILL);
      if (global == o.debug_hang_step && me == ranks - 1)
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
      // Queued, not waited for: the upload on the copy stream, the step on
      // the compute stream.
      parts.step.run(b, StepPlace{epoch, step, global, b.indices});
      progress["global_step"] = global + 1;
      progress["step_in_epoch"] = ++step;
      if (o.debug_step_losses) {
        const double loss_before = progress["loss_sum"], seen_before = double(progress["seen"]);
        refresh();
        double v[2] = {double(progress["loss_sum"]) - loss_before,
                       double(progress["seen"]) - seen_before};
        dist::host_sum(v, 2);
        step_losses.push_back(v[0] / v[1]);
      }
      if (std::chrono::steady_clock::now() - last_read >= std::chrono::seconds(1)) refresh();
      if (const int sig = stop_signal(); sig != 0) {
        all_ranks();
        return stopped(epoch, t0, sig);
      }
      dist::heartbeat();
    }
    all_ranks();  // the epoch's sums, and its last steps' checks
    if (bar) bar->finish();
    // The training steps alone (ms/step and TensorBoard's step time leave
    // out the statistics pass and validation).
    const double steps_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Without --sync-batchnorm each rank's running statistics followed its
    // own slices: rank 0's are everyone's from here (what its checkpoint
    // holds), as PyTorch DDP broadcasts its buffers. (The precise pass
    // below needs them equal too: they are its statistics' shift.)
    if (ranks > 1)
      for (nn::BatchNorm* bn : bns) {
        dist::broadcast(bn->running_mean.data<float>(), size_t(bn->running_mean.numel()));
        dist::broadcast(bn->running_var.data<float>(), size_t(bn->running_var.numel()));
      }

    if (result.precise_bn) {
      // A signal here stops the run with the state after the epoch's last
      // step; a resume recomputes the statistics from the first batch.
      std::vector<int64_t> sample = epoch_order(n_train, o.seed, epoch);
      sample.resize(size_t(bn_samples));
      // Several ranks share the pass: each forwards its slice of every
      // global batch, and the batch norms take their statistics over all
      // the slices (synchronised), so every rank ends with the statistics
      // one process computes over the whole batches, at 1/N of the work.
      std::optional<ops::SyncBatchNormScope> sync;
      if (ranks > 1) {
        sample = rank_slices(sample, o.batch_size, me, ranks);
        sync.emplace(dist::batchnorm_sync());
      }
      loader.start(Split::train, std::move(sample), o.batch_size / ranks);
      std::optional<Progress> bn_bar;
      if (!quiet) bn_bar.emplace("  bn statistics", bn_batches, "batches", 30.0);
      NoGradGuard no_grad;
      const nn::PreciseBatchNorm pass(*model);
      int done = 0;
      while (loader.next(b)) {
        if (const int sig = stop_signal(); sig != 0)
          return stopped(epoch, t0, sig, steps_seconds);
        model->forward(Variable(norm(b.x.data(), b.n(), st.rows(), st.frames())), gen);
        dist::heartbeat();
        if (bn_bar) bn_bar->update(++done);
      }
      if (bn_bar) bn_bar->finish();
    }

    // A signal during validation stops the run too: the state is the one
    // after this epoch's last step, so a resume runs the validation again.
    std::atomic<int> injected{o.debug_signal_in_validation};  // tests
    const std::atomic<int>* val_stop = injected.load() != 0 ? &injected : stop;
    const auto val = evaluate_split(*model, loader, Split::validation, norm, o.batch_size, gen,
                                    val_stop);
    if (!val) return stopped(epoch, t0, val_stop->load(), steps_seconds);
    const auto [val_loss, val_acc] = *val;
    const double seen = std::max(1.0, double(progress["seen"]));
    const double seconds = double(progress["epoch_seconds"]) +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json rec = {{"epoch", epoch + 1},
                {"loss", double(progress["loss_sum"]) / seen},
                {"accuracy", double(progress["correct"]) / seen},
                {"val_loss", val_loss},
                {"val_accuracy", val_acc},
                {"lr", adam.current_lr()},
                {"seconds", seconds},
                {"ms_per_step", 1e3 * (progress.value("steps_seconds", 0.0) + steps_seconds) /
                                    std::max(1, steps_per_epoch)},
                {"wall_time", unix_now()}};
    progress["history"].push_back(rec);
    const bool better = val_acc > double(progress["best_val_accuracy"]);
    if (better) {
      progress["best_val_accuracy"] = val_acc;
      progress["best_epoch"] = epoch + 1;
      progress["bad_epochs"] = 0;
    } else {
      progress["bad_epochs"] = int(progress["bad_epochs"]) + 1;
    }
    progress["epoch"] = epoch + 1;
    progress["step_in_epoch"] = 0;
    progress["loss_sum"] = 0.0;
    progress["correct"] = 0;
    progress["seen"] = 0;
    progress["epoch_seconds"] = 0.0;
    progress["steps_seconds"] = 0.0;
    if (better) save_state(best_path, false);
    save_state(last_path, true);
    if (dist::is_root()) write_text_atomically(o.out + "/log.csv", history_csv(progress["history"]));
    if (o.debug_step_losses && dist::is_root())
      write_text_atomically(o.out + "/step_losses.json", step_losses.dump() + "\n");
    if (dist::is_root()) try {  // the live views: a report that cannot be written does not stop training
      write_training_report(o.out);
      write_tensorboard(o.out, progress);
    } catch (const std::exception& e) {
      if (!report_warned && !quiet)
        std::fprintf(stderr, "warning: report.html or the TensorBoard files not refreshed: %s\n",
                     e.what());
      report_warned = true;
    }
    if (!quiet) {
      std::fprintf(stderr,
                   "%d/%d - %.0fs - %.0fms/step - loss: %.4f - accuracy: %.4f - val_loss: %.4f"
                   " - val_accuracy: %.4f%s\n",
                   steps_per_epoch, steps_per_epoch, seconds, double(rec["ms_per_step"]),
                   double(rec["loss"]),
                   double(rec["accuracy"]), val_loss, val_acc, better ? "  (best)" : "");
    }
    if (int(progress["bad_epochs"]) >= o.patience) {
      result.stopped_early = true;
      if (!quiet)
        std::fprintf(stderr, "early stopping: no better val_accuracy in %d epochs\n", o.patience);
      break;
    }
  }
  result.epochs_done = progress["epoch"];
  result.best_epoch = progress["best_epoch"];
  result.best_val_accuracy = std::max(0.0, double(progress["best_val_accuracy"]));
  dist::disarm_watchdog();
  // Restore the best weights (what eval and predict use; rank 0's).
  if (!dist::is_root()) return result;
  TrainingState best = state;
  best.adam = nullptr, best.generator = nullptr;
  load_checkpoint(best_path, best);
  return result;
}

LoadedRun load_run(const std::string& dir) {
  LoadedRun r;
  r.dir = dir;
  const std::string run_path = dir + "/run.json", best_path = dir + "/best.ckpt";
  std::ifstream in(run_path);
  if (!in) throw std::runtime_error(run_path + ": cannot open (is " + dir + " a training run?)");
  try {
    r.run = json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(run_path + ": not valid JSON: " + e.what());
  }
  if (!exists(best_path))
    throw std::runtime_error(best_path + " does not exist: the run has not finished an epoch");
  const json meta = read_checkpoint_metadata(best_path);
  const json& m = meta.at("model");
  r.model = models::make_model(m.at("name"), m.at("config"));
  TrainingState s;
  s.model_name = m.at("name");
  s.model_config = m.at("config");
  s.model = r.model.get();
  load_checkpoint(best_path, s);
  r.model->eval();
  r.params = params_from_json(s.extra.at("features"));
  r.label_names = s.extra.at("label_names").get<std::vector<std::string>>();
  r.band_mean = s.extra.at("band_mean").get<std::vector<float>>();
  r.band_std = s.extra.at("band_std").get<std::vector<float>>();
  return r;
}

namespace {
std::vector<float> predict(LoadedRun& run, const float* x, int64_t n, int batch, bool softmax) {
  const int rows = int(run.band_mean.size());
  const int frames = run.params.frames;
  const int c = int(run.label_names.size());
  BandNormaliser norm(run.band_mean, run.band_std);
  Generator g(0);  // eval mode: dropout draws nothing
  NoGradGuard no_grad;
  run.model->eval();
  std::vector<float> out(size_t(n) * c);
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t m = std::min<int64_t>(batch, n - i);
    Tensor t = norm(x + i * rows * frames, m, rows, frames);
    Variable logits = run.model->forward(Variable(t), g);
    const std::vector<float> p = (softmax ? ops::softmax(logits) : logits).value().to_host<float>();
    std::copy(p.begin(), p.end(), out.begin() + i * c);
  }
  return out;
}
}  // namespace

std::vector<float> predict_probabilities(LoadedRun& run, const float* x, int64_t n, int batch) {
  return predict(run, x, n, batch, true);
}

std::vector<float> predict_logits(LoadedRun& run, const float* x, int64_t n, int batch) {
  return predict(run, x, n, batch, false);
}

}  // namespace timbre::tools
