// runtime.cpp: simcuda's CUDA runtime subset, compiled against the toolkit's
// own cuda_runtime_api.h so host code is the same in both flavours.
//
// The simulated device shares the host's address space: "device memory" is
// host memory that cudaMalloc registered. Every call completes before it
// returns, so all streams are trivially in order and events time the host's
// wall clock. What simcuda adds over a GPU is strictness:
//   * new cudaMalloc memory is filled with 0xFF bytes (a NaN in every float)
//     unless poisoning is off, so reads of never-written memory show up;
//   * copies are checked against the allocation registry: the direction must
//     match what the pointers are, and a copy must stay inside its allocation;
//   * freed device blocks of 64 KiB and more are kept (already mapped) and
//     handed out again for the same size, so training steps do not page-fault.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/sim/control.h"
#include "kernels/sim/internal.h"

// Under SIMCUDA_STREAMS=adversarial a created stream keeps its work queued
// (`pending`, oldest first, each op with its ticket) until something waits
// for it; an event recorded on it is complete when the op with its ticket
// has run.
//
// Stream capture (cudaStreamBeginCapture): while `capture` is set, the
// stream's work is appended to that graph instead of running. Other streams
// join the capture as on a GPU: a stream that waits on an event recorded in
// the capture is captured into the same graph from then on (a fork), and
// must be waited on by the capture before it ends (a join). Each op keeps
// the ops it depends on: its stream's previous op and the record points of
// the events its stream waited on. A captured graph replays its ops in
// issue order (a valid topological order); under SIMCUDA_STREAMS=adversarial
// it replays them in an order of its own that only the dependencies bound,
// so a missing event wait between the captured streams shows.
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
  struct Node {
    int lane;                    // 0: the origin stream; 1, 2, ...: streams that joined
    std::vector<uint32_t> deps;  // ops that must run before this one
  };
  std::vector<Node> nodes;  // one per op
  int lanes = 1;
  uint64_t id = 0;  // which capture (events name it)
};
struct CUgraphExec_st {
  std::shared_ptr<const CUgraph_st> graph;
  uint64_t launches = 0;  // adversarial replays alternate their preference
};
struct CUstream_st {
  unsigned flags = 0;
  uint64_t issued = 0;  // tickets handed out
  std::deque<std::pair<uint64_t, std::function<void()>>> pending;
  CUgraph_st* capture = nullptr;  // capturing into this graph
  bool capture_origin = false;    // began the capture (owns the graph) or joined it
  int capture_lane = 0;
  std::vector<uint32_t> frontier;  // what the stream's next captured op depends on
  int64_t last_op = -1;            // its last captured op
  int64_t joined_upto = -1;        // its ops up to here are waited on in the capture
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  std::string capture_broken;  // why the capture is invalidated ("" while valid)
};
struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  std::chrono::steady_clock::time_point when{};
  CUstream_st* queued_on = nullptr;  // adversarial: recorded on this stream, not yet reached
  uint64_t ticket = 0;
  // Recorded in a capture: which capture, on which stream, after which ops.
  uint64_t capture_id = 0;
  CUstream_st* capture_stream = nullptr;
  std::vector<uint32_t> capture_frontier;
  int64_t capture_last_op = -1;
};

