// simcuda.h: the CUDA kernel language for g++.
//
// timbre's .cu files are compiled twice: by nvcc for GPUs and by g++ for the
// CPU. Under g++ this header supplies what nvcc would: the built-in variables
// (threadIdx, blockIdx, blockDim, gridDim), __syncthreads and friends, warp
// shuffles and votes, atomics, shared memory, device math intrinsics, and
// simcuda::launch, which runs a kernel on simcuda's executor
// (kernels/sim/executor.cpp).
//
// How a launch runs on the CPU:
//   * blocks are spread over worker threads, one block per worker at a time;
//   * the threads of a block are fibers (Boost.Context) on that worker, so a
//     barrier is a switch back to the block's scheduler, which resumes the
//     fibers in the configured thread order once every thread has arrived;
//   * "static __shared__" variables are thread_local: one block per worker
//     at a time makes thread_local mean "per block";
//   * fast path: thread 0 runs first; if it finishes without any barrier or
//     warp operation, the other threads run as a plain loop with the kernel
//     body inlined (simcuda::launch takes the kernel as a template argument).
//
// Under nvcc (__CUDACC__) only simcuda::launch and simcuda::dynamic_shared
// are defined here, as thin wrappers over <<<>>> and extern __shared__.
// Kernels must not use __CUDA_ARCH__ branches, inline PTX, CUB block/warp
// primitives, cooperative groups or wmma: simcuda cannot run them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/sim/launch_hook.h"

#if defined(__CUDACC__)
// =============================== nvcc ======================================
#include <cuda_runtime.h>

namespace simcuda {

// launch<kernel>(grid, block, dynamic_smem_bytes, stream, args...)
// is kernel<<<grid, block, smem, stream>>>(args...); returns the launch error.
template <auto Kernel, class... Args>
inline cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  const LaunchShape shape{{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}};
  if (launch_hook) launch_hook(__PRETTY_FUNCTION__, stream, false, shape);
  Kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  const cudaError_t e = cudaGetLastError();
  if (launch_hook) launch_hook(__PRETTY_FUNCTION__, stream, true, shape);
  return e;
}

// Dynamic shared memory, typed. One idiom for both compilers:
//   float* s = simcuda::dynamic_shared<float>();
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char simcuda_dynamic_smem_[];
  return reinterpret_cast<T*>(simcuda_dynamic_smem_);
}

}  // namespace simcuda

#else
// =============================== g++ =======================================
// Execution-space and memory-space keywords mean nothing to g++: empty.
// (CUDA's host_defines.h keeps a definition made before it is included.)
#undef __host__
#undef __device__
#undef __global__
#undef __constant__
#undef __managed__
#define __host__
#define __device__
#define __global__
#define __constant__
#define __managed__
#include <cuda_runtime.h>  // real types: dim3, uint3, float2, cudaError_t, ...

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>

#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#if defined(SIMCUDA_SHARED_STATIC)
// ASan build (TIMBRE_SANITIZE=address): ASan does not instrument TLS, so
// shared arrays become plain statics it can guard; the executor then runs a
// single worker so that two blocks never share them.
#define __shared__ static
#else
// One block per worker thread at a time, and a block's fibers never leave
// their worker: thread_local is exactly "shared by the block".
#define __shared__ static thread_local
#endif

