#include "kernels/profile.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "kernels/cuda_check.h"
#include "kernels/sim/launch_hook.h"

namespace timbre::kernels::profile {

namespace {

// One timed launch or library call: two events on its stream.
struct Timed {
  const char* key;  // the name pointer as given (a string literal or cached name)
  bool library;
  cudaEvent_t begin, end;
  double flops, bytes;
};

struct State {
  std::mutex m;
  Totals totals;
  std::vector<Timed> timed;
  std::vector<cudaEvent_t> spare;  // events from earlier recorders, reused
  std::vector<cudaEvent_t> open;   // begin events of launches in flight (nested never)
};

std::atomic<bool> g_on{false};
State& state() {
  static State* s = new State;  // live for the process: hooks may run during exit
  return *s;
}

cudaEvent_t take_event(State& s) {
  if (!s.spare.empty()) {
    cudaEvent_t e = s.spare.back();
    s.spare.pop_back();
    return e;
  }
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void begin(const char* key, cudaStream_t stream) {
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  cudaEvent_t e = take_event(s);
  CUDA_CHECK(cudaEventRecord(e, stream));
  s.open.push_back(e);
  (void)key;
}

void end(const char* key, bool library, cudaStream_t stream, double flops, double bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  if (s.open.empty()) return;  // the recorder started between begin and end
  cudaEvent_t e = take_event(s);
  CUDA_CHECK(cudaEventRecord(e, stream));
  s.timed.push_back({key, library, s.open.back(), e, flops, bytes});
  s.open.pop_back();
  (library ? s.totals.library_calls : s.totals.kernel_launches)++;
}

void on_launch(const char* kernel, cudaStream_t stream, bool after) {
  if (!g_on.load(std::memory_order_relaxed)) return;
  if (after)
    end(kernel, false, stream, 0, 0);
  else
    begin(kernel, stream);
}

}  // namespace

std::string kernel_name(const std::string& pretty) { return simcuda::readable_kernel_name(pretty); }

void record_copy(Copy kind, size_t bytes, bool host_waits) {
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  Totals& t = s.totals;
  switch (kind) {
    case Copy::h2d: t.h2d_copies++, t.h2d_bytes += (long long)bytes; break;
    case Copy::d2h: t.d2h_copies++, t.d2h_bytes += (long long)bytes; break;
    case Copy::d2d: t.d2d_copies++, t.d2d_bytes += (long long)bytes; break;
  }
  if (host_waits) t.host_syncs++;
}

void record_sync() {
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  s.totals.host_syncs++;
}

void record_graph_launch() {
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  s.totals.graph_launches++;
}

LibraryCall::LibraryCall(const char* name, cudaStream_t s, double flops, double bytes)
    : name_(name), stream_(s), flops_(flops), bytes_(bytes),
      active_(g_on.load(std::memory_order_relaxed)) {
  if (active_) begin(name, s);
}

LibraryCall::~LibraryCall() {
  if (active_ && g_on.load(std::memory_order_relaxed))
    end(name_, true, stream_, flops_, bytes_);
}

Recorder::Recorder() {
  bool expected = false;
  if (!g_on.compare_exchange_strong(expected, true))
    throw std::logic_error("profile::Recorder: another recorder is running");
  State& s = state();
  {
    std::lock_guard<std::mutex> lk(s.m);
    s.totals = Totals{};
    s.timed.clear();
    s.open.clear();
  }
  simcuda::launch_hook = &on_launch;
}

Recorder::~Recorder() {
  if (!stopped_) {
    try {
      stop();
    } catch (...) {  // a destructor must not throw; the counts are lost
    }
  }
}

Totals Recorder::stop() {
  if (stopped_) throw std::logic_error("profile::Recorder: stopped twice");
  stopped_ = true;
  simcuda::launch_hook = nullptr;
  g_on.store(false);
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  if (!s.timed.empty()) CUDA_CHECK(cudaDeviceSynchronize());
  // Names are merged by their readable form (one pointer per call site under
  // nvcc, one per kernel under simcuda).
  std::unordered_map<const char*, std::string> names;
  std::map<std::string, KernelRow> rows;
  for (const Timed& t : s.timed) {
    auto it = names.find(t.key);
    if (it == names.end()) it = names.emplace(t.key, kernel_name(t.key)).first;
    KernelRow& r = rows[it->second];
    r.name = it->second;
    r.library = t.library;
    r.calls++;
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.begin, t.end));
    r.ms += ms;
    r.flops += t.flops;
    r.bytes += t.bytes;
    s.spare.push_back(t.begin);
    s.spare.push_back(t.end);
  }
  s.timed.clear();
  Totals out = s.totals;
  for (auto& [name, r] : rows) {
    out.device_ms += r.ms;
    out.rows.push_back(std::move(r));
  }
  std::sort(out.rows.begin(), out.rows.end(),
            [](const KernelRow& a, const KernelRow& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace timbre::kernels::profile
