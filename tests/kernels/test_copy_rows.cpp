// copy_rows against its CPU reference: slices and concatenations at odd
// shapes, assign and accumulate, two block sizes, every thread order.
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "kernels/copy_rows.cuh"
#include "kernels/device_buffer.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;

TEST(CopyRows, StridedBlocksAssignAndAccumulate) {
  struct Case {
    long long rows, cols, src_stride, dst_stride, src_off, dst_off;
  };
  // time step 3 of (5, 7, 9) -> (5, 9); a (5, 4) block into columns 6..9 of
  // (5, 11); a whole contiguous copy; one row; one column.
  const Case cases[] = {{5, 9, 63, 9, 27, 0}, {5, 4, 4, 11, 0, 6}, {13, 17, 17, 17, 0, 0},
                        {1, 33, 40, 33, 7, 0}, {9, 1, 3, 5, 2, 4}};
  for (const Case& c : cases)
    for (bool acc : {false, true}) {
      const size_t src_n = size_t(c.src_off + (c.rows - 1) * c.src_stride + c.cols);
      const size_t dst_n = size_t(c.dst_off + (c.rows - 1) * c.dst_stride + c.cols + 3);
      const auto src = timbre::testing::random_floats(src_n, 1);
      const auto dst0 = timbre::testing::random_floats(dst_n, 2);
      std::vector<float> want = dst0;
      timbre::kernels::copy_rows_cpu(src.data() + c.src_off, c.src_stride, want.data() + c.dst_off,
                                     c.dst_stride, c.rows, c.cols, acc);
      DeviceBuffer<float> d_src(src);
      timbre::testing::for_each_thread_order([&] {
        for (int block : {64, 256}) {
          DeviceBuffer<float> d_dst(dst0);
          timbre::kernels::copy_rows(d_src.get() + c.src_off, c.src_stride, d_dst.get() + c.dst_off,
                                     c.dst_stride, c.rows, c.cols, acc, nullptr, block);
          // One addition at most: exact against the same float addition.
          EXPECT_EQ(d_dst.to_host(), want) << "rows " << c.rows << " cols " << c.cols;
        }
      });
    }
}

TEST(TransposeLast2, OddShapesBothWays) {
  for (auto [b, r, c] : {std::tuple{3LL, 5LL, 7LL}, {1LL, 1LL, 9LL}, {2LL, 33LL, 1LL}, {4LL, 16LL, 128LL}})
    for (bool acc : {false, true}) {
      const auto in = timbre::testing::random_floats(size_t(b * r * c), 3);
      const auto out0 = timbre::testing::random_floats(size_t(b * r * c), 4);
      std::vector<float> want = out0;
      timbre::kernels::transpose_last2_cpu(in.data(), want.data(), b, r, c, acc);
      DeviceBuffer<float> d_in(in);
      timbre::testing::for_each_thread_order([&] {
        for (int block : {64, 256}) {
          DeviceBuffer<float> d_out(out0);
          timbre::kernels::transpose_last2(d_in.get(), d_out.get(), b, r, c, acc, nullptr, block);
          EXPECT_EQ(d_out.to_host(), want);  // a copy or one addition: exact
        }
      });
    }
}

TEST(CopyRows, IntsAndArguments) {
  const std::vector<int> src{1, 2, 3, 4, 5, 6};
  DeviceBuffer<int> d_src(src), d_dst(std::vector<int>(3, 0));
  timbre::kernels::copy_rows(d_src.get() + 1, 2LL, d_dst.get(), 1LL, 3LL, 1LL, false, nullptr);
  EXPECT_EQ(d_dst.to_host(), (std::vector<int>{2, 4, 6}));
  EXPECT_THROW(timbre::kernels::copy_rows(d_src.get(), 1LL, d_dst.get(), 1LL, 2LL, 2LL, false, nullptr),
               std::invalid_argument);  // stride < cols
  EXPECT_THROW(timbre::kernels::copy_rows(d_src.get(), 2LL, d_dst.get(), 2LL, 1LL, 2LL, false, nullptr, 48),
               std::invalid_argument);
}

}  // namespace
