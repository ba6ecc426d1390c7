// The driver of the op-case table (op_cases.h): one parameterised test per
// row in each mode. Test names: OpCases/Correctness.Matches/<op>_<dtype>_<n>,
// so `--gtest_filter='*softmax*'` runs one family.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "kernels/cuda_check.h"
#include "kernels/defaults.h"
#include "tests/kernels/op_cases.h"

namespace timbre::testing {

namespace {
std::vector<std::pair<const char*, void (*)(OpTable&)>>& families() {
  static std::vector<std::pair<const char*, void (*)(OpTable&)>> f;
  return f;
}
}  // namespace

void register_op_family(const char* family, void (*rows)(OpTable&)) {
  families().emplace_back(family, rows);
}

const OpTable& op_table() {
  static const OpTable table = [] {
    auto f = families();
    std::sort(f.begin(), f.end(),
              [](const auto& a, const auto& b) { return std::strcmp(a.first, b.first) < 0; });
    OpTable t;
    for (const auto& [name, rows] : f) rows(t);
    return t;
  }();
  return table;
}

}  // namespace timbre::testing

namespace {

using timbre::testing::GradientCase;
using timbre::testing::OpCase;
using timbre::testing::op_table;

// A test-name-safe spelling of a row: letters, digits and underscores.
std::string safe(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

std::vector<size_t> indices(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

class Correctness : public ::testing::TestWithParam<size_t> {};

// Each row under both backends' launch shapes and every thread order; the
// thread orders must agree to the bit.
TEST_P(Correctness, Matches) {
  const OpCase& c = op_table().cases()[GetParam()];
  SCOPED_TRACE(c.op + " " + c.dtype + " " + c.shape + " (tolerance: " + c.why + ")");
  const std::vector<double> ref = c.reference();
  const timbre::kernels::BackendDefaults before = timbre::kernels::defaults();
  for (const char* row : {"gpu", "sim"}) {
    timbre::kernels::use_defaults(timbre::kernels::defaults_named(row));
    SCOPED_TRACE(std::string("launch shapes of the ") + row + " defaults");
    // The first thread order's output at each block size: every other order
    // must give the same bits (no atomics, fixed summation orders).
    std::map<int, std::vector<double>> first;
    timbre::testing::for_each_thread_order([&] {
      for (int block : c.blocks) {
        const std::vector<double> got = c.run(block);
        if (c.compare)
          EXPECT_TRUE(c.compare(got, ref, block)) << "block " << block;
        else
          EXPECT_TRUE(timbre::testing::all_close(got, ref, c.tol_at ? c.tol_at(block) : c.tol))
              << "block " << block;
        const auto [it, fresh] = first.emplace(block, got);
        if (!fresh) {
          EXPECT_TRUE(timbre::testing::same_bits(got, it->second))
              << "block " << block << ": another thread order gave other bits";
        }
        if (c.block_invariant) {
          EXPECT_TRUE(timbre::testing::same_bits(got, first.begin()->second))
              << "block " << block << " gave other bits than block " << first.begin()->first;
        }
      }
    });
  }
  timbre::kernels::use_defaults(before);
}

INSTANTIATE_TEST_SUITE_P(
    OpCases, Correctness, ::testing::ValuesIn(indices(op_table().cases().size())),
    [](const ::testing::TestParamInfo<size_t>& info) {
      const OpCase& c = op_table().cases()[info.param];
      return safe(c.op + "_" + c.dtype) + "_" + std::to_string(info.param);
    });

class Gradient : public ::testing::TestWithParam<size_t> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Gradient);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Correctness);

TEST_P(Gradient, MatchesFiniteDifferences) {
  const GradientCase& g = op_table().gradients()[GetParam()];
  SCOPED_TRACE(g.op + " " + g.shape + " (tolerance: " + g.why + ")");
  const std::vector<double> numeric = timbre::testing::numeric_gradient(g.x, g.loss, g.h);
  EXPECT_TRUE(timbre::testing::all_close(g.analytic(g.x), numeric, g.tol));
}

INSTANTIATE_TEST_SUITE_P(
    OpCases, Gradient, ::testing::ValuesIn(indices(op_table().gradients().size())),
    [](const ::testing::TestParamInfo<size_t>& info) {
      return safe(op_table().gradients()[info.param].op) + "_" + std::to_string(info.param);
    });

// Performance mode: TIMBRE_OP_CASES_PERF=1 prints each row's time per run
// at each block size (the best of three, after a warm-up). The lab
// benchmark (bench/lab/) times kernels at the models' shapes; this times the
// test shapes, odd ones included, copies in and out included.
TEST(OpCases, Performance) {
  const char* env = std::getenv("TIMBRE_OP_CASES_PERF");
  if (!env || std::strcmp(env, "1") != 0) GTEST_SKIP() << "set TIMBRE_OP_CASES_PERF=1";
  for (const OpCase& c : op_table().cases())
    for (int block : c.blocks) {
      c.run(block);
      double best = 1e30;
      for (int i = 0; i < 3; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        c.run(block);
        CUDA_CHECK(cudaDeviceSynchronize());
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                            t0).count());
      }
      std::printf("op-case %-44s %-6s %-24s block %4d %12.1f us\n", c.op.c_str(),
                  c.dtype.c_str(), c.shape.c_str(), block, best * 1e6);
    }
}

}  // namespace
