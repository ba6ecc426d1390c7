// demo.h: `timbre demo`, the main job end to end on data made here:
//   1. render labelled clips of Debian's MMA accompaniment styles with
//      fluidsynth (tools/demo_data.h)          -> DIR/audio/<style>/*.wav
//   2. extract log-mel segments (tools/extract.h) -> DIR/features.h5
//   3. train a model (tools/train.h)          -> DIR/run/
//   4. evaluate it on the test split, write the report -> DIR/run/report.html
// Steps 1 and 2 are skipped when their output is already there (re-runs are
// quick); the run is trained afresh each time.
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
