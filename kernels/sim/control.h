// control.h: simcuda's test modes, for tests, benchmarks and tools of the
// sim flavour. Each setting also has an environment variable, read once at
// start-up; a value set here overrides it.
//
//   SIMCUDA_ORDER     forward | reverse | random[:seed]   thread order between barriers
//   SIMCUDA_WORKERS   N                                    worker threads (default: usable cores,
//                                                          shared by the ranks of an mpirun/srun job)
//   SIMCUDA_POISON    1 | 0   fill new cudaMalloc memory and dynamic shared memory with 0xFF (NaN)
//   SIMCUDA_FASTPATH  1 | 0   run barrier-free blocks as a plain loop
//   SIMCUDA_STACK     bytes   stack of each simulated thread (default 64 KiB, 256 KiB under ASan)
//   SIMCUDA_STREAMS   inorder | adversarial   created streams' work kept queued until waited for
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/sim/simcuda.h"

namespace simcuda {

struct Options {
  Order order = Order::forward;
  uint64_t seed = 1;        // for Order::random
  int workers = 0;          // 0: the cores this process may use
  bool poison = true;
  bool fast_path = true;
  size_t stack_bytes = 0;   // 0: the default
};

// The options in force: the environment's, then whatever set_options changed.
Options options();
// Takes effect at the next launch or allocation. Not while a launch runs.
void set_options(const Options& o);

// Sets options for a scope and restores the previous ones (tests).
class ScopedOptions {
 public:
  explicit ScopedOptions(const Options& o) : saved_(options()) { set_options(o); }
  ~ScopedOptions() { set_options(saved_); }
  ScopedOptions(const ScopedOptions&) = delete;
  ScopedOptions& operator=(const ScopedOptions&) = delete;

 private:
  Options saved_;
};

// How work on different streams is ordered (runtime.cpp): in_order runs
// every call when it is made; adversarial keeps work on created streams
// queued until an event wait, a synchronisation or the legacy stream needs
// it, so that a missing cudaStreamWaitEvent shows up as stale data.
enum class StreamOrder { in_order, adversarial };
StreamOrder stream_order();
// Runs whatever is queued, then switches.
void set_stream_order(StreamOrder o);

// Why the most recent failed launch or runtime call of this host thread
// failed, in words (kernel name, block, threads, pointers), if it failed with
// `e`; empty otherwise. CUDA_CHECK appends it to its message.
std::string error_detail(cudaError_t e);

// Worker threads the executor runs now (after options and the machine).
int worker_count();

// "forward", "reverse" or "random:<seed>".
std::string describe(Order order, uint64_t seed);

}  // namespace simcuda
