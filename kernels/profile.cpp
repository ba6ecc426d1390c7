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
  std::string shape;  // when tracing
  size_t group = 0;   // when tracing: the index of the mark that closes it
};

struct State {
  std::mutex m;
  Totals totals;
  std::vector<Timed> timed;
  std::vector<cudaEvent_t> spare;  // events from earlier recorders, reused
  std::vector<cudaEvent_t> open;   // begin events of launches in flight (nested never)
  std::vector<std::string> labels; // tracing: the marks so far
};

std::atomic<bool> g_on{false};
std::atomic<bool> g_trace{false};
std::atomic<bool> g_counting{false};  // a CaptureCounter is alive
GraphCounts g_captured;  // what the CaptureCounter counted, under state().m

bool is_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(s, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone;
}

State& state() {
  static State* s = new State;  // live for the process: hooks may run during exit
  return *s;
}

// Counts a launch or library call being captured; true if `s` is
// capturing (then no events may be recorded on it).
bool captured(cudaStream_t s, bool library) {
  if (!g_counting.load(std::memory_order_relaxed) || !is_capturing(s)) return false;
  std::lock_guard<std::mutex> lk(state().m);
  (library ? g_captured.library_calls : g_captured.kernels)++;
  return true;
}

// Adds `copies` copies of `bytes` bytes in all, in direction `kind`.
void add_copies(Totals& t, Copy kind, long long copies, long long bytes) {
  switch (kind) {
    case Copy::h2d: t.h2d_copies += copies, t.h2d_bytes += bytes; break;
    case Copy::d2h: t.d2h_copies += copies, t.d2h_bytes += bytes; break;
    case Copy::d2d: t.d2d_copies += copies, t.d2d_bytes += bytes; break;
    case Copy::memset: t.memsets += copies, t.memset_bytes += bytes; break;
  }
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

void end(const char* key, bool library, cudaStream_t stream, double flops, double bytes,
         std::string shape) {
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  if (s.open.empty()) return;  // the recorder started between begin and end
  cudaEvent_t e = take_event(s);
  CUDA_CHECK(cudaEventRecord(e, stream));
  s.timed.push_back({key, library, s.open.back(), e, flops, bytes, std::move(shape),
                     s.labels.size()});
  s.open.pop_back();
  (library ? s.totals.library_calls : s.totals.kernel_launches)++;
}

std::string dims(const unsigned (&d)[3]) {
  return "(" + std::to_string(d[0]) + "," + std::to_string(d[1]) + "," + std::to_string(d[2]) + ")";
}

void on_launch(const char* kernel, CUstream_st* stream, bool after,
               const simcuda::LaunchShape& shape) {
  if (after && captured(stream, false)) return;
  if (!g_on.load(std::memory_order_relaxed) || is_capturing(stream)) return;
  if (!after) {
    begin(kernel, stream);
    return;
  }
  end(kernel, false, stream, 0, 0,
      g_trace.load(std::memory_order_relaxed)
          ? "grid " + dims(shape.grid) + " block " + dims(shape.block)
          : std::string());
}

}  // namespace

std::string kernel_name(const std::string& pretty) { return simcuda::readable_kernel_name(pretty); }

void record_copy(Copy kind, size_t bytes, bool host_waits) {
  if (g_counting.load(std::memory_order_relaxed)) {  // captured: counted at each replay
    State& s = state();
    std::lock_guard<std::mutex> lk(s.m);
    g_captured.copies[int(kind)]++;
    g_captured.bytes[int(kind)] += (long long)bytes;
    return;
  }
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  Totals& t = s.totals;
  add_copies(t, kind, 1, (long long)bytes);
  if (host_waits) t.host_syncs++;
}

void record_sync() {
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  s.totals.host_syncs++;
}

void record_graph_launch(const GraphCounts& inside) {
  if (!g_on.load(std::memory_order_relaxed)) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  Totals& t = s.totals;
  t.graph_launches++;
  t.graph_kernels += inside.kernels;
  t.graph_library_calls += inside.library_calls;
  for (Copy kind : {Copy::h2d, Copy::d2h, Copy::d2d, Copy::memset})
    add_copies(t, kind, inside.copies[int(kind)], inside.bytes[int(kind)]);
}

namespace {
// The launch hook is installed while a Recorder or a CaptureCounter lives.
void update_hook() { simcuda::launch_hook = g_on.load() || g_counting.load() ? &on_launch : nullptr; }
}  // namespace

CaptureCounter::CaptureCounter() {
  bool expected = false;
  if (!g_counting.compare_exchange_strong(expected, true))
    throw std::logic_error("profile::CaptureCounter: another counter is running");
  {
    std::lock_guard<std::mutex> lk(state().m);
    g_captured = GraphCounts{};
  }
  update_hook();
}

CaptureCounter::~CaptureCounter() {
  if (!stopped_) stop();
}

GraphCounts CaptureCounter::stop() {
  if (!stopped_) {
    stopped_ = true;
    g_counting.store(false);
    update_hook();
  }
  std::lock_guard<std::mutex> lk(state().m);
  return g_captured;
}

LibraryCall::LibraryCall(const char* name, cudaStream_t s, double flops, double bytes,
                         std::string shape)
    : name_(name), stream_(s), flops_(flops), bytes_(bytes), shape_(std::move(shape)),
      active_(false) {
  if (captured(s, true)) return;
  active_ = g_on.load(std::memory_order_relaxed) && !is_capturing(s);
  if (active_) begin(name, s);
}

LibraryCall::~LibraryCall() {
  if (active_ && g_on.load(std::memory_order_relaxed))
    end(name_, true, stream_, flops_, bytes_, std::move(shape_));
}

bool tracing() { return g_trace.load(std::memory_order_relaxed); }

void mark(const std::string& label) {
  if (!tracing()) return;
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  s.labels.push_back(label);
}

Recorder::Recorder(bool trace) {
  bool expected = false;
  if (!g_on.compare_exchange_strong(expected, true))
    throw std::logic_error("profile::Recorder: another recorder is running");
  State& s = state();
  {
    std::lock_guard<std::mutex> lk(s.m);
    s.totals = Totals{};
    s.timed.clear();
    s.open.clear();
    s.labels.clear();
  }
  g_trace.store(trace);
  update_hook();
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
  g_on.store(false);
  update_hook();
  const bool traced = g_trace.exchange(false);
  State& s = state();
  std::lock_guard<std::mutex> lk(s.m);
  if (!s.timed.empty()) CUDA_CHECK(cudaDeviceSynchronize());
  // Names are merged by their readable form (one pointer per call site under
  // nvcc, one per kernel under simcuda).
  std::unordered_map<const char*, std::string> names;
  std::map<std::string, KernelRow> rows;
  Totals out = s.totals;
  if (traced) {
    out.trace.resize(s.labels.size());
    for (size_t i = 0; i < s.labels.size(); ++i) out.trace[i].label = s.labels[i];
  }
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
    if (traced) {
      if (t.group == out.trace.size()) out.trace.push_back({"(after the last op)", {}});
      out.trace[t.group].kernels.push_back({it->second, t.shape, ms});
    }
    r.flops += t.flops;
    r.bytes += t.bytes;
    s.spare.push_back(t.begin);
    s.spare.push_back(t.end);
  }
  s.timed.clear();
  s.labels.clear();
  for (auto& [name, r] : rows) {
    out.device_ms += r.ms;
    out.rows.push_back(std::move(r));
  }
  std::sort(out.rows.begin(), out.rows.end(),
            [](const KernelRow& a, const KernelRow& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace timbre::kernels::profile
