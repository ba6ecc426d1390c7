// Tests of tools/metrics: hand-checked small cases (the numbers below are
// worked out in the comments), random data against an independent
// recomputation (counting per class directly, ranking by sorting), track
// aggregation, degenerate cases and input errors.
#include "tools/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using timbre::tools::ClassificationMetrics;
using timbre::tools::Evaluation;

// The message of the std::invalid_argument that `f` throws ("" if none).
template <class F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Ratios below are formed once from small integers, so they are exact up to
// one rounding; 1e-12 leaves room for the different (equivalent) formulas the
// references use.
constexpr double kExact = 1e-12;

TEST(Metrics, HandCheckedThreeClasses) {
  // truth    0 0 1 1 2 2
  // predicted 0 1 1 1 0 2
  // confusion (rows true, cols predicted):
  //   [1 1 0]
  //   [0 2 0]
  //   [1 0 1]
  // accuracy 4/6. class 0: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
  // class 1: TP 2, predicted 3, support 2 -> P 2/3, R 1, F1 4/5
  // class 2: TP 1, predicted 1, support 2 -> P 1, R 1/2, F1 2/3
  const ClassificationMetrics m =
      timbre::tools::classification_metrics({0, 0, 1, 1, 2, 2}, {0, 1, 1, 1, 0, 2}, 3);
  EXPECT_EQ(m.count, 6);
  const std::vector<std::vector<int64_t>> want = {{1, 1, 0}, {0, 2, 0}, {1, 0, 1}};
  EXPECT_EQ(m.confusion, want);
  EXPECT_NEAR(m.accuracy, 4.0 / 6, kExact);
  const double P[] = {0.5, 2.0 / 3, 1.0}, R[] = {0.5, 1.0, 0.5}, F[] = {0.5, 0.8, 2.0 / 3};
  const int64_t support[] = {2, 2, 2}, predicted[] = {2, 3, 1};
  for (int c = 0; c < 3; ++c) {
    SCOPED_TRACE("class " + std::to_string(c));
    EXPECT_NEAR(m.per_class[c].precision, P[c], kExact);
    EXPECT_NEAR(m.per_class[c].recall, R[c], kExact);
    EXPECT_NEAR(m.per_class[c].f1, F[c], kExact);
    EXPECT_EQ(m.per_class[c].support, support[c]);
    EXPECT_EQ(m.per_class[c].predicted, predicted[c]);
  }
  EXPECT_NEAR(m.macro_precision, 13.0 / 18, kExact);        // (1/2 + 2/3 + 1) / 3
  EXPECT_NEAR(m.macro_recall, 2.0 / 3, kExact);             // (1/2 + 1 + 1/2) / 3
  EXPECT_NEAR(m.macro_f1, (0.5 + 0.8 + 2.0 / 3) / 3, kExact);
  EXPECT_NEAR(m.weighted_f1, (2 * 0.5 + 2 * 0.8 + 2 * 2.0 / 3) / 6, kExact);
}

TEST(Metrics, ImbalancedWeightedF1DiffersFromMacro) {
  // truth 0 0 0 1, predicted 0 0 1 1: class 0 P 1, R 2/3, F1 4/5;
  // class 1 P 1/2, R 1, F1 2/3. macro F1 = 11/15, weighted = (3*4/5 + 2/3)/4.
  const auto m = timbre::tools::classification_metrics({0, 0, 0, 1}, {0, 0, 1, 1}, 2);
  EXPECT_NEAR(m.per_class[0].f1, 0.8, kExact);
  EXPECT_NEAR(m.per_class[1].f1, 2.0 / 3, kExact);
  EXPECT_NEAR(m.macro_f1, 11.0 / 15, kExact);
  EXPECT_NEAR(m.weighted_f1, (3 * 0.8 + 2.0 / 3) / 4, kExact);
}

TEST(Metrics, ClassNeverPredictedHasZeroPrecision) {
  // truth 0 1 2, predicted 0 0 2: class 1 never predicted (TP+FP = 0).
  const auto m = timbre::tools::classification_metrics({0, 1, 2}, {0, 0, 2}, 3);
  EXPECT_EQ(m.per_class[1].predicted, 0);
  EXPECT_EQ(m.per_class[1].precision, 0.0);  // zero division -> 0
  EXPECT_EQ(m.per_class[1].recall, 0.0);
  EXPECT_EQ(m.per_class[1].f1, 0.0);
  EXPECT_NEAR(m.per_class[0].precision, 0.5, kExact);
  EXPECT_NEAR(m.macro_precision, (0.5 + 0 + 1) / 3, kExact);  // still averaged over all 3
  EXPECT_FALSE(std::isnan(m.macro_f1));
}

