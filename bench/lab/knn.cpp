// knn: the baseline's k-nearest-neighbour search (k 8 over 15 PCA
// components, 6,000 training segments as references) and vote (8 classes),
// 32 query segments per batch unit; and the column statistics and
// standardisation of flattened 128x128 spectrograms (16,384 columns), 32
// segments per batch unit.
#include "bench/lab/lab.h"
#include "kernels/knn.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr int kRefs = 6000, kDim = 15, kK = 8, kClasses = 8, kPerBatch = 32;
constexpr int kColumns = 128 * 128;

struct SearchRun : Run {
  bool vote;
  int m;
  std::vector<float> queries, refs;
  std::vector<int> labels;
  DeviceBuffer<float> d_queries, d_refs, d_dist2, d_probs;
  DeviceBuffer<int> d_index, d_labels;
  SearchRun(bool v, int batch)
      : vote(v), m(kPerBatch * batch), queries(random_values<float>(size_t(m) * kDim, 91)),
        refs(random_values<float>(size_t(kRefs) * kDim, 92)), labels(size_t(kRefs)),
        d_queries(queries), d_refs(refs), d_dist2(size_t(m) * kK),
        d_probs(size_t(m) * kClasses), d_index(size_t(m) * kK) {
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = int(i * 7919 % kClasses);
    d_labels = DeviceBuffer<int>(labels);
    if (vote) search(128);
  }
  void search(int block) {
    k::knn_search(d_queries.get(), m, d_refs.get(), kRefs, kDim, kK, d_index.get(),
                  d_dist2.get(), nullptr, block);
  }
  void run(int block) override {
    if (!vote) return search(block);
    k::knn_vote(d_index.get(), d_dist2.get(), m, kK, d_labels.get(), kClasses, d_probs.get(),
                nullptr, block);
  }
  std::string check() override {
    std::vector<int> index(size_t(m) * kK);
    std::vector<float> dist2(index.size()), probs(size_t(m) * kClasses);
    k::knn_search_cpu(queries.data(), m, refs.data(), kRefs, kDim, kK, index.data(),
                      dist2.data());
    if (!vote) {
      // The same float fma sequence and tie rule as the kernel: the same bits.
      std::string e = compare(d_index.to_host(), widen(index), 0);
      if (e.empty()) e = compare(d_dist2.to_host(), widen(dist2), 0);
      return e;
    }
    k::knn_vote_cpu(index.data(), dist2.data(), m, kK, labels.data(), kClasses, probs.data());
    // Weights summed in double, one float rounding; sqrt may differ by an ulp.
    return compare(d_probs.to_host(), widen(probs), 1e-6);
  }
};

struct ColumnRun : Run {
  bool standardize;
  long long n;
  std::vector<float> x;
  std::vector<double> mean, var;
  DeviceBuffer<float> d_x;
  DeviceBuffer<double> d_mean, d_var;
  ColumnRun(bool st, int batch)
      : standardize(st), n(kPerBatch * batch),
        x(random_values<float>(size_t(n) * kColumns, 93, -2, 5)), mean(size_t(kColumns)),
        var(size_t(kColumns)), d_x(x), d_mean(size_t(kColumns)),
        d_var(size_t(kColumns)) {
    if (standardize) {
      k::column_stats_cpu(x.data(), n, kColumns, mean.data(), var.data());
      d_mean.copy_from_host(mean);
      d_var.copy_from_host(var);
    }
  }
  // standardize_columns works in place: every run standardises the result
  // of the last again; the reference replays as many passes.
  int runs = 0, ref_runs = 0;
  std::vector<float> ref;
  void run(int block) override {
    ++runs;
    if (!standardize)
      return k::column_stats(d_x.get(), n, kColumns, d_mean.get(), d_var.get(), nullptr, block);
    // Finite however many runs: the scales are ~2, so the values contract
    // towards a fixed point.
    k::standardize_columns(d_x.get(), n, kColumns, d_mean.get(), d_var.get(), nullptr, block);
  }
  std::string check() override {
    if (!standardize) {
      std::vector<double> rm(mean.size()), rv(var.size());
      k::column_stats_cpu(x.data(), n, kColumns, rm.data(), rv.data());
      // Two double passes in the same order: the same bits.
      std::string e = compare(d_mean.to_host(), rm, 0);
      if (e.empty()) e = compare(d_var.to_host(), rv, 0);
      return e;
    }
    if (ref_runs == 0) ref = x;
    for (; ref_runs < runs; ++ref_runs)
      k::standardize_columns_cpu(ref.data(), n, kColumns, mean.data(), var.data());
    return compare(d_x.to_host(), widen(ref), 0);  // the same double expression, one rounding
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(knn) {
  using namespace timbre::lab;
  const std::string shape = "baseline.q32xbatch.r6000.d15.k8";
  add({"knn", "knn_search", shape,
       [](int b) { return k::knn_search_cost(kPerBatch * b, kRefs, kDim, kK); },
       // Shared memory block*dim*4 bytes must stay under 48 KiB: block <= 768.
       {64, 128, 256, 512}, [](int b) { return std::make_unique<SearchRun>(false, b); }});
  add({"knn", "knn_vote", shape,
       // knn.cuh declares no vote cost: per query read k indices and
       // distances, a sqrt, a divide and two adds per neighbour, write the
       // class probabilities.
       [](int b) {
         k::Cost c = k::elementwise_cost(double(kPerBatch) * b * kK, 2, 0, 4);
         c += k::elementwise_cost(double(kPerBatch) * b * kClasses, 0, 1, 1);
         return c;
       },
       block_sweep(), [](int b) { return std::make_unique<SearchRun>(true, b); }});
  const std::string cols = "baseline.segments32xbatch.d16384";
  add({"knn", "column_stats", cols,
       [](int b) { return k::column_stats_cost(double(kPerBatch) * b, kColumns); },
       block_sweep(), [](int b) { return std::make_unique<ColumnRun>(false, b); }});
  add({"knn", "standardize_columns", cols,
       [](int b) { return k::standardize_columns_cost(double(kPerBatch) * b, kColumns); },
       block_sweep(), [](int b) { return std::make_unique<ColumnRun>(true, b); }});
}
