// The teaching kernels at a few sizes, through the same launchers as the
// tests: GFLOP/s for GEMM, GB/s for the reduction.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/gemm_tiled.cuh"
#include "kernels/reduce.cuh"

namespace {

using timbre::DeviceBuffer;

void BM_Gemm(benchmark::State& state, int version) {
  const int n = int(state.range(0));
  DeviceBuffer<float> A(std::vector<float>(size_t(n) * n, 0.5f)),
      B(std::vector<float>(size_t(n) * n, 0.25f)), C(size_t(n) * n);
  for (auto _ : state) {
    if (version == 1)
      timbre::kernels::gemm_v1_naive(n, n, n, A.get(), B.get(), C.get(), dim3(16, 16), nullptr);
    else
      timbre::kernels::gemm_v2_tiled(n, n, n, A.get(), B.get(), C.get(), 32, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      timbre::kernels::gemm_flops(n, n, n) * double(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_Gemm, v1_naive, 1)->Arg(128)->Arg(256)->UseRealTime();
BENCHMARK_CAPTURE(BM_Gemm, v2_tiled, 2)->Arg(128)->Arg(256)->UseRealTime();

void BM_ReduceSum(benchmark::State& state, int version) {
  const long long n = state.range(0);
  const int threads = 256;
  DeviceBuffer<float> x(std::vector<float>(size_t(n), 1.f)), out(1),
      partial(size_t(timbre::kernels::reduce_sum_blocks(n, threads)));
  for (auto _ : state) {
    if (version == 1)
      timbre::kernels::reduce_sum_v1_smem(x.get(), n, out.get(), partial.get(), threads, nullptr);
    else
      timbre::kernels::reduce_sum_v2_shuffle(x.get(), n, out.get(), partial.get(), threads,
                                             nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK_CAPTURE(BM_ReduceSum, v1_smem, 1)->Arg(1 << 20)->Arg(1 << 24)->UseRealTime();
BENCHMARK_CAPTURE(BM_ReduceSum, v2_shuffle, 2)->Arg(1 << 20)->Arg(1 << 24)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
