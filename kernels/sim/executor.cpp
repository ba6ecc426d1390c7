// executor.cpp: how simcuda runs a kernel launch on the CPU.
//
//   launch ──> validate configuration like a device would
//          ──> pool: every worker (the calling thread included) takes blocks
//              from a shared counter, one block at a time
//          ──> run_block: thread 0 runs first, on a fiber ("probe");
//                if it ends without synchronising, threads 1..n-1 run as a
//                plain loop (fast path);
//                else every thread runs on its own fiber and the block's
//                scheduler sweeps them in the chosen thread order, releasing
//                block and warp barriers once all their threads have arrived
//                and reporting barriers that can never be released.
//
// Fibers are Boost.Context `fiber`s: created once per worker, reused for every
// block (creating one costs ~10 us, switching ~10 ns). Everything a kernel
// sees (threadIdx & co.) lives in the __thread ThreadContext `tc`.
#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kernels/sim/control.h"
#include "kernels/sim/internal.h"
#include "kernels/sim/simcuda.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMCUDA_ASAN 1
#else
#define SIMCUDA_ASAN 0
#endif

namespace ctx = boost::context;

namespace simcuda {
namespace detail {

__thread ThreadContext tc;

namespace {

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------
constexpr size_t kDefaultStack = SIMCUDA_ASAN ? 256 * 1024 : 64 * 1024;

[[noreturn]] void bad_env(const char* var, const char* value, const char* expected) {
  std::fprintf(stderr, "simcuda: %s='%s' is not valid; expected %s\n", var, value, expected);
  std::exit(2);
}

bool env_flag(const char* var, bool dflt) {
  const char* s = std::getenv(var);
  if (!s || !*s) return dflt;
  if (!std::strcmp(s, "1")) return true;
  if (!std::strcmp(s, "0")) return false;
  bad_env(var, s, "0 or 1");
}

Options options_from_env() {
  Options o;
  if (const char* s = std::getenv("SIMCUDA_ORDER"); s && *s) {
    const std::string v = s;
    if (v == "forward") {
      o.order = Order::forward;
    } else if (v == "reverse") {
      o.order = Order::reverse;
    } else if (v == "random" || v.rfind("random:", 0) == 0) {
      o.order = Order::random;
      if (v.size() > 7) {
        char* end = nullptr;
        o.seed = std::strtoull(v.c_str() + 7, &end, 0);
        if (*end) bad_env("SIMCUDA_ORDER", s, "forward, reverse, random or random:<seed>");
      }
    } else {
      bad_env("SIMCUDA_ORDER", s, "forward, reverse, random or random:<seed>");
    }
  }
  if (const char* s = std::getenv("SIMCUDA_WORKERS"); s && *s) {
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    if (*end || n < 1 || n > 1024) bad_env("SIMCUDA_WORKERS", s, "a count from 1 to 1024");
    o.workers = int(n);
  }
  if (const char* s = std::getenv("SIMCUDA_STACK"); s && *s) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(s, &end, 0);
    if (*end || n < 16 * 1024) bad_env("SIMCUDA_STACK", s, "a size in bytes of at least 16384");
    o.stack_bytes = size_t(n);
  }
  o.poison = env_flag("SIMCUDA_POISON", true);
  o.fast_path = env_flag("SIMCUDA_FASTPATH", true);
  return o;
}

std::mutex g_options_mutex;
Options& options_ref() {
  static Options o = options_from_env();
  return o;
}

int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// The processes of a distributed job on this machine (engine/distributed.h)
// share its cores, as they would share one GPU: the launcher's count of
// local ranks (Open MPI, Slurm, MPICH), 1 outside one.
int local_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"})
    if (const char* s = std::getenv(name); s && *s) {
      const long n = std::strtol(s, nullptr, 10);
      if (n > 1) return int(n);
    }
  return 1;
}

int resolve_workers(const Options& o) {
  if (SIMCUDA_SHARED_STATIC_ON) return 1;  // static __shared__ is one copy per process
  if (o.workers > 0) return o.workers;
  // A launcher that bound each rank to its own cores has shared them already.
  const int cores = usable_cores();
  const bool bound = cores < int(std::thread::hardware_concurrency());
  return bound ? cores : std::max(1, cores / local_ranks());
}

// ---------------------------------------------------------------------------
// Small deterministic RNG for thread orders (splitmix64).
// ---------------------------------------------------------------------------
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
void shuffle(unsigned* v, unsigned n, uint64_t& state) {
  for (unsigned i = n; i > 1; --i) std::swap(v[i - 1], v[splitmix(state) % i]);
}

// ---------------------------------------------------------------------------
// Per-kernel facts that outlive a launch.
// ---------------------------------------------------------------------------
struct KernelInfo {
  int max_dynamic_smem = kDefaultSharedPerBlock;  // cudaFuncAttributeMaxDynamicSharedMemorySize
  bool no_fast_path = false;  // synchronised outside thread 0's path once
};
std::mutex g_kernels_mutex;
std::unordered_map<const void*, KernelInfo>& kernels() {
  static std::unordered_map<const void*, KernelInfo> m;
  return m;
}

// ---------------------------------------------------------------------------
// A launch in flight, shared by the workers.
// ---------------------------------------------------------------------------
struct Job {
  const KernelThunks* k;
  void* args;
  dim3 grid, block;
  size_t smem;
  Options opt;
  bool fast_path;
  unsigned nblocks;
  unsigned grain = 1;  // blocks a worker takes at a time
  std::atomic<unsigned> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;  // first failure, in words
  bool disable_fast_path = false;
  // Host work instead of a kernel (parallel_host): task b of nblocks.
  const std::function<void(unsigned)>* host_task = nullptr;

  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lk(error_mutex);
    if (error.empty()) error = what;
    failed.store(true, std::memory_order_relaxed);
  }
};

