// conv2d: both versions (v1_direct: a thread per output value; v2_im2col:
// im2col + cuBLAS GEMM, the engine's) of forward, dx, dw and db, at four of
// the models' convolutions. Every version of an op reports the op's ideal
// cost, so GB/s and GFLOP/s compare versions directly (v2's column matrices
// are extra traffic: conv2d_im2col_cost).
#include <cublas_v2.h>

#include <algorithm>

#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/conv2d.cuh"
#include "kernels/cuda_check.h"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {


enum class Op { forward, data, filter, bias };
const char* op_name(Op o) {
  switch (o) {
    case Op::forward: return "forward";
    case Op::data: return "backward_data";
    case Op::filter: return "backward_filter";
    default: return "backward_bias";
  }
}

k::Cost op_cost(Op o, const k::Conv2dShape& s) {
  switch (o) {
    case Op::forward: return k::conv2d_forward_cost(s, true);
    case Op::data: return k::conv2d_backward_data_cost(s, false);
    case Op::filter: return k::conv2d_backward_filter_cost(s, false);
    default: return k::conv2d_backward_bias_cost(s, false);
  }
}

struct Conv2dRun : Run {
  Op op;
  bool v2;
  k::Conv2dShape s;
  std::vector<float> x, w, b, dy, ref;
  DeviceBuffer<float> dx_, dw_, db_, ddy, out;
  DeviceBuffer<float> ws;
  size_t ws_bytes = 0;
  cublasHandle_t h = nullptr;

  Conv2dRun(Op o, bool version2, k::Conv2dShape shape, int batch)
      : op(o), v2(version2), s(shape) {
    s.N = batch;
    x = random_values<float>(size_t(s.x_size()), 31);
    w = random_values<float>(size_t(s.w_size()), 32, -0.2, 0.2);
    b = random_values<float>(size_t(s.K), 33);
    dy = random_values<float>(size_t(s.y_size()), 34);
    dx_ = DeviceBuffer<float>(x);
    dw_ = DeviceBuffer<float>(w);
    db_ = DeviceBuffer<float>(b);
    ddy = DeviceBuffer<float>(dy);
    const size_t n_out = op == Op::forward ? size_t(s.y_size())
                         : op == Op::data  ? size_t(s.x_size())
                         : op == Op::filter ? size_t(s.w_size())
                                            : size_t(s.K);
    out = DeviceBuffer<float>(n_out);
    if (v2) {
      // As the engine (engine/ops.cpp, conv_workspace): up to 64 MiB of
      // column matrices and filter-gradient slots, at least one image.
      const size_t per_image = size_t(k::conv2d_workspace_elements(s)) * sizeof(float);
      const size_t images = std::max<size_t>(1, std::min<size_t>(s.N, (64u << 20) / per_image));
      ws_bytes = images * per_image;
      if (ws_bytes) ws = DeviceBuffer<float>(ws_bytes / sizeof(float));
      CUBLAS_CHECK(cublasCreate(&h));
    }
  }
  ~Conv2dRun() override {
    if (h) cublasDestroy(h);
  }
  void run(int block) override {
    float* wsp = ws_bytes ? ws.get() : nullptr;
    switch (op) {
      case Op::forward:
        if (v2)
          k::conv2d_forward_v2_im2col<float>(s, dx_.get(), dw_.get(), db_.get(), out.get(), wsp,
                                             ws_bytes, h, nullptr, block);
        else
          k::conv2d_forward_v1_direct<float>(s, dx_.get(), dw_.get(), db_.get(), out.get(),
                                             nullptr, block);
        break;
      case Op::data:
        if (v2)
          k::conv2d_backward_data_v2_im2col<float>(s, dw_.get(), ddy.get(), out.get(), false, wsp,
                                                   ws_bytes, h, nullptr, block);
        else
          k::conv2d_backward_data_v1_direct<float>(s, dw_.get(), ddy.get(), out.get(), false,
                                                   nullptr, block);
        break;
      case Op::filter:
        if (v2)
          k::conv2d_backward_filter_v2_im2col<float>(s, dx_.get(), ddy.get(), out.get(), false,
                                                     wsp, ws_bytes, h, nullptr, block);
        else
          k::conv2d_backward_filter_v1_direct<float>(s, dx_.get(), ddy.get(), out.get(), false,
                                                     nullptr, block);
        break;
      case Op::bias:
        if (v2)
          k::conv2d_backward_bias_v2_reduce<float>(s, ddy.get(), out.get(), false, nullptr, block);
        else
          k::conv2d_backward_bias_v1_direct<float>(s, ddy.get(), out.get(), false, nullptr, block);
        break;
    }
  }
  std::string check() override {
    if (ref.empty()) {
      std::vector<float> r(out.size());
      switch (op) {
        case Op::forward:
          k::conv2d_forward_cpu<float>(s, x.data(), w.data(), b.data(), r.data());
          break;
        case Op::data:
          k::conv2d_backward_data_cpu<float>(s, w.data(), dy.data(), r.data(), false);
          break;
        case Op::filter:
          k::conv2d_backward_filter_cpu<float>(s, x.data(), dy.data(), r.data(), false);
          break;
        case Op::bias:
          k::conv2d_backward_bias_cpu<float>(s, dy.data(), r.data(), false);
          break;
      }
      ref = r;
    }
    // Float sums of up to N*P*Q = 8,192 products (dw, db at the check batch)
    // against a double reference: 1e-4 of the largest value (the tests'
    // analysis, tests/kernels/test_conv2d.cpp, bounds them tighter per sum).
    return compare(out.to_host(), widen(ref), 1e-4);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(conv2d) {
  using namespace timbre::lab;
  for (const ConvSite& site : kConvSites)
    for (Op o : {Op::forward, Op::data, Op::filter, Op::bias})
      for (bool v2 : {false, true}) {
        const std::string version =
            std::string(op_name(o)) + (v2 ? (o == Op::bias ? "_v2_reduce" : "_v2_im2col")
                                          : "_v1_direct");
        // col2im (v2's dx) takes at most 512 threads per block (its registers).
        std::vector<int> blocks = block_sweep();
        if (v2 && o == Op::data) blocks = {64, 128, 256, 512};
        const k::Conv2dShape s = site.s;
        add({"conv2d", version, site.shape,
             [o, s](int b) {
               k::Conv2dShape sb = s;
               sb.N = b;
               return op_cost(o, sb);
             },
             blocks, [o, v2, s](int b) { return std::make_unique<Conv2dRun>(o, v2, s, b); }});
      }
}
