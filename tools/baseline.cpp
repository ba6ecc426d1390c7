// baseline.cpp: PCA + k-NN / RBF SVM (see baseline.h and docs/baseline.md).
#include "tools/baseline.h"

#include <libsvm/svm.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

#include "engine/context.h"
#include "features/h5store.h"
#include "kernels/blas.h"
#include "kernels/knn.cuh"
#include "kernels/philox.cuh"
#include "tools/progress.h"
#include "tools/report.h"

namespace timbre::tools {

namespace kn = timbre::kernels;
using features::Split;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

using kernels::kN;  // cuBLAS's "as stored"
using kernels::kT;  // cuBLAS's "transposed"

// C = alpha op(A) op(B), column-major, on the engine's handle
// (kernels/blas.h). The layouts used here (a row-major n x d matrix is a
// column-major d x n one) are spelled out at each call.
void sgemm(const kernels::GemmShape& shape, const float* a, const float* b, float* c,
           float alpha = 1.f) {
  kernels::gemm(timbre::cublas(), shape, alpha, a, b, 0.f, c);
}

}  // namespace

// ===========================================================================
// Jacobi eigen-solver.
//
// A symmetric A is diagonalised by plane rotations: for a pair p < q with
// a_pq != 0, the rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) makes
// (J^T A J)_pq = (c^2 - s^2) a_pq + c s (a_pp - a_qq) zero when t = s/c
// solves t^2 + 2 theta t - 1 = 0, theta = (a_qq - a_pp) / (2 a_pq); the
// smaller root t = sign(theta) / (|theta| + sqrt(theta^2 + 1)) keeps the
// rotation angle below pi/4, which is what makes the cyclic sweeps converge
// (quadratically, near the end). Each sweep visits every pair once; V
// accumulates the rotations, so A = V diag(values) V^T at the end. O(n^3)
// per sweep and ~6-10 sweeps: microseconds for the 25 x 25 Rayleigh-Ritz
// matrix, which is why a host solver is the right tool there.
SymmetricEigen symmetric_eigen(std::vector<double> a, int n) {
  if (n < 1 || a.size() != size_t(n) * n)
    throw std::invalid_argument("symmetric_eigen: need an n x n matrix, n >= 1");
  auto at = [&](int i, int j) -> double& { return a[size_t(i) * n + j]; };
  std::vector<double> v(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1.0;
  double norm2 = 0;
  for (double x : a) norm2 += x * x;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += at(p, q) * at(p, q);
    if (off <= 1e-32 * norm2 || off == 0) break;  // off-diagonal at double roundoff
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = at(p, q);
        if (apq == 0) continue;
        const double theta = (at(q, q) - at(p, p)) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::hypot(theta, 1.0));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q of A J
          const double akp = at(k, p), akq = at(k, q);
          at(k, p) = c * akp - s * akq;
          at(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q of J^T (A J)
          const double apk = at(p, k), aqk = at(q, k);
          at(p, k) = c * apk - s * aqk;
          at(q, k) = s * apk + c * aqk;
        }
        at(p, q) = at(q, p) = 0;  // zero by construction; drop the roundoff
        for (int k = 0; k < n; ++k) {
          double& vkp = v[size_t(k) * n + p];
          double& vkq = v[size_t(k) * n + q];
          const double x = vkp, y = vkq;
          vkp = c * x - s * y;
          vkq = s * x + c * y;
        }
      }
  }
  // Sort descending by eigenvalue (stable: equal values keep their order).
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return at(x, x) > at(y, y); });
  SymmetricEigen e;
  e.values.resize(size_t(n));
  e.vectors.resize(size_t(n) * n);
  for (int j = 0; j < n; ++j) {
    e.values[size_t(j)] = at(order[size_t(j)], order[size_t(j)]);
    for (int i = 0; i < n; ++i) e.vectors[size_t(i) * n + j] = v[size_t(i) * n + order[size_t(j)]];
  }
  return e;
}

