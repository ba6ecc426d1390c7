// test_knn.cpp: the baseline kernels (kernels/knn.cuh) against their loop
// references, at odd shapes, two block sizes, under every thread order (as
// op-case rows), a separable problem classified perfectly, argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/knn.cuh"
#include "tests/kernels/op_cases.h"
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

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h), at odd shapes, two block
// sizes, under every thread order and both launch-shape rows.

using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::once;
using timbre::testing::split;
using timbre::testing::widen;

::testing::AssertionResult exact(const std::vector<double>& got, const std::vector<double>& ref,
                                 int) {
  return same_bits(got, ref);
}

// Column statistics then standardisation: a constant column (scale 1,
// becomes 0) and one with a large offset (the two-pass variance keeps it).
void stats_rows(OpTable& table) {
  const int n = 37, d = 53;
  const auto x = once([] {
    std::vector<float> v = random_nonzero<float>(size_t(n) * d, 11);
    for (int i = 0; i < n; ++i) {
      v[size_t(i) * d + 4] = 3.25f;
      v[size_t(i) * d + 9] += 40.f;
    }
    return v;
  });
  OpCase row{"knn/column_stats_then_standardize_columns", "float", "n=37 d=53", {32, 256}, {0, 0},
             "the same double sums in the same order per column: the reference's bits",
             [=](int block) {
               DeviceBuffer<float> d_x(x());
               DeviceBuffer<double> d_mean(d), d_var(d);
               poison(d_mean);
               poison(d_var);
               k::column_stats(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr, block);
               k::standardize_columns(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr, block);
               sync();
               std::vector<double> out = d_mean.to_host();
               for (const auto& v : {d_var.to_host(), widen(d_x.to_host())})
                 out.insert(out.end(), v.begin(), v.end());
               return out;
             },
             [=] {
               std::vector<double> mean(d), var(d);
               k::column_stats_cpu(x().data(), n, d, mean.data(), var.data());
               std::vector<float> ref = x();
               k::standardize_columns_cpu(ref.data(), n, d, mean.data(), var.data());
               if (var[4] != 0.0 || ref[4] != 0.f)
                 throw std::logic_error("the constant column's reference is not 0");
               std::vector<double> out = mean;
               out.insert(out.end(), var.begin(), var.end());
               for (float v : ref) out.push_back(v);
               return out;
             }};
  row.compare = exact;
  row.block_invariant = true;
  table.add(std::move(row));
}

// Q^T Q as a double matrix (cols x cols).
std::vector<double> gram(const std::vector<double>& q, int rows, int cols) {
  std::vector<double> g(size_t(cols) * cols);
  for (int a = 0; a < cols; ++a)
    for (int b = 0; b < cols; ++b) {
      double s = 0;
      for (int i = 0; i < rows; ++i) s += q[size_t(a) * rows + i] * q[size_t(b) * rows + i];
      g[size_t(a) * cols + b] = s;
    }
  return g;
}

