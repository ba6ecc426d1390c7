#include "kernels/defaults.h"

#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace timbre::kernels {

namespace {

// The table. One row per backend; each entry's reason is in kReasons below
// and on docs/building.md's "Backend defaults".
const BackendDefaults kGpu{"gpu", 1LL << 19, 1, StftDefault::cufft_f64};
const BackendDefaults kSim{"sim", 1LL << 31, 0, StftDefault::kernel_f64};

struct Entry {
  const char* name;
  const char* reason;
};
const Entry kReasons[] = {
    {"grid_threads",
     "threads a grid-stride launch asks for. GPU: 2^19, about two waves of a large device "
     "(132 SMs x 2048 threads); more only adds scheduling work. sim: a thread per element, "
     "because simcuda's fast path runs a block's threads as one vectorised loop, while a "
     "capped grid makes each thread walk a strided loop (ReLU: 8 ns against 0.85 ns per "
     "element)"},
    {"row_columns",
     "columns per thread in row kernels (im2col, col2im, bias fill, max pooling). GPU: 1, so a "
     "warp's 32 threads touch 32 consecutive addresses (coalesced) and col2im's accumulator is "
     "one register. sim: the whole row, because a block's threads run one after another on a "
     "core and a thread per column pays its index set-up for one element. Same bits either way"},
    {"stft",
     "the log-mel pipeline's power spectrum. GPU: framing kernel + batched cuFFT D2Z over every "
     "frame + banded mel (cuFFT is the tuned FFT there; float R2C misses the 1e-3 dB contract). "
     "sim: timbre's thread-per-frame double FFT fused with the banded mel, one barrier-free "
     "kernel that writes no spectrum to memory (measured faster than FFTW through simcuda's "
     "cuFFT: docs/benchmarks.md). Both match librosa within 1e-3 dB"},
};

const BackendDefaults& build_row() {
#if TIMBRE_BACKEND_SIM
  return kSim;
#else
  return kGpu;
#endif
}

long long env_integer(const char* var, long long min) {
  const char* env = std::getenv(var);
  if (!env || !*env) return -1;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  if (*end != '\0' || v < min)
    throw std::invalid_argument(std::string(var) + " must be an integer >= " +
                                std::to_string(min) + ", not '" + env + "'");
  return v;
}

// The row with the single-entry overrides of the environment applied.
BackendDefaults with_overrides(const BackendDefaults& row) {
  BackendDefaults r = row;
  if (const long long v = env_integer("TIMBRE_MAX_GRID_THREADS", 32); v > 0) r.grid_threads = v;
  if (const long long v = env_integer("TIMBRE_COLUMNS_PER_THREAD", 0); v >= 0)
    r.row_columns = int(v);
  return r;
}

const BackendDefaults& named_row() {
  const char* env = std::getenv("TIMBRE_DEFAULTS");
  return env && *env ? defaults_named(env) : build_row();
}

BackendDefaults& current() {
  static BackendDefaults row = with_overrides(named_row());
  return row;
}

std::string value_of(const BackendDefaults& r, int entry) {
  switch (entry) {
    case 0: return std::to_string(r.grid_threads);
    case 1: return r.row_columns == 0 ? "whole row" : std::to_string(r.row_columns);
    default: return to_string(r.stft);
  }
}

}  // namespace

const char* to_string(StftDefault s) {
  return s == StftDefault::cufft_f64 ? "cufft_f64" : "kernel_f64";
}

const BackendDefaults& defaults_named(const std::string& name) {
  if (name == "gpu") return kGpu;
  if (name == "sim") return kSim;
  throw std::invalid_argument("TIMBRE_DEFAULTS must be 'gpu' or 'sim', not '" + name + "'");
}

const BackendDefaults& gpu_defaults() { return kGpu; }
const BackendDefaults& sim_defaults() { return kSim; }
const BackendDefaults& defaults() { return current(); }
void use_defaults(const BackendDefaults& row) { current() = with_overrides(row); }

std::string describe_defaults() {
  const BackendDefaults& r = defaults();
  std::ostringstream s;
  s << "backend defaults in force: " << r.name << " (this build's own: " << build_row().name;
  if (const char* env = std::getenv("TIMBRE_DEFAULTS"); env && *env)
    s << "; TIMBRE_DEFAULTS=" << env;
  s << ")\n";
  for (int e = 0; e < 3; ++e) {
    s << "  " << kReasons[e].name << " = " << value_of(r, e) << "   (gpu: " << value_of(kGpu, e)
      << ", sim: " << value_of(kSim, e) << ")\n      " << kReasons[e].reason << "\n";
  }
  return s.str();
}

}  // namespace timbre::kernels