namespace simcuda {

// Thread orders between barriers (see control.h for how to choose one).
enum class Order { forward, reverse, random };

namespace detail {

enum class Mode : int { fibers, probe, loop };

// The executing simulated thread. Deliberately POD and __thread (not
// thread_local): a thread_local with a constructor would put a TLS-init
// call on every threadIdx access. Member names must not be threadIdx & co.,
// which are macros below.
struct ThreadContext {
  uint3 tid, bid, bdim, gdim;
  unsigned char* dynamic_smem;
  Mode mode;
};
extern __thread ThreadContext tc;

// Synchronisation, implemented in executor.cpp. Each call switches to the
// block's scheduler and returns when the barrier releases this thread.
int block_barrier(int op, int predicate);  // op: 0 plain, 1 count, 2 and, 3 or
// Warp exchange: publishes `value`, waits for every lane in `mask`, and
// returns the warp's 32 published values (valid until this lane's next
// warp operation).
const uint64_t* warp_exchange(unsigned mask, uint64_t value);
unsigned lane_id();
unsigned active_mask();

// Type-erased launch. `run_all` runs the kernel once for the current
// thread; `run_rest` runs threads 1..n-1 of the block as a plain loop.
struct KernelThunks {
  void (*run_one)(void* args);
  void (*run_rest)(void* args, uint3 block_dim, Order order, uint64_t seed);
  const void* key;   // kernel address: identifies the kernel (attributes)
  const char* name;  // for messages
};
cudaError_t launch(const KernelThunks& k, void* args, dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream);
// Whether launches go through queue_launch: under SIMCUDA_STREAMS=adversarial
// (kernels/sim/control.h), or while a stream is being captured
// (cudaStreamBeginCapture). queue_launch keeps `run` queued on a created
// stream or records it into the stream's capture (true), or leaves it to
// the caller to run now (false). runtime.cpp.
bool streams_deferred();
bool queue_launch(cudaStream_t stream, std::function<void()> run);

// Index of the i-th thread in thread order `order` (threads 1..n-1 of the
// fast path); random orders use a per-block permutation.
void loop_order(unsigned n, Order order, uint64_t seed, unsigned* out);

// Calls Kernel (a constant, so g++ can inline its body) with the tuple's
// elements.
template <auto Kernel, class Tuple, size_t... I>
inline void call(Tuple& t, std::index_sequence<I...>) {
  Kernel(std::get<I>(t)...);
}

template <auto Kernel, class Tuple>
void run_one(void* args) {
  call<Kernel>(*static_cast<Tuple*>(args), std::make_index_sequence<std::tuple_size_v<Tuple>>());
}

// Threads 1..n-1 of a block that thread 0 showed to be barrier-free. Nested
// loops, not a divide per thread: this loop is the fast path's whole cost.
template <auto Kernel, class Tuple>
void run_rest(void* args, uint3 bd, Order order, uint64_t seed) {
  Tuple& t = *static_cast<Tuple*>(args);
  constexpr auto seq = std::make_index_sequence<std::tuple_size_v<Tuple>>();
  if (order == Order::forward) {
    for (unsigned z = 0; z < bd.z; ++z)
      for (unsigned y = 0; y < bd.y; ++y)
        for (unsigned x = (y | z) ? 0u : 1u; x < bd.x; ++x) {
          tc.tid = uint3{x, y, z};
          call<Kernel>(t, seq);
        }
  } else if (order == Order::reverse) {
    for (unsigned z = bd.z; z-- > 0;)
      for (unsigned y = bd.y; y-- > 0;)
        for (unsigned x = bd.x; x-- > ((y | z) ? 0u : 1u);) {
          tc.tid = uint3{x, y, z};
          call<Kernel>(t, seq);
        }
  } else {
    const unsigned n = bd.x * bd.y * bd.z;
    unsigned perm[1024];
    loop_order(n, order, seed, perm);
    for (unsigned k = 0; k + 1 < n; ++k) {
      const unsigned i = perm[k];
      tc.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
      call<Kernel>(t, seq);
    }
  }
}

// The kernel's name as the compiler spells it, from __PRETTY_FUNCTION__
// ("... [with auto Kernel = saxpy]"); computed once per kernel.
const char* parse_kernel_name(const char* pretty);
template <auto Kernel>
const char* kernel_name() {
  static const char* name = parse_kernel_name(__PRETTY_FUNCTION__);
  return name;
}

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "warp shuffles move 1..8-byte trivially copyable values");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace detail

// launch<kernel>(grid, block, dynamic_smem_bytes, stream, args...): the g++
// counterpart of kernel<<<grid, block, smem, stream>>>(args...). Arguments
// are converted to the kernel's parameter types once, as CUDA copies them
// into the launch. Returns the launch's error (also kept for
// cudaGetLastError). Runs to completion before it returns.
namespace detail {
template <auto Kernel, class... P, class... Args>
inline cudaError_t launch_as(void (*)(P...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t stream, Args&&... args) {
  using Tuple = std::tuple<std::decay_t<P>...>;
  Tuple params(std::forward<Args>(args)...);
  static const KernelThunks thunks{&run_one<Kernel, Tuple>, &run_rest<Kernel, Tuple>,
                                   reinterpret_cast<const void*>(Kernel),
                                   kernel_name<Kernel>()};
  const LaunchShape shape{{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}};
  if (launch_hook) launch_hook(thunks.name, stream, false, shape);
  cudaError_t e = cudaSuccess;
  if (streams_deferred()) {  // queued (a test mode) or captured: the launch runs later
    auto kept = std::make_shared<Tuple>(std::move(params));
    if (!queue_launch(stream, [kept, grid, block, smem, stream] {
          launch(thunks, kept.get(), grid, block, smem, stream);
        }))
      e = launch(thunks, kept.get(), grid, block, smem, stream);
  } else {
    e = launch(thunks, &params, grid, block, smem, stream);
  }
  if (launch_hook) launch_hook(thunks.name, stream, true, shape);
  return e;
}
}  // namespace detail

template <auto Kernel, class... Args>
inline cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  return detail::launch_as<Kernel>(Kernel, grid, block, smem, stream,
                                   std::forward<Args>(args)...);
}

template <class T>
inline T* dynamic_shared() {
  return reinterpret_cast<T*>(detail::tc.dynamic_smem);
}

}  // namespace simcuda

