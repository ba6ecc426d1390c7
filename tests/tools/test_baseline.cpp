// test_baseline.cpp: the PCA + k-NN / SVM baselines (tools/baseline.h).
// The Jacobi solver by its defining identities; the randomized PCA against
// an exact PCA (covariance + Jacobi in double on the host); k-NN and the
// SVM on separable synthetic problems; run_baseline end to end on a tiny
// feature store written here.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "features/h5store.h"
#include "kernels/knn.cuh"
#include "tests/testing.h"
#include "tools/baseline.h"

namespace fs = std::filesystem;
using namespace timbre::tools;
using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;

namespace {

TEST(SymmetricEigen, SatisfiesDefinition) {
  const int n = 9;
  std::mt19937_64 g(1);
  std::normal_distribution<double> z;
  std::vector<double> a(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) a[size_t(i) * n + j] = a[size_t(j) * n + i] = z(g);
  const SymmetricEigen e = symmetric_eigen(a, n);
  for (int j = 1; j < n; ++j) EXPECT_GE(e.values[size_t(j) - 1], e.values[size_t(j)]);
  // A V = V diag(values), V^T V = I: double roundoff times a few sweeps.
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double av = 0, vtv = 0;
      for (int t = 0; t < n; ++t) {
        av += a[size_t(i) * n + t] * e.vectors[size_t(t) * n + j];
        vtv += e.vectors[size_t(t) * n + i] * e.vectors[size_t(t) * n + j];
      }
      EXPECT_NEAR(av, e.values[size_t(j)] * e.vectors[size_t(i) * n + j], 1e-12);
      EXPECT_NEAR(vtv, i == j ? 1.0 : 0.0, 1e-13);
    }
  // A known case: [[2, 1], [1, 2]] has eigenvalues 3 and 1.
  const SymmetricEigen s = symmetric_eigen({2, 1, 1, 2}, 2);
  EXPECT_NEAR(s.values[0], 3, 1e-15);
  EXPECT_NEAR(s.values[1], 1, 1e-15);
  EXPECT_NEAR(std::fabs(s.vectors[0]), std::sqrt(0.5), 1e-15);
}

// A low-rank-plus-noise matrix with a clear spectral gap: rows are
// sum_r z_r a_r f_r + noise, a_r = 4 * 0.7^r, r < 12.
std::vector<float> structured(int n, int d, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> z;
  const int rank = 12;
  std::vector<float> f(size_t(rank) * d), x(size_t(n) * d);
  for (auto& v : f) v = z(g);
  for (int i = 0; i < n; ++i) {
    std::vector<float> c(rank);
    for (int r = 0; r < rank; ++r) c[size_t(r)] = z(g) * 4.f * std::pow(0.7f, float(r));
    for (int j = 0; j < d; ++j) {
      float v = 0.05f * z(g) + 2.f;  // an offset: the standardisation removes it
      for (int r = 0; r < rank; ++r) v += c[size_t(r)] * f[size_t(r) * d + j];
      x[size_t(i) * d + j] = v;
    }
  }
  return x;
}

