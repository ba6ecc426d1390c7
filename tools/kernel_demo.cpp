#include "tools/kernel_demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tools/device.h"
#include "kernels/device_buffer.h"
#include "kernels/gemm_tiled.cuh"
#include "kernels/reduce.cuh"

namespace {

using timbre::DeviceBuffer;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::vector<float> uniform(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Worst |got - want| over the matrix, and whether every element is within
// 1e-4 + 1e-5 |want| (float accumulation of K products against double).
bool compare(const std::vector<float>& got, const std::vector<float>& want, double* worst) {
  bool ok = true;
  *worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    *worst = std::max(*worst, d);
    ok &= d <= 1e-4 + 1e-5 * std::fabs(want[i]);
  }
  return ok;
}

}  // namespace

int run_kernel_demo(int n, unsigned seed) {
  timbre::tools::run_info();
  std::printf("\n");
  bool all_ok = true;

  // --- GEMM: C = A B, n x n, two kernel versions against the CPU loops.
  const auto A = uniform(size_t(n) * n, seed), B = uniform(size_t(n) * n, seed + 1);
  std::vector<float> want(size_t(n) * n);
  auto t = Clock::now();
  timbre::kernels::gemm_cpu(n, n, n, A.data(), B.data(), want.data());
  const double cpu_ms = ms_since(t);
  DeviceBuffer<float> dA(A), dB(B), dC(size_t(n) * n);
  std::printf("GEMM %dx%d * %dx%d (%.1f MFLOP), CPU reference loops: %.1f ms\n", n, n, n, n,
              timbre::kernels::gemm_flops(n, n, n) * 1e-6, cpu_ms);
  for (int version : {1, 2}) {
    t = Clock::now();
    if (version == 1)
      timbre::kernels::gemm_v1_naive(n, n, n, dA.get(), dB.get(), dC.get(), dim3(16, 16), nullptr);
    else
      timbre::kernels::gemm_v2_tiled(n, n, n, dA.get(), dB.get(), dC.get(), 32, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double ms = ms_since(t);
    double worst;
    const bool ok = compare(dC.to_host(), want, &worst);
    all_ok &= ok;
    std::printf("  %-12s %8.1f ms  %6.2f GFLOP/s  max |diff| %.2e  %s\n",
                version == 1 ? "v1_naive" : "v2_tiled", ms,
                timbre::kernels::gemm_flops(n, n, n) / ms * 1e-6, worst, ok ? "ok" : "MISMATCH");
  }

  // --- Reduction: the sum of n*n values.
  const long long count = 1LL * n * n * 16;
  const auto x = uniform(size_t(count), seed + 2);
  const double sum = timbre::kernels::reduce_sum_cpu(x.data(), x.size());
  double sum_abs = 0;
  for (float v : x) sum_abs += std::fabs(v);
  DeviceBuffer<float> d_x(x), d_out(1),
      d_partial(size_t(timbre::kernels::reduce_sum_blocks(count, 256)));
  std::printf("\nsum of %lld values, CPU reference (double): %.6f\n", count, sum);
  for (int version : {1, 2}) {
    t = Clock::now();
    if (version == 1)
      timbre::kernels::reduce_sum_v1_smem(d_x.get(), count, d_out.get(), d_partial.get(), 256,
                                          nullptr);
    else
      timbre::kernels::reduce_sum_v2_shuffle(d_x.get(), count, d_out.get(), d_partial.get(), 256,
                                             nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double ms = ms_since(t);
    const float got = d_out.to_host()[0];
    // Float tree sums: a few ulps of sum|x| (see tests/kernels/test_reduce.cpp).
    const bool ok = std::fabs(got - sum) <= 4e-7 * sum_abs + 1e-6;
    all_ok &= ok;
    std::printf("  %-12s %8.1f ms  %6.2f GB/s    result %.6f  %s\n",
                version == 1 ? "v1_smem" : "v2_shuffle", ms, double(count) * 4 / ms * 1e-6, got,
                ok ? "ok" : "MISMATCH");
  }
  std::printf("\n%s\n", all_ok ? "all kernels agree with their CPU references"
                               : "SOME KERNELS DISAGREE WITH THEIR CPU REFERENCES");
  return all_ok ? 0 : 1;
}
