// metrics.h: what `timbre eval` measures on a trained model's predictions.
//
// Input: for N segments (128-frame log-mel excerpts), the model's class
// probabilities P (N x C, row-major, host memory; each row is a softmax
// output), each segment's true class y_i in [0, C), and the id of the track
// the segment was cut from. Nothing here is compute-heavy (N is thousands, C
// is 8 to 16), so this is plain host C++: bookkeeping, not a kernel.
//
// Two levels of evaluation, each giving the same set of numbers:
//
//   clip level   every segment is one prediction:  yhat_i = argmax_c P[i][c]
//   track level  the segments of a track vote by averaging their
//                probabilities, then the track takes the argmax:
//                  Pbar[t][c] = (1/|S_t|) sum_{i in S_t} P[i][c]
//                  yhat_t     = argmax_c Pbar[t][c]
//                The track's true class is its segments' class; segments of
//                one track that disagree are an error (a bug upstream).
//
// argmax ties go to the lowest class index, everywhere (so results are
// deterministic and top-1 accuracy equals accuracy).
//
// For a level with n predictions (yhat_j, y_j), j = 1..n:
//   confusion  M[a][b] = #{ j : y_j = a, yhat_j = b }   (rows true, cols predicted)
//   accuracy   = (sum_a M[a][a]) / n
//   for class c: TP = M[c][c], FP = sum_a M[a][c] - TP, FN = sum_b M[c][b] - TP
//     precision_c = TP / (TP + FP)     recall_c = TP / (TP + FN)
//     F1_c        = 2 P R / (P + R)    (= 2TP / (2TP + FP + FN))
//   Zero division: a class never predicted (TP+FP = 0) has precision 0; a
//   class absent from the truth (TP+FN = 0) has recall 0; P+R = 0 gives F1 0.
//   (scikit-learn's zero_division=0.) Such classes are still counted in the
//   macro averages, which are the unweighted means over all C classes:
//     macro_P = (1/C) sum_c precision_c, and likewise for recall and F1.
//   weighted F1 = sum_c support_c F1_c / n, support_c = TP+FN.
//   top-k accuracy: the true class is among the k most probable ones, ranking
//   with the same tie rule: rank(y) = #{c : P[c] > P[y] or (P[c] = P[y] and c < y)},
//   correct when rank(y) < k. top-1 is the accuracy.
//
// docs/evaluation.md has the same definitions with worked examples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace timbre::tools {

// One class's scores at one level (clip or track).
struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    // how many predictions truly are this class (TP + FN)
  int64_t predicted = 0;  // how many predictions named this class (TP + FP)
};

// Everything computed from one set of (true, predicted) pairs.
struct ClassificationMetrics {
  int64_t count = 0;                         // n, the number of predictions
  double accuracy = 0;                       // trace(M) / n
  std::vector<std::vector<int64_t>> confusion;  // C x C, rows true, cols predicted
  std::vector<ClassScores> per_class;        // C entries
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  double weighted_f1 = 0;                    // support-weighted mean of F1
  std::vector<std::pair<int, double>> top_k; // (k, top-k accuracy), k ascending
};

// The result of `timbre eval`.
struct Evaluation {
  std::vector<std::string> labels;  // class names, index = class id
  ClassificationMetrics clip;       // one segment = one prediction
  ClassificationMetrics track;      // mean probability per track, then argmax
};

// Confusion matrix, accuracy, per-class and macro scores from class ids.
// Throws std::invalid_argument when sizes differ, num_classes < 1, or an id
// is outside [0, num_classes) (naming the argument and the index).
ClassificationMetrics classification_metrics(const std::vector<int>& truth,
                                             const std::vector<int>& predicted,
                                             int num_classes);

// Row-wise argmax of an n x c row-major matrix (ties -> lowest index).
std::vector<int> argmax_rows(const std::vector<float>& probs, int64_t n, int c);

// Top-k accuracy of an n x c score matrix against `truth`, with the tie rule
// above. k >= 1; k >= c gives 1.
double top_k_accuracy(const std::vector<float>& probs, int64_t n, int c,
                      const std::vector<int>& truth, int k);

// Per-track aggregation of segment probabilities.
struct TrackAggregate {
  std::vector<int64_t> track_ids;  // ascending
  std::vector<float> mean_probs;   // tracks x C, row-major (accumulated in double)
  std::vector<int> labels;         // each track's true class
  std::vector<int64_t> segments;   // segments per track
};

// Groups segments by track id (any order, not necessarily contiguous) and
// averages their probabilities. Throws std::invalid_argument if a track's
// segments carry different labels (naming the track and both classes).
TrackAggregate aggregate_tracks(const std::vector<float>& probs, int64_t n, int c,
                                const std::vector<int>& labels,
                                const std::vector<int64_t>& track_ids);

// The whole evaluation. probs: n x C with C = label_names.size(); labels and
// track_ids: n entries. `top_k` lists the k values to report (k >= 1; values
// >= C are kept and give 1). Checks every input (sizes, finite
// probabilities, class ids in range) and throws std::invalid_argument naming
// the argument and the offending index.
Evaluation evaluate(const std::vector<float>& probs, const std::vector<int>& labels,
                    const std::vector<int64_t>& track_ids,
                    const std::vector<std::string>& label_names,
                    const std::vector<int>& top_k = {1, 3});

// JSON form with label names, e.g.
//   {"labels": [...], "clip": {"count": n, "accuracy": a, "top_k": {"3": x},
//    "macro": {"precision","recall","f1"}, "weighted_f1": w,
//    "per_class": [{"label","precision","recall","f1","support","predicted"}],
//    "confusion": [[...]]}, "track": {...}}
nlohmann::json to_json(const Evaluation& e);
nlohmann::json to_json(const ClassificationMetrics& m, const std::vector<std::string>& labels);

}  // namespace timbre::tools
