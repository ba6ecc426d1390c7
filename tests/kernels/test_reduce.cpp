// reduce_sum v1 (shared-memory tree) and v2 (warp shuffles) against the CPU
// reference: odd sizes, three block sizes, every thread order (op-case
// rows); and the same bits on every run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/reduce.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::once;
using timbre::testing::random_floats;

using Reducer = void (*)(const float*, long long, float*, float*, int, cudaStream_t);

OP_CASES(reduce) {
  const std::pair<const char*, Reducer> versions[] = {
      {"reduce/reduce_sum_v1_smem", timbre::kernels::reduce_sum_v1_smem},
      {"reduce/reduce_sum_v2_shuffle", timbre::kernels::reduce_sum_v2_shuffle}};
  for (const auto& [op, reduce] : versions)
    for (long long n : {1LL, 31LL, 1000LL, 65537LL, 1000003LL}) {
      const auto x = once([n] { return random_floats(size_t(n), uint64_t(n), -1.f, 2.f); });
      const auto sum_abs = once([=] {
        double s = 0;
        for (float v : x()) s += std::fabs(v);
        return s;
      });
      timbre::testing::OpCase row{
          op, "float", "n=" + std::to_string(n), {32, 256, 1024}, {},
          "float partial sums in a tree: ~log2(n) roundings of values up to sum|x|",
          [=, reduce = reduce](int threads) {
            DeviceBuffer<float> d_x(x()), d_out(1),
                d_partial(size_t(timbre::kernels::reduce_sum_blocks(n, threads)));
            reduce(d_x.get(), n, d_out.get(), d_partial.get(), threads, nullptr);
            const float got = d_out.to_host()[0];
            // Deterministic: the same launch gives the same bits (else NaN fails the row).
            reduce(d_x.get(), n, d_out.get(), d_partial.get(), threads, nullptr);
            return std::vector<double>{d_out.to_host()[0] == got ? double(got) : NAN};
          },
          [=] { return std::vector<double>{timbre::kernels::reduce_sum_cpu(x().data(), x().size())}; },
          // 4e-7 * sum|x| is ~3 ulps of the total.
          [=](int) { return timbre::testing::Tolerance{4e-7 * sum_abs() + 1e-6, 0}; }};
      table.add(std::move(row));
    }
}

TEST(Reduce, RejectsBadBlockSize) {
  EXPECT_THROW(timbre::kernels::reduce_sum_v1_smem(nullptr, 1, nullptr, nullptr, 48, nullptr),
               std::invalid_argument);
}

}  // namespace