// ===========================================================================
// Randomized PCA.
//
// X (n x dim, centred) = U S V^T. The principal components are the top
// right singular vectors V_k, the eigenvectors of the covariance
// C = X^T X / (n - 1), with variances s_i^2 / (n - 1). Forming C would take
// dim^2 = 2^28 floats (1 GiB) and dim^2 n flops; instead:
//   Omega: dim x l standard normals (Philox), l = k + oversample
//   Y = orth(X Omega)                                  n x l
//   repeat q times: Z = orth(X^T Y), Y = orth(X Z)     (subspace iteration)
//   Q = orth(X^T Y)                                    dim x l, orthonormal
// Each product multiplies the weight of singular direction i by s_i, so
// after q rounds the basis holds the top directions with an error that
// shrinks like (s_{l+1} / s_k)^(2q+1); orthonormalising after every product
// keeps the small directions from drowning in roundoff (the raw power
// (X^T X)^q would square the condition number each round). Then
// Rayleigh-Ritz: the best approximations to C's eigenvectors within span(Q)
// are Q v, where v are the eigenvectors of the small l x l matrix
//   T = Q^T C Q = (X Q)^T (X Q) / (n - 1)      (B = X Q: one GEMM, T: another)
// solved on the host (Jacobi above). W = Q V_k (dim x k), signs fixed by
// kn::fix_column_signs. Cost: (4q + 6) n dim l flops, all GEMMs.
Pca fit_pca(const float* d_x, int64_t n64, int dim, const PcaOptions& o) {
  if (n64 < 1 || n64 > INT32_MAX)
    throw std::invalid_argument("fit_pca: n must be in [1, 2^31), not " + std::to_string(n64));
  if (dim < 1) throw std::invalid_argument("fit_pca: dim must be >= 1, not " + std::to_string(dim));
  const int n = int(n64), k = o.n_components;
  if (k < 1 || k > std::min(dim, n))
    throw std::invalid_argument("fit_pca: n_components must be in [1, min(dim, n) = " +
                                std::to_string(std::min(dim, n)) + "], not " + std::to_string(k));
  if (o.oversample < 0 || o.power_iterations < 0)
    throw std::invalid_argument("fit_pca: oversample and power_iterations must be >= 0");
  const int l = std::min({k + o.oversample, dim, n});
  if (l > kn::kOrthoMaxCols)
    throw std::invalid_argument("fit_pca: n_components + oversample = " + std::to_string(l) +
                                " exceeds " + std::to_string(kn::kOrthoMaxCols));
  const cudaStream_t s = timbre::stream();

  // X as cuBLAS sees it: column-major dim x n (lda = dim).
  DeviceBuffer<float> d_omega(size_t(dim) * l), d_y(size_t(n) * l), d_b(size_t(n) * l);
  kn::fill_normal(d_omega.get(), (long long)dim * l, 0.f, 1.f, o.seed, 0, s);
  float* d_z = d_omega.get();  // Omega's storage is reused for Z and Q (dim x l)
  auto x_times = [&](const float* d_in, float* d_out) {  // (n x l) = X (n x dim) in (dim x l)
    sgemm({kT, kN, n, l, dim, dim, dim, n}, d_x, d_in, d_out);
  };
  auto xt_times = [&](const float* d_in, float* d_out) {  // (dim x l) = X^T in (n x l)
    sgemm({kN, kN, dim, l, n, dim, n, dim}, d_x, d_in, d_out);
  };
  x_times(d_z, d_y.get());
  kn::orthonormalize_columns(d_y.get(), n, l, nullptr, s);
  for (int it = 0; it < o.power_iterations; ++it) {
    xt_times(d_y.get(), d_z);
    kn::orthonormalize_columns(d_z, dim, l, nullptr, s);
    x_times(d_z, d_y.get());
    kn::orthonormalize_columns(d_y.get(), n, l, nullptr, s);
  }
  xt_times(d_y.get(), d_z);
  kn::orthonormalize_columns(d_z, dim, l, nullptr, s);  // Q

  // Rayleigh-Ritz: B = X Q (n x l), T = B^T B / (n - 1) (l x l).
  x_times(d_z, d_b.get());
  DeviceBuffer<float> d_t(size_t(l) * l);
  const float inv = n > 1 ? 1.f / float(n - 1) : 1.f;
  sgemm({kT, kN, l, l, n, n, n, l}, d_b.get(), d_b.get(), d_t.get(), inv);
  const std::vector<float> t = d_t.to_host();
  std::vector<double> td(size_t(l) * l);
  for (int i = 0; i < l; ++i)  // symmetrise the GEMM's rounding
    for (int j = 0; j < l; ++j)
      td[size_t(i) * l + j] = 0.5 * (double(t[size_t(i) * l + j]) + t[size_t(j) * l + i]);
  const SymmetricEigen eig = symmetric_eigen(std::move(td), l);

  // W = Q V_k: V_k column-major l x k.
  std::vector<float> vk(size_t(l) * k);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < l; ++i) vk[size_t(j) * l + i] = float(eig.vectors[size_t(i) * l + j]);
  DeviceBuffer<float> d_vk(vk);
  Pca pca;
  pca.dim = dim;
  pca.n_components = k;
  pca.components = DeviceBuffer<float>(size_t(dim) * k);
  sgemm({kN, kN, dim, k, l, dim, l, dim}, d_z, d_vk.get(), pca.components.get());
  kn::fix_column_signs(pca.components.get(), dim, k, s);

  // Total variance: the sum of the column variances (ddof 1), from the
  // same column statistics the standardisation uses.
  DeviceBuffer<double> d_mean{size_t(dim)}, d_var{size_t(dim)};
  kn::column_stats(d_x, n, dim, d_mean.get(), d_var.get(), s);
  const std::vector<double> var = d_var.to_host();
  double total = 0;
  for (double v : var) total += v;
  total *= n > 1 ? double(n) / double(n - 1) : 1.0;
  pca.total_variance = total;
  for (int j = 0; j < k; ++j) {
    const double ev = std::max(0.0, eig.values[size_t(j)]);  // PSD: a tiny negative is roundoff
    pca.explained_variance.push_back(ev);
    pca.explained_variance_ratio.push_back(total > 0 ? ev / total : 0.0);
  }
  return pca;
}

