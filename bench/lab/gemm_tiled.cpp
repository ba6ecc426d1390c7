// gemm_tiled: the teaching GEMMs (v1: a thread per output; v2: shared-memory
// tiles), at two of the models' GEMMs per sample: the rescnn's block-4 conv1
// as an im2col product (128 filters x 576 = 64*3*3 taps x 256 = 16x16
// outputs a sample) and the parallel model's GRU input projection (64 steps
// a sample x 192 = 3*64 gates x 128 embedding).
#include "bench/lab/lab.h"
#include "kernels/gemm_tiled.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

// C (M x N) = A (M x K) B (K x N); the batch multiplies M or N.
struct Site {
  const char* shape;
  int m, n, k;
  bool batch_in_m;
  int M(int b) const { return batch_in_m ? m * b : m; }
  int N(int b) const { return batch_in_m ? n : n * b; }
};
const Site kSites[] = {
    {"rescnn.block4.conv1_im2col", 128, 256, 576, false},
    {"parallel.gru.input_projection", 64, 192, 128, true},
};

struct GemmRun : Run {
  bool tiled;
  int M, N, K;
  std::vector<float> a, b;
  DeviceBuffer<float> d_a, d_b, d_c;
  GemmRun(const Site& s, bool v2, int batch)
      : tiled(v2), M(s.M(batch)), N(s.N(batch)), K(s.k),
        a(random_values<float>(size_t(M) * K, 81)), b(random_values<float>(size_t(K) * N, 82)),
        d_a(a), d_b(b), d_c(size_t(M) * N) {}
  // block: threads per block; v1 takes them as 32 x (block/32), v2 as a
  // square tile of sqrt(block) (256: 16 x 16, 1024: 32 x 32).
  void run(int block) override {
    if (tiled)
      k::gemm_v2_tiled(M, N, K, d_a.get(), d_b.get(), d_c.get(), block == 1024 ? 32 : 16,
                       nullptr);
    else
      k::gemm_v1_naive(M, N, K, d_a.get(), d_b.get(), d_c.get(), dim3(32, unsigned(block / 32)),
                       nullptr);
  }
  std::vector<float> ref;  // computed once
  std::string check() override {
    if (ref.empty()) {
      ref.resize(size_t(M) * N);
      k::gemm_cpu(M, N, K, a.data(), b.data(), ref.data());
    }
    // Float accumulation over K (<= 576) terms of magnitude <= 1 against a
    // double sum: ~sqrt(K) u |C|-sized errors in practice; 1e-5 of max|C|
    // (~20) is the test's 1e-4 absolute.
    return compare(d_c.to_host(), widen(ref), 1e-5);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(gemm_tiled) {
  using namespace timbre::lab;
  for (const Site& s : kSites) {
    // gemm_tiled.cuh has only gemm_flops: gemm_cost gives flops and bytes.
    auto cost = [s](int b) { return k::gemm_cost(s.M(b), s.N(b), s.k, 4); };
    add({"gemm_tiled", "gemm_v1_naive", s.shape, cost, block_sweep(),
         [s](int b) { return std::make_unique<GemmRun>(s, false, b); }});
    add({"gemm_tiled", "gemm_v2_tiled", s.shape, cost, {256, 1024},  // tiles 16, 32
         [s](int b) { return std::make_unique<GemmRun>(s, true, b); }});
  }
}
