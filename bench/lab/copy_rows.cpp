// copy_rows: the strided row copies and transposes of the models' sequence
// plumbing, per sample: the parallel model's concat of the CNN (2048) and
// RNN (128) features into 2176 columns (and its gradient, accumulated), the
// BiGRU's per-step [forward, backward] concat (64 steps of 64 + 64); the
// transposes to sequences (crnn 128x16 -> 16x128, parallel branch 32x64 ->
// 64x32).
#include "bench/lab/lab.h"
#include "kernels/copy_rows.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

// dst[r*dst_stride + c] (+)= src[r*src_stride + c], rows = rows_per_sample*batch.
struct CopySite {
  const char* shape;
  long long rows_per_sample, cols, src_stride, dst_stride;
  bool accumulate;
};
const CopySite kCopySites[] = {
    {"parallel.concat.cnn", 1, 2048, 2048, 2176, false},
    {"parallel.concat.rnn", 1, 128, 128, 2176, false},
    {"parallel.concat.cnn_grad", 1, 2048, 2176, 2048, true},
    {"parallel.bigru.concat", 64, 64, 64, 128, false},
    {"parallel.bigru.concat_grad", 64, 64, 128, 64, true},
};

// A (batch, rows, cols) -> (batch, cols, rows) transpose.
struct TransposeSite {
  const char* shape;
  long long rows, cols;
};
const TransposeSite kTransposeSites[] = {
    {"crnn.to_sequence", 128, 16},
    {"parallel.branch.to_sequence", 32, 64},
};

struct CopyRun : Run {
  CopySite site;
  long long rows;
  std::vector<float> src, dst;
  DeviceBuffer<float> d_src, d_dst;
  CopyRun(const CopySite& s, int batch)
      : site(s), rows(s.rows_per_sample * batch),
        src(random_values<float>(size_t(rows * s.src_stride), 61)),
        dst(random_values<float>(size_t(rows * s.dst_stride), 62)), d_src(src), d_dst(dst) {}
  // With accumulate every run adds src again: the reference replays as many.
  int runs = 0, ref_runs = 0;
  std::vector<float> ref;
  void run(int block) override {
    ++runs;
    k::copy_rows<float>(d_src.get(), site.src_stride, d_dst.get(), site.dst_stride, rows,
                        site.cols, site.accumulate, nullptr, block);
  }
  std::string check() override {
    if (ref_runs == 0) ref = dst;
    for (; ref_runs < (site.accumulate ? runs : 1); ++ref_runs)
      k::copy_rows_cpu<float>(src.data(), site.src_stride, ref.data(), site.dst_stride, rows,
                              site.cols, site.accumulate);
    return compare(d_dst.to_host(), widen(ref), 0);  // copies or the same additions: exact
  }
};

struct TransposeRun : Run {
  TransposeSite site;
  long long batch;
  std::vector<float> in;
  DeviceBuffer<float> d_in, d_out;
  TransposeRun(const TransposeSite& s, int b)
      : site(s), batch(b), in(random_values<float>(size_t(b * s.rows * s.cols), 63)), d_in(in),
        d_out(in.size()) {}
  void run(int block) override {
    k::transpose_last2<float>(d_in.get(), d_out.get(), batch, site.rows, site.cols, false,
                              nullptr, block);
  }
  std::vector<float> ref;
  std::string check() override {
    if (ref.empty()) {
      ref.resize(in.size());
      k::transpose_last2_cpu<float>(in.data(), ref.data(), batch, site.rows, site.cols, false);
    }
    return compare(d_out.to_host(), widen(ref), 0);  // a copy: exact
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(copy_rows) {
  using namespace timbre::lab;
  for (const CopySite& s : kCopySites)
    add({"copy_rows", "copy_rows", s.shape,
         [s](int b) { return k::copy_rows_cost(s.rows_per_sample * b, s.cols, s.accumulate); },
         block_sweep(), [s](int b) { return std::make_unique<CopyRun>(s, b); }});
  for (const TransposeSite& s : kTransposeSites)
    add({"copy_rows", "transpose_last2", s.shape,
         // transpose_last2 has no cost of its own: a copy of batch*rows*cols
         // values is copy_rows_cost's.
         [s](int b) { return k::copy_rows_cost(b * s.rows, s.cols, false); }, block_sweep(),
         [s](int b) { return std::make_unique<TransposeRun>(s, b); }});
}
