// demo.h: `timbre demo`, the main job end to end on data made here:
//   1. render labelled clips of Debian's MMA accompaniment styles with
//      fluidsynth (tools/demo_data.h)  -> DIR/clips<N>-seed<S>/audio/<style>/*.wav
//   2. extract log-mel segments (tools/extract.h) -> DIR/clips<N>-seed<S>/features.h5
//   3. train a model (tools/train.h)  -> DIR/run-<k>/, the first k not taken
//   4. the SVM and k-NN baselines     -> DIR/clips<N>-seed<S>/baseline-{svm,knn}/
//      and the network on the test split -> DIR/run-<k>/report-test.html
// Steps 1 and 2 are skipped when their output is already there: the data
// folder's name holds the settings that decide it (N clips per style, seed
// S), so only a demo with the same settings reuses it. Every demo trains into
// a new run folder and keeps the earlier ones.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace timbre::tools {

struct DemoOptions {
  std::string dir = "demo";
  std::string model = "parallel";
  int clips_per_style = 24;
  int epochs = 12;
  uint64_t seed = 1;
  int jobs = 2;
};

// Returns the process exit code (130/143 when stopped by a signal).
int run_demo(const DemoOptions& options, const std::atomic<int>* stop);

}  // namespace timbre::tools
