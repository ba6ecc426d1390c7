// attention: the parallel model's additive attention over the 64 steps of
// its bidirectional GRU (D = 128 features per step, W 128 x 128), forward
// and backward (all gradients).
#include <cublas_v2.h>

#include "bench/lab/lab.h"
#include "kernels/attention.cuh"
#include "kernels/cuda_check.h"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr int kSteps = 64, kDim = 128, kAttn = 128;
const k::AttentionAccumulate kAssign{false, false, false, false};

struct AttentionRun : Run {
  bool backward;
  int B;
  std::vector<float> hs, w, b, v, dout;
  std::vector<std::vector<double>> ref;  // out, or dhseq, dW, db, dv
  DeviceBuffer<float> d_hs, d_w, d_b, d_v, d_dout, out, alpha, reserve, ws;
  DeviceBuffer<float> g_hs, g_w, g_b, g_v;
  cublasHandle_t h = nullptr;

  AttentionRun(bool bw, int batch) : backward(bw), B(batch) {
    const size_t R = size_t(B) * kSteps;
    hs = random_values<float>(R * kDim, 51);
    w = random_values<float>(size_t(kAttn) * kDim, 52, -0.1, 0.1);
    b = random_values<float>(kAttn, 53, -0.1, 0.1);
    v = random_values<float>(kAttn, 54);
    dout = random_values<float>(size_t(B) * kDim, 55);
    d_hs = DeviceBuffer<float>(hs);
    d_w = DeviceBuffer<float>(w);
    d_b = DeviceBuffer<float>(b);
    d_v = DeviceBuffer<float>(v);
    d_dout = DeviceBuffer<float>(dout);
    out = DeviceBuffer<float>(size_t(B) * kDim);
    alpha = DeviceBuffer<float>(R);
    reserve = DeviceBuffer<float>(k::attention_reserve_size(shape()));
    ws = DeviceBuffer<float>(k::attention_backward_workspace_size(shape()));
    g_hs = DeviceBuffer<float>(hs.size());
    g_w = DeviceBuffer<float>(w.size());
    g_b = DeviceBuffer<float>(b.size());
    g_v = DeviceBuffer<float>(v.size());
    CUBLAS_CHECK(cublasCreate(&h));
    if (backward) forward();
  }
  ~AttentionRun() override { cublasDestroy(h); }
  k::AttentionShape shape() const { return {B, kSteps, kDim, kAttn}; }
  void forward(int block = 256) {
    k::attention_forward<float>(h, shape(), {d_w.get(), d_b.get(), d_v.get()},
                                {d_hs.get(), out.get(), alpha.get()}, reserve.get(), nullptr,
                                block);
  }
  void run(int block) override {
    if (!backward) return forward(block);
    k::attention_backward<float>(h, shape(), {d_w.get(), d_b.get(), d_v.get()},
                                 {d_hs.get(), d_dout.get()}, alpha.get(), reserve.get(),
                                 {g_hs.get(), g_w.get(), g_b.get(), g_v.get(), kAssign}, ws.get(),
                                 nullptr, block);
  }
  std::string check() override {
    const k::AttentionWeights<float> weights{w.data(), b.data(), v.data()};
    if (ref.empty()) {
      if (!backward) {
        std::vector<float> o(out.size());
        k::attention_forward_cpu<float>(shape(), weights, {hs.data(), o.data(), nullptr});
        ref = {widen(o)};
      } else {
        std::vector<float> r[4] = {std::vector<float>(hs.size()), std::vector<float>(w.size()),
                                   std::vector<float>(b.size()), std::vector<float>(v.size())};
        k::attention_backward_cpu<float>(shape(), weights, {hs.data(), dout.data()},
                                         {r[0].data(), r[1].data(), r[2].data(), r[3].data(),
                                          kAssign});
        for (const auto& part : r) ref.push_back(widen(part));
      }
    }
    // Float GEMM sums of up to B*S = 128 terms at the check batch and a
    // softmax over 64 steps: 1e-4 of the scale (test_gru.cpp's analysis).
    if (!backward) return compare(out.to_host(), ref[0], 1e-4);
    const char* names[] = {"dhseq", "dW", "db", "dv"};
    const DeviceBuffer<float>* got[] = {&g_hs, &g_w, &g_b, &g_v};
    for (int i = 0; i < 4; ++i)
      if (std::string e = compare(got[i]->to_host(), ref[size_t(i)], 1e-4); !e.empty())
        return std::string(names[i]) + ": " + e;
    return "";
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(attention) {
  using namespace timbre::lab;
  for (bool bw : {false, true})
    add({"attention", bw ? "backward" : "forward", "parallel.attention",
         [bw](int b) {
           const k::AttentionShape shape{b, kSteps, kDim, kAttn};
           return bw ? k::attention_backward_cost(shape) : k::attention_forward_cost(shape);
         },
         block_sweep(), [bw](int b) { return std::make_unique<AttentionRun>(bw, b); }});
}