void pca_transform(const Pca& pca, const float* d_x, int64_t n, float* d_out) {
  if (n < 0 || n > INT32_MAX)
    throw std::invalid_argument("pca_transform: n must be in [0, 2^31), not " + std::to_string(n));
  if (n == 0) return;
  // Out, row-major n x k = column-major k x n = W^T (k x dim) X^T (dim x n).
  sgemm({kT, kN, pca.n_components, int(n), pca.dim, pca.dim, pca.dim, pca.n_components},
        pca.components.get(), d_x, d_out);
}

// ===========================================================================
// k-NN.

std::vector<float> knn_predict_proba(const float* d_train, const std::vector<int>& train_labels,
                                     const float* d_queries, int64_t m, int dim, int classes,
                                     int k) {
  const int64_t n = int64_t(train_labels.size());
  if (n > INT32_MAX || m > INT32_MAX)
    throw std::invalid_argument("knn_predict_proba: more than 2^31 - 1 samples");
  for (size_t i = 0; i < train_labels.size(); ++i)
    if (train_labels[i] < 0 || train_labels[i] >= classes)
      throw std::invalid_argument("knn_predict_proba: train label " + std::to_string(i) + " is " +
                                  std::to_string(train_labels[i]) + ", outside [0, " +
                                  std::to_string(classes) + ")");
  const cudaStream_t s = timbre::stream();
  DeviceBuffer<int> d_labels(train_labels), d_index(size_t(m) * k);
  DeviceBuffer<float> d_dist(size_t(m) * k), d_probs(size_t(m) * classes);
  kn::knn_search(d_queries, int(m), d_train, int(n), dim, k, d_index.get(), d_dist.get(), s);
  kn::knn_vote(d_index.get(), d_dist.get(), int(m), k, d_labels.get(), classes, d_probs.get(), s);
  return d_probs.to_host();
}

// ===========================================================================
// SVM (libsvm).