enum class State : uint8_t { ready, at_block_barrier, at_warp_barrier, done };

struct SimThread {
  ctx::fiber fiber;
  uint3 tid{};
  unsigned linear = 0;
  State state = State::done;
  bool started = false;
  unsigned warp_mask = 0;
  uint64_t published = 0;  // value offered at the current warp operation
  int bar_op = 0, bar_pred = 0, bar_result = 0;
#if SIMCUDA_ASAN
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
#endif
};

// Thrown inside a simulated thread to unwind its kernel frames when the
// block is abandoned (deadlock, error in another thread).
struct Unwind {};
// Raised when a thread of a fast-path block (plain loop) synchronises.
struct LoopSync {
  const char* what;
};

std::string fmt3(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

struct Worker {
  std::vector<std::unique_ptr<SimThread>> threads;
  size_t stack_bytes = 0;
  ctx::fiber scheduler;  // where a running fiber returns to
  SimThread* current = nullptr;
  Job* job = nullptr;
  std::vector<uint64_t> warp_values;  // [warp * 32 + lane]: values of released lanes
  std::vector<unsigned char> smem_storage;
  std::unique_ptr<unsigned char[]> asan_smem;
  unsigned char* smem = nullptr;
  bool aborting = false;
  bool retiring = false;  // fibers finish their loop instead of running a thread
  std::string block_error;
  std::vector<unsigned> order;
#if SIMCUDA_ASAN
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif
  ~Worker();
};
thread_local std::unique_ptr<Worker> t_worker;
Worker& worker() {
  if (!t_worker) t_worker = std::make_unique<Worker>();
  return *t_worker;
}

// ------------------------------ switching ----------------------------------
void to_scheduler(Worker* w) {
#if SIMCUDA_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, w->sched_bottom, w->sched_size);
#endif
  w->scheduler = std::move(w->scheduler).resume();
#if SIMCUDA_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void resume(Worker* w, SimThread& t) {
  w->current = &t;
  tc.tid = t.tid;
#if SIMCUDA_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack_bottom, t.stack_size);
#endif
  t.fiber = std::move(t.fiber).resume();
#if SIMCUDA_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Stack allocator that staggers stack tops ("colouring": 1024 stacks aligned
// alike would put every fiber's hot frame in the same cache sets) and records
// the bounds ASan needs.
template <class Base>
struct ColouredStack {
  Base base;
  SimThread* t;
  size_t colour;
  ctx::stack_context allocate() {
    ctx::stack_context s = base.allocate();
    s.sp = static_cast<char*>(s.sp) - colour;
    s.size -= colour;
#if SIMCUDA_ASAN
    t->stack_bottom = static_cast<char*>(s.sp) - s.size;
    t->stack_size = s.size;
#else
    (void)t;
#endif
    return s;
  }
  void deallocate(ctx::stack_context& s) noexcept {
    s.sp = static_cast<char*>(s.sp) + colour;
    s.size += colour;
#if SIMCUDA_ASAN
    // A finished fiber's last frames stay poisoned in ASan's shadow; the next
    // stack mapped at this address must not inherit that.
    __asan_unpoison_memory_region(static_cast<char*>(s.sp) - s.size, s.size);
#endif
    base.deallocate(s);
  }
};

ctx::fiber make_fiber(Worker* w, SimThread* t, unsigned index) {
  auto body = [w, t](ctx::fiber&& caller) {
#if SIMCUDA_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w->sched_bottom, &w->sched_size);
#endif
    w->scheduler = std::move(caller);
    for (;;) {  // one iteration per block this fiber's thread takes part in
      if (w->retiring) break;
      if (!w->aborting) {
        try {
          w->job->k->run_one(w->job->args);
        } catch (const Unwind&) {
        } catch (const std::exception& e) {
          if (!w->aborting) w->block_error = "thread " + fmt3(t->tid) + " threw: " + e.what();
          w->aborting = true;
        }
      }
      t->state = State::done;
      to_scheduler(w);
    }
#if SIMCUDA_ASAN
    __sanitizer_start_switch_fiber(nullptr, w->sched_bottom, w->sched_size);  // this fiber ends
#endif
    return std::move(w->scheduler);
  };
  const size_t colour = (index % 61) * 64 + (index % 7) * 4096;
  return ctx::fiber(std::allocator_arg,
                    ColouredStack<ctx::protected_fixedsize_stack>{
                        ctx::protected_fixedsize_stack(w->stack_bytes), t, colour},
                    body);
}

// Lets every fiber leave its loop and finish, so that destroying it needs
// no forced unwinding (Boost's unwinding switches stacks behind ASan's back).
void retire_fibers(Worker* w) {
  w->retiring = true;
  for (auto& t : w->threads)
    if (t->fiber) resume(w, *t);
  w->threads.clear();
  w->retiring = false;
}

Worker::~Worker() { retire_fibers(this); }

void ensure_threads(Worker* w, unsigned n, size_t stack_bytes) {
  if (w->stack_bytes != stack_bytes) {  // a new stack size: new fibers
    retire_fibers(w);
    w->stack_bytes = stack_bytes;
  }
  while (w->threads.size() < n) {
    auto t = std::make_unique<SimThread>();
    t->fiber = make_fiber(w, t.get(), unsigned(w->threads.size()));
    w->threads.push_back(std::move(t));
  }
}

// -------------------------------- barriers ---------------------------------
unsigned lanes_in_warp(unsigned n, unsigned warp) {
  const unsigned lo = warp * 32, cnt = std::min(32u, n - lo);
  return cnt == 32 ? 0xffffffffu : (1u << cnt) - 1u;
}

std::string who(const std::vector<std::unique_ptr<SimThread>>& th, unsigned n, State s) {
  unsigned count = 0, first = 0;
  for (unsigned i = 0; i < n; ++i)
    if (th[i]->state == s && count++ == 0) first = i;
  if (!count) return {};
  return std::to_string(count) + (count == 1 ? " thread " : " threads (first ") +
         fmt3(th[first]->tid) + (count == 1 ? "" : ")");
}

// Releases every warp operation whose lanes have all arrived. Returns true if
// any thread was released; records an error for a lane that waits on a lane
// that has exited.
bool release_warps(Worker* w, unsigned n) {
  auto& th = w->threads;
  bool released = false;
  const unsigned nwarps = (n + 31) / 32;
  for (unsigned wp = 0; wp < nwarps; ++wp) {
    const unsigned lo = wp * 32, exist = lanes_in_warp(n, wp);
    unsigned waiting = 0, exited = 0;
    for (unsigned l = 0; l < 32 && lo + l < n; ++l) {
      waiting |= unsigned(th[lo + l]->state == State::at_warp_barrier) << l;
      exited |= unsigned(th[lo + l]->state == State::done) << l;
    }
    if (!waiting) continue;
    unsigned release = 0;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(waiting >> l & 1u)) continue;
      const unsigned need = th[lo + l]->warp_mask & exist;
      if ((need & waiting) == need) {
        release |= 1u << l;
      } else if (need & exited) {
        const unsigned gone = __builtin_ctz(need & exited);
        char mask[16];
        std::snprintf(mask, sizeof mask, "0x%08x", th[lo + l]->warp_mask);
        w->block_error = "warp operation in thread " + fmt3(th[lo + l]->tid) + " (mask " + mask +
                         ") waits for lane " + std::to_string(gone) + ", thread " +
                         fmt3(th[lo + gone]->tid) + ", which has exited";
        return false;
      }
    }
    for (unsigned l = 0; l < 32; ++l)
      if (release >> l & 1u) {
        w->warp_values[lo + l] = th[lo + l]->published;
        th[lo + l]->state = State::ready;
      }
    released |= release != 0;
  }
  return released;
}