namespace simcuda {
namespace detail {
namespace {

// ------------------------------ error state --------------------------------
struct ErrorState {
  cudaError_t last = cudaSuccess;
  cudaError_t detail_code = cudaSuccess;
  std::string detail;
};
thread_local ErrorState t_error;

cudaError_t fail(cudaError_t e, std::string detail = {}) {
  set_error(e, std::move(detail));
  return e;
}

std::string hex(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

// --------------------------- allocation registry ---------------------------
enum class Kind { device, pinned };
struct Allocation {
  size_t size;       // as requested
  size_t capacity;   // as allocated (rounded to 256 bytes)
  Kind kind;
};

constexpr size_t kAlign = 256;               // cudaMalloc's guarantee
constexpr size_t kCacheMinBytes = 64 << 10;  // smaller blocks go back to malloc

struct Memory {
  std::mutex m;
  std::map<uintptr_t, Allocation> live;    // base address -> allocation
  std::multimap<size_t, void*> cache;      // capacity -> freed device block
  size_t cached = 0;
  size_t cache_limit() const {
    static const size_t l = std::min<size_t>(size_t(sysconf(_SC_PHYS_PAGES)) *
                                                 size_t(sysconf(_SC_PAGESIZE)) / 4,
                                             size_t(8) << 30);
    return l;
  }
  // The allocation containing p, if any.
  const std::pair<const uintptr_t, Allocation>* find(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = live.upper_bound(a);
    if (it == live.begin()) return nullptr;
    --it;
    return a < it->first + std::max<size_t>(it->second.size, 1) ? &*it : nullptr;
  }
};
Memory& memory() {
  static Memory* m = new Memory;  // never destroyed: frees may come from static destructors
  return *m;
}

size_t physical_bytes() {
  return size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

cudaError_t allocate(void** out, size_t size, Kind kind, const char* api) {
  if (!out) return fail(cudaErrorInvalidValue, std::string(api) + ": null result pointer");
  *out = nullptr;
  if (size == 0) return cudaSuccess;
  const size_t cap = (size + kAlign - 1) / kAlign * kAlign;
  Memory& M = memory();
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(M.m);
    if (kind == Kind::device) {
      auto it = M.cache.find(cap);
      if (it != M.cache.end()) {
        p = it->second;
        M.cache.erase(it);
        M.cached -= cap;
      }
    }
  }
  if (!p) {
    if (size > physical_bytes())
      return fail(cudaErrorMemoryAllocation, std::string(api) + " of " + std::to_string(size) +
                                                 " bytes: more than the machine's memory");
    p = std::aligned_alloc(kAlign, cap);
    if (!p)
      return fail(cudaErrorMemoryAllocation,
                  std::string(api) + " of " + std::to_string(size) + " bytes failed");
  }
  if (kind == Kind::device && options().poison) std::memset(p, 0xff, cap);
  std::lock_guard<std::mutex> lk(M.m);
  M.live[reinterpret_cast<uintptr_t>(p)] = Allocation{size, cap, kind};
  *out = p;
  return cudaSuccess;
}

cudaError_t release(void* p, Kind kind, const char* api) {
  if (!p) return cudaSuccess;
  Memory& M = memory();
  std::lock_guard<std::mutex> lk(M.m);
  auto it = M.live.find(reinterpret_cast<uintptr_t>(p));
  if (it == M.live.end() || it->second.kind != kind)
    return fail(cudaErrorInvalidValue,
                std::string(api) + "(" + hex(p) + "): not the start of a live " +
                    (kind == Kind::device ? "cudaMalloc" : "cudaMallocHost") +
                    " allocation (double free, offset pointer or wrong kind of memory)");
  const size_t cap = it->second.capacity;
  M.live.erase(it);
  if (kind == Kind::device && cap >= kCacheMinBytes && M.cached + cap <= M.cache_limit()) {
    M.cache.emplace(cap, p);
    M.cached += cap;
    return cudaSuccess;
  }
  std::free(p);
  return cudaSuccess;
}

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "HostToHost";
    case cudaMemcpyHostToDevice: return "HostToDevice";
    case cudaMemcpyDeviceToHost: return "DeviceToHost";
    case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
    case cudaMemcpyDefault: return "Default";
  }
  return "?";
}

// Checks one side of a copy or memset: whether [p, p+count) must be device
// memory (and lie inside one allocation) or must not be.
cudaError_t check_side(const Memory& M, const void* p, size_t count, bool want_device,
                       const std::string& what) {
  if (!p) return fail(cudaErrorInvalidValue, what + " is a null pointer");
  const auto* a = M.find(p);
  const bool is_device = a && a->second.kind == Kind::device;
  if (want_device != is_device)
    return fail(cudaErrorInvalidValue,
                what + " " + hex(p) +
                    (want_device ? " is not device memory from cudaMalloc"
                                 : " is device memory, but the copy kind says host"));
  if (is_device) {
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) - a->first;
    if (off + count > a->second.size)
      return fail(cudaErrorInvalidValue,
                  what + ": " + std::to_string(count) + " bytes at offset " +
                      std::to_string(off) + " run past the end of its " +
                      std::to_string(a->second.size) + "-byte allocation");
  }
  return cudaSuccess;
}

// run = false: the checks alone (a copy queued on an adversarial stream is
// checked when it is issued and run later).
cudaError_t copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, const char* api,
                 bool run = true) {
  if (count == 0) return cudaSuccess;
  const std::string name = std::string(api) + "(" + kind_name(kind) + ")";
  Memory& M = memory();
  std::unique_lock<std::mutex> lk(M.m);
  bool dst_dev, src_dev;
  switch (kind) {
    case cudaMemcpyHostToHost: dst_dev = false, src_dev = false; break;
    case cudaMemcpyHostToDevice: dst_dev = true, src_dev = false; break;
    case cudaMemcpyDeviceToHost: dst_dev = false, src_dev = true; break;
    case cudaMemcpyDeviceToDevice: dst_dev = true, src_dev = true; break;
    case cudaMemcpyDefault: {
      const auto* d = M.find(dst);
      const auto* s = M.find(src);
      dst_dev = d && d->second.kind == Kind::device;
      src_dev = s && s->second.kind == Kind::device;
      break;
    }
    default:
      return fail(cudaErrorInvalidMemcpyDirection,
                  std::string(api) + ": copy kind " + std::to_string(int(kind)) + " is not valid");
  }
  if (cudaError_t e = check_side(M, dst, count, dst_dev, name + " destination")) return e;
  if (cudaError_t e = check_side(M, src, count, src_dev, name + " source")) return e;
  lk.unlock();
  if (run) std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t set_bytes(void* dst, int value, size_t count, const char* api, bool run = true) {
  if (count == 0) return cudaSuccess;
  Memory& M = memory();
  {
    std::lock_guard<std::mutex> lk(M.m);
    if (cudaError_t e = check_side(M, dst, count, true, std::string(api) + " destination"))
      return e;
  }
  if (run) std::memset(dst, value, count);
  return cudaSuccess;
}

// ----------------------------- streams, events -----------------------------
struct Handles {
  std::mutex m;
  std::set<const void*> streams, events, graphs, execs;
};
Handles& handles() {
  static Handles* h = new Handles;
  return *h;
}
bool valid_stream(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
  std::lock_guard<std::mutex> lk(handles().m);
  return handles().streams.count(s) != 0;
}
bool valid_event(cudaEvent_t e) {
  std::lock_guard<std::mutex> lk(handles().m);
  return e && handles().events.count(e) != 0;
}
cudaError_t bad_stream(cudaStream_t s, const char* api) {
  return fail(cudaErrorInvalidResourceHandle,
              std::string(api) + ": stream " + hex(s) + " was not created or was destroyed");
}
cudaError_t bad_event(cudaEvent_t e, const char* api) {
  return fail(cudaErrorInvalidResourceHandle,
              std::string(api) + ": event " + hex(e) + " was not created or was destroyed");
}

// ------------------------------ stream order -------------------------------
// In order (the default), every call runs to completion before it returns,
// so all streams are trivially ordered. SIMCUDA_STREAMS=adversarial (or
// set_stream_order) is a test mode as unhelpful as a GPU may be: work issued
// to a created stream is queued and runs only when something waits for it:
//   * cudaStreamWaitEvent on an event recorded after it (run when the
//     waiting stream reaches the wait), cudaEventSynchronize, a stream or
//     device synchronize, cudaStreamDestroy;
//   * legacy-stream work (kernels, blocking copies, cuBLAS, cuFFT on the
//     default stream) waits for the created streams that were not made
//     with cudaStreamNonBlocking, as CUDA's legacy stream does.
// cudaEventQuery and cudaStreamQuery say cudaErrorNotReady while work is
// queued. So a missing cudaStreamWaitEvent lets the reader run before the
// writer: it reads what was there before (simcuda's NaN poison for new
// memory). Ops are checked when issued and run later.
std::atomic<int> g_stream_order{-1};  // -1: not yet read from SIMCUDA_STREAMS
std::recursive_mutex g_queue_mutex;

bool adversarial() {
  int v = g_stream_order.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("SIMCUDA_STREAMS");
    v = e && std::string(e) == "adversarial" ? 1 : 0;
    g_stream_order.store(v);
  }
  return v == 1;
}