// Orthonormalisation (CGS2 in float on the device, MGS in double rounded once
// in the reference): a full-rank matrix, and one whose column 3 depends on
// columns 0 and 2 (dropped: rank cols - 1, the column zero). The result:
// the rank, then Q.
void orthonormalize_rows(OpTable& table) {
  for (bool dependent : {false, true}) {
    const int rows = dependent ? 97 : 301, cols = dependent ? 6 : 13;
    const auto a = once([=] {
      std::vector<float> v = random_nonzero<float>(size_t(rows) * cols, dependent ? 22 : 21);
      if (dependent)
        for (int i = 0; i < rows; ++i)  // column 3 = 0.5 col 0 - 2 col 2
          v[size_t(3) * rows + i] = 0.5f * v[size_t(i)] - 2.f * v[size_t(2) * rows + i];
      return v;
    });
    OpCase row{
        dependent ? "knn/orthonormalize_columns/dependent" : "knn/orthonormalize_columns", "float",
        "rows=" + std::to_string(rows) + " cols=" + std::to_string(cols),
        dependent ? std::vector<int>{128} : std::vector<int>{64, 256}, {},
        "the same Q (QR is unique with R's diagonal > 0) up to a few float roundings per "
        "entry of a well-conditioned matrix; entries ~1/sqrt(rows)",
        [=](int block) {
          DeviceBuffer<float> d_q(a());
          DeviceBuffer<int> d_rank(1);
          k::orthonormalize_columns(d_q.get(), rows, cols, d_rank.get(), nullptr, block);
          sync();
          std::vector<double> out{double(d_rank.to_host()[0])};
          for (float v : d_q.to_host()) out.push_back(v);
          return out;
        },
        [=] {
          std::vector<float> ref = a();
          int rank = -1;
          k::orthonormalize_columns_cpu(ref.data(), rows, cols, &rank);
          if (rank != (dependent ? cols - 1 : cols))
            throw std::logic_error("orthonormalize_columns_cpu: unexpected rank");
          std::vector<double> out{double(rank)};
          for (float v : ref) out.push_back(v);
          return out;
        }};
    row.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      if (got.empty() || got[0] != want[0])
        return ::testing::AssertionFailure() << "rank " << (got.empty() ? -1 : got[0])
                                             << ", expected " << want[0];
      const auto g = split(got, {1, size_t(rows) * cols}), w = split(want, {1, size_t(rows) * cols});
      if (auto r = all_close(g[1], w[1], {2e-6, 1e-5}); !r) return r << " (Q)";
      if (dependent) {
        for (int i = 0; i < rows; ++i)
          if (g[1][size_t(3) * rows + i] != 0)
            return ::testing::AssertionFailure() << "the dependent column is not zero at row " << i;
        return ::testing::AssertionSuccess();
      }
      // Orthonormal to float precision.
      std::vector<double> eye(size_t(cols) * cols, 0.0);
      for (int c = 0; c < cols; ++c) eye[size_t(c) * cols + c] = 1.0;
      if (auto r = all_close(gram(g[1], rows, cols), eye, {1e-6, 0}); !r) return r << " (Q^T Q)";
      return ::testing::AssertionSuccess();
    };
    table.add(std::move(row));
  }
}

// Sign fixing: ties in magnitude (the lower row comes first) and a zero column.
void sign_rows(OpTable& table) {
  const int rows = 131, cols = 7;
  const auto w = once([] {
    std::vector<float> v = random_nonzero<float>(size_t(rows) * cols, 31);
    v[size_t(2) * rows + 10] = -1.5f;  // column 2: the lower row (-) first: flipped
    v[size_t(2) * rows + 70] = 1.5f;
    v[size_t(5) * rows + 3] = 1.5f;  // column 5: the tie the other way: kept
    v[size_t(5) * rows + 4] = -1.5f;
    for (int i = 0; i < rows; ++i) v[size_t(6) * rows + i] = 0.f;  // column 6: zeros stay
    return v;
  });
  OpCase row{"knn/fix_column_signs", "float", "rows=131 cols=7", {32, 128}, {0, 0},
             "a sign flip: the reference's bits",
             [=](int block) {
               DeviceBuffer<float> d_w(w());
               k::fix_column_signs(d_w.get(), rows, cols, nullptr, block);
               sync();
               return widen(d_w.to_host());
             },
             [=] {
               std::vector<float> ref = w();
               k::fix_column_signs_cpu(ref.data(), rows, cols);
               if (ref[size_t(2) * rows + 10] != 1.5f || ref[size_t(5) * rows + 3] != 1.5f)
                 throw std::logic_error("fix_column_signs_cpu: the ties went the wrong way");
               return widen(ref);
             }};
  row.compare = exact;
  table.add(std::move(row));
}