TEST(Metrics, ClassAbsentFromTruthHasZeroRecall) {
  // C = 3, truth 0 0, predicted 0 1: class 1 predicted but absent (support 0),
  // class 2 absent and never predicted: every score 0.
  const auto m = timbre::tools::classification_metrics({0, 0}, {0, 1}, 3);
  EXPECT_EQ(m.per_class[1].support, 0);
  EXPECT_EQ(m.per_class[1].recall, 0.0);
  EXPECT_EQ(m.per_class[1].precision, 0.0);  // TP 0 of 1 predicted
  EXPECT_EQ(m.per_class[2].precision, 0.0);
  EXPECT_EQ(m.per_class[2].recall, 0.0);
  EXPECT_EQ(m.per_class[2].f1, 0.0);
  EXPECT_NEAR(m.per_class[0].f1, 2.0 / 3, kExact);  // P 1, R 1/2
  EXPECT_NEAR(m.macro_f1, (2.0 / 3) / 3, kExact);
  EXPECT_NEAR(m.accuracy, 0.5, kExact);
}

TEST(Metrics, OneSample) {
  const auto m = timbre::tools::classification_metrics({2}, {2}, 3);
  EXPECT_EQ(m.accuracy, 1.0);
  EXPECT_EQ(m.per_class[2].f1, 1.0);
  EXPECT_NEAR(m.macro_f1, 1.0 / 3, kExact);
  EXPECT_EQ(m.weighted_f1, 1.0);

  // Through evaluate: one segment is one track.
  const Evaluation e = timbre::tools::evaluate({0.1f, 0.2f, 0.7f}, {1}, {42}, {"a", "b", "c"}, {1, 2, 5});
  EXPECT_EQ(e.clip.count, 1);
  EXPECT_EQ(e.track.count, 1);
  EXPECT_EQ(e.clip.accuracy, 0.0);
  ASSERT_EQ(e.clip.top_k.size(), 3u);
  EXPECT_EQ(e.clip.top_k[0].second, 0.0);  // k = 1
  EXPECT_EQ(e.clip.top_k[1].second, 1.0);  // k = 2: b (0.2) is second
  EXPECT_EQ(e.clip.top_k[2].second, 1.0);  // k = 5 >= C
}

TEST(Metrics, NoSamplesGivesZerosNotNaN) {
  const auto m = timbre::tools::classification_metrics({}, {}, 2);
  EXPECT_EQ(m.count, 0);
  EXPECT_EQ(m.accuracy, 0.0);
  EXPECT_EQ(m.weighted_f1, 0.0);
  EXPECT_EQ(m.macro_f1, 0.0);
}

TEST(Metrics, ArgmaxAndTopKTieRules) {
  // Row 0: a tie between classes 1 and 2 goes to 1. Row 1: all equal -> 0.
  const std::vector<float> p = {0.1f, 0.45f, 0.45f, 0.25f, 0.25f, 0.25f};
  EXPECT_EQ(timbre::tools::argmax_rows(p, 2, 3), (std::vector<int>{1, 0}));
  // Truth 2 in row 0 is ranked after class 1 -> rank 1: wrong at k=1, right at k=2.
  EXPECT_EQ(timbre::tools::top_k_accuracy(p, 2, 3, {2, 0}, 1), 0.5);
  EXPECT_EQ(timbre::tools::top_k_accuracy(p, 2, 3, {2, 0}, 2), 1.0);
  // Truth 2 in row 1 ties with 0 and 1, which come first: rank 2.
  EXPECT_EQ(timbre::tools::top_k_accuracy(p, 2, 3, {1, 2}, 2), 0.5);
  EXPECT_EQ(timbre::tools::top_k_accuracy(p, 2, 3, {1, 2}, 3), 1.0);
}