bool created(cudaStream_t s) {
  return s != nullptr && s != cudaStreamLegacy && s != cudaStreamPerThread;
}

// ------------------------------ stream capture ------------------------------
std::atomic<int> g_captures{0};  // streams capturing now
thread_local cudaStreamCaptureMode t_capture_mode = cudaStreamCaptureModeGlobal;

std::vector<cudaStream_t> capturing_streams() {
  std::vector<cudaStream_t> out;
  std::lock_guard<std::mutex> lk(handles().m);
  for (const void* p : handles().streams) {
    auto s = static_cast<cudaStream_t>(const_cast<void*>(p));
    if (s->capture) out.push_back(s);
  }
  return out;
}

// A call CUDA calls unsafe during capture (it may synchronise or allocate):
// with a capture in global mode, or thread-local mode from this thread,
// active, and this thread not in relaxed mode, CUDA fails it and
// invalidates those captures.
cudaError_t capture_forbids(const char* api) {
  if (g_captures.load(std::memory_order_relaxed) == 0 ||
      t_capture_mode == cudaStreamCaptureModeRelaxed)
    return cudaSuccess;
  bool hit = false;
  for (cudaStream_t s : capturing_streams())
    if (s->capture_mode == cudaStreamCaptureModeGlobal ||
        (s->capture_mode == cudaStreamCaptureModeThreadLocal &&
         s->capture_thread == std::this_thread::get_id())) {
      if (s->capture_broken.empty()) s->capture_broken = std::string(api) + " during the capture";
      hit = true;
    }
  if (!hit) return cudaSuccess;
  return fail(cudaErrorStreamCaptureUnsupported,
              std::string(api) + ": not allowed while a stream is being captured "
                                 "(cudaStreamBeginCapture); the capture is invalidated");
}

// The streams capturing into g (the origin and those that joined).
std::vector<cudaStream_t> streams_of(const CUgraph_st* g) {
  std::vector<cudaStream_t> out;
  for (cudaStream_t s : capturing_streams())
    if (s->capture == g) out.push_back(s);
  return out;
}

// The capture an event was recorded in, if that capture is still going on.
CUgraph_st* live_capture_of(cudaEvent_t e) {
  if (e->capture_id == 0 || g_captures.load(std::memory_order_relaxed) == 0) return nullptr;
  for (cudaStream_t s : capturing_streams())
    if (s == e->capture_stream && s->capture->id == e->capture_id) return s->capture;
  return nullptr;
}

// cudaStreamWaitEvent where the stream or the event belongs to a capture:
// a fork (s joins the event's capture), an edge inside one capture, or a
// dependency across the capture's boundary (invalid, as on a GPU).
cudaError_t captured_wait(cudaStream_t s, cudaEvent_t e) {
  CUgraph_st* g = live_capture_of(e);
  const bool s_capturing = created(s) && s->capture;
  if (!g && !s_capturing) return cudaSuccess;  // nothing captured: an ordinary wait
  if (!g || (s_capturing && s->capture != g) || !created(s)) {
    const char* why = !g ? "the event was not recorded in this capture"
                         : "the stream is not one that may join the event's capture";
    if (s_capturing && s->capture_broken.empty())
      s->capture_broken = std::string("cudaStreamWaitEvent across a capture's boundary (") + why + ")";
    if (g && e->capture_stream->capture_broken.empty())
      e->capture_stream->capture_broken = "cudaStreamWaitEvent across a capture's boundary";
    return fail(cudaErrorStreamCaptureIsolation,
                std::string("cudaStreamWaitEvent: ") + why + "; the capture is invalidated");
  }
  if (!s_capturing) {  // a fork: s joins the capture
    const cudaStream_t origin = e->capture_stream;
    s->capture = g;
    s->capture_origin = false;
    s->capture_lane = g->lanes++;
    s->capture_mode = origin->capture_mode;
    s->capture_thread = origin->capture_thread;
    s->capture_broken.clear();
    s->frontier.clear();
    s->last_op = -1;
    s->joined_upto = -1;
    ++g_captures;
  }
  s->frontier.insert(s->frontier.end(), e->capture_frontier.begin(), e->capture_frontier.end());
  e->capture_stream->joined_upto = std::max(e->capture_stream->joined_upto, e->capture_last_op);
  return cudaSuccess;
}

