// simcuda's executor: barriers, warp shuffles and votes, atomics, shared
// memory, launch checks, deadlock reports and thread orders. Each
// correctness test runs under every thread order and with one and two
// workers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <cublas_v2.h>

#include "kernels/common.cuh"
#include "kernels/device_buffer.h"
#include "kernels/sim/control.h"
#include "tests/testing.h"

#if defined(SIMCUDA_SHARED_STATIC)
#define SIMCUDA_ASAN_BUILD 1
#else
#define SIMCUDA_ASAN_BUILD 0
#endif

using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::random_floats;

namespace {

struct Mode {
  simcuda::Order order;
  uint64_t seed;
  int workers;
};
std::string mode_name(const ::testing::TestParamInfo<Mode>& i) {
  const char* o = i.param.order == simcuda::Order::forward   ? "forward"
                  : i.param.order == simcuda::Order::reverse ? "reverse"
                                                             : "random";
  return std::string(o) + "_w" + std::to_string(i.param.workers);
}

class Executor : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    simcuda::Options o = simcuda::options();
    o.order = GetParam().order;
    o.seed = GetParam().seed;
    o.workers = GetParam().workers;
    scope_ = std::make_unique<simcuda::ScopedOptions>(o);
  }
  void TearDown() override { scope_.reset(); }
  std::unique_ptr<simcuda::ScopedOptions> scope_;
};

INSTANTIATE_TEST_SUITE_P(Orders, Executor,
                         ::testing::Values(Mode{simcuda::Order::forward, 1, 1},
                                           Mode{simcuda::Order::reverse, 1, 2},
                                           Mode{simcuda::Order::random, 7, 1},
                                           Mode{simcuda::Order::random, 11, 2}),
                         mode_name);

// ------------------------------- barriers ---------------------------------

// Each block reverses its chunk through static shared memory, twice over a
// 2-D block, so every thread reads what another wrote before the barrier.
__global__ void reverse_2d(const int* in, int* out, int n) {
  __shared__ int s[1024];
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  const int nt = blockDim.x * blockDim.y;
  const int i = blockIdx.x * nt + t;
  s[t] = i < n ? in[i] : -1;
  __syncthreads();
  const int v = s[nt - 1 - t];
  __syncthreads();  // everyone has read before anyone overwrites
  s[t] = v * 2;
  __syncthreads();
  if (i < n) out[i] = s[t];
}

TEST_P(Executor, SyncthreadsOrdersSharedMemory) {
  const dim3 block(7, 5);  // 35 threads: a partial second warp
  const int nt = 35, blocks = 6, n = nt * blocks - 3;
  std::vector<int> in(n);
  std::iota(in.begin(), in.end(), 100);
  DeviceBuffer<int> d_in(in), d_out(n);
  LAUNCH(reverse_2d, blocks, block, 0, nullptr, d_in.get(), d_out.get(), n);
  std::vector<int> want(n);
  for (int i = 0; i < n; ++i) {
    const int b = i / nt, t = i % nt, j = b * nt + (nt - 1 - t);
    want[i] = 2 * (j < n ? in[j] : -1);
  }
  EXPECT_EQ(d_out.to_host(), want);
}

__global__ void barrier_votes(const int* pred, int* out) {
  const int t = threadIdx.x;
  const int p = pred[blockIdx.x * blockDim.x + t];
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  if (t == 0) {
    out[blockIdx.x * 3 + 0] = c;
    out[blockIdx.x * 3 + 1] = a;
    out[blockIdx.x * 3 + 2] = o;
  }
}

TEST_P(Executor, SyncthreadsCountAndOr) {
  const int threads = 70, blocks = 3;
  std::vector<int> pred(threads * blocks, 0);
  for (int t = 0; t < threads; t += 3) pred[t] = 5;      // block 0: some
  for (int t = 0; t < threads; ++t) pred[threads + t] = 1;  // block 1: all
  // block 2: none
  DeviceBuffer<int> d_pred(pred), d_out(9);
  LAUNCH(barrier_votes, blocks, threads, 0, nullptr, d_pred.get(), d_out.get());
  EXPECT_EQ(d_out.to_host(), (std::vector<int>{24, 0, 1, 70, 1, 1, 0, 0, 0}));
}

// -------------------------------- warps -----------------------------------

enum ShuffleKind { kIdx, kUp, kDown, kXor };