TEST(Metrics, TrackAggregationHandChecked) {
  // Tracks 7, 3, 9, segments interleaved. C = 2.
  //   track 3: [0.6 0.4], [0.0 1.0]  -> mean [0.3 0.7]  -> class 1 (label 1: right)
  //   track 7: [0.9 0.1], [0.2 0.8]  -> mean [0.55 0.45] -> class 0 (label 0: right)
  //   track 9: [0.3 0.7]             -> class 1 (label 0: wrong)
  // Clip predictions: 0 0 1 1 1 against labels 0 1 0 1 0 -> 2 of 5 right.
  const std::vector<float> p = {0.9f, 0.1f, 0.6f, 0.4f, 0.2f, 0.8f, 0.0f, 1.0f, 0.3f, 0.7f};
  const std::vector<int> labels = {0, 1, 0, 1, 0};
  const std::vector<int64_t> tracks = {7, 3, 7, 3, 9};
  const auto t = timbre::tools::aggregate_tracks(p, 5, 2, labels, tracks);
  EXPECT_EQ(t.track_ids, (std::vector<int64_t>{3, 7, 9}));
  EXPECT_EQ(t.labels, (std::vector<int>{1, 0, 0}));
  EXPECT_EQ(t.segments, (std::vector<int64_t>{2, 2, 1}));
  const float want[] = {0.3f, 0.7f, 0.55f, 0.45f, 0.3f, 0.7f};
  ASSERT_EQ(t.mean_probs.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(t.mean_probs[i], want[i], 1e-7) << i;  // float inputs

  const Evaluation e = timbre::tools::evaluate(p, labels, tracks, {"x", "y"});
  EXPECT_NEAR(e.clip.accuracy, 2.0 / 5, kExact);
  EXPECT_EQ(e.track.count, 3);
  EXPECT_NEAR(e.track.accuracy, 2.0 / 3, kExact);
  const std::vector<std::vector<int64_t>> track_confusion = {{1, 1}, {0, 1}};
  EXPECT_EQ(e.track.confusion, track_confusion);
}

TEST(Metrics, LabelMismatchWithinTrackIsAnError) {
  const std::vector<float> p = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  const std::string msg = invalid_argument_message([&] {
    timbre::tools::evaluate(p, {0, 0, 1}, {5, 11, 11}, {"a", "b"});
  });
  EXPECT_TRUE(contains(msg, "track 11")) << msg;
  EXPECT_TRUE(contains(msg, "different labels")) << msg;
}

TEST(Metrics, BadInputsNameTheArgument) {
  const std::vector<std::string> names = {"a", "b"};
  auto msg = invalid_argument_message([&] { timbre::tools::evaluate({0.5f, 0.5f, 1.f}, {0}, {1}, names); });
  EXPECT_TRUE(contains(msg, "probs has 3 values")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::evaluate({0.5f, 0.5f}, {2}, {1}, names); });
  EXPECT_TRUE(contains(msg, "labels[0] = 2")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::evaluate({0.5f, 0.5f}, {0}, {1, 2}, names); });
  EXPECT_TRUE(contains(msg, "track_ids has 2")) << msg;
  msg = invalid_argument_message(
      [&] { timbre::tools::evaluate({0.5f, 0.5f, NAN, 0.5f}, {0, 1}, {1, 2}, names); });
  EXPECT_TRUE(contains(msg, "segment 1][class 0]")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::evaluate({}, {}, {}, {}); });
  EXPECT_TRUE(contains(msg, "label_names is empty")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::evaluate({0.5f, 0.5f}, {0}, {1}, names, {0}); });
  EXPECT_TRUE(contains(msg, "top_k")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::classification_metrics({0, 1}, {0}, 2); });
  EXPECT_TRUE(contains(msg, "predicted has 1")) << msg;
  msg = invalid_argument_message([&] { timbre::tools::classification_metrics({0}, {-1}, 2); });
  EXPECT_TRUE(contains(msg, "predicted[0] = -1")) << msg;
}

// ---- random data against an independent recomputation

struct RandomCase {
  int n, c, tracks;
  bool quantized;  // probabilities on a coarse grid, so ties are common
  uint64_t seed;
};