// Appends op to s's capture, depending on what s's frontier holds.
void record_op(cudaStream_t s, std::function<void()> op) {
  if (!s->capture_broken.empty()) return;  // an invalidated capture drops it
  CUgraph_st& g = *s->capture;
  const auto index = uint32_t(g.ops.size());
  g.ops.push_back(std::move(op));
  g.nodes.push_back({s->capture_lane, std::move(s->frontier)});
  s->frontier.assign(1, index);
  s->last_op = index;
}

// Replays g's ops in a topological order other than their issue order:
// among the ops whose dependencies have run, those of the streams that
// joined the capture first (joined_first: as early as the edges allow), or
// the origin's first (the joined streams' work as late as they allow).
void replay_reordered(const CUgraph_st& g, bool joined_first) {
  const size_t n = g.ops.size();
  std::vector<uint32_t> waiting(n, 0);
  std::vector<std::vector<uint32_t>> after(n);
  for (size_t i = 0; i < n; ++i)
    for (uint32_t d : g.nodes[i].deps) {
      ++waiting[i];
      after[d].push_back(uint32_t(i));
    }
  // Ready ops per lane, oldest first (a lane's ops form a chain).
  std::vector<std::deque<uint32_t>> ready(size_t(g.lanes));
  for (size_t i = 0; i < n; ++i)
    if (waiting[i] == 0) ready[size_t(g.nodes[i].lane)].push_back(uint32_t(i));
  for (size_t done = 0; done < n; ++done) {
    int lane = -1;
    for (int k = 0; k < g.lanes; ++k) {
      const int l = joined_first ? g.lanes - 1 - k : k;
      if (!ready[size_t(l)].empty()) {
        lane = l;
        break;
      }
    }
    const uint32_t i = ready[size_t(lane)].front();
    ready[size_t(lane)].pop_front();
    g.ops[i]();
    for (uint32_t j : after[i])
      if (--waiting[j] == 0) ready[size_t(g.nodes[j].lane)].push_back(j);
  }
}

// Ends s's part in a capture.
void leave_capture(cudaStream_t s) {
  s->capture = nullptr;
  s->capture_origin = false;
  s->frontier.clear();
  --g_captures;
}

// Legacy-stream work while a blocking stream is captured: CUDA would make
// the capture wait for the legacy stream, which a graph cannot; the capture
// is invalidated (cudaErrorStreamCaptureImplicit).
void legacy_during_capture() {
  if (g_captures.load(std::memory_order_relaxed) == 0) return;
  for (cudaStream_t s : capturing_streams())
    if (!(s->flags & cudaStreamNonBlocking) && s->capture_broken.empty())
      s->capture_broken = "work on the legacy default stream during the capture of a blocking "
                          "stream (cudaErrorStreamCaptureImplicit)";
}

// Runs s's queued ops up to and including `ticket`.
void drain(cudaStream_t s, uint64_t ticket = UINT64_MAX) {
  std::lock_guard<std::recursive_mutex> lk(g_queue_mutex);
  while (!s->pending.empty() && s->pending.front().first <= ticket) {
    std::function<void()> op = std::move(s->pending.front().second);
    s->pending.pop_front();
    op();
  }
}

void drain_all(bool blocking_only) {
  std::vector<cudaStream_t> streams;
  {
    std::lock_guard<std::mutex> lk(handles().m);
    for (const void* p : handles().streams) streams.push_back(static_cast<cudaStream_t>(const_cast<void*>(p)));
  }
  for (cudaStream_t s : streams)
    if (!blocking_only || !(s->flags & cudaStreamNonBlocking)) drain(s);
}

// Work on the legacy stream starts after the blocking streams' work.
void legacy_stream_waits() {
  if (adversarial()) drain_all(true);
}

// Issues `op` to stream s: queued on an adversarial created stream (true),
// or, after the waits the legacy stream implies, left for the caller to run
// now (false).
bool queue(cudaStream_t s, std::function<void()> op) {
  if (g_captures.load(std::memory_order_relaxed) > 0) {
    if (created(s) && s->capture) {
      record_op(s, std::move(op));
      return true;  // recorded, not run
    }
    if (!created(s)) legacy_during_capture();
  }
  if (!adversarial()) return false;
  if (!created(s)) {
    legacy_stream_waits();
    return false;
  }
  std::lock_guard<std::recursive_mutex> lk(g_queue_mutex);
  s->pending.emplace_back(++s->issued, std::move(op));
  return true;
}

}  // namespace

bool queue_launch(cudaStream_t s, std::function<void()> run) { return queue(s, std::move(run)); }

bool streams_deferred() {
  return adversarial() || g_captures.load(std::memory_order_relaxed) > 0;
}

void host_work(cudaStream_t s, std::function<void()> work) {
  if (g_captures.load(std::memory_order_relaxed) > 0 && created(s) && s->capture) {
    queue(s, std::move(work));
    return;
  }
  if (!created(s)) legacy_during_capture();
  before_host_work(s);
  work();
}

bool capturing(cudaStream_t s) {
  return g_captures.load(std::memory_order_relaxed) > 0 && created(s) && s->capture;
}

void mark_capture_broken(cudaStream_t s, const char* why) {
  if (capturing(s) && s->capture_broken.empty()) s->capture_broken = why;
}

void before_host_work(cudaStream_t s) {
  if (!adversarial()) return;
  if (created(s))
    drain(s);
  else
    legacy_stream_waits();
}


void set_error(cudaError_t e, std::string detail) {
  t_error.last = e;
  t_error.detail_code = e;
  t_error.detail = std::move(detail);
}

