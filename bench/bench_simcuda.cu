// Costs of the execution layer itself: an empty launch, a block barrier per
// thread arrival, a warp shuffle per lane, and an elementwise kernel on the
// barrier-free fast path against a plain C++ loop over the same data.
//
//   ./bench/bench_simcuda 
//
// Under simcuda these are CPU costs (fiber switches, loop overhead); built
// with nvcc they are the GPU's, and the plain loop is still the CPU's.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/common.cuh"
#include "kernels/device_buffer.h"
#if TIMBRE_BACKEND_SIM
#include "kernels/sim/control.h"
#endif

namespace {

using timbre::DeviceBuffer;

__global__ void empty_kernel(float* out) {
  if (out && threadIdx.x == 0 && out[0] == 12345.f) out[1] = 1.f;  // never true
}

__global__ void barrier_loop(int iters, float* out) {
  float v = float(threadIdx.x);
  for (int i = 0; i < iters; ++i) {
    v += 1.f;
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

__global__ void shuffle_loop(int iters, float* out) {
  float v = float(threadIdx.x);
  for (int i = 0; i < iters; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void saxpy(int n, float a, const float* __restrict__ x, float* __restrict__ y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

void sync() { CUDA_CHECK(cudaDeviceSynchronize()); }

void BM_EmptyLaunch(benchmark::State& state) {
  const unsigned blocks = unsigned(state.range(0)), threads = unsigned(state.range(1));
  DeviceBuffer<float> out(2);
  for (auto _ : state) LAUNCH(empty_kernel, blocks, threads, 0, nullptr, out.get());
  sync();
  state.counters["us_per_launch"] =
      benchmark::Counter(double(state.iterations()) * 1e-6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_EmptyLaunch)->Args({1, 32})->Args({64, 256})->UseRealTime();

void BM_Syncthreads(benchmark::State& state) {
  const int threads = int(state.range(0)), iters = 200;
  DeviceBuffer<float> out{size_t(threads)};
  for (auto _ : state) LAUNCH(barrier_loop, 1, threads, 0, nullptr, iters, out.get());
  sync();
  // One "item" is one thread arriving at one barrier.
  state.SetItemsProcessed(state.iterations() * iters * threads);
  state.counters["ns_per_arrival"] = benchmark::Counter(
      double(state.iterations()) * iters * threads * 1e-9,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Syncthreads)->Arg(32)->Arg(256)->Arg(1024)->UseRealTime();

void BM_Shuffle(benchmark::State& state) {
  const int threads = int(state.range(0)), iters = 200;
  DeviceBuffer<float> out{size_t(threads)};
  for (auto _ : state) LAUNCH(shuffle_loop, 1, threads, 0, nullptr, iters, out.get());
  sync();
  state.counters["ns_per_lane_op"] = benchmark::Counter(
      double(state.iterations()) * iters * threads * 1e-9,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Shuffle)->Arg(32)->Arg(1024)->UseRealTime();

// Elementwise: y = a*x + y, 12 bytes moved per element.
void elementwise_counters(benchmark::State& state, int n) {
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * 12);
  state.counters["ns_per_element"] = benchmark::Counter(
      double(state.iterations()) * n * 1e-9,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_SaxpyKernel(benchmark::State& state) {
  const int n = int(state.range(0));
  DeviceBuffer<float> x(std::vector<float>(size_t(n), 1.f)), y(std::vector<float>(size_t(n), 2.f));
  for (auto _ : state) {
    LAUNCH(saxpy, timbre::ceil_div(n, 256), 256, 0, nullptr, n, 1e-3f, x.get(), y.get());
    sync();
  }
  elementwise_counters(state, n);
}
BENCHMARK(BM_SaxpyKernel)->Arg(1 << 16)->Arg(1 << 22)->UseRealTime();

#if TIMBRE_BACKEND_SIM
// One worker: the same core count as the plain loop below.
void BM_SaxpyKernelOneWorker(benchmark::State& state) {
  simcuda::Options o = simcuda::options();
  o.workers = 1;
  simcuda::ScopedOptions scope(o);
  BM_SaxpyKernel(state);
}
BENCHMARK(BM_SaxpyKernelOneWorker)->Arg(1 << 16)->Arg(1 << 22)->UseRealTime();

// The same kernel with every thread on a fiber: what the fast path saves.
void BM_SaxpyKernelAllFibers(benchmark::State& state) {
  simcuda::Options o = simcuda::options();
  o.fast_path = false;
  simcuda::ScopedOptions scope(o);
  BM_SaxpyKernel(state);
}
BENCHMARK(BM_SaxpyKernelAllFibers)->Arg(1 << 16)->UseRealTime();
#endif

// The reference point: the same arithmetic as a plain loop on the host, one
// thread (the kernel above may use every worker).
void BM_SaxpyPlainLoop(benchmark::State& state) {
  const int n = int(state.range(0));
  std::vector<float> x(size_t(n), 1.f), y(size_t(n), 2.f);
  for (auto _ : state) {
    const float a = 1e-3f;
    float* __restrict__ py = y.data();
    const float* __restrict__ px = x.data();
    for (int i = 0; i < n; ++i) py[i] = a * px[i] + py[i];
    benchmark::DoNotOptimize(py);
    benchmark::ClobberMemory();
  }
  elementwise_counters(state, n);
}
BENCHMARK(BM_SaxpyPlainLoop)->Arg(1 << 16)->Arg(1 << 22)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