double gamma_scale(const std::vector<float>& x, int dim) {
  if (x.empty() || dim < 1) throw std::invalid_argument("gamma_scale: empty features");
  double sum = 0;
  for (float v : x) sum += v;
  const double mean = sum / double(x.size());
  double q = 0;
  for (float v : x) q += (v - mean) * (v - mean);
  const double var = q / double(x.size());
  return var > 0 ? 1.0 / (dim * var) : 1.0;
}

namespace {
void svm_silent(const char*) {}
}  // namespace

struct SvmClassifier::Impl {
  std::vector<svm_node> nodes;       // n * (dim + 1): each sample's nodes, -1 terminated
  std::vector<svm_node*> rows;
  std::vector<double> labels;
  svm_problem problem{};
  svm_parameter param{};
  svm_model* model = nullptr;
  std::vector<int> model_labels;     // class id of libsvm's j-th probability
};

SvmClassifier::SvmClassifier(const std::vector<float>& x, const std::vector<int>& y, int dim,
                             int classes, const SvmOptions& o)
    : impl_(new Impl), dim_(dim), classes_(classes), probability_(o.probability) {
  try {
    if (dim < 1 || classes < 1 || y.empty() || x.size() != y.size() * size_t(dim))
      throw std::invalid_argument("SvmClassifier: need n x dim features and n labels, n >= 1");
    if (!(o.C > 0)) throw std::invalid_argument("SvmClassifier: C must be > 0");
    if (!(o.gamma >= 0)) throw std::invalid_argument("SvmClassifier: gamma must be >= 0");
    const size_t n = y.size();
    for (size_t i = 0; i < n; ++i)
      if (y[i] < 0 || y[i] >= classes)
        throw std::invalid_argument("SvmClassifier: label " + std::to_string(i) + " is " +
                                    std::to_string(y[i]) + ", outside [0, " +
                                    std::to_string(classes) + ")");
    gamma_ = o.gamma > 0 ? o.gamma : gamma_scale(x, dim);
    Impl& m = *impl_;
    m.nodes.resize(n * size_t(dim + 1));
    m.rows.resize(n);
    m.labels.resize(n);
    for (size_t i = 0; i < n; ++i) {
      svm_node* r = m.nodes.data() + i * size_t(dim + 1);
      for (int j = 0; j < dim; ++j) r[j] = svm_node{j + 1, double(x[i * size_t(dim) + j])};
      r[dim] = svm_node{-1, 0.0};
      m.rows[i] = r;
      m.labels[i] = double(y[i]);
    }
    m.problem.l = int(n);
    m.problem.y = m.labels.data();
    m.problem.x = m.rows.data();
    m.param.svm_type = C_SVC;
    m.param.kernel_type = RBF;
    m.param.degree = 3;
    m.param.gamma = gamma_;
    m.param.coef0 = 0;
    m.param.cache_size = 500;  // MB of kernel rows
    m.param.eps = 1e-3;        // libsvm's and scikit-learn's tolerance
    m.param.C = o.C;
    m.param.nr_weight = 0;
    m.param.weight_label = nullptr;
    m.param.weight = nullptr;
    m.param.nu = 0.5;
    m.param.p = 0.1;
    m.param.shrinking = 1;
    m.param.probability = o.probability ? 1 : 0;
    if (const char* err = svm_check_parameter(&m.problem, &m.param))
      throw std::invalid_argument(std::string("SvmClassifier: libsvm rejects the parameters: ") +
                                  err);
    svm_set_print_string_function(&svm_silent);
    std::srand(unsigned(o.seed));
    m.model = svm_train(&m.problem, &m.param);
    if (!m.model) throw std::runtime_error("SvmClassifier: libsvm training failed");
    m.model_labels.resize(size_t(svm_get_nr_class(m.model)));
    svm_get_labels(m.model, m.model_labels.data());
  } catch (...) {
    delete impl_;
    throw;
  }
}

SvmClassifier::~SvmClassifier() {
  if (impl_->model) svm_free_and_destroy_model(&impl_->model);
  delete impl_;
}

