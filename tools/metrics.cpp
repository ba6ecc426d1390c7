// metrics.cpp: the definitions in metrics.h, as direct loops over small
// host arrays. Every count is an integer; ratios are formed once at the end
// in double, so no rounding depends on the order of the data.
#include "tools/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

namespace timbre::tools {

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

// a / b, with the zero-division convention of metrics.h: 0 when b == 0.
double ratio(double a, double b) { return b == 0 ? 0.0 : a / b; }

void check_matrix(const std::vector<float>& probs, int64_t n, int c, const char* fn) {
  if (c < 1) fail(fmt::format("{}: number of classes must be >= 1, got {}", fn, c));
  if (n < 0) fail(fmt::format("{}: number of rows must be >= 0, got {}", fn, n));
  if (int64_t(probs.size()) != n * c)
    fail(fmt::format("{}: probs has {} values, expected {} rows x {} classes = {}", fn,
                     probs.size(), n, c, n * c));
}

void check_ids(const std::vector<int>& ids, int c, const char* fn, const char* arg) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= c)
      fail(fmt::format("{}: {}[{}] = {} is not a class id in [0, {})", fn, arg, i, ids[i], c));
}

}  // namespace

ClassificationMetrics classification_metrics(const std::vector<int>& truth,
                                             const std::vector<int>& predicted,
                                             int num_classes) {
  const char* fn = "classification_metrics";
  if (num_classes < 1) fail(fmt::format("{}: num_classes must be >= 1, got {}", fn, num_classes));
  if (truth.size() != predicted.size())
    fail(fmt::format("{}: truth has {} entries but predicted has {}", fn, truth.size(),
                     predicted.size()));
  check_ids(truth, num_classes, fn, "truth");
  check_ids(predicted, num_classes, fn, "predicted");

  const int C = num_classes;
  ClassificationMetrics m;
  m.count = int64_t(truth.size());
  m.confusion.assign(C, std::vector<int64_t>(C, 0));
  for (size_t j = 0; j < truth.size(); ++j) ++m.confusion[truth[j]][predicted[j]];

  // Row sums are the supports (TP + FN), column sums the predicted counts (TP + FP).
  int64_t correct = 0;
  m.per_class.resize(C);
  for (int a = 0; a < C; ++a) {
    correct += m.confusion[a][a];
    for (int b = 0; b < C; ++b) {
      m.per_class[a].support += m.confusion[a][b];
      m.per_class[b].predicted += m.confusion[a][b];
    }
  }
  m.accuracy = ratio(double(correct), double(m.count));

  double sum_p = 0, sum_r = 0, sum_f = 0, weighted = 0;
  for (int c = 0; c < C; ++c) {
    ClassScores& s = m.per_class[c];
    const double tp = double(m.confusion[c][c]);
    s.precision = ratio(tp, double(s.predicted));
    s.recall = ratio(tp, double(s.support));
    // 2TP / (2TP + FP + FN) equals 2PR/(P+R) whenever both are defined, and
    // is 0 exactly when TP = 0, which covers every zero-division case.
    s.f1 = ratio(2 * tp, double(s.predicted + s.support));
    sum_p += s.precision;
    sum_r += s.recall;
    sum_f += s.f1;
    weighted += double(s.support) * s.f1;
  }
  m.macro_precision = sum_p / C;
  m.macro_recall = sum_r / C;
  m.macro_f1 = sum_f / C;
  m.weighted_f1 = ratio(weighted, double(m.count));
  return m;
}

std::vector<int> argmax_rows(const std::vector<float>& probs, int64_t n, int c) {
  check_matrix(probs, n, c, "argmax_rows");
  std::vector<int> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = probs.data() + i * c;
    int best = 0;
    for (int k = 1; k < c; ++k)
      if (row[k] > row[best]) best = k;  // strict: ties keep the lower index
    out[size_t(i)] = best;
  }
  return out;
}

double top_k_accuracy(const std::vector<float>& probs, int64_t n, int c,
                      const std::vector<int>& truth, int k) {
  const char* fn = "top_k_accuracy";
  check_matrix(probs, n, c, fn);
  if (k < 1) fail(fmt::format("{}: k must be >= 1, got {}", fn, k));
  if (int64_t(truth.size()) != n)
    fail(fmt::format("{}: truth has {} entries, expected {}", fn, truth.size(), n));
  check_ids(truth, c, fn, "truth");
  if (n == 0) return 0;
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = probs.data() + i * c;
    const int y = truth[size_t(i)];
    // The true class's rank: how many classes are ordered before it.
    int rank = 0;
    for (int j = 0; j < c; ++j)
      if (row[j] > row[y] || (row[j] == row[y] && j < y)) ++rank;
    hits += rank < k;
  }
  return double(hits) / double(n);
}