// nvcc's cuda_runtime.h adds this typed overload for kernels; g++ sees only
// the C function taking const void*.
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// --------------------------- built-in variables -----------------------------
#define threadIdx (::simcuda::detail::tc.tid)
#define blockIdx (::simcuda::detail::tc.bid)
#define blockDim (::simcuda::detail::tc.bdim)
#define gridDim (::simcuda::detail::tc.gdim)
constexpr int warpSize = 32;

// ------------------------------ barriers ------------------------------------
inline void __syncthreads() { ::simcuda::detail::block_barrier(0, 0); }
inline int __syncthreads_count(int p) { return ::simcuda::detail::block_barrier(1, p); }
inline int __syncthreads_and(int p) { return ::simcuda::detail::block_barrier(2, p); }
inline int __syncthreads_or(int p) { return ::simcuda::detail::block_barrier(3, p); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::simcuda::detail::warp_exchange(mask, 0);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// --------------------------- warp shuffles ----------------------------------
// Lane arithmetic follows the CUDA programming guide: `width` (a power of two
// <= 32) splits the warp into segments of `width` lanes. idx wraps the source
// lane into the caller's segment; up and down leave the caller's own value
// when the source falls outside its segment; xor may reach earlier segments
// but returns the caller's own value for a source in a later one.
namespace simcuda::detail {
template <class T, class Src>
inline T shuffle(unsigned mask, T v, Src source_lane) {
  const uint64_t* slots = warp_exchange(mask, to_bits(v));
  const int src = source_lane(lane_id());
  return src < 0 ? v : from_bits<T>(slots[src]);
}
}  // namespace simcuda::detail

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  return ::simcuda::detail::shuffle(mask, v, [&](unsigned lane) {
    return int((lane & ~unsigned(width - 1)) + (unsigned(src_lane) & unsigned(width - 1)));
  });
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::simcuda::detail::shuffle(mask, v, [&](unsigned lane) {
    const unsigned segment = lane & ~unsigned(width - 1);
    return int(lane) - int(delta) < int(segment) ? -1 : int(lane - delta);
  });
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::simcuda::detail::shuffle(mask, v, [&](unsigned lane) {
    const unsigned segment = lane & ~unsigned(width - 1);
    return lane + delta >= segment + unsigned(width) ? -1 : int(lane + delta);
  });
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  return ::simcuda::detail::shuffle(mask, v, [&](unsigned lane) {
    const unsigned j = lane ^ unsigned(lane_mask);
    const unsigned segment = lane & ~unsigned(width - 1);
    return j >= segment + unsigned(width) ? -1 : int(j);
  });
}

