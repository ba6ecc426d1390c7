// reduce: the two teaching versions of a float sum (v1: shared-memory tree,
// v2: warp shuffles), over one activation of the rescnn's first block per
// sample (16x128x128 = 262,144 floats: the size of, say, a loss or norm
// over that map), scaled by the batch.
#include "bench/lab/lab.h"
#include "kernels/reduce.cuh"

#include <algorithm>

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr long long kPerSample = 16LL * 128 * 128;

struct ReduceRun : Run {
  bool shuffle;
  long long n;
  std::vector<float> x;
  DeviceBuffer<float> d_x, d_out, d_partial;
  // d_partial: room for the most blocks any block size asks for (threads 32).
  ReduceRun(bool v2, int batch)
      : shuffle(v2), n(kPerSample * batch),
        // Positive: |sum| = sum|x|, so the tolerance relative to the sum is
        // the usual bound on sum|x|.
        x(random_values<float>(size_t(n), 71, 0, 1)), d_x(x), d_out(1),
        d_partial(size_t(k::reduce_sum_blocks(n, 32))) {}
  void run(int block) override {
    if (shuffle)
      k::reduce_sum_v2_shuffle(d_x.get(), n, d_out.get(), d_partial.get(), block, nullptr);
    else
      k::reduce_sum_v1_smem(d_x.get(), n, d_out.get(), d_partial.get(), block, nullptr);
  }
  std::string check() override {
    // Float runs of n/(blocks*threads) terms per thread, then two trees: a
    // relative error of (terms per thread + 20) u at most (8 terms at batch
    // 2, block 64: ~2e-6); the test allows 4e-7 sum|x| at its smaller sizes.
    return compare(d_out.to_host(), std::vector<double>{k::reduce_sum_cpu(x.data(), x.size())},
                   1e-5);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(reduce) {
  using namespace timbre::lab;
  for (bool v2 : {false, true})
    add({"reduce", v2 ? "reduce_sum_v2_shuffle" : "reduce_sum_v1_smem", "rescnn.block1.activation",
         // reduce.cuh declares no cost: one read and one add per value (the
         // partials are negligible).
         [](int b) { return k::elementwise_cost(double(kPerSample) * b, 1, 0, 1); },
         block_sweep(),  // threads: powers of two in [32, 1024]
         [v2](int b) { return std::make_unique<ReduceRun>(v2, b); }});
}