// Releases __syncthreads once every thread has arrived. Returns true if
// released; records an error when some threads exited instead.
bool release_block(Worker* w, unsigned n) {
  auto& th = w->threads;
  unsigned at = 0, done = 0, count = 0;
  for (unsigned i = 0; i < n; ++i) {
    at += th[i]->state == State::at_block_barrier;
    done += th[i]->state == State::done;
    count += th[i]->state == State::at_block_barrier && th[i]->bar_pred != 0;
  }
  if (at == 0 || at + done != n) return false;
  if (done) {
    w->block_error = "__syncthreads() reached by " + std::to_string(at) + " of " +
                     std::to_string(n) + " threads; " + who(th, n, State::done) +
                     " exited without reaching it (a barrier in divergent code)";
    return false;
  }
  for (unsigned i = 0; i < n; ++i) {
    SimThread& t = *th[i];
    switch (t.bar_op) {
      case 1: t.bar_result = int(count); break;
      case 2: t.bar_result = count == n; break;
      case 3: t.bar_result = count != 0; break;
      default: t.bar_result = 0;
    }
    t.state = State::ready;
  }
  return true;
}

// Unwinds every started, unfinished thread of the block.
void abandon_block(Worker* w, unsigned n) {
  w->aborting = true;
  for (unsigned i = 0; i < n; ++i) {
    SimThread& t = *w->threads[i];
    if (t.state != State::done && t.started) resume(w, t);
    t.state = State::done;
  }
}