std::vector<float> SvmClassifier::predict_proba(const std::vector<float>& x) const {
  if (x.size() % size_t(dim_) != 0)
    throw std::invalid_argument("SvmClassifier::predict_proba: features are not n x dim");
  const size_t n = x.size() / size_t(dim_);
  std::vector<float> probs(n * size_t(classes_), 0.f);
  std::vector<svm_node> row(size_t(dim_) + 1);
  std::vector<double> p(impl_->model_labels.size());
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < dim_; ++j) row[size_t(j)] = svm_node{j + 1, double(x[i * size_t(dim_) + j])};
    row[size_t(dim_)] = svm_node{-1, 0.0};
    float* out = probs.data() + i * size_t(classes_);
    if (probability_) {
      svm_predict_probability(impl_->model, row.data(), p.data());
      for (size_t j = 0; j < p.size(); ++j) out[impl_->model_labels[j]] = float(p[j]);
    } else {
      out[int(svm_predict(impl_->model, row.data()))] = 1.f;
    }
  }
  return probs;
}

// ===========================================================================
// The command.

namespace {

// Reads `indices` of `split` in chunks of 256 into consecutive rows of
// d_dst (row-major, `per` floats a row): host memory stays at one chunk.
void read_to_device(const features::FeatureStore& store, Split split,
                    const std::vector<int64_t>& indices, float* d_dst, size_t per,
                    std::optional<Progress>* progress) {
  const size_t chunk = 256;
  std::vector<float> host;
  for (size_t i = 0; i < indices.size(); i += chunk) {
    const size_t c = std::min(chunk, indices.size() - i);
    host.resize(c * per);
    store.read_x(split, indices.data() + i, c, host.data());
    CUDA_CHECK(cudaMemcpy(d_dst + i * per, host.data(), c * per * sizeof(float),
                          cudaMemcpyHostToDevice));
    if (progress && *progress) (*progress)->update((long long)(i + c));
  }
}

}  // namespace

std::string default_baseline_dir(const std::string& data, const std::string& method) {
  const std::filesystem::path p(data);
  return (p.parent_path() / (p.stem().string() + "-baseline-" + method)).string();
}

