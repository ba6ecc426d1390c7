// train.h: `timbre train`, `timbre eval` and `timbre predict` without the
// command line (tools/timbre.cpp parses flags into these options).
//
// A run folder holds everything about one training run, and stands alone
// (`timbre train --resume --out RUN`, `timbre eval --run RUN` need nothing else):
//   run.json     the effective options, the model's full config, the data
//                file's absolute path, when and where it ran (date, version,
//                commit, device)
//   config.toml  the same options as a file --config takes
//   last.ckpt    the whole training state after the last epoch (or at the
//                step where SIGINT/SIGTERM stopped it): weights, Adam, RNG,
//                epoch and step, early stopping, history
//   best.ckpt    the weights of the best epoch by validation accuracy (what
//                eval and predict load), with the normalisation statistics,
//                feature parameters and label names
//   log.csv      one line per epoch (epoch, loss, accuracy, val_loss,
//                val_accuracy, lr, seconds, ms_per_step), rewritten each epoch
//   report.html  the training report, rewritten each epoch (tools/report.h);
//                eval adds report-<split>.html and metrics-<split>.json
//   tensorboard/ train/ and validation/ event files, appended each epoch
//                (tools/tensorboard.h)
// Every file is written atomically (engine/serialize.h AtomicFile), but the
// event files, which only grow (update_event_file).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "features/h5store.h"
#include "models/registry.h"

namespace timbre::tools {

struct TrainOptions {
  std::string model = "parallel";
  std::string data;            // features.h5 (timbre extract)
  std::string out;             // the run folder
  int epochs = 100;
  int batch_size = 32;
  double lr = 0;               // 0: the model's default (1e-3; 2e-4 for rescnn)
  double decay = 0;            // Keras time decay: lr / (1 + decay * step)
  int patience = 10;           // epochs without a better val_accuracy before stopping
  uint64_t seed = 1;
  nlohmann::json model_config = nlohmann::json::object();  // n_classes comes from the data
  std::string adam = "keras";  // keras | pytorch (where epsilon goes)
  bool resume = false;         // continue out/last.ckpt
  int max_steps = 0;           // cap on training steps per epoch (0: the whole split)
  std::string precise_bn = "auto";  // auto | on | off: batch-norm statistics recomputed
                                    // after each epoch (see run_train)
  std::string cuda_graph = "on";    // on | off: each step replayed from a CUDA graph
                                    // (tools/train_step.h); the same bits either way
  double rank_timeout = 600;   // data-parallel: seconds without a step (or validation batch)
                               // before a rank ends the job (a hung or dead peer); 0: never
  double bucket_mib = 1;       // data-parallel: the gradients' all-reduce in buckets of about
                               // this many MiB, overlapping backward; 0: one, after backward
  bool sync_batchnorm = false;  // data-parallel: batch-norm statistics over the global batch
                                // (an NCCL all-reduce of each layer's sums; docs/distributed.md)
  bool quiet = false;          // no epoch lines (tests)
  std::string commit;          // the build's commit, recorded in run.json (tools/timbre.cpp)
  bool profile = false;         // count and time a few steps; write out/profile.json
  int profile_steps = 5;        // steps --profile measures (after 2 warm-up steps)
  bool trace = false;           // with --profile: print one step op by op, kernel by kernel
  long long inject_nan_step = -1;  // tests: a NaN in the input at this global step
  bool debug_step_losses = false;  // tests: each step's loss (over every rank) read after it and
                                   // written to out/step_losses.json (a host wait per step)
  long long debug_kill_step = -1;  // tests: the last rank kills itself (SIGKILL) at this global step
  long long debug_hang_step = -1;  // tests: the last rank stops (sleeps) at this global step
  int debug_signal_in_validation = 0;  // tests: as if this signal came during the first
                                       // validation pass of this invocation
};

struct TrainResult {
  int epochs_done = 0;         // completed epochs, counting resumed ones
  int best_epoch = 0;          // 1-based; 0 when no epoch completed
  double best_val_accuracy = 0;
  bool stopped_early = false;
  bool precise_bn = false;     // batch-norm statistics were recomputed after each epoch
  int signal = 0;              // SIGINT or SIGTERM when interrupted (state saved)
  std::string profile_path;    // --profile: the profile.json written (nothing else is)
};

// The model's default learning rate (the paper's: 2e-4 for rescnn, else 1e-3).
double default_lr(const std::string& model);

// Trains. Throws TrainError for a non-finite loss or gradient (naming the
// epoch, step and batch), UsageError for option values the model or the
// data refuse (before anything is written), std::runtime_error /
// invalid_argument for bad data or checkpoints, a run folder in use by
// another process (an exclusive lock on out/.lock held for the run's life,
// released by the kernel if the process dies), a folder that already holds a
// run (without resume), or a resume that would change the run's meaning
// (data, labels, model, batch size, seed, learning rate, decay, Adam form,
// steps per epoch: each named with its old and new value; more epochs and
// another patience are allowed). Nothing is written to the folder before
// every check has passed. `stop` (may be null) is polled after every
// step: when it holds a signal number the state is saved and the run returns
// with result.signal set.
TrainResult run_train(const TrainOptions& options, const std::atomic<int>* stop = nullptr);

class TrainError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad value found after the flags were parsed (the command exits 2, as for
// any usage error).
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A trained model loaded from a run folder's best.ckpt, ready for inference.
struct LoadedRun {
  std::string dir;
  nlohmann::json run;                    // run.json
  std::unique_ptr<models::Model> model;  // eval mode
  features::FeatureParams params;
  std::vector<std::string> label_names;
  std::vector<float> band_mean, band_std;
};
LoadedRun load_run(const std::string& dir);

// Class probabilities (n x classes, row-major) for n raw log-mel segments
// (n x rows x frames, as in the store): normalised per band on the device,
// then the model in eval mode, softmax; batches of `batch`.
std::vector<float> predict_probabilities(LoadedRun& run, const float* x, int64_t n,
                                         int batch = 32);
// The same before the softmax: logits (n x classes).
std::vector<float> predict_logits(LoadedRun& run, const float* x, int64_t n, int batch = 32);

}  // namespace timbre::tools