// ------------------------------- one block ---------------------------------
void run_block(Worker* w, unsigned b) {
  Job& j = *w->job;
  const dim3 g = j.grid, bd = j.block;
  const unsigned n = bd.x * bd.y * bd.z;
  tc.bid = uint3{b % g.x, (b / g.x) % g.y, b / (g.x * g.y)};
  uint64_t rng = j.opt.seed * 0x2545F4914F6CDD1Dull + b;  // this block's thread order
  if (j.smem) {
#if SIMCUDA_ASAN
    // A buffer of exactly the launch's size, so ASan reports overflows.
    w->asan_smem.reset(new unsigned char[j.smem]);
    w->smem = w->asan_smem.get();
    tc.dynamic_smem = w->smem;
#endif
    if (j.opt.poison) std::memset(w->smem, 0xff, j.smem);  // reads before writes give NaN
  }
  w->aborting = false;
  w->block_error.clear();

  auto fail = [&](const std::string& what) {
    j.fail("block " + fmt3(tc.bid) + ": " + what);
  };

  // Probe: thread 0 alone, on a fiber.
  SimThread& t0 = *w->threads[0];
  t0.tid = uint3{0, 0, 0};
  t0.linear = 0;
  t0.state = State::ready;
  t0.started = true;
  tc.mode = Mode::probe;
  resume(w, t0);
  if (w->aborting) {
    fail(w->block_error);
    abandon_block(w, n);
    return;
  }
  if (t0.state == State::done && j.fast_path) {
    tc.mode = Mode::loop;
    try {
      j.k->run_rest(j.args, uint3{bd.x, bd.y, bd.z}, j.opt.order, rng);
    } catch (const LoopSync& e) {
      fail(std::string("thread ") + fmt3(tc.tid) + " reached " + e.what +
           " but thread 0 finished without synchronising, so the block ran on the "
           "barrier-free fast path. Synchronisation that not every thread reaches is "
           "undefined in CUDA; if only some warps synchronise, run with SIMCUDA_FASTPATH=0 "
           "(later launches of this kernel no longer take the fast path)");
      j.disable_fast_path = true;
    } catch (const std::exception& e) {
      fail("thread " + fmt3(tc.tid) + " threw: " + e.what());
    }
    tc.mode = Mode::fibers;
    return;
  }

  // Every thread on its own fiber, swept in thread order until all are done.
  tc.mode = Mode::fibers;
  uint3 id{0, 0, 0};
  for (unsigned i = 1; i < n; ++i) {  // thread i's index, counting x fastest
    if (++id.x == bd.x) {
      id.x = 0;
      if (++id.y == bd.y) id.y = 0, ++id.z;
    }
    SimThread& t = *w->threads[i];
    t.tid = id;
    t.linear = i;
    t.state = State::ready;
    t.started = false;
  }
  unsigned* order = w->order.data();
  for (unsigned i = 0; i < n; ++i) order[i] = i;
  for (;;) {
    if (j.opt.order == Order::random) shuffle(order, n, rng);
    for (unsigned k = 0; k < n && !w->aborting; ++k) {
      const unsigned i = j.opt.order == Order::reverse ? n - 1 - order[k] : order[k];
      SimThread& t = *w->threads[i];
      if (t.state != State::ready) continue;
      t.started = true;
      resume(w, t);
    }
    if (w->aborting) break;
    bool all_done = true;
    for (unsigned i = 0; i < n && all_done; ++i) all_done = w->threads[i]->state == State::done;
    if (all_done) return;
    if (release_warps(w, n)) continue;
    if (!w->block_error.empty()) break;
    if (release_block(w, n)) continue;
    if (w->block_error.empty()) {
      auto& th = w->threads;
      std::string parts;
      for (State s : {State::at_block_barrier, State::at_warp_barrier, State::done}) {
        const std::string p = who(th, n, s);
        if (p.empty()) continue;
        parts += (parts.empty() ? "" : "; ") + p +
                 (s == State::at_block_barrier  ? " at __syncthreads()"
                  : s == State::at_warp_barrier ? " at a warp operation"
                                                : " exited");
      }
      w->block_error = "deadlock: no barrier can be released: " + parts;
    }
    break;
  }
  fail(w->block_error);
  abandon_block(w, n);
}

