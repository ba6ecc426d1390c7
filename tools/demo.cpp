#include "tools/demo.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "tools/baseline.h"
#include "tools/demo_data.h"
#include "tools/extract.h"
#include "tools/inference.h"
#include "tools/progress.h"
#include "tools/train.h"

namespace timbre::tools {

int run_demo(const DemoOptions& o, const std::atomic<int>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  ::mkdir(o.dir.c_str(), 0777);
  const std::string audio = o.dir + "/audio", data = o.dir + "/features.h5",
                    run = o.dir + "/run";

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
    std::fprintf(stderr, "demo 2/4: %s exists, reusing it\n", data.c_str());
  }

  std::fprintf(stderr, "demo 3/4: training %s for up to %d epochs into %s\n", o.model.c_str(),
               o.epochs, run.c_str());
  for (const char* f : {"last.ckpt", "best.ckpt", "log.csv", "run.json"})
    ::unlink((run + "/" + f).c_str());
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
    bo.out = o.dir + "/baseline-" + s.method;
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