TEST(RandomizedPca, MatchesExactPca) {
  const int n = 301, d = 203, k = 5;
  std::vector<float> x = structured(n, d, 7);
  // Standardise on the device (already tested against its reference in
  // test_kernels_knn), and keep the standardised copy for the reference.
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<double> d_mean{size_t(d)}, d_var{size_t(d)};
  timbre::kernels::column_stats(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr);
  timbre::kernels::standardize_columns(d_x.get(), n, d, d_mean.get(), d_var.get(), nullptr);
  const std::vector<float> xs = d_x.to_host();

  // Exact PCA: covariance in double, Jacobi, the same sign rule.
  std::vector<double> cov(size_t(d) * d, 0.0);
  for (int a = 0; a < d; ++a)
    for (int b = a; b < d; ++b) {
      double s = 0;
      for (int i = 0; i < n; ++i) s += double(xs[size_t(i) * d + a]) * xs[size_t(i) * d + b];
      cov[size_t(a) * d + b] = cov[size_t(b) * d + a] = s / (n - 1);
    }
  double total = 0;
  for (int a = 0; a < d; ++a) total += cov[size_t(a) * d + a];
  const SymmetricEigen ex = symmetric_eigen(cov, d);
  std::vector<float> w_ref(size_t(d) * k);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < d; ++i) w_ref[size_t(j) * d + i] = float(ex.vectors[size_t(i) * d + j]);
  timbre::kernels::fix_column_signs_cpu(w_ref.data(), d, k);
  std::vector<double> ratio_ref(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) ratio_ref[size_t(j)] = ex.values[size_t(j)] / total;

  for_each_thread_order([&] {
    const Pca pca = fit_pca(d_x.get(), n, d, {k, 10, 7, 3});
    ASSERT_EQ(pca.n_components, k);
    const std::vector<float> w = pca.components.to_host();
    // Principal angles between the two k-dimensional subspaces: the
    // singular values of W_ref^T W are their cosines; all must be ~1.
    std::vector<double> m(size_t(k) * k, 0.0), mtm(size_t(k) * k, 0.0);
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b)
        for (int i = 0; i < d; ++i)
          m[size_t(a) * k + b] += double(w_ref[size_t(a) * d + i]) * w[size_t(b) * d + i];
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b)
        for (int t = 0; t < k; ++t) mtm[size_t(a) * k + b] += m[size_t(t) * k + a] * m[size_t(t) * k + b];
    const SymmetricEigen cosines = symmetric_eigen(mtm, k);
    // cos^2 of the largest angle >= 1 - 1e-6: an angle below 1e-3 rad.
    // (Measured: 1 to double precision of the float vectors, whose norms
    // are 1 only to ~1e-7; the gap between eigenvalues 5 and 6, a factor
    // 0.49, makes the subspace well defined.)
    EXPECT_GT(cosines.values[size_t(k) - 1], 1 - 1e-6);
    // Component by component (the eigenvalues are distinct, so each
    // component is defined up to the sign, which the convention fixes).
    // Entries are ~1/sqrt(203) = 0.07 and carry float roundoff from the
    // GEMMs and the orthonormalisation: measured worst 9e-8, so 1e-6.
    EXPECT_TRUE(all_close(w, w_ref, {.atol = 1e-6, .rtol = 0}));
    // Explained variance ratios: the Rayleigh-Ritz matrix is a float GEMM
    // summing 301 rows (measured worst relative error 1.5e-7).
    EXPECT_TRUE(all_close(pca.explained_variance_ratio, ratio_ref, {.atol = 0, .rtol = 2e-6}));
    EXPECT_NEAR(pca.total_variance, total, 1e-6 * total);
    // The projection: x W, row-major n x k, against the host product.
    DeviceBuffer<float> d_p(size_t(n) * k);
    pca_transform(pca, d_x.get(), n, d_p.get());
    std::vector<double> p_ref(size_t(n) * k, 0.0);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < k; ++j)
        for (int t = 0; t < d; ++t)
          p_ref[size_t(i) * k + j] += double(xs[size_t(i) * d + t]) * w[size_t(j) * d + t];
    // A float dot product of 203 terms of size ~1: a few 1e-6 (scores are ~1-10).
    EXPECT_TRUE(all_close(d_p.to_host(), p_ref, {.atol = 1e-4, .rtol = 1e-5}));
  });
}

TEST(RandomizedPca, RejectsBadArguments) {
  DeviceBuffer<float> d_x(size_t(10) * 4);
  EXPECT_THROW(fit_pca(d_x.get(), 10, 4, {5, 10, 2, 1}), std::invalid_argument);  // k > dim
  EXPECT_THROW(fit_pca(d_x.get(), 10, 4, {0, 10, 2, 1}), std::invalid_argument);
  DeviceBuffer<float> d_big(size_t(100) * 100);
  EXPECT_THROW(fit_pca(d_big.get(), 100, 100, {60, 10, 2, 1}), std::invalid_argument);  // l > 64
}

// Three clusters, well separated, in `dim` dimensions.
void clusters(int count, int dim, int classes, uint64_t seed, std::vector<float>& x,
              std::vector<int>& y) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> z(0.f, 0.5f);
  for (int i = 0; i < count; ++i) {
    const int c = int((i * 7 + 3) % classes);
    y.push_back(c);
    for (int j = 0; j < dim; ++j) x.push_back((j % classes == c ? 4.f : 0.f) + z(g));
  }
}

