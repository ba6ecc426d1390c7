// pooling: max pooling forward and backward at every pool of the models,
// per sample (rescnn and the parallel trunk 2x2 after blocks 1-5; crnn 2x2,
// 4x2, 4x2, 4x1 on the conv outputs; the parallel RNN branch 4x2 on the
// input), and average / global average pooling, which the models do not
// use, at rescnn-like maps (16x128x128 2x2, 128x64x64 4x2; 128x8x8, 64x32x32).
#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/pooling.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

using Site = PoolSite;  // the max sites: kPoolSites (shapes.h), the models' pools
const Site kAvgSites[] = {
    {"avg2x2.16x128x128", 16, 128, 128, kPool(2, 2)},
    {"avg4x2.128x64x64", 128, 64, 64, kPool(4, 2)},
};
const Site kGlobalSites[] = {
    {"global.128x8x8", 128, 8, 8, {}},
    {"global.64x32x32", 64, 32, 32, {}},
};

enum class Kind { max, avg, global };
const char* kind_name(Kind k) {
  return k == Kind::max ? "max_pool2d" : k == Kind::avg ? "avg_pool2d" : "global_avg_pool";
}

// One pooling op at one site: x (n*c*h*w), y and dy (n*c*OH*OW, global n*c),
// argmax for max pooling (the backward's argmax comes from a forward run in
// the constructor, the reference's from the CPU forward).
struct PoolRun : Run {
  Site site;
  Kind kind;
  bool backward;
  k::GlobalPoolStrategy strategy;
  int n;
  size_t ins, outs;
  std::vector<float> x, dy;
  DeviceBuffer<float> d_x, d_y, d_dy, d_dx;
  DeviceBuffer<int> d_argmax;
  PoolRun(const Site& s, Kind kd, bool bw, k::GlobalPoolStrategy st, int batch)
      : site(s), kind(kd), backward(bw), strategy(st), n(batch),
        ins(size_t(batch) * s.c * s.h * s.w),
        outs(kd == Kind::global ? size_t(batch) * s.c
                                : size_t(k::pool_outputs(batch, s.c, s.h, s.w, s.p))),
        x(random_values<float>(ins, 31)), dy(random_values<float>(outs, 32)), d_x(x),
        d_y(outs), d_dy(dy), d_dx(ins), d_argmax(kd == Kind::max ? outs : 0) {
    if (kind == Kind::max && backward) forward(256);
  }
  void forward(int block) {
    const int c = site.c, h = site.h, w = site.w;
    switch (kind) {
      case Kind::max:
        k::max_pool2d_forward<float>(d_x.get(), d_y.get(), d_argmax.get(), n, c, h, w, site.p,
                                     nullptr, block);
        break;
      case Kind::avg:
        k::avg_pool2d_forward<float>(d_x.get(), d_y.get(), n, c, h, w, site.p, nullptr, block);
        break;
      case Kind::global:
        k::global_avg_pool_forward<float>(d_x.get(), d_y.get(), n, c, h, w, nullptr, block,
                                          strategy);
        break;
    }
  }
  void run(int block) override {
    if (!backward) return forward(block);
    const int c = site.c, h = site.h, w = site.w;
    switch (kind) {
      case Kind::max:
        k::max_pool2d_backward<float>({d_dy.get(), d_argmax.get(), d_dx.get()}, n, c, h, w, site.p,
                                      false, nullptr, block);
        break;
      case Kind::avg:
        k::avg_pool2d_backward<float>(d_dy.get(), d_dx.get(), n, c, h, w, site.p, false, nullptr,
                                      block);
        break;
      case Kind::global:
        k::global_avg_pool_backward<float>(d_dy.get(), d_dx.get(), n, c, h, w, false, nullptr,
                                           block);
        break;
    }
  }
  std::string check() override {
    const int c = site.c, h = site.h, w = site.w;
    std::vector<float> y(outs), dx(ins);
    std::vector<int> argmax(kind == Kind::max ? outs : 0);
    switch (kind) {
      case Kind::max:
        k::max_pool2d_forward_cpu<float>(x.data(), y.data(), argmax.data(), n, c, h, w, site.p);
        if (!backward) {
          // A maximum and its index: exact.
          std::string e = compare(d_y.to_host(), widen(y), 0);
          if (e.empty()) e = compare(d_argmax.to_host(), widen(argmax), 0);
          return e;
        }
        k::max_pool2d_backward_cpu<float>({dy.data(), argmax.data(), dx.data()}, n, c, h, w, site.p,
                                          false);
        return compare(d_dx.to_host(), widen(dx), 0);  // disjoint windows: a copy of dy or 0
      case Kind::avg:
        if (!backward) {
          k::avg_pool2d_forward_cpu<float>(x.data(), y.data(), n, c, h, w, site.p);
          // Float sum of kh*kw terms against a double one: (kh*kw - 1) ulps.
          return compare(d_y.to_host(), widen(y), 1e-6);
        }
        k::avg_pool2d_backward_cpu<float>(dy.data(), dx.data(), n, c, h, w, site.p, false);
        return compare(d_dx.to_host(), widen(dx), 1e-6);  // dy / (kh*kw): one rounding each
      case Kind::global:
      default:
        if (!backward) {
          k::global_avg_pool_forward_cpu<float>(x.data(), y.data(), n, c, h, w);
          // Both sum in double and round once; relative to max|y| (a mean of
          // +-1 values, ~1/sqrt(h*w)) allow a few ulps of the largest mean.
          return compare(d_y.to_host(), widen(y), 1e-6);
        }
        k::global_avg_pool_backward_cpu<float>(dy.data(), dx.data(), n, c, h, w, false);
        return compare(d_dx.to_host(), widen(dx), 1e-6);  // dy / (h*w): one rounding
    }
  }
};