__global__ void shuffles(const float* in, float* out, int kind, int arg, int width) {
  const int t = threadIdx.x;
  const float v = in[t];
  float r;
  switch (kind) {
    case kIdx: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case kUp: r = __shfl_up_sync(0xffffffffu, v, unsigned(arg), width); break;
    case kDown: r = __shfl_down_sync(0xffffffffu, v, unsigned(arg), width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[t] = r;
}

// What the CUDA programming guide says each lane receives, or -1 when the
// source lane does not exist (the last warp of the block is partial): the
// result is undefined then, and the test does not look at it.
int shuffle_source(int t, int kind, int arg, int width, int n) {
  const int lane = t % 32, base = t - lane, seg = lane / width * width;
  int src;
  switch (kind) {
    case kIdx: src = seg + (arg % width); break;
    case kUp: src = lane - arg >= seg ? lane - arg : lane; break;
    case kDown: src = lane + arg < seg + width ? lane + arg : lane; break;
    default: src = (lane ^ arg) < seg + width ? lane ^ arg : lane; break;  // earlier segments allowed
  }
  return base + src < n ? base + src : -1;
}

TEST_P(Executor, ShufflesWithWidthsAndPartialWarps) {
  const int n = 56;  // a full warp and one of 24 lanes
  const auto in = random_floats(n, 3);
  DeviceBuffer<float> d_in(in), d_out(n);
  for (int width : {32, 16, 8, 4, 2})
    for (int kind : {kIdx, kUp, kDown, kXor})
      for (int arg : {1, 3, width - 1, 21}) {
        LAUNCH(shuffles, 1, n, 0, nullptr, d_in.get(), d_out.get(), kind, arg, width);
        const auto got = d_out.to_host();
        int checked = 0;
        for (int t = 0; t < n; ++t) {
          const int src = shuffle_source(t, kind, arg, width, n);
          if (src < 0) continue;
          EXPECT_EQ(got[t], in[src]) << "thread " << t << " kind " << kind << " arg " << arg
                                     << " width " << width;
          ++checked;
        }
        EXPECT_GE(checked, 32);  // at least the full warp
      }
}

// A block of 45 threads: warp 1 has 13 lanes. Sum within 16-wide segments by
// xor butterflies restricted to existing lanes through the mask.
__global__ void partial_warp_sum(const int* in, int* out) {
  const unsigned t = threadIdx.x, lane = t & 31u;
  const unsigned mask = __activemask();  // lanes that exist in this warp
  int v = in[t];
  const unsigned warp_lanes = __popc(mask);
  for (int off = 1; off < 32; off <<= 1) {
    const int other = __shfl_xor_sync(mask, v, off);
    if ((lane ^ unsigned(off)) < warp_lanes) v += other;  // missing partner: keep own
  }
  out[t] = v;
}

TEST_P(Executor, PartialWarpMasks) {
  const int n = 45;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[i] = i * i % 17 + 1;
  DeviceBuffer<int> d_in(in), d_out(n);
  LAUNCH(partial_warp_sum, 1, n, 0, nullptr, d_in.get(), d_out.get());
  const auto got = d_out.to_host();
  // Warp 0 is full: every lane holds the warp's total.
  const int total0 = std::accumulate(in.begin(), in.begin() + 32, 0);
  for (int t = 0; t < 32; ++t) EXPECT_EQ(got[t], total0) << t;
  // Warp 1 (13 lanes): simulate the same butterfly on the host.
  std::vector<int> v(in.begin() + 32, in.end());
  for (int off = 1; off < 32; off <<= 1) {
    std::vector<int> next = v;
    for (int l = 0; l < 13; ++l)
      if ((l ^ off) < 13) next[l] = v[l] + v[l ^ off];
    v = next;
  }
  for (int l = 0; l < 13; ++l) EXPECT_EQ(got[32 + l], v[l]) << l;
}

__global__ void votes(const int* pred, unsigned* out) {
  const int t = threadIdx.x;
  const int p = pred[t];
  const unsigned even = 0x55555555u;
  const unsigned b = __ballot_sync(0xffffffffu, p);
  const int any = __any_sync(0xffffffffu, p);
  const int all = __all_sync(0xffffffffu, p);
  unsigned be = 0;
  if ((t & 1) == 0) be = __ballot_sync(even, p);  // only even lanes take part
  out[t * 4 + 0] = b;
  out[t * 4 + 1] = unsigned(any);
  out[t * 4 + 2] = unsigned(all);
  out[t * 4 + 3] = be;
}

TEST_P(Executor, BallotAnyAll) {
  const int n = 70;  // warps of 32, 32 and 6 lanes
  std::vector<int> pred(n, 0);
  for (int t = 0; t < 32; t += 3) pred[t] = 1;  // warp 0: some
  for (int t = 32; t < 64; ++t) pred[t] = 2;    // warp 1: all
  pred[65] = 1;                                  // warp 2: one of 6
  DeviceBuffer<int> d_pred(pred);
  DeviceBuffer<unsigned> d_out(n * 4);
  LAUNCH(votes, 1, n, 0, nullptr, d_pred.get(), d_out.get());
  const auto got = d_out.to_host();
  for (int t = 0; t < n; ++t) {
    const int w = t / 32, lanes = std::min(32, n - w * 32);
    unsigned ballot = 0, even = 0;
    for (int l = 0; l < lanes; ++l)
      if (pred[w * 32 + l]) {
        ballot |= 1u << l;
        if (l % 2 == 0) even |= 1u << l;
      }
    const unsigned exist = lanes == 32 ? ~0u : (1u << lanes) - 1;
    EXPECT_EQ(got[t * 4 + 0], ballot) << t;
    EXPECT_EQ(got[t * 4 + 1], ballot != 0) << t;
    EXPECT_EQ(got[t * 4 + 2], ballot == exist) << t;
    EXPECT_EQ(got[t * 4 + 3], t % 2 == 0 ? even : 0u) << t;
  }
}

// ------------------------------- atomics ----------------------------------

struct AtomicTotals {
  int hist[8];
  unsigned long long ull_sum;
  int max_v, min_v;
  unsigned exch_count;
  float f_sum;
  double d_sum;
  int cas_counter;
};

__global__ void atomics(const int* keys, int n, AtomicTotals* tot) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int k = keys[i];
  atomicAdd(&tot->hist[k & 7], 1);
  atomicAdd(&tot->ull_sum, (unsigned long long)k);
  atomicMax(&tot->max_v, k);
  atomicMin(&tot->min_v, k);
  if (atomicExch(&tot->exch_count, 1u) == 0u) atomicAdd(&tot->hist[0], 1000);  // exactly once
  atomicAdd(&tot->f_sum, 0.5f);  // exact in float up to 2^24 halves
  atomicAdd(&tot->d_sum, double(k));
  int old = atomicAdd(&tot->cas_counter, 0), seen;
  while ((seen = atomicCAS(&tot->cas_counter, old, old + 2)) != old) old = seen;
}

TEST_P(Executor, AtomicsAcrossBlocksAndWorkers) {
  const int n = 20011;
  const auto keys = timbre::testing::random_ints(n, 5, -3000, 3000);
  DeviceBuffer<int> d_keys(keys);
  DeviceBuffer<AtomicTotals> d_tot(1);
  AtomicTotals init{};
  init.max_v = -(1 << 30);
  init.min_v = 1 << 30;
  d_tot.copy_from_host(&init, 1);
  LAUNCH(atomics, timbre::ceil_div(n, 128), 128, 0, nullptr, d_keys.get(), n, d_tot.get());
  AtomicTotals got;
  d_tot.copy_to_host(&got, 1);
  int hist[8] = {};
  unsigned long long ull = 0;
  double dsum = 0;
  for (int k : keys) {
    ++hist[k & 7];
    ull += (unsigned long long)k;
    dsum += k;
  }
  hist[0] += 1000;
  for (int b = 0; b < 8; ++b) EXPECT_EQ(got.hist[b], hist[b]) << b;
  EXPECT_EQ(got.ull_sum, ull);
  EXPECT_EQ(got.max_v, *std::max_element(keys.begin(), keys.end()));
  EXPECT_EQ(got.min_v, *std::min_element(keys.begin(), keys.end()));
  EXPECT_EQ(got.f_sum, 0.5f * n);
  EXPECT_EQ(got.d_sum, dsum);  // integers: exact in double in any order
  EXPECT_EQ(got.cas_counter, 2 * n);
}

// ---------------------------- shared memory -------------------------------

__global__ void dyn_reverse(const float* in, float* out, int n) {
  float* s = simcuda::dynamic_shared<float>();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  s[threadIdx.x] = i < n ? in[i] : 0.f;
  __syncthreads();
  const int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - threadIdx.x);
  if (j < n) out[j] = s[threadIdx.x];
}