TEST(KnnBaseline, SeparableProblem) {
  const int dim = 5, classes = 3;
  std::vector<float> xt, xq;
  std::vector<int> yt, yq;
  clusters(241, dim, classes, 1, xt, yt);
  clusters(77, dim, classes, 2, xq, yq);
  DeviceBuffer<float> d_t(xt), d_q(xq);
  const std::vector<float> p = knn_predict_proba(d_t.get(), yt, d_q.get(), 77, dim, classes, 8);
  int correct = 0;
  for (int q = 0; q < 77; ++q) {
    double sum = 0;
    int best = 0;
    for (int c = 0; c < classes; ++c) {
      sum += p[size_t(q) * classes + c];
      if (p[size_t(q) * classes + c] > p[size_t(q) * classes + best]) best = c;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    correct += best == yq[size_t(q)];
  }
  EXPECT_EQ(correct, 77);
  std::vector<int> bad = yt;
  bad[3] = classes;
  EXPECT_THROW(knn_predict_proba(d_t.get(), bad, d_q.get(), 77, dim, classes, 8),
               std::invalid_argument);
}

TEST(SvmBaseline, SeparableProblemWithAndWithoutProbabilities) {
  const int dim = 5, classes = 4;  // class 3 never appears in training
  std::vector<float> xt, xq;
  std::vector<int> yt, yq;
  clusters(181, dim, 3, 3, xt, yt);
  clusters(61, dim, 3, 4, xq, yq);
  EXPECT_NEAR(gamma_scale(xt, dim), 1.0 / (dim * [&] {
                double s = 0, q = 0;
                for (float v : xt) s += v;
                const double m = s / double(xt.size());
                for (float v : xt) q += (v - m) * (v - m);
                return q / double(xt.size());
              }()),
              1e-12);
  for (bool prob : {true, false}) {
    SCOPED_TRACE(prob ? "probability" : "one-hot");
    SvmOptions o;
    o.probability = prob;
    SvmClassifier svm(xt, yt, dim, classes, o);
    EXPECT_GT(svm.gamma(), 0);
    const std::vector<float> p = svm.predict_proba(xq);
    ASSERT_EQ(p.size(), size_t(61) * classes);
    int correct = 0;
    for (int q = 0; q < 61; ++q) {
      double sum = 0;
      int best = 0;
      for (int c = 0; c < classes; ++c) {
        sum += p[size_t(q) * classes + c];
        if (p[size_t(q) * classes + c] > p[size_t(q) * classes + best]) best = c;
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
      EXPECT_EQ(p[size_t(q) * classes + 3], 0.f);  // absent from training
      correct += best == yq[size_t(q)];
    }
    EXPECT_GE(correct, 59) << "of 61";
  }
  std::vector<int> bad = yt;
  bad[0] = -1;
  EXPECT_THROW(SvmClassifier(xt, bad, dim, classes, SvmOptions{}), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// End to end.

using timbre::testing::TempDir;

// A store of 8 x 6 "spectrograms": each class has its own random pattern
// (amplitude 1.5) under unit noise and a per-segment loudness offset, each
// track several segments of one class.
void write_store(const std::string& path) {
  timbre::features::FeatureParams params;
  params.n_mels = 8;
  params.frames = 6;
  const int dim = 48, classes = 4;
  std::mt19937_64 g(5);
  std::normal_distribution<float> z;
  std::vector<std::vector<float>> pattern(classes, std::vector<float>(dim));
  for (auto& p : pattern)
    for (auto& v : p) v = 1.5f * z(g);
  timbre::features::FeatureWriter w(path, params, {"rock", "jazz", "pop", "folk"}, "synthetic");
  int64_t track = 100;
  auto split = [&](timbre::features::Split s, int tracks, int segments) {
    std::vector<float> x;
    std::vector<int32_t> y;
    std::vector<int64_t> ids, starts;
    for (int t = 0; t < tracks; ++t, ++track) {
      const int c = t % classes;
      for (int s2 = 0; s2 < segments; ++s2) {
        const float offset = 0.5f * z(g);
        for (int j = 0; j < dim; ++j) x.push_back(pattern[size_t(c)][size_t(j)] + z(g) + offset - 40.f);
        y.push_back(c);
        ids.push_back(track);
        starts.push_back(int64_t(s2) * 1000);
      }
    }
    w.append(s, int64_t(y.size()), x.data(), y.data(), ids.data(), starts.data());
  };
  split(timbre::features::Split::train, 40, 4);       // 160 segments
  split(timbre::features::Split::validation, 8, 3);
  split(timbre::features::Split::test, 16, 3);        // 48 segments, 16 tracks
  w.finish();
}

TEST(RunBaseline, EndToEndKnnAndSvm) {
  TempDir tmp;
  const std::string data = tmp.file("tiny.h5");
  write_store(data);
  for (const std::string method : {"knn", "svm"}) {
    SCOPED_TRACE(method);
    BaselineOptions o;
    o.method = method;
    o.data = data;
    o.max_train = 120;  // a subset of the 160: the seeded sampling path
    o.n_components = 6;
    o.quiet = true;
    const BaselineResult r = run_baseline(o);
    EXPECT_EQ(r.n_train, 120);
    EXPECT_EQ(r.n_eval, 48);
    EXPECT_EQ(r.out_dir, std::filesystem::path(data).replace_extension().string() + "-baseline-" +
                             method);
    // Chance is 0.25; the classes are far apart after PCA.
    EXPECT_GT(r.evaluation.clip.accuracy, 0.8);
    EXPECT_GT(r.evaluation.track.accuracy, 0.8);
    EXPECT_EQ(r.evaluation.track.count, 16);
    ASSERT_EQ(r.explained_variance_ratio.size(), 6u);
    double sum = 0;
    for (size_t j = 0; j < 6; ++j) {
      if (j) {
        EXPECT_GE(r.explained_variance_ratio[j - 1], r.explained_variance_ratio[j]);
      }
      sum += r.explained_variance_ratio[j];
    }
    EXPECT_GT(sum, 0.2);
    EXPECT_LE(sum, 1.0 + 1e-6);
    for (const char* f : {"report.html", "confusion.svg", "confusion_track.svg", "metrics.json"})
      EXPECT_TRUE(fs::exists(fs::path(r.out_dir) / f)) << f;
    std::ifstream in(r.metrics_path);
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j.at("config").at("method"), method);
    EXPECT_NEAR(j.at("clip").at("accuracy").get<double>(), r.evaluation.clip.accuracy, 1e-12);
    if (method == "svm") {
      EXPECT_GT(r.gamma, 0);
    }
  }
  // The validation split and an explicit output folder.
  BaselineOptions o;
  o.data = data;
  o.split = "validation";
  o.out = tmp.file("out");
  o.n_components = 4;
  o.quiet = true;
  const BaselineResult r = run_baseline(o);
  EXPECT_EQ(r.n_train, 160);
  EXPECT_EQ(r.n_eval, 24);
  EXPECT_TRUE(fs::exists(tmp.file("out") + "/report.html"));
}

TEST(RunBaseline, BadOptionsAndDataAreNamed) {
  TempDir tmp;
  const std::string data = tmp.file("tiny.h5");
  write_store(data);
  auto message = [](const BaselineOptions& o) -> std::string {
    try {
      run_baseline(o);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "no exception";
  };
  BaselineOptions o;
  o.data = data;
  o.quiet = true;
  o.method = "tree";
  EXPECT_NE(message(o).find("--method"), std::string::npos) << message(o);
  o.method = "knn";
  o.split = "train";
  EXPECT_NE(message(o).find("--split"), std::string::npos) << message(o);
  o.split = "test";
  o.n_components = 49;  // more than the 48 values of a segment
  EXPECT_NE(message(o).find("components"), std::string::npos) << message(o);
  o.n_components = 5;
  o.max_train = 0;
  EXPECT_NE(message(o).find("--max-train"), std::string::npos) << message(o);
  o.max_train = 20000;
  o.data = tmp.file("missing.h5");
  EXPECT_NE(message(o).find("missing.h5"), std::string::npos) << message(o);
}

}  // namespace