void add_case(Kind kind, bool bw, const Site& s, const std::string& version,
              k::GlobalPoolStrategy st = k::GlobalPoolStrategy::automatic) {
  add({"pooling", version, s.shape,
       [kind, bw, s](int b) {
         switch (kind) {
           case Kind::max:
             return bw ? k::max_pool2d_backward_cost(b, s.c, s.h, s.w, s.p, false)
                       : k::max_pool2d_forward_cost(b, s.c, s.h, s.w, s.p);
           case Kind::avg:
             return bw ? k::avg_pool2d_backward_cost(b, s.c, s.h, s.w, s.p, false)
                       : k::avg_pool2d_forward_cost(b, s.c, s.h, s.w, s.p);
           default:
             return bw ? k::global_avg_pool_backward_cost(b, s.c, s.h, s.w, false)
                       : k::global_avg_pool_forward_cost(b, s.c, s.h, s.w);
         }
       },
       block_sweep(),
       [kind, bw, s, st](int b) { return std::make_unique<PoolRun>(s, kind, bw, st, b); }});
}

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(pooling) {
  using namespace timbre::lab;
  for (Kind kind : {Kind::max, Kind::avg}) {
    const std::string name = kind_name(kind);
    for (const Site& s : kind == Kind::max ? std::vector<Site>(std::begin(kPoolSites),
                                                               std::end(kPoolSites))
                                           : std::vector<Site>(std::begin(kAvgSites),
                                                               std::end(kAvgSites)))
      for (bool bw : {false, true}) add_case(kind, bw, s, name + (bw ? "_backward" : "_forward"));
  }
  for (const Site& s : kGlobalSites) {
    // The forward's two strategies (automatic picks thread up to 16x16 maps).
    add_case(Kind::global, false, s, "global_avg_pool_forward_thread",
             k::GlobalPoolStrategy::thread);
    add_case(Kind::global, false, s, "global_avg_pool_forward_warp", k::GlobalPoolStrategy::warp);
    add_case(Kind::global, true, s, "global_avg_pool_backward");
  }
}
