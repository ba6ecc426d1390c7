// distributed.cpp: see distributed.h.
#include "engine/distributed.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <stdexcept>
#include <vector>

#include "engine/context.h"
#include "kernels/cuda_check.h"

namespace timbre::dist {
namespace {

struct State {
  Launch launch;
  bool started = false, mpi = false;
  ncclComm_t comm = nullptr;
  cudaStream_t comm_stream = nullptr;  // every collective's
  cudaEvent_t fork = nullptr, join = nullptr;
};
State& state() {
  static State s;
  return s;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end || n < 0 || n > 1 << 20)
    throw std::runtime_error(std::string("the launcher's ") + name + "=" + v +
                             " is not a rank or a count");
  return int(n);
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  std::string detail = ncclGetErrorString(r);
  if (const char* last = ncclGetLastError(state().comm); last && *last) detail += std::string(": ") + last;
  throw std::runtime_error(std::string("NCCL ") + what + " failed: " + detail);
}


}  // namespace

Launch launch_from_env() {
  Launch l;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    l.launcher = "Open MPI";
    l.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    l.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    l.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    l.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (std::getenv("SLURM_NTASKS") && std::getenv("SLURM_PROCID")) {
    l.launcher = "Slurm";
    l.rank = env_int("SLURM_PROCID", 0);
    l.size = env_int("SLURM_NTASKS", 1);
    l.local_rank = env_int("SLURM_LOCALID", 0);
    l.local_size = env_int("SLURM_NTASKS_PER_NODE", l.size);
  } else if (std::getenv("PMI_SIZE")) {
    l.launcher = "PMI";
    l.rank = env_int("PMI_RANK", 0);
    l.size = env_int("PMI_SIZE", 1);
    l.local_rank = env_int("MPI_LOCALRANKID", 0);
    l.local_size = env_int("MPI_LOCALNRANKS", 1);
  }
  if (l.size < 1 || l.rank >= l.size || l.local_rank >= std::max(1, l.local_size))
    throw std::runtime_error("the launcher's environment (" + l.launcher + ") gives rank " +
                             std::to_string(l.rank) + " of " + std::to_string(l.size) +
                             ", local rank " + std::to_string(l.local_rank) + " of " +
                             std::to_string(l.local_size));
  return l;
}

const Launch& start(int device) {
  State& s = state();
  if (s.started) return s.launch;
  s.launch = launch_from_env();
  s.started = true;
  if (s.launch.size == 1) return s.launch;

  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  s.mpi = true;
  int mpi_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  if (mpi_size != s.launch.size)
    throw std::runtime_error("MPI sees " + std::to_string(mpi_size) + " ranks where " +
                             s.launch.launcher + " launched " + std::to_string(s.launch.size));
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  // One visible device per rank (srun --gpus-per-task=1, a launcher that
  // sets CUDA_VISIBLE_DEVICES per rank; simcuda's one device, which the
  // ranks of a machine share with its cores): that one; else the local
  // rank's.
  const int want = devices == 1 && device == 0 ? 0 : device + s.launch.local_rank;
  if (want >= devices)
    throw std::runtime_error("local rank " + std::to_string(s.launch.local_rank) + " needs device " +
                             std::to_string(want) + ", but this node has " +
                             std::to_string(devices) + " (one rank per GPU: start at most " +
                             std::to_string(devices - device) + " ranks per node)");
  CUDA_CHECK(cudaSetDevice(want));
  ncclUniqueId id{};
  if (s.launch.rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  nccl_check(ncclCommInitRank(&s.comm, s.launch.size, id, s.launch.rank), "ncclCommInitRank");
  // Non-blocking: ordered against the compute stream by events alone.
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.comm_stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming));
  return s.launch;
}

namespace {
struct Watchdog {
  std::mutex m;
  std::condition_variable cv;
  std::thread thread;
  bool armed = false;
  std::chrono::steady_clock::time_point last;
  ~Watchdog() {
    armed = false;
    cv.notify_all();
    if (thread.joinable()) thread.join();
  }
};
Watchdog& watchdog() {
  static Watchdog w;
  return w;
}
}  // namespace

void arm_watchdog(double seconds, const std::string& where) {
  disarm_watchdog();
  if (!active() || !(seconds > 0)) return;
  Watchdog& w = watchdog();
  {
    std::lock_guard<std::mutex> lk(w.m);
    w.armed = true;
    w.last = std::chrono::steady_clock::now();
  }
  w.thread = std::thread([seconds, where, r = rank(), n = size()] {
    Watchdog& w = watchdog();
    const auto limit = std::chrono::duration<double>(seconds);
    std::unique_lock<std::mutex> lk(w.m);
    while (w.armed) {
      if (std::chrono::steady_clock::now() - w.last > limit) {
        std::fprintf(stderr,
                     "timbre: rank %d of %d: no progress in %g s %s (another rank hung or died, "
                     "or the step is slower than --rank-timeout); ending the job\n",
                     r, n, seconds, where.c_str());
        std::fflush(stderr);
        std::_Exit(1);  // the launcher ends the other ranks
      }
      w.cv.wait_for(lk, std::chrono::milliseconds(200));
    }
  });
}