void work(Job* j) {
  if (j->host_task) {  // parallel_host: plain host functions, no fibers
    for (unsigned b; (b = j->next.fetch_add(1, std::memory_order_relaxed)) < j->nblocks;)
      (*j->host_task)(b);
    return;
  }
  Worker* w = &worker();
  w->job = j;
  const unsigned n = j->block.x * j->block.y * j->block.z;
  ensure_threads(w, n, j->opt.stack_bytes ? j->opt.stack_bytes : kDefaultStack);
  w->warp_values.assign(size_t((n + 31) / 32) * 32, 0);
  w->order.resize(n);
  if (!SIMCUDA_ASAN && j->smem > w->smem_storage.size()) {
    w->smem_storage.resize((j->smem + 255) & ~size_t(255));
  }
  w->smem = w->smem_storage.data();
  tc.dynamic_smem = j->smem ? w->smem : nullptr;
  tc.bdim = uint3{j->block.x, j->block.y, j->block.z};
  tc.gdim = uint3{j->grid.x, j->grid.y, j->grid.z};
  // Blocks are taken in runs of `grain` so that workers do not fight over
  // the counter's cache line for every small block.
  for (unsigned first; !j->failed.load(std::memory_order_relaxed) &&
                       (first = j->next.fetch_add(j->grain, std::memory_order_relaxed)) <
                           j->nblocks;) {
    const unsigned last = std::min(j->nblocks, first + j->grain);
    for (unsigned b = first; b < last && !j->failed.load(std::memory_order_relaxed); ++b)
      run_block(w, b);
  }
  w->job = nullptr;
}

