// inference.h: `timbre eval` and `timbre predict` on a trained run.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/metrics.h"
#include "tools/report.h"

namespace timbre::tools {

struct EvalOptions {
  std::string run;             // run folder
  std::string data;            // empty: the file the run was trained on
  std::string split = "test";  // train | validation | test
  int batch = 32;
  std::vector<ReportComparison> comparisons;  // other methods' scores for the report
};
struct EvalResult {
  Evaluation evaluation;
  std::string report_path;     // report-<split>.html
  std::string metrics_path;    // metrics-<split>.json
  std::string write_error;     // why the report or the metrics could not be written ("" if
                               // they were); the evaluation is valid either way
};
// Evaluates the run's best weights on a split of a feature store (whose
// parameters and labels must match the run's), writes report-<split>.html,
// its SVG plots and metrics-<split>.json into the run folder and refreshes
// the training report (report.html) to link to it. A folder it cannot
// write (read-only, full) does not lose the evaluation: write_error says
// what failed and the caller still prints the metrics.
EvalResult run_eval(const EvalOptions& options);
// The clip and track accuracies and the per-class table, for the terminal.
std::string format_evaluation(const Evaluation& e, const std::string& split);

struct PredictOptions {
  std::string run;
  std::vector<std::string> files;
  int top = 3;                 // genres printed per file
  int jobs = 2;                // decoding threads
};
struct FilePrediction {
  std::string file;
  std::string error;           // empty on success
  int windows = 0;             // 128-frame windows averaged
  std::vector<std::pair<std::string, double>> top;  // (genre, probability), best first
};
// Decodes each file, slides windows of one segment with a hop of half a
// segment over the whole track, averages the windows' probabilities. A file
// that cannot be read gets its error; the others are still predicted.
std::vector<FilePrediction> run_predict(const PredictOptions& options);
nlohmann::json to_json(const std::vector<FilePrediction>& p);

}  // namespace timbre::tools
