// baseline.h: `timbre baseline`, the reference study's non-neural baselines:
// every log-mel segment flattened to one vector, standardised, reduced by
// PCA to 15 components, then classified by k nearest neighbours (k = 8,
// distance-weighted) or by an RBF support vector machine. docs/baseline.md
// has the method and the math.
//
//   load      a seeded random subset of the train split (at most max_train
//             segments: each is rows*frames = 16,384 floats, 64 KiB) and the
//             evaluated split (test or validation), flattened: D = rows*frames
//   scale     every feature (column) standardised with the TRAIN mean and
//             standard deviation (kernels/knn.cuh: column_stats, standardize_columns)
//   PCA       randomized subspace iteration with cuBLAS GEMMs, never forming
//             the D x D covariance, then Rayleigh-Ritz on a small matrix
//             (fit_pca below)
//   classify  knn: device kernels (knn_search, knn_vote); svm: libsvm C-SVC
//             on the host (it has no device code), on the projected features
//   evaluate  tools/metrics.h evaluate() (clip and track level), a report
//             (tools/report.h write_report) and metrics.json in `out`
//
// Everything heavy runs on the device through timbre's kernels and cuBLAS
// (the engine's stream and handle, exact FP32 GEMMs); the host does I/O,
// a Jacobi eigen-solve of an l x l matrix (l = components + oversampling,
// about 25) and libsvm.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/device_buffer.h"
#include "tools/metrics.h"

namespace timbre::tools {

struct BaselineOptions {
  std::string method = "knn";   // knn | svm
  std::string data;             // the feature store (timbre extract)
  std::string out;              // report folder; empty: default_baseline_dir
  std::string split = "test";   // the evaluated split: test | validation
  int64_t max_train = 20000;    // train segments used (a seeded random subset when fewer)
  int n_components = 15;        // PCA components (the paper's 15)
  int oversample = 10;          // extra basis vectors of the randomized PCA
  int power_iterations = 7;     // subspace iterations (scikit-learn's 'auto' gives 7 here)
  int k = 8;                    // neighbours (knn)
  double C = 1.0;               // SVM penalty
  double gamma = 0;             // RBF gamma; 0: 'scale' = 1 / (n_components * var(train features))
  bool svm_probability = true;  // libsvm's probability estimates; false: one-hot decisions
  uint64_t seed = 1;            // train subset, PCA start, libsvm's probability folds
  bool quiet = false;           // no progress lines on stderr
};

struct BaselineResult {
  Evaluation evaluation;
  std::string out_dir, report_path, metrics_path;
  int64_t n_train = 0, n_eval = 0;       // segments used
  std::vector<double> explained_variance_ratio;  // per component, descending
  double gamma = 0;                      // the SVM's gamma (svm only)
  double seconds_load = 0, seconds_pca = 0, seconds_classify = 0;
};

// The report folder when --out is not given: beside the data file, named
// after it: runs/features.h5 -> runs/features-baseline-knn.
std::string default_baseline_dir(const std::string& data, const std::string& method);

// The whole baseline: reads options.data, writes report.html (+ SVGs) and
// metrics.json into the output folder, returns the evaluation. Throws
// std::invalid_argument naming the option for a bad option, and
// std::runtime_error naming the file for unreadable or unsuitable data
// (an empty split, fewer train segments than components or neighbours).
BaselineResult run_baseline(const BaselineOptions& options);

// ---------------------------------------------------------------------------
// The pieces, for tests and for reuse.

// Eigen-decomposition of a symmetric n x n matrix (row-major, double) by the
// cyclic Jacobi method: fine for the small matrices here (n ~ 25; the tests
// also use it at n ~ 200 as a reference). values descending; vectors
// row-major n x n with the eigenvector of values[j] in column j (orthonormal).
struct SymmetricEigen {
  std::vector<double> values;
  std::vector<double> vectors;
};
SymmetricEigen symmetric_eigen(std::vector<double> a, int n);

struct PcaOptions {
  int n_components = 15;
  int oversample = 10;
  int power_iterations = 7;
  uint64_t seed = 1;
};

// A fitted PCA: `components` is dim x n_components, column-major (column j
// is component j, unit norm, its largest-magnitude entry positive),
// explained_variance[j] its variance (ddof 1, as scikit-learn), ratio =
// variance / total variance of the data.
struct Pca {
  int dim = 0, n_components = 0;
  DeviceBuffer<float> components;
  std::vector<double> explained_variance, explained_variance_ratio;
  double total_variance = 0;
};

// Fits a PCA to the row-major n x dim matrix d_x on the device, whose
// columns must already be centred (standardised data is). Randomized
// subspace iteration (Halko, Martinsson, Tropp 2011, algorithm 4.4) with
// l = min(n_components + oversample, dim, n) basis vectors; l <= 64.
// Throws std::invalid_argument when n_components > min(dim, n) or l > 64.
Pca fit_pca(const float* d_x, int64_t n, int dim, const PcaOptions& options);

// d_out (row-major n x n_components) = d_x (row-major n x dim) * components.
void pca_transform(const Pca& pca, const float* d_x, int64_t n, float* d_out);

// k-NN class probabilities on the device: d_train (n x dim row-major) with
// labels in [0, classes), d_queries (m x dim). Returns m x classes, row-major.
std::vector<float> knn_predict_proba(const float* d_train, const std::vector<int>& train_labels,
                                     const float* d_queries, int64_t m, int dim, int classes,
                                     int k);

// scikit-learn's gamma='scale': 1 / (dim * var(x)), var over all entries of
// the n x dim matrix x (ddof 0); 1 when that variance is 0.
double gamma_scale(const std::vector<float>& x, int dim);

struct SvmOptions {
  double C = 1.0;
  double gamma = 0;         // 0: gamma_scale(x, dim)
  bool probability = true;  // Platt-scaled pairwise probabilities (5-fold CV inside libsvm)
  uint64_t seed = 1;        // srand() before training: libsvm's CV folds use rand()
};

// A libsvm C-SVC with an RBF kernel, trained on n x dim row-major features.
class SvmClassifier {
 public:
  SvmClassifier(const std::vector<float>& x, const std::vector<int>& y, int dim, int classes,
                const SvmOptions& options);
  ~SvmClassifier();
  SvmClassifier(const SvmClassifier&) = delete;
  SvmClassifier& operator=(const SvmClassifier&) = delete;
  // m x classes, row-major: probability estimates, or one-hot decisions
  // when trained without probabilities. Classes absent from training get 0.
  std::vector<float> predict_proba(const std::vector<float>& x) const;
  double gamma() const { return gamma_; }
  bool probability() const { return probability_; }

 private:
  struct Impl;
  Impl* impl_;
  int dim_, classes_;
  double gamma_;
  bool probability_;
};

}  // namespace timbre::tools
