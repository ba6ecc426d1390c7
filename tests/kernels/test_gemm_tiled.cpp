// gemm_tiled v1 and v2 against the CPU reference at odd shapes, two block
// sizes each, under several thread orders.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/gemm_tiled.cuh"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::random_floats;

struct Shape {
  int M, N, K;
};

class GemmTiled : public ::testing::TestWithParam<Shape> {};

INSTANTIATE_TEST_SUITE_P(OddShapes, GemmTiled,
                         ::testing::Values(Shape{37, 29, 53}, Shape{1, 45, 7}, Shape{33, 1, 65},
                                           Shape{64, 64, 64}, Shape{5, 7, 1}));

// Float accumulation over K terms of magnitude <= 1 against a double
// reference: error <= K * 2^-24 * sum|a||b| ~ 65 * 6e-8 * 65 < 3e-4 at the
// largest K here; 1e-4 absolute plus 1e-5 relative holds with margin in
// practice (errors partly cancel) and fails for any wrong element.
const timbre::testing::Tolerance kTol{1e-4, 1e-5};

TEST_P(GemmTiled, MatchesReference) {
  const auto [M, N, K] = GetParam();
  const auto A = random_floats(size_t(M) * K, 1), B = random_floats(size_t(K) * N, 2);
  std::vector<float> want(size_t(M) * N);
  timbre::kernels::gemm_cpu(M, N, K, A.data(), B.data(), want.data());
  DeviceBuffer<float> dA(A), dB(B), dC(size_t(M) * N);
  timbre::testing::for_each_thread_order([&] {
    for (dim3 block : {dim3(8, 8), dim3(32, 4)}) {
      timbre::kernels::gemm_v1_naive(M, N, K, dA.get(), dB.get(), dC.get(), block, nullptr);
      EXPECT_TRUE(all_close(dC.to_host(), want, kTol)) << "v1 block " << block.x << "x" << block.y;
    }
    for (int tile : {16, 32}) {
      timbre::kernels::gemm_v2_tiled(M, N, K, dA.get(), dB.get(), dC.get(), tile, nullptr);
      EXPECT_TRUE(all_close(dC.to_host(), want, kTol)) << "v2 tile " << tile;
    }
  });
}

TEST(GemmTiledArgs, RejectsUnsupportedTile) {
  EXPECT_THROW(timbre::kernels::gemm_v2_tiled(2, 2, 2, nullptr, nullptr, nullptr, 8, nullptr),
               std::invalid_argument);
}

}  // namespace