TEST_P(Executor, DynamicSharedMemory) {
  const int threads = 96, blocks = 5, n = threads * blocks;
  const auto in = random_floats(n, 9);
  DeviceBuffer<float> d_in(in), d_out(n);
  LAUNCH(dyn_reverse, blocks, threads, threads * sizeof(float), nullptr, d_in.get(), d_out.get(), n);
  std::vector<float> want(n);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) want[b * threads + threads - 1 - t] = in[b * threads + t];
  EXPECT_EQ(d_out.to_host(), want);
}

__global__ void read_unwritten_smem(float* out) {
  float* s = simcuda::dynamic_shared<float>();
  if (threadIdx.x < 16) s[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

TEST(ExecutorPoison, UnwrittenDynamicSharedMemoryReadsNaN) {
  DeviceBuffer<float> d_out(32);
  LAUNCH(read_unwritten_smem, 1, 32, 32 * sizeof(float), nullptr, d_out.get());
  const auto got = d_out.to_host();
  for (int t = 0; t < 16; ++t) EXPECT_EQ(got[t], 1.f);
  for (int t = 16; t < 32; ++t) EXPECT_TRUE(std::isnan(got[t])) << t;
}

// --------------------------- launch checks --------------------------------

__global__ void noop(int* p) {
  if (p && threadIdx.x == 0) p[0] = 1;
}

TEST(ExecutorLimits, BadConfigurationsFailLikeADevice) {
  int* none = nullptr;
  EXPECT_EQ((simcuda::launch<noop>(1, 1025, 0, nullptr, none)), cudaErrorInvalidConfiguration);
  EXPECT_EQ((simcuda::launch<noop>(1, dim3(1, 1, 65), 0, nullptr, none)),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ((simcuda::launch<noop>(1, dim3(64, 32), 0, nullptr, none)),
            cudaErrorInvalidConfiguration);  // 2048 threads
  EXPECT_EQ((simcuda::launch<noop>(dim3(1, 65536), 1, 0, nullptr, none)),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ((simcuda::launch<noop>(0, 1, 0, nullptr, none)), cudaErrorInvalidConfiguration);
  EXPECT_EQ((simcuda::launch<noop>(1, 1024, 0, nullptr, none)), cudaSuccess);
  // Like kernel<<<>>> followed by cudaGetLastError: nothing left behind.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // The checked launch names the kernel and the problem.
  try {
    LAUNCH(noop, 1, 2000, 0, nullptr, none);
    FAIL() << "no exception";
  } catch (const timbre::CudaError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cudaErrorInvalidConfiguration"), std::string::npos) << m;
    EXPECT_NE(m.find("noop'"), std::string::npos) << m;
    EXPECT_NE(m.find("(2000,1,1)"), std::string::npos) << m;
  }
}

__global__ void smem_user(float* out) {
  float* s = simcuda::dynamic_shared<float>();
  s[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

TEST(ExecutorLimits, DynamicSharedMemoryNeedsOptInAbove48K) {
  DeviceBuffer<float> d_out(32);
  const size_t big = 64 * 1024;
  EXPECT_EQ((simcuda::launch<smem_user>(1, 32, big, nullptr, d_out.get())), cudaErrorInvalidValue);
  EXPECT_NE(simcuda::error_detail(cudaErrorInvalidValue).find("cudaFuncSetAttribute"),
            std::string::npos);
  ASSERT_EQ(cudaFuncSetAttribute(smem_user, cudaFuncAttributeMaxDynamicSharedMemorySize, int(big)),
            cudaSuccess);
  EXPECT_EQ((simcuda::launch<smem_user>(1, 32, big, nullptr, d_out.get())), cudaSuccess);
  EXPECT_EQ(d_out.to_host()[0], 31.f);
  EXPECT_EQ(cudaFuncSetAttribute(smem_user, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 300 * 1024),
            cudaErrorInvalidValue);
  cudaGetLastError();
}

// ------------------------- deadlock and misuse ----------------------------
// Each of these must be reported, with the kernel and block, and never hang.

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x >= 40) return;  // threads 40..63 never arrive
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void mixed_barriers(int* out) {
  if (threadIdx.x < 32)
    __syncwarp();  // warp 0 ...
  __syncthreads();  // ... all wait here, but warp 0 is fine. Now a real knot:
  if (threadIdx.x == 0) {
    __shfl_sync(0x3u, 1, 1);  // lane 0 waits for lane 1 ...
  } else {
    __syncthreads();          // ... which waits for the block
  }
  out[threadIdx.x] = 1;
}
__global__ void shuffle_with_exited_lane(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 0);
}
__global__ void sync_only_in_warp1(int* out) {
  // Thread 0 never synchronises, so the block starts on the fast path.
  if (threadIdx.x >= 32) __syncwarp();
  out[threadIdx.x] = 1;
}

std::string failure(cudaError_t e) {
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  return simcuda::error_detail(cudaErrorLaunchFailure);
}

TEST(ExecutorMisuse, DivergentSyncthreadsIsReported) {
  DeviceBuffer<int> d(64);
  const std::string m = failure(simcuda::launch<divergent_barrier>(2, 64, 0, nullptr, d.get()));
  EXPECT_NE(m.find("divergent_barrier'"), std::string::npos) << m;
  EXPECT_NE(m.find("block (0,0,0)"), std::string::npos) << m;
  EXPECT_NE(m.find("reached by 40 of 64"), std::string::npos) << m;
}

TEST(ExecutorMisuse, ThreadsAtDifferentBarriersAreADeadlock) {
  DeviceBuffer<int> d(64);
  const std::string m = failure(simcuda::launch<mixed_barriers>(1, 64, 0, nullptr, d.get()));
  EXPECT_NE(m.find("deadlock"), std::string::npos) << m;
  EXPECT_NE(m.find("at __syncthreads()"), std::string::npos) << m;
  EXPECT_NE(m.find("at a warp operation"), std::string::npos) << m;
}

TEST(ExecutorMisuse, WarpOperationWaitingOnExitedLane) {
  DeviceBuffer<int> d(32);
  const std::string m = failure(simcuda::launch<shuffle_with_exited_lane>(1, 32, 0, nullptr, d.get()));
  EXPECT_NE(m.find("waits for lane 5"), std::string::npos) << m;
  EXPECT_NE(m.find("has exited"), std::string::npos) << m;
}

TEST(ExecutorMisuse, SyncOutsideThreadZerosPathIsCaughtOnTheFastPath) {
  DeviceBuffer<int> d(64);
  const std::string m = failure(simcuda::launch<sync_only_in_warp1>(1, 64, 0, nullptr, d.get()));
  EXPECT_NE(m.find("SIMCUDA_FASTPATH=0"), std::string::npos) << m;
  // Later launches of the kernel run every thread on a fiber: the warp
  // barrier among warp 1's lanes then simply works.
  EXPECT_EQ((simcuda::launch<sync_only_in_warp1>(1, 64, 0, nullptr, d.get())), cudaSuccess);
  EXPECT_EQ(d.to_host(), std::vector<int>(64, 1));
}

TEST(ExecutorMisuse, ExecutorRecoversAfterAFailure) {
  DeviceBuffer<int> d(64);
  failure(simcuda::launch<divergent_barrier>(3, 64, 0, nullptr, d.get()));
  DeviceBuffer<float> in(random_floats(96 * 4, 1)), out(96 * 4);
  LAUNCH(dyn_reverse, 4, 96, 96 * sizeof(float), nullptr, in.get(), out.get(), 96 * 4);
  EXPECT_EQ(out.to_host()[95], in.to_host()[0]);
}

// ---------------------------- thread orders -------------------------------

// Records the order in which the threads of a block pass a point after a
// barrier (a ticket from an atomic counter).
__global__ void ticket(int* counter, int* order) {
  __syncthreads();
  order[threadIdx.x] = atomicAdd(counter, 1);
}
// Same without the barrier: the fast path's loop order.
__global__ void ticket_fast(int* counter, int* order) {
  order[threadIdx.x] = atomicAdd(counter, 1);
}

std::vector<int> tickets(simcuda::Order order, uint64_t seed, bool barrier) {
  simcuda::Options o = simcuda::options();
  o.order = order;
  o.seed = seed;
  simcuda::ScopedOptions scope(o);
  DeviceBuffer<int> counter(1), out(48);
  counter.fill_zero();
  if (barrier)
    LAUNCH(ticket, 1, 48, 0, nullptr, counter.get(), out.get());
  else
    LAUNCH(ticket_fast, 1, 48, 0, nullptr, counter.get(), out.get());
  return out.to_host();
}

TEST(ExecutorOrder, OrdersAreWhatTheySay) {
  for (bool barrier : {true, false}) {
    const auto fwd = tickets(simcuda::Order::forward, 1, barrier);
    const auto rev = tickets(simcuda::Order::reverse, 1, barrier);
    const auto r1 = tickets(simcuda::Order::random, 1, barrier);
    const auto r1b = tickets(simcuda::Order::random, 1, barrier);
    const auto r2 = tickets(simcuda::Order::random, 2, barrier);
    std::vector<int> ascending(48);
    std::iota(ascending.begin(), ascending.end(), 0);
    EXPECT_EQ(fwd, ascending);
    if (barrier) {
      EXPECT_EQ(rev, std::vector<int>(ascending.rbegin(), ascending.rend()));
    } else {  // thread 0 always probes first on the fast path
      EXPECT_EQ(rev[0], 0);
      EXPECT_EQ(rev[47], 1);
    }
    EXPECT_EQ(r1, r1b) << "a seed must reproduce its order";
    EXPECT_NE(r1, r2) << "different seeds should give different orders";
    EXPECT_NE(r1, fwd);
    EXPECT_TRUE(std::is_permutation(r1.begin(), r1.end(), ascending.begin()));
  }
}

// A reduction whose __syncthreads between the warp sums and warp 0's final
// sum is missing. On a GPU it usually works; simcuda's forward and random
// orders run warp 0 past the missing barrier before the other warps have
// written, and the result comes out wrong.
__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <bool WithBarrier>
__global__ void block_sum(const float* x, float* out) {
  __shared__ float part[32];
  const unsigned t = threadIdx.x, lane = t & 31u, w = t >> 5;
  float v = warp_sum(x[blockIdx.x * blockDim.x + t]);
  if (lane == 0) part[w] = v;
  if (WithBarrier) __syncthreads();
  if (w == 0) {
    v = warp_sum(lane < blockDim.x / 32 ? part[lane] : 0.f);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

std::vector<float> run_block_sum(bool with_barrier, simcuda::Order order, uint64_t seed,
                                 const std::vector<float>& x, int blocks) {
  simcuda::Options o = simcuda::options();
  o.order = order;
  o.seed = seed;
  simcuda::ScopedOptions scope(o);
  DeviceBuffer<float> d_x(x), d_out(blocks);
  if (with_barrier)
    LAUNCH(block_sum<true>, blocks, 256, 0, nullptr, d_x.get(), d_out.get());
  else
    LAUNCH(block_sum<false>, blocks, 256, 0, nullptr, d_x.get(), d_out.get());
  return d_out.to_host();
}

TEST(ExecutorOrder, MissingBarrierIsExposed) {
  const int blocks = 4;
  const auto x = random_floats(256 * blocks, 21, 0.5f, 1.5f);
  std::vector<float> want(blocks);
  for (int b = 0; b < blocks; ++b)
    for (int i = 0; i < 256; ++i) want[b] += x[b * 256 + i];
  // Summation order differs from the host loop: 1e-5 relative covers 256
  // float additions.
  const timbre::testing::Tolerance tol{1e-4, 1e-5};
  for (auto [order, seed] : {std::pair{simcuda::Order::forward, 1ull},
                             {simcuda::Order::reverse, 1ull}, {simcuda::Order::random, 3ull}}) {
    EXPECT_TRUE(all_close(run_block_sum(true, order, seed, x, blocks), want, tol))
        << simcuda::describe(order, seed);
  }
  EXPECT_FALSE(all_close(run_block_sum(false, simcuda::Order::forward, 1, x, blocks), want, tol))
      << "forward order must expose the missing __syncthreads";
  EXPECT_FALSE(all_close(run_block_sum(false, simcuda::Order::random, 3, x, blocks), want, tol))
      << "random order must expose the missing __syncthreads";
}

// --------------------------- workers and fast path ------------------------

__global__ void saxpy(int n, float a, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

TEST(ExecutorFastPath, SameResultWithAndWithoutFastPathAndWorkers) {
  const int n = 100003;
  const auto x = random_floats(n, 1), y0 = random_floats(n, 2);
  std::vector<float> want(n);
  for (int i = 0; i < n; ++i) want[i] = 2.5f * x[i] + y0[i];
  for (bool fast : {true, false})
    for (int workers : {1, 2, 3}) {
      simcuda::Options o = simcuda::options();
      o.fast_path = fast;
      o.workers = workers;
      simcuda::ScopedOptions scope(o);
      // The ASan build runs one worker (static __shared__ is one copy there).
      EXPECT_EQ(simcuda::worker_count(), SIMCUDA_ASAN_BUILD ? 1 : workers);
      DeviceBuffer<float> d_x(x), d_y(y0);
      LAUNCH(saxpy, timbre::ceil_div(n, 256), 256, 0, nullptr, n, 2.5f, d_x.get(), d_y.get());
      EXPECT_EQ(d_y.to_host(), want) << "fast " << fast << " workers " << workers;
    }
}

TEST(ExecutorFibers, NewStackSizeRetiresAndRecreatesFibers) {
  const auto in = random_floats(96, 4);
  for (size_t stack : {size_t(0), size_t(128 * 1024), size_t(0)}) {
    simcuda::Options o = simcuda::options();
    o.stack_bytes = stack;
    simcuda::ScopedOptions scope(o);
    DeviceBuffer<float> d_in(in), d_out(96);
    LAUNCH(dyn_reverse, 1, 96, 96 * sizeof(float), nullptr, d_in.get(), d_out.get(), 96);
    EXPECT_EQ(d_out.to_host()[0], in[95]) << "stack " << stack;
  }
}

// Every (block, thread) runs exactly once, 3-D grids and blocks included.
__global__ void coverage(int* hits) {
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
  atomicAdd(&hits[b * nt + t], 1);
}

TEST_P(Executor, EveryThreadRunsOnce) {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int total = 12 * 30;
  DeviceBuffer<int> hits(total);
  hits.fill_zero();
  LAUNCH(coverage, grid, block, 0, nullptr, hits.get());
  EXPECT_EQ(hits.to_host(), std::vector<int>(total, 1));
}

// ------------------------------ stream order --------------------------------

__global__ void double_into(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 2 * in[i];
}

// SIMCUDA_STREAMS=adversarial (control.h): an upload on a non-blocking copy
// stream is read by a kernel on the legacy stream, as the trainer's batches
// are (tools/train_step.h). With cudaStreamWaitEvent the kernel reads the
// upload; without it, the kernel runs first and reads the old contents
// (stale data, not a crash). In order, simcuda cannot tell the two apart,
// which is why the mode exists: CI runs the engine, models and tools suites
// under it.
TEST(AdversarialStreams, AMissingEventWaitReadsStaleData) {
  const int n = 1000;
  cudaStream_t copy;
  cudaEvent_t copied;
  ASSERT_EQ(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming), cudaSuccess);
  float* host = nullptr;
  ASSERT_EQ(cudaMallocHost(&host, n * sizeof(float)), cudaSuccess);
  DeviceBuffer<float> in{size_t(n)}, out{size_t(n)};
  // The kernel's output at element 10: 2 for the old contents (1s), 21 for
  // the upload (i + 0.5).
  auto run = [&](simcuda::StreamOrder order, bool wait) {
    simcuda::set_stream_order(order);
    in.copy_from_host(std::vector<float>(size_t(n), 1.f));
    for (int i = 0; i < n; ++i) host[i] = float(i) + 0.5f;
    EXPECT_EQ(cudaMemcpyAsync(in.get(), host, n * sizeof(float), cudaMemcpyHostToDevice, copy),
              cudaSuccess);
    EXPECT_EQ(cudaEventRecord(copied, copy), cudaSuccess);
    if (order == simcuda::StreamOrder::adversarial) {
      EXPECT_EQ(cudaEventQuery(copied), cudaErrorNotReady);
    }
    if (wait) {
      EXPECT_EQ(cudaStreamWaitEvent(nullptr, copied, 0), cudaSuccess);
    }
    LAUNCH(double_into, (n + 255) / 256, 256, 0, nullptr, in.get(), out.get(), n);
    const float got = out.to_host()[10];
    EXPECT_EQ(cudaStreamSynchronize(copy), cudaSuccess);
    EXPECT_EQ(cudaEventQuery(copied), cudaSuccess);
    simcuda::set_stream_order(simcuda::StreamOrder::in_order);
    return got;
  };
  EXPECT_EQ(run(simcuda::StreamOrder::adversarial, true), 21.f);
  EXPECT_EQ(run(simcuda::StreamOrder::adversarial, false), 2.f)
      << "without the wait, the kernel must run before the upload";
  EXPECT_EQ(run(simcuda::StreamOrder::in_order, false), 21.f) << "in order hides the bug";
  // A blocking stream is waited for by the legacy stream without an event.
  cudaStream_t blocking;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  simcuda::set_stream_order(simcuda::StreamOrder::adversarial);
  in.copy_from_host(std::vector<float>(size_t(n), 1.f));
  EXPECT_EQ(cudaMemcpyAsync(in.get(), host, n * sizeof(float), cudaMemcpyHostToDevice, blocking),
            cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(blocking), cudaErrorNotReady);
  LAUNCH(double_into, (n + 255) / 256, 256, 0, nullptr, in.get(), out.get(), n);
  EXPECT_EQ(out.to_host()[10], 21.f);
  simcuda::set_stream_order(simcuda::StreamOrder::in_order);
  EXPECT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(copy), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(copied), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(host), cudaSuccess);
}

// ------------------------------ stream capture ------------------------------

__global__ void scale_add(float* x, float a, float b, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * a + b;
}

// The work of one "step" on stream s: a kernel, a device-to-device copy, a
// memset and a cuBLAS GEMM that reads what the copy wrote (c += y y, the
// first 16 values of y as a 4 x 4 matrix). Every op depends on the one
// before, so a replay out of order would show.
struct StepBuffers {
  static constexpr int n = 1000;
  DeviceBuffer<float> x{size_t(n)}, y{size_t(n)}, c{16};
  StepBuffers() {
    x.copy_from_host(random_floats(size_t(n), 91));
    y.copy_from_host(random_floats(size_t(n), 92));
    c.copy_from_host(random_floats(16, 93));
  }
  void issue(cudaStream_t s, cublasHandle_t h) {
    LAUNCH(scale_add, (n + 255) / 256, 256, 0, s, x.get(), 0.75f, 0.25f, n);
    EXPECT_EQ(cudaMemcpyAsync(y.get(), x.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s),
              cudaSuccess);
    EXPECT_EQ(cudaMemsetAsync(y.get() + 16, 0, (n - 16) * sizeof(float), s), cudaSuccess);
    const float one = 1.f;
    EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, y.get(), 4, y.get(), 4, &one,
                          c.get(), 4),
              CUBLAS_STATUS_SUCCESS);
  }
  std::vector<std::vector<float>> read() { return {x.to_host(), y.to_host(), c.to_host()}; }
};

// A captured step runs nothing when captured, and each replay of its graph
// does what issuing the step again would: three replays give the same bits
// as three eager steps (kernel arguments, copy addresses and the GEMM's
// scalars are the captured ones).
TEST(StreamCapture, RecordsWithoutRunningAndReplaysInOrder) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
  StepBuffers eager, captured;
  for (int i = 0; i < 3; ++i) eager.issue(s, h);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);

  const auto before = captured.read();
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  captured.issue(s, h);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  EXPECT_EQ(captured.read(), before) << "capturing must not run the work";

  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  const auto want = eager.read(), got = captured.read();
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(timbre::testing::same_bits(got[i], want[i])) << "buffer " << i;
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// What CUDA forbids during a capture in global mode fails and invalidates
// it, so that a training step that would wait for the device, allocate or
// use the legacy stream cannot be captured by mistake.
TEST(StreamCapture, UnsafeCallsInvalidateTheCapture) {
  cudaStream_t s, nonblocking;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&nonblocking, cudaStreamNonBlocking), cudaSuccess);
  DeviceBuffer<float> x{256};
  x.fill_zero();
  std::vector<float> host(256);
  cudaGraph_t graph = nullptr;
  // The legacy stream cannot be captured.
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal),
            cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();
  // A blocking read-back.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  LAUNCH(scale_add, 1, 256, 0, s, x.get(), 1.f, 1.f, 256);
  EXPECT_EQ(cudaMemcpy(host.data(), x.get(), 256 * sizeof(float), cudaMemcpyDeviceToHost),
            cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_NE(simcuda::error_detail(cudaErrorStreamCaptureInvalidated).find("cudaMemcpy during the capture"),
            std::string::npos)
      << simcuda::error_detail(cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(x.to_host(), std::vector<float>(256, 0.f)) << "an invalidated capture runs nothing";
  // An allocation: forbidden in global mode, allowed once this thread is in
  // relaxed mode (what a caching allocator does around cudaMalloc).
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  void* p = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(mode, cudaStreamCaptureModeGlobal);
  EXPECT_EQ(cudaMalloc(&p, 1024), cudaSuccess);
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess) << "a relaxed allocation keeps it valid";
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  // Legacy-stream work while a blocking stream is captured; a non-blocking
  // stream does not wait for the legacy stream, so its capture stays valid.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  LAUNCH(scale_add, 1, 256, 0, nullptr, x.get(), 1.f, 1.f, 256);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_NE(simcuda::error_detail(cudaErrorStreamCaptureInvalidated).find("legacy default stream"),
            std::string::npos);
  cudaGetLastError();
  ASSERT_EQ(cudaStreamBeginCapture(nonblocking, cudaStreamCaptureModeGlobal), cudaSuccess);
  LAUNCH(scale_add, 1, 256, 0, nullptr, x.get(), 1.f, 1.f, 256);
  EXPECT_EQ(cudaStreamEndCapture(nonblocking, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(nonblocking), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// Fork and join, as a data-parallel step overlaps its gradient all-reduce
// with the backward pass: the origin stream s records `fork`, a side stream
// waits on it (and so joins the capture), works, records `join`, and s
// waits on that before it reads the side's result. The graph replays what
// the eager streams compute, in order and in both adversarial orders.
struct ForkJoin {
  static constexpr int n = 777;
  cudaStream_t s = nullptr, side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  DeviceBuffer<float> a{size_t(n)}, b{size_t(n)};
  ForkJoin() {
    EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess);
    EXPECT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
    EXPECT_EQ(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), cudaSuccess);
    EXPECT_EQ(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), cudaSuccess);
    reset();
  }
  ~ForkJoin() {
    EXPECT_EQ(cudaStreamDestroy(side), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(fork), cudaSuccess);
    EXPECT_EQ(cudaEventDestroy(join), cudaSuccess);
  }
  void reset() {
    a.copy_from_host(random_floats(size_t(n), 41));
    b.copy_from_host(random_floats(size_t(n), 42));
  }
  // a = 0.5 a + 1 on s; b = 2 a on the side (after the fork, which comes
  // after the first kernel unless fork_early); b = 3 b - 1 on s after the
  // join (unless skip_join).
  void issue(bool fork_early = false, bool skip_join = false) {
    if (fork_early) {
      EXPECT_EQ(cudaEventRecord(fork, s), cudaSuccess);
    }
    LAUNCH(scale_add, (n + 127) / 128, 128, 0, s, a.get(), 0.5f, 1.f, n);
    if (!fork_early) {
      EXPECT_EQ(cudaEventRecord(fork, s), cudaSuccess);
    }
    EXPECT_EQ(cudaStreamWaitEvent(side, fork, 0), cudaSuccess);
    LAUNCH(double_into, (n + 127) / 128, 128, 0, side, a.get(), b.get(), n);
    EXPECT_EQ(cudaEventRecord(join, side), cudaSuccess);
    if (!skip_join) {
      EXPECT_EQ(cudaStreamWaitEvent(s, join, 0), cudaSuccess);
    }
    LAUNCH(scale_add, (n + 127) / 128, 128, 0, s, b.get(), 3.f, -1.f, n);
  }
  cudaGraphExec_t capture(bool fork_early = false) {
    EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    issue(fork_early);
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
    return exec;
  }
  std::vector<float> replay(cudaGraphExec_t exec) {
    reset();
    EXPECT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    return b.to_host();
  }
};

