// defaults.h: the one table of choices that differ between backends.
//
// A kernel is written once, the way a GPU should run it. What may differ
// between a GPU and simcuda (timbre's CPU execution of the same source) is
// only how the host launches or chains kernels: grid sizes, columns per
// thread, which version of a computation a pipeline takes. Every such choice
// is an entry of BackendDefaults, with its reason in defaults.cpp, and
// nothing else in timbre asks which backend it runs on to pick one.
//
// Which row is in force: the build's own (gpu in the cuda flavour, sim in
// the sim flavour), unless the environment variable TIMBRE_DEFAULTS names
// the other ("gpu" or "sim"). `TIMBRE_DEFAULTS=gpu` makes the sim build take
// every choice the cuda flavour takes, so the GPU's paths run end to end
// here (scripts/test.sh runs the whole suite that way too). Two older
// variables override a single entry for tests: TIMBRE_MAX_GRID_THREADS and
// TIMBRE_COLUMNS_PER_THREAD. `timbre info` prints the table in force.
#pragma once

#include <string>

namespace timbre::kernels {

// How the log-mel pipeline computes the power spectrum by default.
enum class StftDefault {
  cufft_f64,  // framing + window kernel, batched cuFFT D2Z over all frames, banded mel
  kernel_f64,  // timbre's own double-precision FFT kernels (fused with the banded mel)
};
const char* to_string(StftDefault s);

struct BackendDefaults {
  const char* name;        // "gpu" or "sim"
  long long grid_threads;  // threads a grid-stride launch asks for at most
  int row_columns;         // columns per thread in row kernels; 0: the whole row
  StftDefault stft;        // the log-mel pipeline's STFT
};

// The rows of the table, as compiled.
const BackendDefaults& gpu_defaults();
const BackendDefaults& sim_defaults();
// The row called `name` ("gpu" or "sim"); std::invalid_argument otherwise,
// naming TIMBRE_DEFAULTS and the value.
const BackendDefaults& defaults_named(const std::string& name);

// The row in force: the build's own, or the one TIMBRE_DEFAULTS names (read
// once; any other value throws std::invalid_argument naming it). The single
// entries TIMBRE_MAX_GRID_THREADS and TIMBRE_COLUMNS_PER_THREAD set are
// applied on top of it.
const BackendDefaults& defaults();
// Tests: put a row in force for the rest of the process (or until the next
// call); the single-entry overrides from the environment still apply.
void use_defaults(const BackendDefaults& row);

// The table in force, one line per entry with its value, the other
// backend's value and the reason, for `timbre info` and test logs.
std::string describe_defaults();

}  // namespace timbre::kernels