void set_error_detail(cudaError_t e, std::string detail) {
  t_error.detail_code = e;
  t_error.detail = std::move(detail);
}

}  // namespace detail

std::string error_detail(cudaError_t e) {
  return detail::t_error.detail_code == e ? detail::t_error.detail : std::string();
}

StreamOrder stream_order() {
  return detail::adversarial() ? StreamOrder::adversarial : StreamOrder::in_order;
}

void set_stream_order(StreamOrder o) {
  if (detail::adversarial()) detail::drain_all(false);  // nothing left queued
  detail::g_stream_order.store(o == StreamOrder::adversarial ? 1 : 0);
}

}  // namespace simcuda

using simcuda::detail::fail;

// ================================ the API ==================================
extern "C" {

// ------------------------------- errors ------------------------------------
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = simcuda::detail::t_error.last;
  simcuda::detail::t_error.last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return simcuda::detail::t_error.last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define SIMCUDA_NAME(x) \
  case x: return #x;
    SIMCUDA_NAME(cudaSuccess)
    SIMCUDA_NAME(cudaErrorInvalidValue)
    SIMCUDA_NAME(cudaErrorMemoryAllocation)
    SIMCUDA_NAME(cudaErrorInitializationError)
    SIMCUDA_NAME(cudaErrorInvalidConfiguration)
    SIMCUDA_NAME(cudaErrorInvalidSymbol)
    SIMCUDA_NAME(cudaErrorInvalidDevicePointer)
    SIMCUDA_NAME(cudaErrorInvalidMemcpyDirection)
    SIMCUDA_NAME(cudaErrorInvalidDeviceFunction)
    SIMCUDA_NAME(cudaErrorNoDevice)
    SIMCUDA_NAME(cudaErrorInvalidDevice)
    SIMCUDA_NAME(cudaErrorInvalidResourceHandle)
    SIMCUDA_NAME(cudaErrorNotReady)
    SIMCUDA_NAME(cudaErrorIllegalAddress)
    SIMCUDA_NAME(cudaErrorLaunchOutOfResources)
    SIMCUDA_NAME(cudaErrorLaunchFailure)
    SIMCUDA_NAME(cudaErrorNotSupported)
    SIMCUDA_NAME(cudaErrorStreamCaptureUnsupported)
    SIMCUDA_NAME(cudaErrorStreamCaptureInvalidated)
    SIMCUDA_NAME(cudaErrorStreamCaptureUnmatched)
    SIMCUDA_NAME(cudaErrorStreamCaptureUnjoined)
    SIMCUDA_NAME(cudaErrorStreamCaptureIsolation)
    SIMCUDA_NAME(cudaErrorIllegalState)
    SIMCUDA_NAME(cudaErrorUnknown)
#undef SIMCUDA_NAME
    default: return "cudaErrorUnrecognized";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidSymbol: return "invalid device symbol";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched:
      return "the capture was not initiated in this stream";
    case cudaErrorStreamCaptureUnjoined:
      return "the capture sequence contains a fork that was not joined to the primary stream";
    case cudaErrorStreamCaptureIsolation:
      return "a dependency would have been created which crosses the capture sequence boundary";
    case cudaErrorUnknown: return "unknown error";
    default: return "unrecognized error code";
  }
}

// ------------------------------- device ------------------------------------
namespace {
// simcuda has one device, 0. CUDA_VISIBLE_DEVICES hides it as the CUDA
// runtime would: the variable lists device indices, and the devices before
// the first index that does not exist are visible, renumbered from 0. So
// "0" and "0,3" show it; "", "1" and "1,0" hide it (no device at all).
int visible_devices() {
  static const int n = [] {
    const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
    if (!v) return 1;
    std::string first(v, std::strcspn(v, ","));
    first.erase(0, first.find_first_not_of(" \t"));
    first.erase(first.find_last_not_of(" \t") + 1);
    return first == "0" ? 1 : 0;
  }();
  return n;
}
}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = visible_devices();
  if (*count == 0)
    return fail(cudaErrorNoDevice, "CUDA_VISIBLE_DEVICES hides simcuda's one device (0)");
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice: null pointer");
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= visible_devices())
    return fail(cudaErrorInvalidDevice,
                visible_devices() == 0
                    ? "CUDA_VISIBLE_DEVICES hides simcuda's one device (0); asked for " +
                          std::to_string(device)
                    : "simcuda has one device, 0; asked for " + std::to_string(device));
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: null pointer");
  if (device != 0 || visible_devices() == 0) return cudaSetDevice(device);
  std::memset(p, 0, sizeof *p);
  const int workers = simcuda::worker_count();
  std::snprintf(p->name, sizeof p->name, "simcuda (CPU, %d worker%s)", workers,
                workers == 1 ? "" : "s");
  p->totalGlobalMem = simcuda::detail::physical_bytes();
  p->sharedMemPerBlock = simcuda::detail::kDefaultSharedPerBlock;
  p->sharedMemPerBlockOptin = simcuda::detail::kMaxSharedPerBlockOptin;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->memPitch = SIZE_MAX;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->totalConstMem = 64 * 1024;
  p->major = 9;  // the limits above are those of compute capability 9.0
  p->minor = 0;
  p->multiProcessorCount = workers;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->integrated = 1;
  p->canMapHostMemory = 1;
  p->unifiedAddressing = 1;
  p->concurrentKernels = 0;  // launches run one at a time
  p->asyncEngineCount = 0;   // copies do not overlap kernels
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: null pointer");
  if (device != 0) return cudaSetDevice(device);
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    default:
      return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute " +
                                             std::to_string(int(attr)) +
                                             " is not described by simcuda");
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaDeviceSynchronize")) return e;
  if (simcuda::detail::adversarial()) simcuda::detail::drain_all(false);
  return cudaSuccess;  // (in order: all work is done already)
}