// ------------------------------- votes --------------------------------------
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* slots = ::simcuda::detail::warp_exchange(mask, predicate != 0);
  unsigned r = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && slots[l]) r |= 1u << l;
  return r;
}
inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) {
  // Lanes of `mask` that exist: a partial last warp has fewer than 32.
  return (__ballot_sync(mask, p) | ~(mask & ::simcuda::detail::active_mask())) == ~0u;
}
inline unsigned __activemask() { return ::simcuda::detail::active_mask(); }

// ------------------------------ atomics -------------------------------------
// Blocks run concurrently on OS threads, so these are real atomics. Relaxed
// order, like CUDA's; __threadfence supplies the fences.
#define SIMCUDA_INT_ATOMICS(T)                                                        \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); } \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); } \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); } \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }   \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); } \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); } \
  inline T atomicCAS(T* a, T expected, T v) {                                          \
    __atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return expected;                                                                   \
  }                                                                                    \
  inline T atomicMax(T* a, T v) {                                                      \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                      \
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, \
                                                   __ATOMIC_RELAXED)) {}               \
    return old;                                                                        \
  }                                                                                    \
  inline T atomicMin(T* a, T v) {                                                      \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                      \
    while (v < old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, \
                                                   __ATOMIC_RELAXED)) {}               \
    return old;                                                                        \
  }
SIMCUDA_INT_ATOMICS(int)
SIMCUDA_INT_ATOMICS(unsigned)
SIMCUDA_INT_ATOMICS(unsigned long long)
SIMCUDA_INT_ATOMICS(long long)
#undef SIMCUDA_INT_ATOMICS

namespace simcuda::detail {
// Floating-point read-modify-write through a compare-and-swap on the bits.
template <class F, class U, class Op>
inline F float_rmw(F* a, Op op) {
  U* p = reinterpret_cast<U*>(a);
  U old = __atomic_load_n(p, __ATOMIC_RELAXED), next;
  do {
    next = to_bits(op(from_bits<F>(old)));
  } while (!__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED));
  return from_bits<F>(old);
}
}  // namespace simcuda::detail
inline float atomicAdd(float* a, float v) {
  return ::simcuda::detail::float_rmw<float, uint32_t>(a, [v](float x) { return x + v; });
}
inline double atomicAdd(double* a, double v) {
  return ::simcuda::detail::float_rmw<double, uint64_t>(a, [v](double x) { return x + v; });
}
inline float atomicExch(float* a, float v) {
  return ::simcuda::detail::from_bits<float>(
      __atomic_exchange_n(reinterpret_cast<uint32_t*>(a), uint32_t(::simcuda::detail::to_bits(v)),
                          __ATOMIC_RELAXED));
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {  // ((old >= limit) ? 0 : old + 1)
  unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &old, old >= limit ? 0u : old + 1u, true,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  return old;
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {  // ((old == 0 || old > limit) ? limit : old - 1)
  unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &old, (old == 0u || old > limit) ? limit : old - 1u,
                                      true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  return old;
}

// --------------------------- device math ------------------------------------
// nvcc provides these for device code. The fast-math intrinsics (__expf ...)
// are approximations on a GPU; here they are the exact libm functions, so a
// test tolerance must cover the GPU's approximation error, not simcuda's.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline void sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline void sincos(double x, double* s, double* c) { *s = sin(x); *c = cos(x); }
inline void sincospif(float x, float* s, float* c) {
  *s = sinf(float(M_PI) * x);
  *c = cosf(float(M_PI) * x);
}
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(floorf(x)); }
inline int __float2int_ru(float x) { return int(ceilf(x)); }
inline int __float_as_int(float x) { return ::simcuda::detail::from_bits<int>(::simcuda::detail::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return ::simcuda::detail::from_bits<unsigned>(::simcuda::detail::to_bits(x)); }
inline float __int_as_float(int x) { return ::simcuda::detail::from_bits<float>(unsigned(x)); }
inline float __uint_as_float(unsigned x) { return ::simcuda::detail::from_bits<float>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
template <class T>
inline T __ldg(const T* p) { return *p; }

#endif  // __CUDACC__
