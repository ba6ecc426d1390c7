// accumulate_step_metrics against its CPU reference: several steps summed
// onto sums that did not start at zero (a resumed epoch), at odd shapes,
// with tied logits (the first largest wins, as std::max_element), every
// thread order (op-case rows); plus the non-finite loss tag and argument
// errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/metrics.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using timbre::DeviceBuffer;
using timbre::testing::OpCase;
using timbre::testing::once;

constexpr int kSteps = 3;

// The sums as doubles: loss_sum, correct, samples, first_nonfinite, steps.
std::vector<double> as_vector(const k::StepMetrics& m) {
  return {m.loss_sum, double(m.correct), double(m.samples), double(m.first_nonfinite),
          double(m.steps)};
}

k::StepMetrics resumed_start() {
  k::StepMetrics m;
  m.loss_sum = 123.456789;
  m.correct = 41;
  m.samples = 96;
  return m;
}

struct Steps {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> labels;
  std::vector<float> losses;
};

// ties: logits on a grid of 5 values, so most rows hold a tie for the max.
Steps make_steps(int rows, int cols, bool ties, uint64_t seed) {
  Steps s;
  for (int t = 0; t < kSteps; ++t) {
    std::vector<float> l = timbre::testing::random_floats(size_t(rows) * cols, seed + t, -3, 3);
    if (ties)
      for (float& v : l) v = std::round(v * 0.7f);
    s.logits.push_back(l);
    const auto y = timbre::testing::random_ints(size_t(rows), seed + 10 + t, 0, cols - 1);
    s.labels.emplace_back(y.begin(), y.end());
    s.losses.push_back(timbre::testing::random_floats(1, seed + 20 + t, 0.1f, 3.f)[0]);
  }
  return s;
}

std::vector<double> run_device(const Steps& s, int rows, int cols) {
  DeviceBuffer<k::StepMetrics> acc(std::vector<k::StepMetrics>{resumed_start()});
  for (int t = 0; t < kSteps; ++t) {
    DeviceBuffer<float> d_logits(s.logits[size_t(t)]), d_loss(std::vector<float>{s.losses[size_t(t)]});
    DeviceBuffer<int32_t> d_labels(s.labels[size_t(t)]);
    k::accumulate_step_metrics<float>(d_logits.get(), d_labels.get(), d_loss.get(), rows, cols,
                                      acc.get(), nullptr);
  }
  return as_vector(acc.to_host()[0]);
}

std::vector<double> run_reference(const Steps& s, int rows, int cols) {
  k::StepMetrics acc = resumed_start();
  for (int t = 0; t < kSteps; ++t)
    k::accumulate_step_metrics_cpu<float>(s.logits[size_t(t)].data(), s.labels[size_t(t)].data(),
                                          &s.losses[size_t(t)], rows, cols, &acc);
  return as_vector(acc);
}

OP_CASES(metrics) {
  struct Shape {
    int rows, cols;
  };
  // One row and class; a batch below a warp; the trainer's 32 x 8; rows
  // that leave a warp partly empty; more rows than the block's 256 threads.
  for (Shape sh : {Shape{1, 1}, {7, 3}, {32, 8}, {33, 13}, {300, 16}, {1025, 5}})
    for (bool ties : {false, true}) {
      const auto steps = once([=] { return make_steps(sh.rows, sh.cols, ties, 7 + sh.rows); });
      table.add(OpCase{ties ? "metrics/accumulate_step_metrics/ties"
                            : "metrics/accumulate_step_metrics",
                       "float", "rows=" + std::to_string(sh.rows) + " cols=" +
                                    std::to_string(sh.cols) + " steps=3",
                       {0}, {0, 0},
                       "exact: integer counts, and the same double additions in the same order "
                       "as the reference",
                       [=](int) { return run_device(steps(), sh.rows, sh.cols); },
                       [=] { return run_reference(steps(), sh.rows, sh.cols); }});
    }
}

// The first step whose loss is NaN or infinite is the one recorded; the
// sums keep counting (the trainer throws when it reads them).
TEST(StepMetrics, RecordsTheFirstNonFiniteLossStep) {
  const int rows = 5, cols = 4;
  Steps s = make_steps(rows, cols, false, 99);
  s.losses[1] = std::numeric_limits<float>::infinity();
  s.losses[2] = std::nanf("");
  const std::vector<double> got = run_device(s, rows, cols);
  EXPECT_EQ(got[3], 1.0);  // the step's index, counted on the device
  EXPECT_EQ(got[4], 3.0);
  EXPECT_EQ(got[2], 96.0 + 3 * rows);
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_EQ(run_reference(s, rows, cols)[3], 1.0);
}

TEST(StepMetrics, RefusesBadArguments) {
  DeviceBuffer<float> x(std::vector<float>(4, 1.f)), loss(std::vector<float>{1.f});
  DeviceBuffer<int32_t> y(std::vector<int32_t>(4, 0));
  DeviceBuffer<k::StepMetrics> acc(1);
  EXPECT_THROW(k::accumulate_step_metrics<float>(x.get(), y.get(), loss.get(), 0, 4, acc.get(),
                                                 nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::accumulate_step_metrics<float>(x.get(), y.get(), loss.get(), 1, 4, nullptr,
                                                 nullptr),
               std::invalid_argument);
}

}  // namespace