cudaError_t cudaDeviceReset(void) {
  // Releases the cache of freed blocks; live allocations stay valid (a GPU
  // would invalidate them, but a host program that still holds them would
  // crash here rather than report an error, which helps nobody).
  auto& M = simcuda::detail::memory();
  std::lock_guard<std::mutex> lk(M.m);
  for (auto& [cap, p] : M.cache) std::free(p);
  M.cache.clear();
  M.cached = 0;
  simcuda::detail::t_error = {};
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  if (!free_bytes || !total) return fail(cudaErrorInvalidValue, "cudaMemGetInfo: null pointer");
  *total = simcuda::detail::physical_bytes();
  const size_t avail = size_t(sysconf(_SC_AVPHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
  *free_bytes = std::min(avail, *total);
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue, "cudaRuntimeGetVersion: null pointer");
#ifdef CUDART_VERSION
  *v = CUDART_VERSION;  // the toolkit's headers simcuda was built against
#else
  *v = 0;  // simcuda's own headers (kernels/sim/include) follow no toolkit version
#endif
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) { return cudaRuntimeGetVersion(v); }

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: null kernel");
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (simcuda::detail::set_max_dynamic_smem(func, value) != cudaSuccess)
        return fail(cudaErrorInvalidValue,
                    "cudaFuncSetAttribute: " + std::to_string(value) +
                        " bytes of dynamic shared memory is more than the device's " +
                        std::to_string(simcuda::detail::kMaxSharedPerBlockOptin));
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return cudaSuccess;  // a performance hint; nothing to do on the CPU
    default:
      return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute " +
                                             std::to_string(int(attr)) +
                                             " is not supported by simcuda");
  }
}

// ------------------------------- memory ------------------------------------
cudaError_t cudaMalloc(void** p, size_t size) {
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaMalloc")) return e;
  return simcuda::detail::allocate(p, size, simcuda::detail::Kind::device, "cudaMalloc");
}
cudaError_t cudaFree(void* p) {
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaFree")) return e;
  return simcuda::detail::release(p, simcuda::detail::Kind::device, "cudaFree");
}
cudaError_t cudaMallocHost(void** p, size_t size) {
  return simcuda::detail::allocate(p, size, simcuda::detail::Kind::pinned, "cudaMallocHost");
}
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int /*flags*/) {
  return simcuda::detail::allocate(p, size, simcuda::detail::Kind::pinned, "cudaHostAlloc");
}
cudaError_t cudaFreeHost(void* p) {
  return simcuda::detail::release(p, simcuda::detail::Kind::pinned, "cudaFreeHost");
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaMemcpy")) return e;
  simcuda::detail::legacy_stream_waits();
  return simcuda::detail::copy(dst, src, count, kind, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!simcuda::detail::valid_stream(stream))
    return simcuda::detail::bad_stream(stream, "cudaMemcpyAsync");
  if (cudaError_t e = simcuda::detail::copy(dst, src, count, kind, "cudaMemcpyAsync", false))
    return e;
  if (simcuda::detail::queue(stream, [=] { std::memmove(dst, src, count); })) return cudaSuccess;
  return simcuda::detail::copy(dst, src, count, kind, "cudaMemcpyAsync");
}
cudaError_t cudaMemset(void* dst, int value, size_t count) {
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaMemset")) return e;
  simcuda::detail::legacy_stream_waits();
  return simcuda::detail::set_bytes(dst, value, count, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t count, cudaStream_t stream) {
  if (!simcuda::detail::valid_stream(stream))
    return simcuda::detail::bad_stream(stream, "cudaMemsetAsync");
  if (cudaError_t e = simcuda::detail::set_bytes(dst, value, count, "cudaMemsetAsync", false))
    return e;
  if (simcuda::detail::queue(stream, [=] { std::memset(dst, value, count); })) return cudaSuccess;
  return simcuda::detail::set_bytes(dst, value, count, "cudaMemsetAsync");
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* a, const void* p) {
  if (!a) return fail(cudaErrorInvalidValue, "cudaPointerGetAttributes: null pointer");
  auto& M = simcuda::detail::memory();
  std::lock_guard<std::mutex> lk(M.m);
  const auto* found = M.find(p);
  std::memset(a, 0, sizeof *a);
  a->device = 0;
  if (!found) {
    a->type = cudaMemoryTypeUnregistered;
    a->hostPointer = const_cast<void*>(p);
  } else if (found->second.kind == simcuda::detail::Kind::device) {
    a->type = cudaMemoryTypeDevice;
    a->devicePointer = const_cast<void*>(p);
  } else {
    a->type = cudaMemoryTypeHost;
    a->hostPointer = a->devicePointer = const_cast<void*>(p);
  }
  return cudaSuccess;
}

// __constant__ and __device__ variables are ordinary globals under g++.
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               enum cudaMemcpyKind kind) {
  if (!symbol || !src) return fail(cudaErrorInvalidSymbol, "cudaMemcpyToSymbol: null pointer");
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice &&
      kind != cudaMemcpyDefault)
    return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpyToSymbol: copy kind must be "
                                                 "HostToDevice, DeviceToDevice or Default");
  std::memmove(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset,
                                 enum cudaMemcpyKind kind) {
  if (!symbol || !dst) return fail(cudaErrorInvalidSymbol, "cudaMemcpyFromSymbol: null pointer");
  if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice &&
      kind != cudaMemcpyDefault)
    return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpyFromSymbol: copy kind must be "
                                                 "DeviceToHost, DeviceToDevice or Default");
  std::memmove(dst, static_cast<const char*>(symbol) + offset, count);
  return cudaSuccess;
}

