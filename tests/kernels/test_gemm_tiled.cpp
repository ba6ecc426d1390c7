// gemm_tiled v1 (a thread per output) and v2 (shared-memory tiles) against
// the CPU reference at odd shapes, two launch shapes each, under every
// thread order (op-case rows).
#include <gtest/gtest.h>

#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/gemm_tiled.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::once;
using timbre::testing::random_floats;
using timbre::testing::widen;

// Float accumulation over K terms of magnitude <= 1 against a double
// reference: error <= K * 2^-24 * sum|a||b| ~ 65 * 6e-8 * 65 < 3e-4 at the
// largest K here; 1e-4 absolute plus 1e-5 relative holds with margin in
// practice (errors partly cancel) and fails for any wrong element.
const timbre::testing::Tolerance kTol{1e-4, 1e-5};

// v1's launch shapes by thread count: 64 = 8 x 8, 128 = 32 x 4.
dim3 v1_block(int threads) { return threads == 64 ? dim3(8, 8) : dim3(32, 4); }

OP_CASES(gemm_tiled) {
  struct Shape {
    int M, N, K;
  };
  for (Shape s : {Shape{37, 29, 53}, Shape{1, 45, 7}, Shape{33, 1, 65}, Shape{64, 64, 64},
                  Shape{5, 7, 1}}) {
    const auto [M, N, K] = s;
    const auto A = once([=] { return random_floats(size_t(M) * K, 1); });
    const auto B = once([=] { return random_floats(size_t(K) * N, 2); });
    auto reference = [=] {
      std::vector<float> want(size_t(M) * N);
      timbre::kernels::gemm_cpu(M, N, K, A().data(), B().data(), want.data());
      return widen(want);
    };
    const std::string shape =
        "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
    for (bool v2 : {false, true})
      table.add(timbre::testing::OpCase{
          v2 ? "gemm_tiled/gemm_v2_tiled" : "gemm_tiled/gemm_v1_naive", "float", shape,
          v2 ? std::vector<int>{16, 32} : std::vector<int>{64, 128}, kTol,
          "float sums of K products against a double reference",
          [=](int block) {  // v2: the tile size; v1: the threads of v1_block
            DeviceBuffer<float> dA(A()), dB(B()), dC(size_t(M) * N);
            timbre::testing::poison(dC);
            if (v2)
              timbre::kernels::gemm_v2_tiled(M, N, K, dA.get(), dB.get(), dC.get(), block, nullptr);
            else
              timbre::kernels::gemm_v1_naive(M, N, K, dA.get(), dB.get(), dC.get(),
                                             v1_block(block), nullptr);
            return widen(dC.to_host());
          },
          reference});
  }
}

TEST(GemmTiledArgs, RejectsUnsupportedTile) {
  EXPECT_THROW(timbre::kernels::gemm_v2_tiled(2, 2, 2, nullptr, nullptr, nullptr, 8, nullptr),
               std::invalid_argument);
}

}  // namespace