// ------------------------------ worker pool --------------------------------
// Workers sleep on a condition variable between launches: a spinning pool
// collapses when another process holds one of the cores.
class Pool {
 public:
  explicit Pool(int extra_threads) {
    for (int i = 0; i < extra_threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return int(threads_.size()) + 1; }
  void run(Job* j) {
    if (threads_.empty() || j->nblocks == 1) {
      work(j);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = j;
      busy_ = int(threads_.size());
      ++generation_;
    }
    cv_.notify_all();
    work(j);  // the launching thread is a worker too
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return busy_ == 0; });
  }

 private:
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      Job* j;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        j = job_;
      }
      work(j);
      std::lock_guard<std::mutex> lk(m_);
      if (--busy_ == 0) done_.notify_all();
    }
  }
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  uint64_t generation_ = 0;
  int busy_ = 0;
  Job* job_ = nullptr;
  bool stop_ = false;
};

std::mutex g_launch_mutex;  // one kernel at a time, whatever the host thread
std::unique_ptr<Pool> g_pool;

Pool& pool(int workers) {
  if (!g_pool || g_pool->size() != workers) {
    g_pool.reset();
    g_pool = std::make_unique<Pool>(workers - 1);
  }
  return *g_pool;
}

}  // namespace

void parallel_host(unsigned n, const std::function<void(unsigned)>& task) {
  if (n == 0) return;
  std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
  Job j{};
  j.nblocks = n;
  j.host_task = &task;
  pool(resolve_workers(options())).run(&j);
}

namespace {

cudaError_t config_error(cudaError_t e, const KernelThunks& k, const std::string& what) {
  set_error_detail(e, "launch of kernel '" + std::string(k.name) + "': " + what);
  return e;
}

}  // namespace

// ------------------------- calls from kernel code --------------------------
int block_barrier(int op, int predicate) {
  static const char* names[] = {"__syncthreads()", "__syncthreads_count()",
                                "__syncthreads_and()", "__syncthreads_or()"};
  if (tc.mode == Mode::loop) throw LoopSync{names[op]};
  Worker* w = t_worker.get();
  SimThread* t = w->current;
  t->state = State::at_block_barrier;
  t->bar_op = op;
  t->bar_pred = predicate;
  to_scheduler(w);
  if (w->aborting) throw Unwind{};
  return t->bar_result;
}

const uint64_t* warp_exchange(unsigned mask, uint64_t value) {
  if (tc.mode == Mode::loop) throw LoopSync{"a warp operation"};
  Worker* w = t_worker.get();
  SimThread* t = w->current;
  t->state = State::at_warp_barrier;
  t->warp_mask = mask;
  t->published = value;
  to_scheduler(w);
  if (w->aborting) throw Unwind{};
  return w->warp_values.data() + (t->linear & ~31u);
}

unsigned lane_id() {
  if (tc.mode == Mode::loop) {
    const uint3 t = tc.tid, d = tc.bdim;
    return (t.x + d.x * (t.y + d.y * t.z)) & 31u;
  }
  return t_worker->current->linear & 31u;
}

unsigned active_mask() {
  // Lanes of this warp that exist and have not exited. simcuda does not model
  // divergence, so lanes in another branch count as active.
  const unsigned n = tc.bdim.x * tc.bdim.y * tc.bdim.z;
  const unsigned lane_linear =
      tc.tid.x + tc.bdim.x * (tc.tid.y + tc.bdim.y * tc.tid.z);
  const unsigned warp = lane_linear / 32;
  unsigned mask = lanes_in_warp(n, warp);
  if (tc.mode == Mode::fibers) {  // (the probe runs before the others start)
    Worker* w = t_worker.get();
    for (unsigned l = 0; l < 32; ++l)
      if ((mask >> l & 1u) && w->threads[warp * 32 + l]->state == State::done) mask &= ~(1u << l);
  }
  return mask;
}

