// timbre: the command-line tool.
//
//   timbre demo       the main job: render a small dataset, extract, train, evaluate
//   timbre extract    audio files -> HDF5 log-mel features
//   timbre train      train rescnn, crnn or parallel on a feature file
//   timbre eval       accuracy, per-genre scores, confusion matrix, report.html
//   timbre predict    genres of audio files
//   timbre models     each network's layers, parameters and FLOPs
//   timbre info       the device timbre computes on
//   timbre kernels    the tiled GEMM and reduction kernels against CPU references
//
// Usage errors (bad flags, unknown config keys) exit 2; failures exit 1; a
// training run stopped by SIGINT/SIGTERM saves its state and exits 130/143,
// an extract stopped so removes its temporary file; a second signal ends the
// process at once.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <thread>

#include "features/audio.h"
#include "kernels/cuda_check.h"
#include "models/registry.h"
#include "tools/baseline.h"
#include "tools/demo.h"
#include "tools/extract.h"
#include "tools/inference.h"
#include "tools/kernel_demo.h"
#include "tools/progress.h"
#include "tools/report.h"
#include "tools/train.h"
#include "tools/train_config.h"

namespace {

// The first SIGINT/SIGTERM asks the running command to stop cleanly (train
// saves its state, extract removes its temporary file); a second one ends
// the process at once, with the signal's default action.
std::atomic<int> g_stop{0};
extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(sig) != 0) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int default_jobs() { return std::max(1u, std::thread::hardware_concurrency()); }

// A finite number ("nan", "inf" and "1e999" are refused: CLI11's range
// checks compare, and every comparison with NaN is false).
const CLI::Validator kFinite(
    [](std::string& s) -> std::string {
      try {
        size_t used = 0;
        const double v = std::stod(s, &used);
        if (used == s.size() && std::isfinite(v)) return "";
      } catch (const std::exception&) {
      }
      return "must be a finite number, not '" + s + "'";
    },
    "FINITE");

// A seed: decimal digits only (an unsigned parse would turn "-1" into
// 18446744073709551615), below 2^63 so that config.toml (TOML integers are
// signed 64-bit) holds it.
const CLI::Validator kSeed(
    [](std::string& s) -> std::string {
      const bool digits = !s.empty() && s.size() <= 19 &&
                          s.find_first_not_of("0123456789") == std::string::npos;
      if (digits && (s.size() < 19 || s <= "9223372036854775807")) return "";
      return "must be an integer in [0, 2^63), not '" + s + "'";
    },
    "SEED");

void add_feature_options(CLI::App* c, timbre::features::FeatureParams& p) {
  auto* g = "Feature parameters";
  c->add_option("--n-fft", p.n_fft, "FFT size = frame length")->group(g)->capture_default_str();
  c->add_option("--hop", p.hop, "Samples between frames")->group(g)->capture_default_str();
  c->add_option("--n-mels", p.n_mels, "Mel bands")->group(g)->capture_default_str();
  c->add_option("--fmin", p.fmin, "Lowest mel frequency (Hz)")->check(kFinite)->group(g)
      ->capture_default_str();
  c->add_option("--fmax", p.fmax, "Highest mel frequency (Hz)")->check(kFinite)->group(g)
      ->capture_default_str();
  c->add_option("--frames", p.frames, "Frames per segment")->group(g)->capture_default_str();
  c->add_option("--top-db", p.top_db, "dB floor below each clip's maximum")->check(kFinite)
      ->group(g)->capture_default_str();
  c->add_option("--n-mfcc", p.n_mfcc, "MFCC coefficients instead of log-mel (0: log-mel)")
      ->group(g)->capture_default_str();
  c->add_option("--sample-rate", p.sample_rate, "Resample audio to this rate (Hz)")
      ->group(g)->capture_default_str();
}

// --segments all|N
int parse_segments(const std::string& s) {
  if (s == "all") return 0;
  try {
    size_t used = 0;
    const int n = std::stoi(s, &used);
    if (used == s.size() && n > 0) return n;
  } catch (const std::exception&) {
  }
  throw CLI::ValidationError("--segments", "must be 'all' or a positive count, not '" + s + "'");
}

