// test_knn.cpp: the baseline kernels (kernels/knn.cuh) against their loop
// references, at odd shapes, two block sizes, under every thread order.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/knn.cuh"
#include "tests/testing.h"

namespace k = timbre::kernels;
using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::poison;
using timbre::testing::random_nonzero;
using timbre::testing::same_bits;

namespace {

void sync() { CUDA_CHECK(cudaDeviceSynchronize()); }

TEST(KnnKernels, ColumnStatsAndStandardizeMatchReference) {
  const int n = 37, d = 53;
  std::vector<float> x = random_nonzero<float>(size_t(n) * d, 11);
  for (int i = 0; i < n; ++i) {
    x[size_t(i) * d + 4] = 3.25f;   // a constant column: scale 1, becomes 0
    x[size_t(i) * d + 9] += 40.f;   // a large offset: the two-pass variance keeps it exact
  }
  std::vector<double> mean(d), var(d);
  k::column_stats_cpu(x.data(), n, d, mean.data(), var.data());
  std::vector<float> ref = x;
  k::standardize_columns_cpu(ref.data(), n, d, mean.data(), var.data());
  EXPECT_EQ(var[4], 0.0);
  for (int i = 0; i < n; ++i) EXPECT_EQ(ref[size_t(i) * d + 4], 0.f);

  for (int block : {32, 256}) {
    SCOPED_TRACE("block " + std::to_string(block));
    for_each_thread_order([&] {
      DeviceBuffer<float> d_x(x);
      DeviceBuffer<double> d_mean(d), d_var(d);
      poison(d_mean);
      poison(d_var);
      k::column_stats(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr, block);
      k::standardize_columns(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr, block);
      sync();
      // Same double sums in the same order per column: equal bits.
      EXPECT_TRUE(same_bits(d_mean.to_host(), mean));
      EXPECT_TRUE(same_bits(d_var.to_host(), var));
      EXPECT_TRUE(same_bits(d_x.to_host(), ref));
    });
  }
}

// Q^T Q as a double matrix (cols x cols).
std::vector<double> gram(const std::vector<float>& q, int rows, int cols) {
  std::vector<double> g(size_t(cols) * cols);
  for (int a = 0; a < cols; ++a)
    for (int b = 0; b < cols; ++b) {
      double s = 0;
      for (int i = 0; i < rows; ++i) s += double(q[size_t(a) * rows + i]) * q[size_t(b) * rows + i];
      g[size_t(a) * cols + b] = s;
    }
  return g;
}

TEST(KnnKernels, OrthonormalizeMatchesModifiedGramSchmidt) {
  const int rows = 301, cols = 13;
  const std::vector<float> a = random_nonzero<float>(size_t(rows) * cols, 21);
  std::vector<float> ref = a;
  int ref_rank = -1;
  k::orthonormalize_columns_cpu(ref.data(), rows, cols, &ref_rank);
  EXPECT_EQ(ref_rank, cols);
  for (int block : {64, 256}) {
    SCOPED_TRACE("block " + std::to_string(block));
    for_each_thread_order([&] {
      DeviceBuffer<float> d_q(a);
      DeviceBuffer<int> d_rank(1);
      k::orthonormalize_columns(d_q.get(), rows, cols, d_rank.get(), nullptr, block);
      sync();
      const std::vector<float> q = d_q.to_host();
      EXPECT_EQ(d_rank.to_host()[0], cols);
      // CGS2 with float storage between steps vs MGS in double rounded
      // once: both are the same Q (Gram-Schmidt's QR is unique with
      // R's diagonal > 0) up to a few float roundings per entry of a
      // well-conditioned random matrix; entries are ~1/sqrt(301) = 0.06.
      EXPECT_TRUE(all_close(q, ref, {.atol = 2e-6, .rtol = 1e-5}));
      // Orthonormal to float precision.
      const std::vector<double> g = gram(q, rows, cols);
      std::vector<double> eye(g.size(), 0.0);
      for (int c = 0; c < cols; ++c) eye[size_t(c) * cols + c] = 1.0;
      EXPECT_TRUE(all_close(g, eye, {.atol = 1e-6, .rtol = 0}));
    });
  }
}

TEST(KnnKernels, OrthonormalizeDropsDependentColumns) {
  const int rows = 97, cols = 6;
  std::vector<float> a = random_nonzero<float>(size_t(rows) * cols, 22);
  for (int i = 0; i < rows; ++i)  // column 3 = 0.5 col 0 - 2 col 2: dependent
    a[size_t(3) * rows + i] = 0.5f * a[size_t(i)] - 2.f * a[size_t(2) * rows + i];
  std::vector<float> ref = a;
  int ref_rank = -1;
  k::orthonormalize_columns_cpu(ref.data(), rows, cols, &ref_rank);
  EXPECT_EQ(ref_rank, cols - 1);
  for_each_thread_order([&] {
    DeviceBuffer<float> d_q(a);
    DeviceBuffer<int> d_rank(1);
    k::orthonormalize_columns(d_q.get(), rows, cols, d_rank.get(), nullptr, 128);
    sync();
    const std::vector<float> q = d_q.to_host();
    EXPECT_EQ(d_rank.to_host()[0], cols - 1);
    for (int i = 0; i < rows; ++i) EXPECT_EQ(q[size_t(3) * rows + i], 0.f) << "row " << i;
    // The same tolerance reason as above.
    EXPECT_TRUE(all_close(q, ref, {.atol = 2e-6, .rtol = 1e-5}));
  });
}

TEST(KnnKernels, FixColumnSignsMatchesReference) {
  const int rows = 131, cols = 7;
  std::vector<float> w = random_nonzero<float>(size_t(rows) * cols, 31);
  // Column 2: a tie in magnitude, the lower row (-) comes first: flipped.
  w[size_t(2) * rows + 10] = -1.5f;
  w[size_t(2) * rows + 70] = 1.5f;
  // Column 5: the tie the other way: kept.
  w[size_t(5) * rows + 3] = 1.5f;
  w[size_t(5) * rows + 4] = -1.5f;
  // Column 6: all zeros stays zeros.
  for (int i = 0; i < rows; ++i) w[size_t(6) * rows + i] = 0.f;
  std::vector<float> ref = w;
  k::fix_column_signs_cpu(ref.data(), rows, cols);
  EXPECT_EQ(ref[size_t(2) * rows + 10], 1.5f);
  EXPECT_EQ(ref[size_t(5) * rows + 3], 1.5f);
  for (int block : {32, 128}) {
    SCOPED_TRACE("block " + std::to_string(block));
    for_each_thread_order([&] {
      DeviceBuffer<float> d_w(w);
      k::fix_column_signs(d_w.get(), rows, cols, nullptr, block);
      sync();
      EXPECT_TRUE(same_bits(d_w.to_host(), ref));
    });
  }
}

TEST(KnnKernels, SearchAndVoteMatchReference) {
  const int m = 203, n = 517, dim = 15, k = 8, classes = 5;
  std::vector<float> refs = random_nonzero<float>(size_t(n) * dim, 41);
  std::vector<float> queries = random_nonzero<float>(size_t(m) * dim, 42);
  // Ties: references 300 and 301 repeat reference 7, and query 5 is
  // reference 7 itself (three exact matches: distance 0, ordered 7, 300, 301).
  for (int c = 0; c < dim; ++c) {
    refs[size_t(300) * dim + c] = refs[size_t(301) * dim + c] = refs[size_t(7) * dim + c];
    queries[size_t(5) * dim + c] = refs[size_t(7) * dim + c];
  }
  const std::vector<int> labels = timbre::testing::random_ints(size_t(n), 43, 0, classes - 1);
  std::vector<int> ref_index(size_t(m) * k);
  std::vector<float> ref_dist(size_t(m) * k), ref_probs(size_t(m) * classes);
  k::knn_search_cpu(queries.data(), m, refs.data(), n, dim, k, ref_index.data(), ref_dist.data());
  k::knn_vote_cpu(ref_index.data(), ref_dist.data(), m, k, labels.data(), classes,
                  ref_probs.data());
  ASSERT_EQ(ref_index[5 * k + 0], 7);
  ASSERT_EQ(ref_index[5 * k + 1], 300);
  ASSERT_EQ(ref_index[5 * k + 2], 301);
  // Query 5: only the exact matches vote.
  for (int c = 0; c < classes; ++c)
    EXPECT_FLOAT_EQ(ref_probs[size_t(5) * classes + c],
                    float((labels[7] == c) + (labels[300] == c) + (labels[301] == c)) / 3.f);

  for (int block : {32, 128}) {
    SCOPED_TRACE("block " + std::to_string(block));
    for_each_thread_order([&] {
      DeviceBuffer<float> d_q(queries), d_r(refs);
      DeviceBuffer<int> d_labels(labels), d_index(size_t(m) * k);
      DeviceBuffer<float> d_dist(size_t(m) * k), d_probs(size_t(m) * classes);
      poison(d_index);
      poison(d_dist);
      poison(d_probs);
      k::knn_search(d_q.get(), m, d_r.get(), n, dim, k, d_index.get(), d_dist.get(), nullptr,
                    block);
      k::knn_vote(d_index.get(), d_dist.get(), m, k, d_labels.get(), classes, d_probs.get(),
                  nullptr, block);
      sync();
      // The same fma chain in both: equal bits, equal neighbours.
      EXPECT_TRUE(same_bits(d_index.to_host(), ref_index));
      EXPECT_TRUE(same_bits(d_dist.to_host(), ref_dist));
      // The same double arithmetic in the same order: equal up to nothing;
      // a tiny tolerance only guards against a differently rounded sqrt
      // in a libm (CUDA's and glibc's double sqrt are both correctly rounded).
      EXPECT_TRUE(all_close(d_probs.to_host(), ref_probs, {.atol = 1e-7, .rtol = 1e-7}));
    });
  }
}

TEST(KnnKernels, SeparableProblemIsClassifiedPerfectly) {
  // Three well separated clusters in 7 dimensions; odd sizes.
  const int dim = 7, classes = 3, n = 151, m = 61, k = 8;
  std::mt19937_64 g(51);
  std::normal_distribution<float> noise(0.f, 0.3f);
  auto make = [&](int count, std::vector<float>& x, std::vector<int>& y) {
    for (int i = 0; i < count; ++i) {
      const int c = i % classes;
      y.push_back(c);
      for (int j = 0; j < dim; ++j) x.push_back((j == c ? 5.f : 0.f) + noise(g));
    }
  };
  std::vector<float> xr, xq;
  std::vector<int> yr, yq;
  make(n, xr, yr);
  make(m, xq, yq);
  std::vector<int> ref_index(size_t(m) * k);
  std::vector<float> ref_dist(size_t(m) * k), ref_probs(size_t(m) * classes);
  k::knn_search_cpu(xq.data(), m, xr.data(), n, dim, k, ref_index.data(), ref_dist.data());
  k::knn_vote_cpu(ref_index.data(), ref_dist.data(), m, k, yr.data(), classes, ref_probs.data());
  for_each_thread_order([&] {
    DeviceBuffer<float> d_q(xq), d_r(xr);
    DeviceBuffer<int> d_labels(yr), d_index(size_t(m) * k);
    DeviceBuffer<float> d_dist(size_t(m) * k), d_probs(size_t(m) * classes);
    k::knn_search(d_q.get(), m, d_r.get(), n, dim, k, d_index.get(), d_dist.get(), nullptr, 64);
    k::knn_vote(d_index.get(), d_dist.get(), m, k, d_labels.get(), classes, d_probs.get(),
                nullptr, 64);
    sync();
    const std::vector<float> p = d_probs.to_host();
    int correct = 0;
    for (int q = 0; q < m; ++q) {
      int best = 0, best_ref = 0;
      for (int c = 1; c < classes; ++c) {
        if (p[size_t(q) * classes + c] > p[size_t(q) * classes + best]) best = c;
        if (ref_probs[size_t(q) * classes + c] > ref_probs[size_t(q) * classes + best_ref])
          best_ref = c;
      }
      EXPECT_EQ(best, best_ref) << "query " << q;
      correct += best == yq[size_t(q)];
    }
    EXPECT_EQ(correct, m);
  });
}

TEST(KnnKernels, BadArgumentsThrow) {
  DeviceBuffer<float> d(64);
  DeviceBuffer<int> di(64);
  EXPECT_THROW(k::knn_search(d.get(), 2, d.get(), 3, 4, 4, di.get(), d.get(), nullptr),
               std::invalid_argument);  // k > n
  EXPECT_THROW(k::knn_search(d.get(), 2, d.get(), 3, 65, 1, di.get(), d.get(), nullptr),
               std::invalid_argument);  // dim > kKnnMaxDim
  EXPECT_THROW(k::knn_search(d.get(), 2, d.get(), 3, 4, 1, di.get(), d.get(), nullptr, 100),
               std::invalid_argument);  // block not a multiple of 32
  EXPECT_THROW(k::knn_search(d.get(), 2, nullptr, 3, 4, 1, di.get(), d.get(), nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::orthonormalize_columns(d.get(), 8, 65, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::column_stats(d.get(), 0, 4, nullptr, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(k::knn_vote(di.get(), d.get(), 2, 4, di.get(), 0, d.get(), nullptr),
               std::invalid_argument);
  try {
    k::knn_search(d.get(), 2, d.get(), 3, 4, 5, di.get(), d.get(), nullptr);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("knn_search: k"), std::string::npos) << e.what();
  }
}

}  // namespace