void loop_order(unsigned n, Order order, uint64_t seed, unsigned* out) {
  for (unsigned i = 1; i < n; ++i) out[i - 1] = i;
  if (order == Order::random) shuffle(out, n - 1, seed);
}

const char* parse_kernel_name(const char* pretty) {
  std::string s = readable_kernel_name(pretty);
  static std::mutex m;
  static std::deque<std::string>* names = new std::deque<std::string>;  // live for the process
  std::lock_guard<std::mutex> lk(m);
  return names->emplace_back(std::move(s)).c_str();
}

// ------------------------------- the launch --------------------------------
cudaError_t launch(const KernelThunks& k, void* args, dim3 grid, dim3 block, size_t smem,
                   cudaStream_t /*stream: every stream runs in order, now*/) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || threads > 1024)
    return config_error(cudaErrorInvalidConfiguration, k,
                        "block " + fmt3(uint3{block.x, block.y, block.z}) +
                            " is outside the device's limits (each of x, y <= 1024, z <= 64, "
                            "x*y*z <= 1024, none 0)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
      grid.z > 65535)
    return config_error(cudaErrorInvalidConfiguration, k,
                        "grid " + fmt3(uint3{grid.x, grid.y, grid.z}) +
                            " is outside the device's limits (x <= 2^31-1, y, z <= 65535, "
                            "none 0)");
  bool fast = true;
  {
    std::lock_guard<std::mutex> lk(g_kernels_mutex);
    const KernelInfo& info = kernels()[k.key];
    if (smem > size_t(info.max_dynamic_smem))
      return config_error(
          cudaErrorInvalidValue, k,
          std::to_string(smem) + " bytes of dynamic shared memory requested; the kernel allows " +
              std::to_string(info.max_dynamic_smem) +
              " (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n) "
              "raises it up to " + std::to_string(kMaxSharedPerBlockOptin) + ")");
    fast = !info.no_fast_path;
  }

  std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
  Job j;
  j.k = &k;
  j.args = args;
  j.grid = grid;
  j.block = block;
  j.smem = smem;
  j.opt = options();
  j.fast_path = fast && j.opt.fast_path;
  j.nblocks = grid.x * grid.y * grid.z;
  const int workers = resolve_workers(j.opt);
  j.grain = std::max(1u, j.nblocks / (8u * unsigned(workers)));
  pool(workers).run(&j);
  if (j.disable_fast_path) {
    std::lock_guard<std::mutex> lk(g_kernels_mutex);
    kernels()[k.key].no_fast_path = true;
  }
  if (j.failed.load()) {
    const std::string msg = "kernel '" + std::string(k.name) + "' " + j.error;
    std::fprintf(stderr, "simcuda: %s\n", msg.c_str());
    set_error_detail(cudaErrorLaunchFailure, msg);
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

// ------------------------- hooks for runtime.cpp ---------------------------
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > kMaxSharedPerBlockOptin) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(g_kernels_mutex);
  kernels()[kernel].max_dynamic_smem = bytes;
  return cudaSuccess;
}

int max_dynamic_smem(const void* kernel) {
  std::lock_guard<std::mutex> lk(g_kernels_mutex);
  return kernels()[kernel].max_dynamic_smem;
}

}  // namespace detail

Options options() {
  std::lock_guard<std::mutex> lk(detail::g_options_mutex);
  return detail::options_ref();
}

void set_options(const Options& o) {
  std::lock_guard<std::mutex> lk(detail::g_options_mutex);
  detail::options_ref() = o;
}

int worker_count() { return detail::resolve_workers(options()); }

std::string describe(Order order, uint64_t seed) {
  switch (order) {
    case Order::forward: return "forward";
    case Order::reverse: return "reverse";
    default: return "random:" + std::to_string(seed);
  }
}

}  // namespace simcuda