void parse_augment(const std::string& s, timbre::tools::ExtractOptions& o) {
  if (s.empty() || s == "none") return;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "stretch") o.stretch = true;
    else if (item == "pitch") o.pitch = true;
    else throw CLI::ValidationError("--augment", "unknown augmentation '" + item +
                                    "' (known: stretch, pitch)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace timbre::tools;
  CLI::App app{"timbre: music genre classification on its own CUDA engine", "timbre"};
  app.require_subcommand(1);
  app.allow_config_extras(CLI::config_extras_mode::error);

  app.add_subcommand("info", "Describe the device (a GPU, or simcuda on the CPU)");

  // kernels ------------------------------------------------------------------
  auto* kern = app.add_subcommand(
      "kernels", "Run the tiled GEMM and block reduction kernels on random data and check them "
                 "against their CPU references");
  int size = 256;
  unsigned kseed = 1;
  kern->add_option("--size", size, "Matrix side for the GEMM")->check(CLI::Range(1, 4096));
  kern->add_option("--seed", kseed, "Seed of the random inputs")->check(kSeed);

  // models -------------------------------------------------------------------
  auto* mdl = app.add_subcommand("models", "Print each network's layers, parameters and FLOPs");
  std::vector<std::string> model_filter;
  mdl->add_option("names", model_filter, "Models to describe (default: all)");

  // extract ------------------------------------------------------------------
  ExtractOptions ex;
  ex.jobs = default_jobs();
  std::string ex_segments = "all", ex_augment;
  auto* ext = app.add_subcommand("extract", "Decode a dataset's audio and store log-mel segments "
                                            "in an HDF5 file");
  ext->add_option("--dataset", ex.dataset, "fma, gtzan or folder (<label>/<audio files>)")
      ->check(CLI::IsMember({"fma", "gtzan", "folder"}))->capture_default_str();
  ext->add_option("--audio", ex.audio_dir, "Folder with the audio (fma: the fma_small/... folder)")
      ->required();
  ext->add_option("--metadata", ex.metadata, "fma: fma_metadata/tracks.csv");
  ext->add_option("--subset", ex.subset, "fma: small, medium or large")
      ->check(CLI::IsMember({"small", "medium", "large"}))->capture_default_str();
  ext->add_option("--split", ex.split, "fma: official (set/split) or random (seeded 80/10/10)")
      ->check(CLI::IsMember({"official", "random"}))->capture_default_str();
  ext->add_option("--out", ex.out, "The HDF5 file to write (written to a temporary file, "
                                   "renamed when complete)")->required();
  ext->add_option("--segments", ex_segments, "Segments per track: all (non-overlapping) or N "
                                             "seeded random crops")->capture_default_str();
  ext->add_option("--augment", ex_augment, "Extra training copies: stretch (rates 0.9, 1.1), "
                                           "pitch (-2, +2 semitones), or both: stretch,pitch");
  ext->add_option("--jobs", ex.jobs, "Decoding threads")->check(CLI::Range(1, 256))
      ->capture_default_str();
  ext->add_option("--seed", ex.seed, "Seed of the random split and crops")->check(kSeed)
      ->capture_default_str();
  ext->add_option("--batch", ex.batch, "Segments per device batch")->check(CLI::Range(1, 4096))
      ->capture_default_str();
  ext->add_flag("--force", ex.force, "Replace an existing --out");
  add_feature_options(ext, ex.params);

  // train --------------------------------------------------------------------
  TrainOptions tr;
  std::string tr_model_config;
  auto* trn = app.add_subcommand("train", "Train a network on a feature file");
  trn->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string tr_config_file;  // expanded before parsing (expand_train_config)
  trn->add_option("--config", tr_config_file,
                  "TOML file of train options (key = value, keys as the long flags: "
                  "epochs = 50, batch-size = 32, model-config = '{...}'); the command line "
                  "wins; unknown keys are usage errors");
  trn->add_option("--model", tr.model, "rescnn, crnn or parallel")
      ->check(CLI::IsMember({"rescnn", "crnn", "parallel"}))->capture_default_str();
  trn->add_option("--data", tr.data, "Feature file from timbre extract")->required();
  trn->add_option("--out", tr.out, "Run folder (created)")->required();
  trn->add_option("--epochs", tr.epochs, "Most epochs")->check(CLI::Range(1, 100000))
      ->capture_default_str();
  trn->add_option("--batch-size", tr.batch_size, "Samples per step")->check(CLI::Range(1, 65536))
      ->capture_default_str();
  trn->add_option("--lr", tr.lr, "Adam learning rate (default 1e-3; 2e-4 for rescnn)")
      ->check(kFinite & CLI::PositiveNumber);
  trn->add_option("--decay", tr.decay, "Keras time decay of the learning rate")
      ->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--patience", tr.patience, "Epochs without a better val_accuracy before "
                                             "stopping")->check(CLI::Range(1, 100000))
      ->capture_default_str();
  trn->add_option("--seed", tr.seed, "Seed of weights, shuffling and dropout")->check(kSeed)
      ->capture_default_str();
  trn->add_option("--model-config", tr_model_config, "JSON object of model settings, e.g. "
                                                     "'{\"dropout\": 0.2}' (see docs/models.md)");
  trn->add_option("--adam", tr.adam, "keras or pytorch (where epsilon enters)")
      ->check(CLI::IsMember({"keras", "pytorch"}))->capture_default_str();
  trn->add_option("--max-steps", tr.max_steps, "Cap on steps per epoch (0: the whole split)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  trn->add_flag("--resume", tr.resume, "Continue the run in --out from last.ckpt");
  trn->add_option("--debug-inject-nan-step", tr.inject_nan_step)->group("");  // tests only

  // eval ---------------------------------------------------------------------
  EvalOptions ev;
  auto* evl = app.add_subcommand("eval", "Evaluate a run: accuracy, per-genre scores, confusion "
                                         "matrix, report.html");
  evl->add_option("--run", ev.run, "Run folder")->required();
  evl->add_option("--data", ev.data, "Feature file (default: the one the run trained on)");
  evl->add_option("--split", ev.split, "train, validation or test")
      ->check(CLI::IsMember({"train", "validation", "test"}))->capture_default_str();

  // predict ------------------------------------------------------------------
  PredictOptions pr;
  pr.jobs = default_jobs();
  bool pr_json = false;
  auto* prd = app.add_subcommand("predict", "Print the most likely genres of audio files");
  prd->add_option("--run", pr.run, "Run folder")->required();
  prd->add_option("files", pr.files, "Audio files (mp3, wav, flac, ogg, au)")->required();
  prd->add_option("--top", pr.top, "Genres per file")->check(CLI::Range(1, 1000))
      ->capture_default_str();
  prd->add_option("--jobs", pr.jobs, "Decoding threads")->check(CLI::Range(1, 256));
  prd->add_flag("--json", pr_json, "JSON on stdout instead of text");

  // baseline -----------------------------------------------------------------
  BaselineOptions bl;
  bool bl_one_hot = false;
  auto* bas = app.add_subcommand("baseline", "The paper's baselines: PCA on standardised "
                                             "spectrograms, then k-NN or an RBF SVM");
  bas->add_option("--method", bl.method, "knn (distance-weighted, on the device) or svm (libsvm)")
      ->check(CLI::IsMember({"knn", "svm"}))->capture_default_str();
  bas->add_option("--data", bl.data, "Feature file from timbre extract")->required();
  bas->add_option("--out", bl.out, "Report folder (default: <data>.baseline-<method>)");
  bas->add_option("--split", bl.split, "Evaluated split: test or validation")
      ->check(CLI::IsMember({"test", "validation"}))->capture_default_str();
  bas->add_option("--max-train", bl.max_train, "Train segments used (a seeded random subset)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40))->capture_default_str();
  bas->add_option("--components", bl.n_components, "PCA components")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  bas->add_option("--oversample", bl.oversample, "Extra basis vectors of the randomized PCA")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  bas->add_option("--power-iterations", bl.power_iterations, "Subspace iterations of the PCA")
      ->check(CLI::Range(0, 100))->capture_default_str();
  bas->add_option("-k", bl.k, "Neighbours (knn)")->check(CLI::Range(1, 1024))
      ->capture_default_str();
  bas->add_option("-C", bl.C, "SVM penalty")->check(kFinite & CLI::PositiveNumber)
      ->capture_default_str();
  bas->add_option("--gamma", bl.gamma, "RBF gamma (0: 1 / (components * variance), "
                                       "scikit-learn's 'scale')")
      ->check(kFinite & CLI::NonNegativeNumber)->capture_default_str();
  bas->add_flag("--no-svm-probability", bl_one_hot, "One-hot SVM decisions instead of libsvm's "
                                                    "probability estimates");
  bas->add_option("--seed", bl.seed, "Seed of the train subset, the PCA start and libsvm")
      ->check(kSeed)->capture_default_str();

  // demo ---------------------------------------------------------------------
  DemoOptions demo;
  auto* dmo = app.add_subcommand("demo", "The main job on demo data: render labelled clips of MMA "
                                         "styles, extract features, train the parallel model, "
                                         "evaluate it and write the report");
  dmo->add_option("--dir", demo.dir, "Working folder")->capture_default_str();
  dmo->add_option("--model", demo.model, "Model to train")
      ->check(CLI::IsMember({"rescnn", "crnn", "parallel"}))->capture_default_str();
  dmo->add_option("--clips", demo.clips_per_style, "Clips per style")
      ->check(CLI::Range(10, 10000))->capture_default_str();
  dmo->add_option("--epochs", demo.epochs, "Most epochs")->check(CLI::Range(1, 1000))
      ->capture_default_str();
  dmo->add_option("--seed", demo.seed, "Seed of everything")->check(kSeed)->capture_default_str();
  dmo->add_option("--jobs", demo.jobs, "Rendering and decoding threads")
      ->check(CLI::Range(1, 256))->capture_default_str();

  try {
    std::vector<std::string> args = expand_train_config({argv + 1, argv + argc});
    std::reverse(args.begin(), args.end());  // CLI11 takes them last-first
    app.parse(args);
    if (ext->parsed()) {
      ex.segments = parse_segments(ex_segments);
      parse_augment(ex_augment, ex);
      try {  // values each flag accepts alone but not together (--fmax above sample_rate/2)
        ex.params.validate();
      } catch (const std::invalid_argument& e) {
        throw CLI::ValidationError("feature parameters", e.what());
      }
    }
    if (trn->parsed() && !tr_model_config.empty()) {
      try {
        tr.model_config = nlohmann::json::parse(tr_model_config);
      } catch (const std::exception& e) {
        throw CLI::ValidationError("--model-config", std::string("not valid JSON: ") + e.what());
      }
      if (!tr.model_config.is_object())
        throw CLI::ValidationError("--model-config", "must be a JSON object");
    }
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints the message (or the help text)
    return rc == 0 ? 0 : 2;      // --help is success; every usage error exits 2
  }

  try {
    if (app.got_subcommand("info")) return run_info();
    if (kern->parsed()) return run_kernel_demo(size, kseed);
    if (mdl->parsed()) {
      const auto names = model_filter.empty() ? timbre::models::model_names() : model_filter;
      for (const auto& n : names) {
        auto m = timbre::models::make_model(n);
        std::printf("%s\n", timbre::models::describe_table(*m).c_str());
      }
      return 0;
    }
    if (ext->parsed()) {
      install_stop_handlers();
      try {
        const ExtractSummary s = run_extract(ex, &g_stop);
        std::fputs(format_summary(s, ex.out).c_str(), stderr);
      } catch (const ExtractInterrupted& e) {
        std::fprintf(stderr, "timbre: extract %s\n", e.what());
        return 128 + e.signal;
      }
      return 0;
    }
    if (trn->parsed()) {
      install_stop_handlers();
      // The effective configuration, as a TOML file --config accepts;
      // run_train writes it once every check has passed.
      tr.config_toml = train_config_toml(tr, tr.lr > 0 ? tr.lr : default_lr(tr.model));
      const TrainResult r = run_train(tr, &g_stop);
      if (r.signal != 0) {
        std::fprintf(stderr, "timbre: stopped by signal %d; state saved in %s/last.ckpt "
                     "(continue with --resume)\n", r.signal, tr.out.c_str());
        return 128 + r.signal;
      }
      std::fprintf(stderr, "train: best val_accuracy %.4f at epoch %d of %d%s; weights in "
                   "%s/best.ckpt\n", r.best_val_accuracy, r.best_epoch, r.epochs_done,
                   r.stopped_early ? " (early stop)" : "", tr.out.c_str());
      return 0;
    }
    if (evl->parsed()) {
      const EvalResult r = run_eval(ev);
      std::fputs(format_evaluation(r.evaluation, ev.split).c_str(), stdout);
      if (!r.report_path.empty()) std::printf("report: %s\n", r.report_path.c_str());
      if (!r.metrics_path.empty()) std::printf("metrics: %s\n", r.metrics_path.c_str());
      std::fflush(stdout);
      if (!r.write_error.empty()) {
        std::fprintf(stderr, "timbre: the metrics above are complete, but %s\n",
                     r.write_error.c_str());
        return 1;
      }
      return 0;
    }
    if (prd->parsed()) {
      const auto preds = run_predict(pr);
      int failed = 0;
      for (const auto& p : preds) failed += !p.error.empty();
      if (pr_json) {
        std::printf("%s\n", to_json(preds).dump(2).c_str());
      } else {
        for (const auto& p : preds) {
          if (!p.error.empty()) {
            std::fprintf(stderr, "timbre: %s: %s\n", p.file.c_str(), p.error.c_str());
            continue;
          }
          std::printf("%s (%d windows):", p.file.c_str(), p.windows);
          for (const auto& [g, prob] : p.top) std::printf("  %s %.3f", g.c_str(), prob);
          std::printf("\n");
        }
      }
      return failed ? 1 : 0;
    }
    if (bas->parsed()) {
      bl.svm_probability = !bl_one_hot;
      const BaselineResult r = run_baseline(bl);
      std::fputs(format_evaluation(r.evaluation, bl.split).c_str(), stdout);
      std::printf("report: %s\nmetrics: %s\n", r.report_path.c_str(), r.metrics_path.c_str());
      return 0;
    }
    if (dmo->parsed()) {
      install_stop_handlers();
      return run_demo(demo, &g_stop);
    }
  } catch (const timbre::CudaError& e) {
    std::fprintf(stderr, "timbre: CUDA error: %s\n", e.what());
    return 1;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "timbre: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "timbre: %s\n", e.what());
    return 1;
  }
  return 0;
}