// ------------------------------- streams -----------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s) return fail(cudaErrorInvalidValue, "cudaStreamCreate: null pointer");
  *s = new CUstream_st;
  (*s)->flags = flags;
  std::lock_guard<std::mutex> lk(simcuda::detail::handles().m);
  simcuda::detail::handles().streams.insert(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!simcuda::detail::created(s) || !simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamDestroy");
  simcuda::detail::drain(s);  // CUDA finishes a destroyed stream's work
  if (s->capture) {  // an unfinished capture ends with its origin stream
    CUgraph_st* g = s->capture;
    if (s->capture_origin) {
      for (cudaStream_t j : simcuda::detail::streams_of(g)) simcuda::detail::leave_capture(j);
      delete g;
    } else {
      simcuda::detail::leave_capture(s);
      for (cudaStream_t j : simcuda::detail::streams_of(g))
        if (j->capture_broken.empty()) j->capture_broken = "the destruction of a joined stream";
    }
  }
  auto& H = simcuda::detail::handles();
  std::lock_guard<std::mutex> lk(H.m);
  if (!H.streams.erase(s)) return simcuda::detail::bad_stream(s, "cudaStreamDestroy");
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamSynchronize");
  if (cudaError_t e = simcuda::detail::capture_forbids("cudaStreamSynchronize")) return e;
  if (simcuda::detail::created(s))
    simcuda::detail::drain(s);
  else
    simcuda::detail::legacy_stream_waits();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  if (!simcuda::detail::valid_stream(s)) return simcuda::detail::bad_stream(s, "cudaStreamQuery");
  std::lock_guard<std::recursive_mutex> lk(simcuda::detail::g_queue_mutex);
  return simcuda::detail::created(s) && !s->pending.empty() ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int /*flags*/) {
  if (!simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamWaitEvent");
  if (!simcuda::detail::valid_event(e)) return simcuda::detail::bad_event(e, "cudaStreamWaitEvent");
  if (cudaError_t err = simcuda::detail::captured_wait(s, e)) return err;
  if (simcuda::detail::created(s) && s->capture) return cudaSuccess;  // an edge in the graph
  std::lock_guard<std::recursive_mutex> lk(simcuda::detail::g_queue_mutex);
  if (e->queued_on == nullptr) return cudaSuccess;  // its work is done
  // The work before the record runs when s reaches this wait (now, for the
  // legacy stream).
  cudaStream_t on = e->queued_on;
  const uint64_t ticket = e->ticket;
  auto wait = [on, ticket] { simcuda::detail::drain(on, ticket); };
  if (!simcuda::detail::queue(s, wait)) wait();
  return cudaSuccess;
}

// -------------------------------- events -----------------------------------
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return fail(cudaErrorInvalidValue, "cudaEventCreate: null pointer");
  *e = new CUevent_st;
  (*e)->flags = flags;
  std::lock_guard<std::mutex> lk(simcuda::detail::handles().m);
  simcuda::detail::handles().events.insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  auto& H = simcuda::detail::handles();
  std::lock_guard<std::mutex> lk(H.m);
  if (!H.events.erase(e)) return simcuda::detail::bad_event(e, "cudaEventDestroy");
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!simcuda::detail::valid_event(e)) return simcuda::detail::bad_event(e, "cudaEventRecord");
  if (!simcuda::detail::valid_stream(s)) return simcuda::detail::bad_stream(s, "cudaEventRecord");
  if (simcuda::detail::capturing(s)) {  // a record point in the graph, for forks and joins
    e->capture_id = s->capture->id;
    e->capture_stream = s;
    e->capture_frontier = s->frontier;
    e->capture_last_op = s->last_op;
    return cudaSuccess;
  }
  e->capture_id = 0;
  std::lock_guard<std::recursive_mutex> lk(simcuda::detail::g_queue_mutex);
  auto reach = [e] {
    e->recorded = true;
    e->when = std::chrono::steady_clock::now();
    e->queued_on = nullptr;
  };
  if (simcuda::detail::adversarial() && simcuda::detail::created(s)) {
    e->queued_on = s;
    e->ticket = s->issued + 1;  // the ticket queue() gives the op below
    const uint64_t mine = e->ticket;
    simcuda::detail::queue(s, [e, mine, reach] {
      if (e->queued_on && e->ticket == mine) reach();  // not re-recorded since
    });
    return cudaSuccess;
  }
  reach();  // in order: work before it on s is already done
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!simcuda::detail::valid_event(e)) return simcuda::detail::bad_event(e, "cudaEventSynchronize");
  if (cudaError_t err = simcuda::detail::capture_forbids("cudaEventSynchronize")) return err;
  std::lock_guard<std::recursive_mutex> lk(simcuda::detail::g_queue_mutex);
  if (e->queued_on) simcuda::detail::drain(e->queued_on, e->ticket);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!simcuda::detail::valid_event(e)) return simcuda::detail::bad_event(e, "cudaEventQuery");
  std::lock_guard<std::recursive_mutex> lk(simcuda::detail::g_queue_mutex);
  return e->queued_on ? cudaErrorNotReady : cudaSuccess;  // not an error: no last error set
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  if (!simcuda::detail::valid_event(start)) return simcuda::detail::bad_event(start, "cudaEventElapsedTime");
  if (!simcuda::detail::valid_event(end)) return simcuda::detail::bad_event(end, "cudaEventElapsedTime");
  if ((start->flags | end->flags) & cudaEventDisableTiming)
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime: an event was created with cudaEventDisableTiming");
  if (!start->recorded || !end->recorded)
    return fail(cudaErrorInvalidResourceHandle,
                "cudaEventElapsedTime: an event has not been recorded");
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