// Softmax-like rows (positive, summing to 1) and labels that are constant per
// track, as the dataset produces them.
void make_case(const RandomCase& rc, std::vector<float>& p, std::vector<int>& labels,
               std::vector<int64_t>& tracks) {
  std::mt19937_64 g(rc.seed);
  std::uniform_int_distribution<int> cls(0, rc.c - 1), trk(0, rc.tracks - 1), grid(0, 4);
  std::uniform_real_distribution<float> u(0.01f, 1.f);
  std::vector<int> track_label(rc.tracks);
  std::vector<int64_t> track_id(rc.tracks);
  for (int t = 0; t < rc.tracks; ++t) {
    track_label[t] = cls(g);
    track_id[t] = 1000 + 37 * t - (t % 3) * 500;  // not sorted, not contiguous
  }
  p.resize(size_t(rc.n) * rc.c);
  labels.resize(rc.n);
  tracks.resize(rc.n);
  for (int i = 0; i < rc.n; ++i) {
    const int t = trk(g);
    tracks[i] = track_id[t];
    labels[i] = track_label[t];
    float sum = 0;
    for (int k = 0; k < rc.c; ++k) sum += p[size_t(i) * rc.c + k] = rc.quantized ? float(grid(g)) + 1 : u(g);
    for (int k = 0; k < rc.c; ++k) p[size_t(i) * rc.c + k] /= sum;
    // Make the true class more likely half of the time so accuracy is not ~1/C.
    if (g() % 2) p[size_t(i) * rc.c + labels[i]] += 0.3f;
  }
}

// Predictions as "the first class of a stable sort by descending score":
// independent of argmax_rows' loop, with the same tie rule.
std::vector<int> ranking(const float* row, int c) {
  std::vector<int> idx(c);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return row[a] > row[b]; });
  return idx;
}

// The metrics by per-class counting with the textbook formulas.
void expect_matches_reference(const ClassificationMetrics& m, const std::vector<float>& p,
                              int n, int c, const std::vector<int>& y) {
  std::vector<int> pred(n);
  for (int i = 0; i < n; ++i) pred[i] = ranking(&p[size_t(i) * c], c)[0];
  int correct = 0;
  for (int i = 0; i < n; ++i) correct += pred[i] == y[i];
  EXPECT_NEAR(m.accuracy, double(correct) / n, kExact);
  double mp = 0, mr = 0, mf = 0, wf = 0;
  for (int k = 0; k < c; ++k) {
    for (int b = 0; b < c; ++b) {
      int64_t cell = 0;
      for (int i = 0; i < n; ++i) cell += (y[i] == k && pred[i] == b);
      EXPECT_EQ(m.confusion[k][b], cell) << "cell " << k << "," << b;
    }
    int tp = 0, fp = 0, fn = 0;
    for (int i = 0; i < n; ++i) {
      tp += (y[i] == k && pred[i] == k);
      fp += (y[i] != k && pred[i] == k);
      fn += (y[i] == k && pred[i] != k);
    }
    const double P = tp + fp ? double(tp) / (tp + fp) : 0, R = tp + fn ? double(tp) / (tp + fn) : 0;
    const double F = P + R > 0 ? 2 * P * R / (P + R) : 0;
    EXPECT_NEAR(m.per_class[k].precision, P, kExact) << "class " << k;
    EXPECT_NEAR(m.per_class[k].recall, R, kExact) << "class " << k;
    EXPECT_NEAR(m.per_class[k].f1, F, kExact) << "class " << k;
    EXPECT_EQ(m.per_class[k].support, tp + fn);
    mp += P, mr += R, mf += F, wf += (tp + fn) * F;
  }
  EXPECT_NEAR(m.macro_precision, mp / c, kExact);
  EXPECT_NEAR(m.macro_recall, mr / c, kExact);
  EXPECT_NEAR(m.macro_f1, mf / c, kExact);
  EXPECT_NEAR(m.weighted_f1, wf / n, kExact);
  for (const auto& [k, acc] : m.top_k) {
    int hits = 0;
    for (int i = 0; i < n; ++i) {
      const auto r = ranking(&p[size_t(i) * c], c);
      hits += std::find(r.begin(), r.begin() + std::min(k, c), y[i]) != r.begin() + std::min(k, c);
    }
    EXPECT_NEAR(acc, double(hits) / n, kExact) << "top-" << k;
  }
}

class MetricsRandom : public ::testing::TestWithParam<RandomCase> {};

