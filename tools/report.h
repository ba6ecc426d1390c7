// report.h: the reports of a run folder.
//
//   report.html         the training report: `timbre train` rewrites it after
//                       every epoch (curves, best epoch, learning rate, the
//                       run's facts, links to the evaluations below)
//   report-<split>.html `timbre eval --split <split>`: the same, plus that
//                       split's scores and confusion matrices
// Each is one self-contained file: no scripts, fonts, stylesheets or
// images from anywhere else, so it opens offline and can be mailed around.
// Its plots are inline SVG that this code draws directly (an SVG is just
// text: a viewBox, then <line>, <rect>, <polyline> and <text> elements in
// that coordinate system):
//   - training curves from the run's CSV log against the epoch (numbered from
//     1): loss and val_loss in one panel, accuracy and val_accuracy in
//     another, the learning rate and the seconds per epoch below, with the
//     best epoch (the highest val_accuracy, the first one on a tie: the
//     epoch whose weights best.ckpt holds) marked in each;
//   - the confusion matrix as a heat map (clip and track level): each cell
//     shows its count, its colour is the count divided by the row total (the
//     fraction of that true class predicted as the column), so rare and
//     common classes are read on the same scale; the scale runs from white
//     (0) to dark blue (the largest fraction in the matrix);
//   - a per-class precision / recall / F1 table, the summary numbers
//     (accuracies, top-k, macro averages), and the run's config JSON.
// The same SVGs are also written beside the report: curves.svg, and for an
// evaluation confusion-<split>.svg (clip level) and confusion_track-<split>.svg.
//
// Every string from outside (label names, config, file names) is escaped
// before it goes into HTML or SVG, and every file is written atomically:
// to a temporary file in the same folder, flushed, then renamed over the
// target, so a reader never sees half a report and a failed write leaves the
// previous file as it was.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/metrics.h"

namespace timbre::tools {

// One row of the training log. A missing (empty or "nan") cell is NaN and
// is drawn as a gap in the curve.
struct EpochRecord {
  double epoch = 0, loss = 0, accuracy = 0, val_loss = 0, val_accuracy = 0, lr = 0, seconds = 0;
};

// The CSV log the trainer writes: a header naming the columns epoch, loss,
// accuracy, val_loss, val_accuracy, lr, seconds in ANY order (other columns
// are ignored), then one line per epoch. Blank lines are skipped, fields are
// trimmed, CRLF line ends are accepted. Throws std::runtime_error naming the
// file (and the line, column and text where it applies) when the file cannot
// be read, a column is missing or repeated, a line has the wrong number of
// fields, or a cell is not a number.
std::vector<EpochRecord> read_training_log(const std::filesystem::path& path);

// The same parser on text already in memory; `name` is used in the errors.
std::vector<EpochRecord> parse_training_log(std::string_view text, const std::string& name);

// & < > " ' -> entities. Safe inside element text and quoted attributes of
// both HTML and SVG (XML).
std::string html_escape(std::string_view s);

// Standalone SVG documents (no XML prolog, so they can also be inlined in HTML).
std::string curves_svg(const std::vector<EpochRecord>& log);
std::string confusion_svg(const std::vector<std::vector<int64_t>>& confusion,
                          const std::vector<std::string>& labels, const std::string& title);

// Another method's scores on the same split, shown beside the network's.
struct ReportComparison {
  std::string name;                 // "SVM baseline (PCA 15)"
  double clip_accuracy = 0, track_accuracy = 0;
};

struct ReportInputs {
  std::string title = "timbre evaluation";  // the run's name, shown as the heading
  std::optional<Evaluation> evaluation;     // none: a training report
  std::string split;                        // the evaluated split (names the files)
  std::vector<ReportComparison> comparisons;  // empty: no comparison table
  std::vector<EpochRecord> log;              // empty: the report says there is no log
  nlohmann::json config = nlohmann::json::object();  // the run's configuration, shown as-is
  // Other reports to link to: (text, file name relative to the report).
  std::vector<std::pair<std::string, std::string>> links;
};

// The index of the best epoch in the log: the highest finite val_accuracy,
// the first on a tie (the trainer keeps the first). -1 when there is none.
int best_epoch_index(const std::vector<EpochRecord>& log);

// The report as one HTML string.
std::string report_html(const ReportInputs& in);

// The report's file name: "report.html" for a training report, else
// "report-<split>.html" ("report.html" when the split is empty).
std::string report_name(const ReportInputs& in);

// Writes the report and its SVGs (curves.svg; with an evaluation
// confusion[-<split>].svg and confusion_track[-<split>].svg) into `dir`
// (created if missing), each atomically. Returns the report's path.
std::filesystem::path write_report(const std::filesystem::path& dir, const ReportInputs& in);

// The reports of a run folder other than `except` (a file name), as links:
// report.html ("training") and report-<split>.html for each split evaluated.
std::vector<std::pair<std::string, std::string>> run_report_links(const std::filesystem::path& run,
                                                                  const std::string& except);

// The training report of a run folder: report.html (and curves.svg) from its
// run.json and log.csv, linking to its report-<split>.html files. Throws
// std::runtime_error naming the file that cannot be read or written.
std::filesystem::path write_training_report(const std::filesystem::path& run);

// Writes `content` to `path` via a temporary file in the same folder and a
// rename. Throws std::runtime_error naming the file on any failure, and
// removes the temporary file.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

}  // namespace timbre::tools