// --------------------------- capture and graphs ----------------------------
// A capture records its streams' ops (kernels, async copies and memsets,
// cuBLAS calls, NCCL collectives) with their dependencies; a launch of the
// instantiated graph replays them on the stream it is launched on. Kernel
// arguments, copy addresses and GEMM scalars are the ones captured, as on a
// GPU.
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  if (!simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamBeginCapture");
  if (!simcuda::detail::created(s))
    return fail(cudaErrorStreamCaptureUnsupported,
                "cudaStreamBeginCapture: the legacy default stream cannot be captured; capture a "
                "stream made with cudaStreamCreate");
  if (s->capture)
    return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: the stream is already capturing");
  static std::atomic<uint64_t> captures{0};
  s->capture = new CUgraph_st;
  s->capture->id = ++captures;
  s->capture_origin = true;
  s->capture_lane = 0;
  s->frontier.clear();
  s->last_op = -1;
  s->joined_upto = -1;
  s->capture_mode = mode;
  s->capture_thread = std::this_thread::get_id();
  s->capture_broken.clear();
  ++simcuda::detail::g_captures;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: null pointer");
  *graph = nullptr;
  if (!simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamEndCapture");
  if (!simcuda::detail::created(s) || !s->capture)
    return fail(cudaErrorIllegalState, "cudaStreamEndCapture: the stream is not capturing");
  if (!s->capture_origin)
    return fail(cudaErrorStreamCaptureUnmatched,
                "cudaStreamEndCapture: the stream joined a capture begun on another stream; end it "
                "on that one");
  CUgraph_st* g = s->capture;
  // Every stream that joined must be joined back: its last op waited on by
  // the capture (an event recorded after it, waited on in the capture).
  std::string broken = s->capture_broken;
  std::string unjoined;
  for (cudaStream_t j : simcuda::detail::streams_of(g)) {
    if (broken.empty()) broken = j->capture_broken;
    if (j != s && j->last_op > j->joined_upto && unjoined.empty())
      unjoined = "cudaStreamEndCapture: a stream that joined the capture (lane " +
                 std::to_string(j->capture_lane) +
                 ") has work that nothing in the capture waits on; record an event after it and "
                 "make the capturing stream wait on it";
    simcuda::detail::leave_capture(j);
  }
  if (!broken.empty() || !unjoined.empty()) {
    delete g;
    if (!broken.empty())
      return fail(cudaErrorStreamCaptureInvalidated,
                  "cudaStreamEndCapture: the capture was invalidated by " + broken);
    return fail(cudaErrorStreamCaptureUnjoined, unjoined);
  }
  std::lock_guard<std::mutex> lk(simcuda::detail::handles().m);
  simcuda::detail::handles().graphs.insert(g);
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus* status) {
  if (!status) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: null pointer");
  if (!simcuda::detail::valid_stream(s))
    return simcuda::detail::bad_stream(s, "cudaStreamIsCapturing");
  *status = !simcuda::detail::created(s) || !s->capture ? cudaStreamCaptureStatusNone
            : s->capture_broken.empty()                 ? cudaStreamCaptureStatusActive
                                                        : cudaStreamCaptureStatusInvalidated;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (!mode) return fail(cudaErrorInvalidValue, "cudaThreadExchangeStreamCaptureMode: null pointer");
  std::swap(*mode, simcuda::detail::t_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  if (!exec) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: null pointer");
  auto& H = simcuda::detail::handles();
  std::lock_guard<std::mutex> lk(H.m);
  if (!graph || !H.graphs.count(graph))
    return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: not a graph from cudaStreamEndCapture");
  *exec = new CUgraphExec_st{std::make_shared<const CUgraph_st>(*graph)};
  H.execs.insert(*exec);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!simcuda::detail::valid_stream(s)) return simcuda::detail::bad_stream(s, "cudaGraphLaunch");
  std::shared_ptr<const CUgraph_st> graph;
  uint64_t launch = 0;
  {
    std::lock_guard<std::mutex> lk(simcuda::detail::handles().m);
    if (!exec || !simcuda::detail::handles().execs.count(exec))
      return fail(cudaErrorInvalidResourceHandle,
                  "cudaGraphLaunch: not an executable graph from cudaGraphInstantiate");
    graph = exec->graph;
    launch = exec->launches++;
  }
  if (simcuda::detail::created(s) && s->capture)
    return fail(cudaErrorStreamCaptureUnsupported,
                "cudaGraphLaunch: launching a graph into a capture is not simulated");
  const bool reorder = simcuda::detail::adversarial() && graph->lanes > 1;
  auto replay = [graph, reorder, launch] {
    if (!reorder) {
      for (const auto& op : graph->ops) op();
      return;
    }
    simcuda::detail::replay_reordered(*graph, /*joined_first=*/launch % 2 == 0);
  };
  if (!simcuda::detail::queue(s, replay)) replay();
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  auto& H = simcuda::detail::handles();
  std::lock_guard<std::mutex> lk(H.m);
  if (!H.execs.erase(exec))
    return fail(cudaErrorInvalidResourceHandle, "cudaGraphExecDestroy: not an executable graph");
  delete exec;  // a replay still queued holds its own reference to the ops
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  auto& H = simcuda::detail::handles();
  std::lock_guard<std::mutex> lk(H.m);
  if (!H.graphs.erase(graph))
    return fail(cudaErrorInvalidValue, "cudaGraphDestroy: not a graph");
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