BaselineResult run_baseline(const BaselineOptions& o) {
  // Options first, before any work.
  auto bad = [](const std::string& what) { throw std::invalid_argument("baseline: " + what); };
  if (o.method != "knn" && o.method != "svm") bad("--method must be knn or svm, not '" + o.method + "'");
  Split split;
  if (o.split == "test") split = Split::test;
  else if (o.split == "validation") split = Split::validation;
  else bad("--split must be test or validation, not '" + o.split + "'");
  if (o.data.empty()) bad("--data is required");
  if (o.max_train < 1) bad("--max-train must be >= 1, not " + std::to_string(o.max_train));
  if (o.n_components < 1 || o.n_components > kn::kKnnMaxDim)
    bad("--components must be in [1, 64], not " + std::to_string(o.n_components));
  if (o.oversample < 0) bad("--oversample must be >= 0, not " + std::to_string(o.oversample));
  if (o.power_iterations < 0)
    bad("--power-iterations must be >= 0, not " + std::to_string(o.power_iterations));
  if (o.k < 1 || o.k > kn::kKnnMaxK) bad("-k must be in [1, 32], not " + std::to_string(o.k));
  if (!(o.C > 0)) bad("-C must be > 0, not " + std::to_string(o.C));
  if (!(o.gamma >= 0)) bad("--gamma must be >= 0 (0: scale), not " + std::to_string(o.gamma));
  auto say = [&](const std::string& line) {
    if (!o.quiet) std::fprintf(stderr, "baseline: %s\n", line.c_str());
  };

  BaselineResult r;
  r.out_dir = o.out.empty() ? default_baseline_dir(o.data, o.method) : o.out;
  const auto t_load = std::chrono::steady_clock::now();
  features::FeatureStore store = features::FeatureStore::open(o.data);
  const int64_t n_all = store.size(Split::train), n_eval = store.size(split);
  if (n_all == 0) throw std::runtime_error(o.data + ": the train split is empty");
  if (n_eval == 0) throw std::runtime_error(o.data + ": the " + o.split + " split is empty");
  const int64_t dim64 = int64_t(store.rows()) * store.frames();
  if (dim64 > INT32_MAX) throw std::runtime_error(o.data + ": segments too large");
  const int dim = int(dim64);
  const int classes = int(store.label_names().size());
  const size_t per = size_t(dim);

  // A seeded random subset of the train split, read in file order.
  std::vector<int64_t> train_idx(static_cast<size_t>(n_all));
  std::iota(train_idx.begin(), train_idx.end(), int64_t(0));
  const int64_t n = std::min(n_all, o.max_train);
  if (n < n_all) {
    std::mt19937_64 g(o.seed);
    std::shuffle(train_idx.begin(), train_idx.end(), g);
    train_idx.resize(size_t(n));
    std::sort(train_idx.begin(), train_idx.end());
  }
  if (o.n_components > std::min<int64_t>(n, dim))
    throw std::runtime_error(o.data + ": " + std::to_string(n) + " train segments of " +
                             std::to_string(dim) + " values cannot give " +
                             std::to_string(o.n_components) + " components");
  if (o.method == "knn" && o.k > n)
    throw std::runtime_error(o.data + ": " + std::to_string(n) + " train segments, fewer than k = " +
                             std::to_string(o.k));
  r.n_train = n;
  r.n_eval = n_eval;
  say("train split: " + std::to_string(n) + " of " + std::to_string(n_all) + " segments, " +
      o.split + " split: " + std::to_string(n_eval) + ", " + std::to_string(dim) +
      " values each (" + std::to_string((n * dim64 * 4) >> 20) + " MiB of train data on the device)");

  const cudaStream_t s = timbre::stream();
  DeviceBuffer<float> d_train(size_t(n) * per);
  {
    std::optional<Progress> p;
    if (!o.quiet) p.emplace("baseline: read train", n, "segments");
    read_to_device(store, Split::train, train_idx, d_train.get(), per, &p);
  }
  const std::vector<int32_t> y_all = store.read_y(Split::train);
  std::vector<int> y_train(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y_train[size_t(i)] = y_all[size_t(train_idx[size_t(i)])];

  // Standardise with the train statistics.
  DeviceBuffer<double> d_mean(per), d_var(per);
  kn::column_stats(d_train.get(), n, dim, d_mean.get(), d_var.get(), s);
  kn::standardize_columns(d_train.get(), n, dim, d_mean.get(), d_var.get(), s);
  r.seconds_load = seconds_since(t_load);

  // PCA.
  const auto t_pca = std::chrono::steady_clock::now();
  say("PCA: " + std::to_string(o.n_components) + " components, " +
      std::to_string(o.power_iterations) + " subspace iterations, oversampling " +
      std::to_string(o.oversample));
  const Pca pca = fit_pca(d_train.get(), n, dim,
                          {o.n_components, o.oversample, o.power_iterations, o.seed});
  r.explained_variance_ratio = pca.explained_variance_ratio;
  double explained = 0;
  for (double v : pca.explained_variance_ratio) explained += v;
  const int kc = o.n_components;
  DeviceBuffer<float> d_train_p(size_t(n) * kc), d_eval_p(size_t(n_eval) * kc);
  pca_transform(pca, d_train.get(), n, d_train_p.get());
  d_train = DeviceBuffer<float>();  // the big matrix is no longer needed
  // The evaluated split: read, standardised and projected chunk by chunk.
  std::vector<int64_t> eval_idx(static_cast<size_t>(n_eval));
  std::iota(eval_idx.begin(), eval_idx.end(), int64_t(0));
  {
    DeviceBuffer<float> d_chunk(256 * per);
    std::optional<Progress> p;
    if (!o.quiet) p.emplace("baseline: read " + o.split, n_eval, "segments");
    const size_t chunk = 256;
    for (size_t i = 0; i < eval_idx.size(); i += chunk) {
      const size_t c = std::min(chunk, eval_idx.size() - i);
      std::vector<int64_t> sub(eval_idx.begin() + long(i), eval_idx.begin() + long(i + c));
      read_to_device(store, split, sub, d_chunk.get(), per, nullptr);
      kn::standardize_columns(d_chunk.get(), (long long)c, dim, d_mean.get(), d_var.get(), s);
      pca_transform(pca, d_chunk.get(), int64_t(c), d_eval_p.get() + i * size_t(kc));
      if (p) p->update((long long)(i + c));
    }
  }
  r.seconds_pca = seconds_since(t_pca);
  char line[1024];  // progress lines (a path may be long)
  std::snprintf(line, sizeof line, "PCA: %.1f%% of the variance in %d components (%.2f s)",
                100 * explained, kc, r.seconds_pca);
  say(line);

  // Classify.
  const auto t_cls = std::chrono::steady_clock::now();
  std::vector<float> probs;
  if (o.method == "knn") {
    say("k-NN: k = " + std::to_string(o.k) + ", distance-weighted");
    probs = knn_predict_proba(d_train_p.get(), y_train, d_eval_p.get(), n_eval, kc, classes, o.k);
  } else {
    const std::vector<float> xt = d_train_p.to_host(), xe = d_eval_p.to_host();
    SvmOptions so;
    so.C = o.C;
    so.gamma = o.gamma;
    so.probability = o.svm_probability;
    so.seed = o.seed;
    std::snprintf(line, sizeof line, "SVM: libsvm C-SVC, RBF kernel, C = %g, training on %lld segments%s",
                  o.C, (long long)n,
                  o.svm_probability ? " with probability estimates (5-fold CV inside)" : "");
    say(line);
    SvmClassifier svm(xt, y_train, kc, classes, so);
    r.gamma = svm.gamma();
    std::snprintf(line, sizeof line, "SVM: trained in %.1f s (gamma = %g), predicting",
                  seconds_since(t_cls), r.gamma);
    say(line);
    probs = svm.predict_proba(xe);
  }
  r.seconds_classify = seconds_since(t_cls);

  // Evaluate and report.
  const std::vector<int32_t> y32 = store.read_y(split);
  const std::vector<int> y_eval(y32.begin(), y32.end());
  r.evaluation = evaluate(probs, y_eval, store.read_track_id(split), store.label_names());
  json config = {{"method", o.method},
                 {"data", o.data},
                 {"split", o.split},
                 {"train_segments", n},
                 {"train_segments_available", n_all},
                 {"eval_segments", n_eval},
                 {"dim", dim},
                 {"seed", o.seed},
                 {"pca",
                  {{"n_components", kc},
                   {"oversample", o.oversample},
                   {"power_iterations", o.power_iterations},
                   {"explained_variance_ratio", pca.explained_variance_ratio},
                   {"explained_variance_total", explained}}}};
  if (o.method == "knn")
    config["knn"] = {{"k", o.k}, {"weights", "distance"}};
  else
    config["svm"] = {{"C", o.C},
                     {"gamma", r.gamma},
                     {"gamma_rule", o.gamma > 0 ? "given" : "scale"},
                     {"probabilities", o.svm_probability ? "libsvm" : "one-hot decisions"}};
  config["seconds"] = {{"load", r.seconds_load}, {"pca", r.seconds_pca},
                       {"classify", r.seconds_classify}};
  ReportInputs in;
  in.title = "timbre baseline: PCA + " + std::string(o.method == "knn" ? "k-NN" : "RBF SVM") +
             " (" + o.split + " split of " + o.data + ")";
  in.evaluation = r.evaluation;
  in.config = config;
  r.report_path = write_report(r.out_dir, in).string();
  r.metrics_path = (std::filesystem::path(r.out_dir) / "metrics.json").string();
  json j = to_json(r.evaluation);
  j["config"] = config;
  write_file_atomic(r.metrics_path, j.dump(2) + "\n");
  std::snprintf(line, sizeof line, "%s: clip accuracy %.4f, track accuracy %.4f; report %s",
                o.method.c_str(), r.evaluation.clip.accuracy, r.evaluation.track.accuracy,
                r.report_path.c_str());
  say(line);
  return r;
}

}  // namespace timbre::tools