void heartbeat() {
  Watchdog& w = watchdog();
  std::lock_guard<std::mutex> lk(w.m);
  w.last = std::chrono::steady_clock::now();
}

void disarm_watchdog() {
  Watchdog& w = watchdog();
  {
    std::lock_guard<std::mutex> lk(w.m);
    w.armed = false;
  }
  w.cv.notify_all();
  if (w.thread.joinable()) w.thread.join();
}

int rank() { return state().launch.rank; }
int size() { return state().launch.size; }
bool active() { return state().comm != nullptr; }
bool is_root() { return state().launch.rank == 0; }
ncclComm_t comm() { return state().comm; }

cudaStream_t comm_stream() { return state().comm_stream; }

kernels::BatchNormSync batchnorm_sync() {
  const State& s = state();
  return {s.comm, size(), s.comm_stream, s.fork, s.join};
}

namespace {
// comm_stream() waits for the work queued on stream() so far...
void fork() {
  CUDA_CHECK(cudaEventRecord(state().fork, stream()));
  CUDA_CHECK(cudaStreamWaitEvent(state().comm_stream, state().fork, 0));
}
// ...and stream() for the collectives queued on comm_stream() so far.
void join() {
  CUDA_CHECK(cudaEventRecord(state().join, state().comm_stream));
  CUDA_CHECK(cudaStreamWaitEvent(stream(), state().join, 0));
}
}  // namespace

void broadcast(float* d, size_t n, int root) {
  if (!active() || n == 0) return;
  fork();
  nccl_check(ncclBroadcast(d, d, n, ncclFloat32, root, state().comm, comm_stream()), "broadcast");
  join();
}

GradientBuckets::GradientBuckets(const Adam& adam, size_t bucket_bytes) {
  if (!adam.is_flat())
    throw std::logic_error("GradientBuckets: data-parallel training needs Adam's flat f32 "
                           "gradient buffer");
  grads_ = static_cast<float*>(adam.flat_gradients().raw());
  const std::vector<Variable>& params = adam.parameters();
  // Last parameter first: a bucket takes parameters down to the one that
  // brings it to `cap` elements (one bucket for all when bucket_bytes is 0).
  const int64_t cap = bucket_bytes == 0 ? INT64_MAX
                                        : std::max<int64_t>(1, int64_t(bucket_bytes / sizeof(float)));
  for (size_t i = params.size(); i-- > 0;) {
    const bool open = !buckets_.empty() && buckets_.back().end - buckets_.back().begin < cap;
    if (!open) buckets_.push_back({adam.flat_offset(i + 1), adam.flat_offset(i + 1)});
    Bucket& b = buckets_.back();
    b.begin = adam.flat_offset(i);
    ++b.params;
    bucket_of_[params[i].id()] = buckets_.size() - 1;
  }
}

void GradientBuckets::begin() {
  for (Bucket& b : buckets_) {
    b.waiting = b.params;
    b.reduced = false;
  }
}

void GradientBuckets::reduce(Bucket& b) {
  b.reduced = true;
  if (!active()) return;
  fork();
  nccl_check(ncclAllReduce(grads_ + b.begin, grads_ + b.begin, size_t(b.end - b.begin),
                           ncclFloat32, ncclAvg, state().comm, comm_stream()),
             "gradient all-reduce");
}

void GradientBuckets::ready(const Variable& leaf) {
  const auto it = bucket_of_.find(leaf.id());
  if (it == bucket_of_.end()) return;
  Bucket& b = buckets_[it->second];
  if (--b.waiting == 0 && !b.reduced) reduce(b);
}

void GradientBuckets::finish() {
  for (Bucket& b : buckets_)
    if (!b.reduced) reduce(b);
  if (active()) join();
}

void host_sum(double* v, int n) {
  if (!state().mpi || n == 0) return;
  // Reduced in rank order at rank 0, then broadcast: the same bits everywhere.
  if (rank() == 0)
    MPI_Reduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
  else
    MPI_Reduce(v, nullptr, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
  MPI_Bcast(v, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
}

int host_max(int v) {
  if (!state().mpi) return v;
  int out = v;
  MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

int fail(const std::string& what, int code) {
  State& s = state();
  if (!s.mpi) {
    std::fprintf(stderr, "timbre: %s\n", what.c_str());
    return code;
  }
  std::fprintf(stderr, "timbre: rank %d of %d: %s\n", s.launch.rank, s.launch.size, what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; should it, the rank still ends
}

void finish() {
  disarm_watchdog();
  State& s = state();
  if (s.comm) {
    CUDA_CHECK_LOG(cudaStreamSynchronize(stream()));
    CUDA_CHECK_LOG(cudaStreamSynchronize(s.comm_stream));
    ncclCommDestroy(s.comm);
    s.comm = nullptr;
    CUDA_CHECK_LOG(cudaStreamDestroy(s.comm_stream));
    CUDA_CHECK_LOG(cudaEventDestroy(s.fork));
    CUDA_CHECK_LOG(cudaEventDestroy(s.join));
    s.comm_stream = nullptr;
  }
  if (s.mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
    s.mpi = false;
  }
}

}  // namespace timbre::dist