TEST(StreamCapture, AForkedStreamJoinsTheCaptureAndReplaysInEveryOrder) {
  ForkJoin f;
  f.issue();  // eager
  ASSERT_EQ(cudaStreamSynchronize(f.s), cudaSuccess);
  const std::vector<float> want = f.b.to_host();
  f.reset();
  const std::vector<float> before = f.b.to_host();
  cudaGraphExec_t exec = f.capture();
  EXPECT_EQ(f.b.to_host(), before) << "capturing must not run either stream's work";
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(f.side, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone) << "the side stream leaves with the capture";
  EXPECT_TRUE(timbre::testing::same_bits(f.replay(exec), want)) << "in order";
  simcuda::set_stream_order(simcuda::StreamOrder::adversarial);
  for (int i = 0; i < 2; ++i)  // the joined stream as early, then as late, as its waits allow
    EXPECT_TRUE(timbre::testing::same_bits(f.replay(exec), want)) << "adversarial replay " << i;
  simcuda::set_stream_order(simcuda::StreamOrder::in_order);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
}

// A fork recorded before the kernel whose output the side stream reads: in
// issue order the replay still looks right; of the two adversarial replays,
// the one that runs the side stream as early as its waits allow reads the
// old input.
TEST(StreamCapture, AMisplacedForkShowsUnderAdversarialReplay) {
  ForkJoin f;
  f.issue();
  ASSERT_EQ(cudaStreamSynchronize(f.s), cudaSuccess);
  const std::vector<float> want = f.b.to_host();
  cudaGraphExec_t exec = f.capture(/*fork_early=*/true);
  EXPECT_TRUE(timbre::testing::same_bits(f.replay(exec), want)) << "in order hides the bug";
  simcuda::set_stream_order(simcuda::StreamOrder::adversarial);
  int stale = 0;
  for (int i = 0; i < 2; ++i) stale += !timbre::testing::same_bits(f.replay(exec), want);
  EXPECT_EQ(stale, 1) << "one replay must have run the side stream before the kernel it reads";
  simcuda::set_stream_order(simcuda::StreamOrder::in_order);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
}