// Search and vote: references 300 and 301 repeat reference 7, and query 5 is
// reference 7 itself (three exact matches at distance 0, ordered 7, 300,
// 301). The result: indices, distances, probabilities.
void search_rows(OpTable& table) {
  const int m = 203, n = 517, dim = 15, kk = 8, classes = 5;
  struct In {
    std::vector<float> refs, queries;
    std::vector<int> labels;
  };
  const auto in = once([] {
    In i{random_nonzero<float>(size_t(n) * dim, 41), random_nonzero<float>(size_t(m) * dim, 42),
         timbre::testing::random_ints(size_t(n), 43, 0, classes - 1)};
    for (int c = 0; c < dim; ++c) {
      i.refs[size_t(300) * dim + c] = i.refs[size_t(301) * dim + c] = i.refs[size_t(7) * dim + c];
      i.queries[size_t(5) * dim + c] = i.refs[size_t(7) * dim + c];
    }
    return i;
  });
  const size_t nk = size_t(m) * kk, np = size_t(m) * classes;
  OpCase row{
      "knn/knn_search_then_knn_vote", "float", "m=203 n=517 dim=15 k=8 classes=5", {32, 128}, {},
      "the same fma chain: equal neighbours and distances; the votes in double, 1e-7",
      [=](int block) {
        const In& i = in();
        DeviceBuffer<float> d_q(i.queries), d_r(i.refs), d_dist(nk), d_probs(np);
        DeviceBuffer<int> d_labels(i.labels), d_index(nk);
        poison(d_index);
        poison(d_dist);
        poison(d_probs);
        k::knn_search(d_q.get(), m, d_r.get(), n, dim, kk, d_index.get(), d_dist.get(), nullptr,
                      block);
        k::knn_vote(d_index.get(), d_dist.get(), m, kk, d_labels.get(), classes, d_probs.get(),
                    nullptr, block);
        sync();
        std::vector<double> out;
        for (int v : d_index.to_host()) out.push_back(v);
        for (const auto& v : {widen(d_dist.to_host()), widen(d_probs.to_host())})
          out.insert(out.end(), v.begin(), v.end());
        return out;
      },
      [=] {
        const In& i = in();
        std::vector<int> index(nk);
        std::vector<float> dist(nk), probs(np);
        k::knn_search_cpu(i.queries.data(), m, i.refs.data(), n, dim, kk, index.data(),
                          dist.data());
        k::knn_vote_cpu(index.data(), dist.data(), m, kk, i.labels.data(), classes, probs.data());
        if (index[5 * kk] != 7 || index[5 * kk + 1] != 300 || index[5 * kk + 2] != 301)
          throw std::logic_error("knn_search_cpu: the exact matches are not first, in order");
        std::vector<double> out(index.begin(), index.end());
        out.insert(out.end(), dist.begin(), dist.end());
        out.insert(out.end(), probs.begin(), probs.end());
        return out;
      }};
  row.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
    const auto g = split(got, {nk, nk, np}), w = split(want, {nk, nk, np});
    if (auto r = same_bits(g[0], w[0]); !r) return r << " (indices)";
    if (auto r = same_bits(g[1], w[1]); !r) return r << " (distances)";
    // A tiny tolerance only guards against a differently rounded sqrt in a
    // libm (CUDA's and glibc's double sqrt are both correctly rounded).
    if (auto r = all_close(g[2], w[2], {1e-7, 1e-7}); !r) return r << " (probabilities)";
    return ::testing::AssertionSuccess();
  };
  row.block_invariant = true;
  table.add(std::move(row));
}

OP_CASES(knn) {
  stats_rows(table);
  orthonormalize_rows(table);
  sign_rows(table);
  search_rows(table);
}

// Query 5 of the search rows' problem: only its three exact matches vote.
TEST(KnnKernels, ExactMatchesAloneVote) {
  const int n = 517, dim = 15, kk = 8, classes = 5;
  std::vector<float> refs = random_nonzero<float>(size_t(n) * dim, 41);
  for (int c = 0; c < dim; ++c)
    refs[size_t(300) * dim + c] = refs[size_t(301) * dim + c] = refs[size_t(7) * dim + c];
  std::vector<float> query(refs.begin() + 7 * dim, refs.begin() + 8 * dim);
  const std::vector<int> labels = timbre::testing::random_ints(size_t(n), 43, 0, classes - 1);
  std::vector<int> index(kk);
  std::vector<float> dist(kk), probs(classes);
  k::knn_search_cpu(query.data(), 1, refs.data(), n, dim, kk, index.data(), dist.data());
  k::knn_vote_cpu(index.data(), dist.data(), 1, kk, labels.data(), classes, probs.data());
  for (int c = 0; c < classes; ++c)
    EXPECT_FLOAT_EQ(probs[size_t(c)],
                    float((labels[7] == c) + (labels[300] == c) + (labels[301] == c)) / 3.f);
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
