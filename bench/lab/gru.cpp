// gru: a whole GRU layer forward and backward through time (one GEMM for
// the input projections, then per step a GEMM and the fused gate kernel),
// at the C-RNN's layer (16 steps of 128, hidden 32) and one direction of
// the parallel model's bidirectional layer (64 steps of 128, hidden 64).
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>

#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/cuda_check.h"
#include "kernels/gru.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {


// Every gradient assigned: what gru_backward_cost counts.
const k::GruAccumulate kAssign{false, false, false, false, false, false};

struct GruRun : Run {
  GruSite site;
  bool backward;
  int B;
  std::vector<float> x, w_ih, w_hh, b_ih, b_hh, dhseq;
  std::vector<std::vector<double>> ref;  // hseq, or dx, dW_ih, dW_hh, db_ih, db_hh
  DeviceBuffer<float> dx_in, dw_ih, dw_hh, db_ih, db_hh, hseq, reserve, ws, ddh;
  DeviceBuffer<float> gx, gw_ih, gw_hh, gb_ih, gb_hh;  // the gradients
  cublasHandle_t h = nullptr;

  GruRun(const GruSite& s, bool bw, int batch) : site(s), backward(bw), B(batch) {
    const int S = s.steps, I = s.input, H = s.hidden, G = 3 * H;
    const double limit = 1 / std::sqrt(double(H));  // PyTorch's GRU initialisation
    x = random_values<float>(size_t(B) * S * I, 41);
    w_ih = random_values<float>(size_t(G) * I, 42, -limit, limit);
    w_hh = random_values<float>(size_t(G) * H, 43, -limit, limit);
    b_ih = random_values<float>(size_t(G), 44, -limit, limit);
    b_hh = random_values<float>(size_t(G), 45, -limit, limit);
    dhseq = random_values<float>(size_t(B) * S * H, 46);
    dx_in = DeviceBuffer<float>(x);
    dw_ih = DeviceBuffer<float>(w_ih);
    dw_hh = DeviceBuffer<float>(w_hh);
    db_ih = DeviceBuffer<float>(b_ih);
    db_hh = DeviceBuffer<float>(b_hh);
    ddh = DeviceBuffer<float>(dhseq);
    hseq = DeviceBuffer<float>(size_t(B) * S * H);
    reserve = DeviceBuffer<float>(k::gru_reserve_size(shape()));
    ws = DeviceBuffer<float>(std::max(k::gru_forward_workspace_size(shape()),
                                      k::gru_backward_workspace_size(shape())));
    gx = DeviceBuffer<float>(x.size());
    gw_ih = DeviceBuffer<float>(w_ih.size());
    gw_hh = DeviceBuffer<float>(w_hh.size());
    gb_ih = DeviceBuffer<float>(b_ih.size());
    gb_hh = DeviceBuffer<float>(b_hh.size());
    CUBLAS_CHECK(cublasCreate(&h));
    if (backward) forward();  // the reserve backward reads
  }
  ~GruRun() override { cublasDestroy(h); }
  k::GruShape shape() const { return {B, site.steps, site.input, site.hidden}; }
  void forward(int block = 256) {
    k::gru_forward<float>(h, shape(), {dw_ih.get(), dw_hh.get(), db_ih.get(), db_hh.get()},
                          {dx_in.get(), nullptr, hseq.get(), nullptr}, site.reverse,
                          reserve.get(), ws.get(), nullptr, block);
  }
  void run(int block) override {
    if (!backward) return forward(block);
    k::gru_backward<float>(h, shape(), {dw_ih.get(), dw_hh.get(), db_ih.get(), db_hh.get()},
                           {dx_in.get(), ddh.get(), nullptr}, site.reverse, reserve.get(),
                           {gx.get(), nullptr, gw_ih.get(), gw_hh.get(), gb_ih.get(),
                            gb_hh.get(), kAssign},
                           ws.get(), nullptr, block);
  }
  std::string check() override {
    const k::GruWeights<float> weights{w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data()};
    if (ref.empty()) {
      if (!backward) {
        std::vector<float> r(hseq.size());
        k::gru_forward_cpu<float>(shape(), weights, {x.data(), nullptr, r.data(), nullptr},
                                  site.reverse);
        ref = {widen(r)};
      } else {
        std::vector<float> r[5] = {std::vector<float>(x.size()), std::vector<float>(w_ih.size()),
                                   std::vector<float>(w_hh.size()), std::vector<float>(b_ih.size()),
                                   std::vector<float>(b_hh.size())};
        k::gru_backward_cpu<float>(shape(), weights, {x.data(), dhseq.data(), nullptr},
                                   site.reverse, nullptr,
                                   {r[0].data(), nullptr, r[1].data(), r[2].data(), r[3].data(),
                                    r[4].data(), kAssign});
        for (const auto& part : r) ref.push_back(widen(part));
      }
    }
    // Float roundings through up to 64 steps and GEMM sums of up to B*S
    // terms: tests/kernels/test_gru.cpp bounds them by u (4 sqrt(N) + 256)
    // of the scale; 1e-4 is above that bound at these sizes.
    if (!backward) return compare(hseq.to_host(), ref[0], 1e-4);
    const char* names[] = {"dx", "dW_ih", "dW_hh", "db_ih", "db_hh"};
    const DeviceBuffer<float>* got[] = {&gx, &gw_ih, &gw_hh, &gb_ih, &gb_hh};
    for (int i = 0; i < 5; ++i)
      if (std::string e = compare(got[i]->to_host(), ref[size_t(i)], 1e-4); !e.empty())
        return std::string(names[i]) + ": " + e;
    return "";
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(gru) {
  using namespace timbre::lab;
  for (const GruSite& s : kGruSites)
    for (bool bw : {false, true})
      add({"gru", bw ? "backward" : "forward", s.shape,
           [s, bw](int b) {
             const k::GruShape shape{b, s.steps, s.input, s.hidden};
             return bw ? k::gru_backward_cost(shape) : k::gru_forward_cost(shape);
           },
           block_sweep(), [s, bw](int b) { return std::make_unique<GruRun>(s, bw, b); }});
}
