#include "tools/demo.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "features/h5store.h"
#include "tools/baseline.h"
#include "tools/demo_data.h"
#include "tools/extract.h"
#include "tools/inference.h"
#include "tools/progress.h"
#include "tools/train.h"

namespace timbre::tools {

namespace {

// The first DIR/run-<k> that does not exist (k from 1).
std::string new_run_folder(const std::string& dir, std::vector<std::string>* earlier) {
  for (int k = 1;; ++k) {
    const std::string run = dir + "/run-" + std::to_string(k);
    struct stat st;
    if (::stat(run.c_str(), &st) != 0) return run;
    earlier->push_back(run);
  }
}

}  // namespace

int run_demo(const DemoOptions& o, const std::atomic<int>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  if (::mkdir(o.dir.c_str(), 0777) != 0 && errno != EEXIST)
    throw std::runtime_error("cannot create the demo folder " + o.dir + ": " +
                             std::strerror(errno));
  // The data lives in a folder named after what decides it (clips per style
  // and seed), so a demo with other settings never reuses another's clips or
  // features; each demo trains into a new run folder and keeps earlier ones.
  const std::string data_dir = o.dir + "/clips" + std::to_string(o.clips_per_style) + "-seed" +
                               std::to_string(o.seed);
  ::mkdir(data_dir.c_str(), 0777);
  const std::string audio = data_dir + "/audio", data = data_dir + "/features.h5";
  std::vector<std::string> earlier;
  const std::string run = new_run_folder(o.dir, &earlier);

  std::fprintf(stderr, "demo 1/4: rendering %d clips per style with mma + fluidsynth into %s\n",
               o.clips_per_style, audio.c_str());
  DemoDataOptions d;
  d.out_dir = audio;
  d.clips_per_style = o.clips_per_style;
  d.seed = o.seed;
  d.jobs = o.jobs;
  {
    std::optional<Progress> bar;
    d.on_progress = [&](const DemoProgress& p) {
      if (!bar) bar.emplace("  render", (long long)p.total, "clips");
      bar->update((long long)p.done);
    };
    const DemoDataResult r = render_demo_dataset(d);
    if (bar) bar->finish();
    std::fprintf(stderr, "  %zu clips rendered, %zu already there, %.1f s\n", r.rendered,
                 r.skipped, r.wall_seconds);
  }

  struct stat st;
  if (::stat(data.c_str(), &st) != 0) {
    std::fprintf(stderr, "demo 2/4: extracting log-mel segments into %s\n", data.c_str());
    ExtractOptions e;
    e.dataset = "folder";
    e.audio_dir = audio;
    e.out = data;
    e.jobs = o.jobs;
    e.seed = o.seed;
    const ExtractSummary s = run_extract(e);
    std::fputs(format_summary(s, data).c_str(), stderr);
  } else {
    // Made by an earlier demo with these settings; its feature parameters
    // must still be the defaults (an older timbre may have used others).
    try {
      features::FeatureStore::open(data).check_params(features::FeatureParams{});
    } catch (const std::exception& e) {
      throw std::runtime_error("demo: " + data + " was not made with this timbre's feature "
                               "settings (" + e.what() + "); delete it to extract it anew");
    }
    std::fprintf(stderr, "demo 2/4: reusing %s (made by an earlier demo with --clips %d --seed "
                 "%llu)\n", data.c_str(), o.clips_per_style, (unsigned long long)o.seed);
  }

  std::fprintf(stderr, "demo 3/4: training %s for up to %d epochs into %s\n", o.model.c_str(),
               o.epochs, run.c_str());
  if (!earlier.empty())
    std::fprintf(stderr, "  (earlier demo runs are kept: %s%s; delete them when done)\n",
                 earlier.size() > 1 ? (earlier.front() + " to ").c_str() : "",
                 earlier.back().c_str());
  TrainOptions t;
  t.model = o.model;
  t.data = data;
  t.out = run;
  t.epochs = o.epochs;
  t.patience = 4;
  t.seed = o.seed;
  const TrainResult r = run_train(t, stop);
  if (r.signal != 0) {
    std::fprintf(stderr, "demo: stopped by signal %d\n", r.signal);
    return 128 + r.signal;
  }

  std::fprintf(stderr, "demo 4/4: evaluating on the test split, beside the baselines\n");
  // The reference study's non-neural baselines on the same features and
  // split (timbre baseline): the network has to beat them to be worth it.
  EvalOptions ev;
  ev.run = run;
  struct Scored {
    std::string method;
    const char* name;
    double clip = 0;
  };
  std::vector<Scored> baselines = {{"svm", "SVM baseline (PCA 15, RBF)"},
                                   {"knn", "k-NN baseline (PCA 15, k = 8)"}};
  for (Scored& s : baselines) {
    BaselineOptions bo;
    bo.method = s.method;
    bo.data = data;
    bo.out = data_dir + "/baseline-" + s.method;
    bo.seed = o.seed;
    bo.quiet = true;
    const BaselineResult br = run_baseline(bo);
    s.clip = br.evaluation.clip.accuracy;
    ev.comparisons.push_back({std::string(s.name) + ", report in " + bo.out,
                              br.evaluation.clip.accuracy, br.evaluation.track.accuracy});
  }
  const EvalResult er = run_eval(ev);
  std::fputs(format_evaluation(er.evaluation, "test").c_str(), stdout);
  std::printf("best val_accuracy %.4f (epoch %d); chance is %.4f\n", r.best_val_accuracy,
              r.best_epoch, 1.0 / double(er.evaluation.labels.size()));
  std::printf("test clip accuracy: network %.4f", er.evaluation.clip.accuracy);
  for (const Scored& s : baselines) std::printf(", %s %.4f", s.method.c_str(), s.clip);
  std::printf("\n");
  std::printf("report: %s\ndemo finished in %s\n", er.report_path.c_str(),
              format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()).c_str());
  return 0;
}

}  // namespace timbre::tools