TEST_P(MetricsRandom, MatchesIndependentRecomputation) {
  const RandomCase rc = GetParam();
  std::vector<float> p;
  std::vector<int> labels;
  std::vector<int64_t> tracks;
  make_case(rc, p, labels, tracks);
  std::vector<std::string> names;
  for (int k = 0; k < rc.c; ++k) names.push_back("genre " + std::to_string(k));
  const Evaluation e = timbre::tools::evaluate(p, labels, tracks, names, {1, 2, 3, 5});

  {
    SCOPED_TRACE("clip level");
    expect_matches_reference(e.clip, p, rc.n, rc.c, labels);
    ASSERT_EQ(e.clip.top_k.size(), 4u);
    EXPECT_EQ(e.clip.top_k[0].second, e.clip.accuracy);  // top-1 is the accuracy
  }

  // Reference track means: for each distinct id, a scan over all segments,
  // summed in long double.
  const std::set<int64_t> ids(tracks.begin(), tracks.end());
  std::vector<float> mean;
  std::vector<int> track_labels;
  for (int64_t id : ids) {
    std::vector<long double> s(rc.c, 0);
    int count = 0, label = -1;
    for (int i = 0; i < rc.n; ++i)
      if (tracks[i] == id) {
        ++count;
        label = labels[i];
        for (int k = 0; k < rc.c; ++k) s[k] += p[size_t(i) * rc.c + k];
      }
    for (int k = 0; k < rc.c; ++k) mean.push_back(float(s[k] / count));
    track_labels.push_back(label);
  }
  const auto t = timbre::tools::aggregate_tracks(p, rc.n, rc.c, labels, tracks);
  ASSERT_EQ(t.mean_probs.size(), mean.size());
  // Both sides round a higher-precision mean to float once: equal, or one
  // float ulp apart when the two sums land on either side of a rounding tie.
  for (size_t i = 0; i < mean.size(); ++i)
    EXPECT_NEAR(t.mean_probs[i], mean[i], 1.2e-7 * std::fabs(mean[i])) << i;
  SCOPED_TRACE("track level");
  expect_matches_reference(e.track, t.mean_probs, int(ids.size()), rc.c, track_labels);
  EXPECT_EQ(e.track.count, int64_t(ids.size()));
}

INSTANTIATE_TEST_SUITE_P(Cases, MetricsRandom,
                         ::testing::Values(RandomCase{1013, 7, 97, false, 1},
                                           RandomCase{517, 8, 31, true, 2},
                                           RandomCase{64, 3, 64, true, 3},  // ~1 segment a track
                                           RandomCase{301, 13, 5, false, 4}));

TEST(Metrics, JsonHasLabelNamesAndNumbers) {
  const std::vector<float> p = {0.9f, 0.1f, 0.6f, 0.4f, 0.2f, 0.8f, 0.0f, 1.0f, 0.3f, 0.7f};
  const Evaluation e = timbre::tools::evaluate(p, {0, 1, 0, 1, 0}, {7, 3, 7, 3, 9},
                                               {"Rock & Roll", "Hip-Hop"}, {1, 2});
  const nlohmann::json j = nlohmann::json::parse(timbre::tools::to_json(e).dump());
  EXPECT_EQ(j["labels"], (nlohmann::json{"Rock & Roll", "Hip-Hop"}));
  EXPECT_DOUBLE_EQ(j["clip"]["accuracy"].get<double>(), e.clip.accuracy);
  EXPECT_DOUBLE_EQ(j["track"]["accuracy"].get<double>(), e.track.accuracy);
  EXPECT_EQ(j["clip"]["count"], 5);
  EXPECT_EQ(j["track"]["count"], 3);
  EXPECT_EQ(j["clip"]["per_class"][0]["label"], "Rock & Roll");
  EXPECT_DOUBLE_EQ(j["clip"]["per_class"][1]["f1"].get<double>(), e.clip.per_class[1].f1);
  EXPECT_EQ(j["clip"]["per_class"][1]["support"], 2);
  EXPECT_DOUBLE_EQ(j["track"]["macro"]["f1"].get<double>(), e.track.macro_f1);
  EXPECT_DOUBLE_EQ(j["clip"]["top_k"]["2"].get<double>(), 1.0);
  EXPECT_EQ(j["track"]["confusion"], (nlohmann::json{{1, 1}, {0, 1}}));
  EXPECT_EQ(j["zero_division"], 0);
}

}  // namespace
