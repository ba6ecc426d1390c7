// The engine's ops at the shapes of the three models (batch 32), forward
// and backward through the autograd, as training runs them. Reports
// GFLOP/s from the kernels' cost formulas (forward + backward work).
//
//   build/sim/bench/bench_ops --benchmark_filter=Conv
//
// Under simcuda a 3x3 convolution at 128x128 takes seconds per batch: the
// heavy cases run one iteration each.
#include <benchmark/benchmark.h>

#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/conv2d.cuh"
#include "kernels/cuda_check.h"
#include "kernels/attention.cuh"
#include "kernels/gru.cuh"

namespace {

using timbre::Generator;
using timbre::Shape;
using timbre::Tensor;
using timbre::Variable;
namespace ops = timbre::ops;
namespace k = timbre::kernels;

Variable randn(Generator& g, const Shape& s, bool grad) {
  Tensor t = Tensor::empty(s);
  g.normal(t, 0, 0.5);
  return Variable(t, grad);
}

// Backpropagates a seed of ones through y.
void backward(Variable& y) { y.backward(Tensor::full(y.value().shape(), 1.0)); }

void report(benchmark::State& state, double flops) {
  CUDA_CHECK(cudaDeviceSynchronize());
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

// conv3x3 (pad 1) at 128 >> level resolution, C -> K channels.
void BM_Conv3x3(benchmark::State& state) {
  const int C = int(state.range(0)), K = int(state.range(1)), HW = int(state.range(2));
  Generator g(1);
  Variable x = randn(g, Shape{32, C, HW, HW}, true), w = randn(g, Shape{K, C, 3, 3}, true),
           b = randn(g, Shape{K}, true);
  for (auto _ : state) {
    Variable y = ops::conv2d(x, w, b, {1, 1, 1, 1});
    backward(y);
  }
  k::Conv2dShape cs{32, C, HW, HW, K, 3, 3, 1, 1, 1, 1};
  report(state, k::conv2d_forward_cost(cs, true).flops + k::conv2d_backward_data_cost(cs, true).flops +
                    k::conv2d_backward_filter_cost(cs, true).flops);
}
// The residual blocks' convolutions (ResCNN), input side at each level.
BENCHMARK(BM_Conv3x3)->Args({1, 16, 128})->Args({16, 32, 64})->Args({32, 64, 32})
    ->Args({64, 128, 16})->Args({128, 128, 8})->Iterations(1)->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Linear(benchmark::State& state) {
  const int in = int(state.range(0)), out = int(state.range(1)), n = int(state.range(2));
  Generator g(2);
  Variable x = randn(g, Shape{n, in}, true), w = randn(g, Shape{out, in}, true),
           b = randn(g, Shape{out}, true);
  for (auto _ : state) {
    Variable y = ops::linear(x, w, b);
    backward(y);
  }
  report(state, 6.0 * n * in * out);  // forward, dx, dW
}
// Classifier heads (2048 -> 8, 2176 -> 8) and the per-step embedding (32 -> 128 over 32*64 rows).
BENCHMARK(BM_Linear)->Args({2048, 8, 32})->Args({2176, 8, 32})->Args({32, 128, 32 * 64})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Gru(benchmark::State& state) {
  const int T = int(state.range(0)), I = int(state.range(1)), H = int(state.range(2));
  Generator g(3);
  Variable x = randn(g, Shape{32, T, I}, true), wi = randn(g, Shape{3 * H, I}, true),
           wh = randn(g, Shape{3 * H, H}, true), bi = randn(g, Shape{3 * H}, true),
           bh = randn(g, Shape{3 * H}, true);
  for (auto _ : state) {
    Variable y = ops::gru(x, wi, wh, bi, bh, Variable(), false);
    backward(y);
  }
  const k::GruShape s{32, T, I, H};
  report(state, k::gru_forward_cost(s).flops + k::gru_backward_cost(s).flops);
}
// C-RNN (16 steps, hidden 32) and one direction of the parallel model's BiGRU.
BENCHMARK(BM_Gru)->Args({16, 128, 32})->Args({64, 128, 64})->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Attention(benchmark::State& state) {
  Generator g(4);
  Variable h = randn(g, Shape{32, 64, 128}, true), w = randn(g, Shape{128, 128}, true),
           b = randn(g, Shape{128}, true), v = randn(g, Shape{128}, true);
  for (auto _ : state) {
    Variable y = ops::attention(h, w, b, v);
    backward(y);
  }
  const k::AttentionShape s{32, 64, 128, 128};
  report(state, k::attention_forward_cost(s).flops + k::attention_backward_cost(s).flops);
}
BENCHMARK(BM_Attention)->Unit(benchmark::kMillisecond)->UseRealTime();

// Batch norm (training), max pooling and ReLU at the ResCNN's first block:
// (32, 16, 128, 128), 32 MiB of activations. Bandwidth-bound: GB/s from
// one read and one write of the tensor forward, three touches backward.
void BM_BatchNormReluPool(benchmark::State& state) {
  const int C = int(state.range(0)), HW = int(state.range(1));
  Generator g(6);
  Variable x = randn(g, Shape{32, C, HW, HW}, true);
  Variable gamma(Tensor::full(Shape{C}, 1.0), true), beta(Tensor::zeros(Shape{C}), true);
  Tensor rm = Tensor::zeros(Shape{C}), rv = Tensor::full(Shape{C}, 1.0);
  for (auto _ : state) {
    Variable y = ops::max_pool2d(ops::relu(ops::batch_norm(x, gamma, beta, rm, rv, true)),
                                 {2, 2, 2, 2});
    backward(y);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  const double bytes = 32.0 * C * HW * HW * 4;
  state.counters["GB/s"] = benchmark::Counter(bytes * 10 * double(state.iterations()) * 1e-9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BatchNormReluPool)->Args({16, 128})->Args({128, 8})->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_SoftmaxOverTime(benchmark::State& state) {
  Generator g(7);
  Variable x = randn(g, Shape{32, 64}, true);
  for (auto _ : state) {
    Variable y = ops::softmax(x);
    backward(y);
  }
  report(state, 32 * 64 * 11.0);
}
BENCHMARK(BM_SoftmaxOverTime)->UseRealTime();

void BM_CrossEntropy(benchmark::State& state) {
  Generator g(5);
  Variable logits = randn(g, Shape{32, 8}, true);
  std::vector<int32_t> l(32);
  for (int i = 0; i < 32; ++i) l[size_t(i)] = i % 8;
  const Tensor labels = Tensor::from_host(Shape{32}, l);
  for (auto _ : state) {
    Variable loss = ops::cross_entropy(logits, labels);
    loss.backward();
  }
  report(state, 32 * 8 * 10.0);
}
BENCHMARK(BM_CrossEntropy)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
