// copy_rows and transpose_last2 against their CPU references: slices and
// concatenations at odd shapes, assign and accumulate, two block sizes,
// every thread order (op-case rows), plus ints and argument errors.
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "kernels/copy_rows.cuh"
#include "kernels/device_buffer.h"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::OpCase;
using timbre::testing::once;
using timbre::testing::widen;

// One addition at most, against the same float addition: exact.
const timbre::testing::Tolerance kExact{0, 0};

OP_CASES(copy_rows) {
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
      const auto src = once([=] { return timbre::testing::random_floats(src_n, 1); });
      const auto dst0 = once([=] { return timbre::testing::random_floats(dst_n, 2); });
      table.add(OpCase{
          acc ? "copy_rows/copy_rows_accumulate" : "copy_rows/copy_rows", "float",
          "rows=" + std::to_string(c.rows) + " cols=" + std::to_string(c.cols) + " strides=" +
              std::to_string(c.src_stride) + "," + std::to_string(c.dst_stride),
          {64, 256}, kExact, "a copy or one float addition, as the reference",
          [=](int block) {
            DeviceBuffer<float> d_src(src()), d_dst(dst0());
            timbre::kernels::copy_rows(d_src.get() + c.src_off, c.src_stride,
                                       d_dst.get() + c.dst_off, c.dst_stride, c.rows, c.cols, acc,
                                       nullptr, block);
            return widen(d_dst.to_host());
          },
          [=] {
            std::vector<float> want = dst0();
            timbre::kernels::copy_rows_cpu(src().data() + c.src_off, c.src_stride,
                                           want.data() + c.dst_off, c.dst_stride, c.rows, c.cols,
                                           acc);
            return widen(want);
          }});
    }
  for (auto [b, r, c] :
       {std::tuple{3LL, 5LL, 7LL}, {1LL, 1LL, 9LL}, {2LL, 33LL, 1LL}, {4LL, 16LL, 128LL}})
    for (bool acc : {false, true}) {
      const size_t n = size_t(b * r * c);
      const auto in = once([=] { return timbre::testing::random_floats(n, 3); });
      const auto out0 = once([=] { return timbre::testing::random_floats(n, 4); });
      table.add(OpCase{
          acc ? "copy_rows/transpose_last2_accumulate" : "copy_rows/transpose_last2", "float",
          "batch=" + std::to_string(b) + " rows=" + std::to_string(r) + " cols=" +
              std::to_string(c),
          {64, 256}, kExact, "a copy or one float addition, as the reference",
          [=](int block) {
            DeviceBuffer<float> d_in(in()), d_out(out0());
            timbre::kernels::transpose_last2(d_in.get(), d_out.get(), b, r, c, acc, nullptr,
                                             block);
            return widen(d_out.to_host());
          },
          [=] {
            std::vector<float> want = out0();
            timbre::kernels::transpose_last2_cpu(in().data(), want.data(), b, r, c, acc);
            return widen(want);
          }});
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