// What CUDA refuses of forks and joins, simcuda refuses: a side stream not
// joined back, ending the capture on a stream that joined it, and waiting
// on an event from outside the capture.
TEST(StreamCapture, UnjoinedAndCrossCaptureWaitsFail) {
  ForkJoin f;
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(f.s, cudaStreamCaptureModeGlobal), cudaSuccess);
  f.issue(false, /*skip_join=*/true);
  EXPECT_EQ(cudaStreamEndCapture(f.side, &graph), cudaErrorStreamCaptureUnmatched);
  cudaGetLastError();
  EXPECT_EQ(cudaStreamEndCapture(f.s, &graph), cudaErrorStreamCaptureUnjoined);
  EXPECT_NE(simcuda::error_detail(cudaErrorStreamCaptureUnjoined).find("nothing in the capture waits"),
            std::string::npos);
  cudaGetLastError();
  EXPECT_EQ(graph, nullptr);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(f.side, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  // An event recorded outside the capture, waited on inside it.
  ASSERT_EQ(cudaEventRecord(f.join, f.side), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(f.s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(f.s, f.join, 0), cudaErrorStreamCaptureIsolation);
  cudaGetLastError();
  EXPECT_EQ(cudaStreamEndCapture(f.s, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  // Events recorded after the capture are ordinary again.
  ASSERT_EQ(cudaEventRecord(f.fork, f.s), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(f.side, f.fork, 0), cudaSuccess);
  ASSERT_EQ(cudaStreamIsCapturing(f.side, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
}

// Under SIMCUDA_STREAMS=adversarial a graph launched on a created stream
// waits in its queue like any other work, until something waits for it.
TEST(StreamCapture, AGraphLaunchIsQueuedUnderAdversarialStreams) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  DeviceBuffer<float> x{256};
  x.fill_zero();
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  LAUNCH(scale_add, 1, 256, 0, s, x.get(), 1.f, 2.f, 256);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  simcuda::set_stream_order(simcuda::StreamOrder::adversarial);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(s), cudaErrorNotReady);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  simcuda::set_stream_order(simcuda::StreamOrder::in_order);
  EXPECT_EQ(x.to_host(), std::vector<float>(256, 4.f));
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// Launch names for messages and the profiler (kernels/sim/launch_hook.h),
// as g++ and nvcc's front end spell the launch's __PRETTY_FUNCTION__.
TEST(KernelNames, ReadableFromThePrettyFunction) {
  EXPECT_EQ(simcuda::readable_kernel_name("const char* simcuda::detail::kernel_name() [with auto "
                                          "Kernel = saxpy]"),
            "saxpy");
  EXPECT_EQ(simcuda::readable_kernel_name("cudaError_t simcuda::launch(dim3, dim3, size_t, "
                                          "cudaStream_t, Args&& ...) [with auto Kernel = &(void "
                                          "ns::k<16>(int, float*)); Args = {int&, float*&}]"),
            "ns::k<16>");
  EXPECT_EQ(simcuda::readable_kernel_name(
                "[with auto Kernel = timbre::kernels::{anonymous}::adam_kernel<float, "
                "timbre::kernels::AdamForm::keras>]"),
            "timbre::kernels::{anonymous}::adam_kernel<float, timbre::kernels::AdamForm::keras>");
  EXPECT_EQ(simcuda::readable_kernel_name("cublasSgemm"), "cublasSgemm");
}

}  // namespace