TrackAggregate aggregate_tracks(const std::vector<float>& probs, int64_t n, int c,
                                const std::vector<int>& labels,
                                const std::vector<int64_t>& track_ids) {
  const char* fn = "aggregate_tracks";
  check_matrix(probs, n, c, fn);
  if (int64_t(labels.size()) != n || int64_t(track_ids.size()) != n)
    fail(fmt::format("{}: {} rows of probabilities but {} labels and {} track ids", fn, n,
                     labels.size(), track_ids.size()));
  check_ids(labels, c, fn, "labels");

  // Track id -> (row in the output, first segment seen). std::map keeps the
  // ids ascending, so the output order does not depend on segment order.
  std::map<int64_t, size_t> first_segment;
  for (int64_t i = 0; i < n; ++i) first_segment.emplace(track_ids[size_t(i)], size_t(i));

  TrackAggregate t;
  std::map<int64_t, size_t> row_of;
  for (const auto& [id, seg] : first_segment) {
    row_of[id] = t.track_ids.size();
    t.track_ids.push_back(id);
    t.labels.push_back(labels[seg]);
  }
  const size_t T = t.track_ids.size();
  t.segments.assign(T, 0);
  std::vector<double> sum(T * size_t(c), 0.0);  // double: means of many floats
  for (int64_t i = 0; i < n; ++i) {
    const size_t r = row_of[track_ids[size_t(i)]];
    if (labels[size_t(i)] != t.labels[r])
      fail(fmt::format("{}: track {} has segments with different labels: segment {} is class "
                       "{}, segment {} is class {}",
                       fn, t.track_ids[r], first_segment[t.track_ids[r]], t.labels[r], i,
                       labels[size_t(i)]));
    ++t.segments[r];
    for (int k = 0; k < c; ++k) sum[r * c + k] += probs[size_t(i) * c + k];
  }
  t.mean_probs.resize(T * size_t(c));
  for (size_t r = 0; r < T; ++r)
    for (int k = 0; k < c; ++k)
      t.mean_probs[r * c + k] = float(sum[r * c + k] / double(t.segments[r]));
  return t;
}

Evaluation evaluate(const std::vector<float>& probs, const std::vector<int>& labels,
                    const std::vector<int64_t>& track_ids,
                    const std::vector<std::string>& label_names,
                    const std::vector<int>& top_k) {
  const char* fn = "evaluate";
  const int C = int(label_names.size());
  if (C < 1) fail(fmt::format("{}: label_names is empty", fn));
  const int64_t n = int64_t(labels.size());
  if (int64_t(probs.size()) != n * C)
    fail(fmt::format("{}: probs has {} values, expected {} segments x {} classes = {}", fn,
                     probs.size(), n, C, n * C));
  if (int64_t(track_ids.size()) != n)
    fail(fmt::format("{}: track_ids has {} entries, labels has {}", fn, track_ids.size(), n));
  for (size_t i = 0; i < probs.size(); ++i)
    if (!std::isfinite(probs[i]))
      fail(fmt::format("{}: probs[segment {}][class {}] = {} is not finite", fn, i / C, i % C,
                       probs[i]));
  check_ids(labels, C, fn, "labels");
  for (int k : top_k)
    if (k < 1) fail(fmt::format("{}: top_k value {} must be >= 1", fn, k));

  Evaluation e;
  e.labels = label_names;
  e.clip = classification_metrics(labels, argmax_rows(probs, n, C), C);
  const TrackAggregate t = aggregate_tracks(probs, n, C, labels, track_ids);
  const int64_t T = int64_t(t.track_ids.size());
  e.track = classification_metrics(t.labels, argmax_rows(t.mean_probs, T, C), C);
  std::vector<int> ks = top_k;
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  for (int k : ks) {
    e.clip.top_k.emplace_back(k, top_k_accuracy(probs, n, C, labels, k));
    e.track.top_k.emplace_back(k, top_k_accuracy(t.mean_probs, T, C, t.labels, k));
  }
  return e;
}

nlohmann::json to_json(const ClassificationMetrics& m, const std::vector<std::string>& labels) {
  if (labels.size() != m.per_class.size())
    fail(fmt::format("to_json: {} label names for {} classes", labels.size(), m.per_class.size()));
  nlohmann::json j;
  j["count"] = m.count;
  j["accuracy"] = m.accuracy;
  nlohmann::json tk = nlohmann::json::object();
  for (const auto& [k, v] : m.top_k) tk[std::to_string(k)] = v;
  j["top_k"] = tk;
  j["macro"] = {{"precision", m.macro_precision}, {"recall", m.macro_recall}, {"f1", m.macro_f1}};
  j["weighted_f1"] = m.weighted_f1;
  nlohmann::json pc = nlohmann::json::array();
  for (size_t c = 0; c < m.per_class.size(); ++c) {
    const ClassScores& s = m.per_class[c];
    pc.push_back({{"label", labels[c]},
                  {"precision", s.precision},
                  {"recall", s.recall},
                  {"f1", s.f1},
                  {"support", s.support},
                  {"predicted", s.predicted}});
  }
  j["per_class"] = pc;
  j["confusion"] = m.confusion;
  return j;
}

nlohmann::json to_json(const Evaluation& e) {
  nlohmann::json j;
  j["labels"] = e.labels;
  j["clip"] = to_json(e.clip, e.labels);
  j["track"] = to_json(e.track, e.labels);
  j["zero_division"] = 0;  // the value a 0/0 precision, recall or F1 takes
  return j;
}

}  // namespace timbre::tools
