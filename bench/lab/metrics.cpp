// metrics: the step metrics kernel at the trainer's shape, the batch's rows
// of logits over the 8 genres of FMA-small (every model ends in the same
// (batch, 8) layer). One block whatever the batch: the launch is the cost.
#include "bench/lab/lab.h"
#include "kernels/metrics.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr int kClasses = 8;

// Every run adds one step to the device sums; check() replays as many
// steps on the CPU reference: the same sums, exactly.
struct MetricsRun : Run {
  int rows;
  std::vector<float> logits, loss;
  std::vector<int32_t> labels;
  DeviceBuffer<float> d_logits, d_loss;
  DeviceBuffer<int32_t> d_labels;
  DeviceBuffer<k::StepMetrics> d_acc;
  int runs = 0;
  explicit MetricsRun(int batch)
      : rows(batch), logits(random_values<float>(size_t(batch) * kClasses, 61, -3, 3)),
        loss(random_values<float>(1, 62, 0.5, 2)), labels(size_t(batch)), d_logits(logits),
        d_loss(loss), d_labels(size_t(batch)), d_acc(std::vector<k::StepMetrics>(1)) {
    for (int i = 0; i < batch; ++i) labels[size_t(i)] = int32_t(i % kClasses);
    d_labels.copy_from_host(labels);
  }
  void run(int) override {
    ++runs;
    k::accumulate_step_metrics<float>(d_logits.get(), d_labels.get(), d_loss.get(), rows,
                                      kClasses, d_acc.get(), nullptr);
  }
  std::string check() override {
    k::StepMetrics want;
    for (int i = 0; i < runs; ++i)
      k::accumulate_step_metrics_cpu<float>(logits.data(), labels.data(), loss.data(), rows,
                                            kClasses, &want);
    const k::StepMetrics got = d_acc.to_host()[0];
    if (got.correct != want.correct || got.samples != want.samples ||
        got.loss_sum != want.loss_sum)
      return "sums differ from the reference after " + std::to_string(runs) + " steps";
    return "";
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(metrics) {
  using namespace timbre::lab;
  add({"metrics", "accumulate_step_metrics", "all.logits",
       [](int b) { return k::step_metrics_cost(b, kClasses); }, {0},
       [](int b) { return std::make_unique<MetricsRun>(b); }});
}
