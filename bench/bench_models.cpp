// The three networks at their default sizes (input 1x128x128, 8 classes),
// batch 32: training steps (forward, cross-entropy, backward, Adam) and
// inference (eval mode, no gradients), in samples per second. The peer
// figures come from bench/peers_models.py (PyTorch on the same CPU).
//
//   build/sim/bench/bench_models                      # all, a few steps each
//   build/sim/bench/bench_models --benchmark_filter=Train/parallel
//
// Peak device memory (the caching allocator's high-water mark) is reported
// as a counter; under simcuda it is host memory.
#include <benchmark/benchmark.h>

#include "engine/allocator.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/cuda_check.h"
#include "models/registry.h"

namespace {

using timbre::Generator;
using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
constexpr int kBatch = 32;

Tensor random_batch(Generator& g) {
  Tensor x = Tensor::empty(Shape{kBatch, 1, 128, 128});
  g.normal(x, 0, 1);
  return x;
}

Tensor random_labels() {
  std::vector<int32_t> y(kBatch);
  for (int i = 0; i < kBatch; ++i) y[size_t(i)] = i % 8;
  return Tensor::from_host(Shape{kBatch}, y);
}

void report(benchmark::State& state) {
  CUDA_CHECK(cudaDeviceSynchronize());
  state.counters["samples/s"] =
      benchmark::Counter(double(state.iterations()) * kBatch, benchmark::Counter::kIsRate);
  state.counters["peak_MiB"] =
      double(timbre::Allocator::instance().stats().peak) / (1024.0 * 1024.0);
}

void BM_Train(benchmark::State& state, const char* name) {
  Generator g(1);
  auto model = timbre::models::make_model(name, {{"n_classes", 8}}, g);
  model->train();
  timbre::Adam adam(model->parameters(), timbre::kernels::keras_adam(1e-3));
  const Tensor x = random_batch(g), y = random_labels();
  for (auto _ : state) {
    Variable loss = timbre::ops::cross_entropy(model->forward(Variable(x), g), y);
    model->zero_grad();
    loss.backward();
    adam.step();
  }
  report(state);
}

void BM_Infer(benchmark::State& state, const char* name) {
  Generator g(1);
  auto model = timbre::models::make_model(name, {{"n_classes", 8}}, g);
  model->eval();
  const Tensor x = random_batch(g);
  timbre::NoGradGuard no_grad;
  for (auto _ : state) {
    Variable logits = model->forward(Variable(x), g);
    benchmark::DoNotOptimize(logits.value().raw());
  }
  report(state);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Train, rescnn, "rescnn")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Train, crnn, "crnn")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Train, parallel, "parallel")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Infer, rescnn, "rescnn")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Infer, crnn, "crnn")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Infer, parallel, "parallel")->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
