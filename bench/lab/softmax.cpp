// softmax: the row softmax and its backward in each row strategy (thread,
// warp, block per row) at the parallel model's attention (rows = batch,
// 64 time steps), and the cross-entropy loss at the logits (8 classes).
#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/softmax.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

const char* strategy_name(k::RowStrategy s) {
  switch (s) {
    case k::RowStrategy::thread: return "thread";
    case k::RowStrategy::warp: return "warp";
    case k::RowStrategy::block: return "block";
    default: return "automatic";
  }
}

struct SoftmaxRun : Run {
  int rows, cols;
  bool backward;
  k::RowStrategy strategy;
  std::vector<float> x, dy, ref;
  DeviceBuffer<float> dx_in, y, dy_in, dx;
  SoftmaxRun(int rows_, int cols_, bool bw, k::RowStrategy st)
      : rows(rows_), cols(cols_), backward(bw), strategy(st),
        x(random_values<float>(size_t(rows) * cols, 21, -4, 4)),
        dy(random_values<float>(x.size(), 22)), dx_in(x), y(x.size()), dy_in(dy), dx(x.size()) {
    if (backward) k::softmax_forward<float>(dx_in.get(), y.get(), rows, cols, nullptr);
  }
  void run(int block) override {
    if (backward)
      k::softmax_backward<float>(y.get(), dy_in.get(), dx.get(), rows, cols, false, nullptr,
                                 block, strategy);
    else
      k::softmax_forward<float>(dx_in.get(), y.get(), rows, cols, nullptr, block, strategy);
  }
  std::string check() override {
    if (ref.empty()) {
      std::vector<float> p(x.size());
      k::softmax_forward_cpu<float>(x.data(), p.data(), rows, cols);
      ref = p;
      if (backward) {
        // From the device's y, as the kernel: the backward alone is compared.
        const std::vector<float> yd = y.to_host();
        k::softmax_backward_cpu<float>(yd.data(), dy.data(), ref.data(), rows, cols, false);
      }
    }
    // A few roundings per element and a float sum over the row: 1e-5 of the
    // largest value covers 64 columns with a wide margin.
    return compare(backward ? dx.to_host() : y.to_host(), widen(ref), 1e-5);
  }
};

struct CrossEntropyRun : Run {
  int rows, cols;
  bool backward;
  std::vector<float> logits;
  std::vector<int> labels;
  DeviceBuffer<float> d_logits, loss, probs, row_loss, dloss, dlogits;
  DeviceBuffer<int> d_labels, bad;
  CrossEntropyRun(int rows_, int cols_, bool bw)
      : rows(rows_), cols(cols_), backward(bw),
        logits(random_values<float>(size_t(rows) * cols, 23, -3, 3)), labels(size_t(rows)),
        d_logits(logits), loss(1), probs(logits.size()), row_loss(size_t(rows)),
        dloss(std::vector<float>{1.f}), dlogits(logits.size()), d_labels(size_t(rows)), bad(1) {
    for (int i = 0; i < rows; ++i) labels[size_t(i)] = (i * 7 + 3) % cols;
    d_labels.copy_from_host(labels);
    k::cross_entropy_forward<float>({d_logits.get(), d_labels.get(), loss.get(), probs.get(),
                                     row_loss.get(), bad.get()}, rows, cols, nullptr);
  }
  void run(int block) override {
    if (backward)
      k::cross_entropy_backward<float>(probs.get(), d_labels.get(), dloss.get(), dlogits.get(),
                                       rows, cols, false, nullptr, block);
    else
      k::cross_entropy_forward<float>({d_logits.get(), d_labels.get(), loss.get(), probs.get(),
                                       row_loss.get(), bad.get()}, rows, cols, nullptr, block);
  }
  std::string check() override {
    std::vector<float> p(logits.size());
    const double l = k::cross_entropy_forward_cpu<float>({logits.data(), labels.data(), nullptr,
                                                          p.data(), nullptr, nullptr}, rows, cols);
    // Loss: a float log and a mean in double; gradients: one rounding each.
    if (!backward) return compare(loss.to_host(), std::vector<double>{l}, 1e-5);
    std::vector<float> g(logits.size());
    k::cross_entropy_backward_cpu<float>(p.data(), labels.data(), 1.f, g.data(), rows, cols,
                                         false);
    return compare(dlogits.to_host(), widen(g), 1e-5);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(softmax) {
  using namespace timbre::lab;
  const int steps = kAttentionSteps, classes = 8;
  for (k::RowStrategy st : {k::RowStrategy::thread, k::RowStrategy::warp, k::RowStrategy::block})
    for (bool bw : {false, true})
      add({"softmax", std::string(bw ? "backward_" : "forward_") + strategy_name(st),
           "parallel.attention",
           [=](int b) {
             return bw ? k::softmax_backward_cost(b, steps, false)
                       : k::softmax_forward_cost(b, steps);
           },
           block_sweep(),
           [=](int b) { return std::make_unique<SoftmaxRun>(b, steps, bw, st); }});
  for (bool bw : {false, true})
    add({"softmax", bw ? "cross_entropy_backward" : "cross_entropy_forward", "loss.8_classes",
         [=](int b) {
           return bw ? k::cross_entropy_backward_cost(b, classes, false)
                     : k::cross_entropy_forward_cost(b, classes);
         },
         block_sweep(), [=](int b) { return std::make_unique<CrossEntropyRun>(b, classes, bw); }});
}
