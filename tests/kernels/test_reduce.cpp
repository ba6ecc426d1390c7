// reduce_sum v1 and v2 against the CPU reference: odd sizes, several block
// sizes, several thread orders; and the same bits on every run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/reduce.cuh"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::random_floats;

using Reducer = void (*)(const float*, long long, float*, float*, int, cudaStream_t);

void check(Reducer reduce, const char* name) {
  for (long long n : {1LL, 31LL, 1000LL, 65537LL, 1000003LL}) {
    const auto x = random_floats(size_t(n), uint64_t(n), -1.f, 2.f);
    const double want = timbre::kernels::reduce_sum_cpu(x.data(), x.size());
    double sum_abs = 0;
    for (float v : x) sum_abs += std::fabs(v);
    DeviceBuffer<float> d_x(x), d_out(1);
    timbre::testing::for_each_thread_order([&] {
      for (int threads : {32, 256, 1024}) {
        DeviceBuffer<float> d_partial(size_t(timbre::kernels::reduce_sum_blocks(n, threads)));
        reduce(d_x.get(), n, d_out.get(), d_partial.get(), threads, nullptr);
        const float got = d_out.to_host()[0];
        // Float partial sums in a tree: error <= log2(n)-ish roundings of
        // values up to sum|x|; 4e-7 * sum|x| is ~3 ulps of the total.
        EXPECT_NEAR(got, want, 4e-7 * sum_abs + 1e-6)
            << name << " n " << n << " threads " << threads;
        // Deterministic: the same launch gives the same bits.
        reduce(d_x.get(), n, d_out.get(), d_partial.get(), threads, nullptr);
        EXPECT_EQ(d_out.to_host()[0], got);
      }
    });
  }
}

TEST(Reduce, V1SharedMemoryTree) { check(timbre::kernels::reduce_sum_v1_smem, "v1"); }
TEST(Reduce, V2WarpShuffles) { check(timbre::kernels::reduce_sum_v2_shuffle, "v2"); }

TEST(Reduce, RejectsBadBlockSize) {
  EXPECT_THROW(timbre::kernels::reduce_sum_v1_smem(nullptr, 1, nullptr, nullptr, 48, nullptr),
               std::invalid_argument);
}

}  // namespace
