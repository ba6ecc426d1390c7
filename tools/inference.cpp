#include "tools/inference.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "features/audio.h"
#include "features/h5store.h"
#include "features/logmel.h"
#include "features/utf8.h"
#include "tools/report.h"
#include "tools/train.h"

namespace timbre::tools {

using features::Split;

EvalResult run_eval(const EvalOptions& o) {
  Split split;
  if (o.split == "train") split = Split::train;
  else if (o.split == "validation") split = Split::validation;
  else if (o.split == "test") split = Split::test;
  else throw std::invalid_argument("--split must be train, validation or test, not '" + o.split + "'");

  LoadedRun run = load_run(o.run);
  const std::string data = o.data.empty() ? std::string(run.run.at("data")) : o.data;
  if (o.data.empty() && !std::filesystem::exists(data))
    throw std::runtime_error(o.run + "/run.json names the feature file " + data +
                             ", which does not exist (moved or deleted?); pass --data with its "
                             "new path");
  features::FeatureStore store = features::FeatureStore::open(data);
  store.check_params(run.params);
  if (store.label_names() != run.label_names)
    throw std::runtime_error(data + ": its labels differ from the labels the run was trained on");
  const int64_t n = store.size(split);
  if (n == 0) throw std::runtime_error(data + ": the " + o.split + " split is empty");

  // Probabilities in chunks, so memory stays bounded for any split size.
  const int c = int(run.label_names.size());
  const size_t per = size_t(store.rows()) * store.frames();
  std::vector<float> probs(size_t(n) * c), x;
  const int64_t chunk = 256;
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    idx.resize(size_t(m));
    for (int64_t k = 0; k < m; ++k) idx[size_t(k)] = i + k;
    x.resize(size_t(m) * per);
    store.read_x(split, idx.data(), idx.size(), x.data());
    const std::vector<float> p = predict_probabilities(run, x.data(), m, o.batch);
    std::copy(p.begin(), p.end(), probs.begin() + i * c);
  }
  const std::vector<int32_t> y32 = store.read_y(split);
  const std::vector<int> y(y32.begin(), y32.end());

  EvalResult r;
  r.evaluation = evaluate(probs, y, store.read_track_id(split), run.label_names);
  ReportInputs in;
  in.title = "timbre: " + o.run + " (" + o.split + " split of " + data + ")";
  in.evaluation = r.evaluation;
  in.split = o.split;
  in.comparisons = o.comparisons;
  try {
    in.log = read_training_log(o.run + "/log.csv");
  } catch (const std::exception&) {
    // A run without a log still gets a report; the report says so.
  }
  in.config = run.run;
  r.metrics_path = o.run + "/metrics-" + o.split + ".json";
  nlohmann::json j = to_json(r.evaluation);
  j["split"] = o.split;
  j["data"] = data;
  try {
    write_file_atomic(r.metrics_path, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    r.write_error = e.what();
    r.metrics_path.clear();
  }
  try {
    in.links = run_report_links(o.run, report_name(in));
    r.report_path = write_report(o.run, in).string();
    write_training_report(o.run);  // its links now include this report
  } catch (const std::exception& e) {
    r.write_error += (r.write_error.empty() ? "" : "; ") + std::string(e.what());
  }
  return r;
}

std::string format_evaluation(const Evaluation& e, const std::string& split) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%s: clip accuracy %.4f (%lld segments), track accuracy %.4f "
                "(%lld tracks)\n", split.c_str(), e.clip.accuracy, (long long)e.clip.count,
                e.track.accuracy, (long long)e.track.count);
  os << line;
  std::snprintf(line, sizeof line, "  %-16s %9s %9s %9s %8s\n", "genre", "precision", "recall",
                "f1", "support");
  os << line;
  for (size_t k = 0; k < e.labels.size(); ++k) {
    const ClassScores& s = e.clip.per_class[k];
    std::snprintf(line, sizeof line, "  %-16s %9.4f %9.4f %9.4f %8lld\n", e.labels[k].c_str(),
                  s.precision, s.recall, s.f1, (long long)s.support);
    os << line;
  }
  std::snprintf(line, sizeof line, "  %-16s %9.4f %9.4f %9.4f\n", "macro", e.clip.macro_precision,
                e.clip.macro_recall, e.clip.macro_f1);
  os << line;
  return os.str();
}

std::vector<FilePrediction> run_predict(const PredictOptions& o) {
  if (o.files.empty()) throw std::invalid_argument("predict needs at least one audio file");
  if (o.top < 1) throw std::invalid_argument("--top must be at least 1");
  LoadedRun run = load_run(o.run);
  const features::FeatureParams& p = run.params;
  const long long seg = p.segment_samples();
  const long long hop = std::max(1LL, seg / 2);
  const int c = int(run.label_names.size());
  const size_t per = size_t(run.band_mean.size()) * p.frames;
  features::LogMelPipeline pipeline(p, 32);

  std::vector<FilePrediction> out(o.files.size());
  features::decode_all(o.files, p.sample_rate, size_t(seg), o.jobs,
                       [&](features::DecodeResult&& d) {
    FilePrediction& fp = out[d.index];
    fp.file = o.files[d.index];
    if (!d.error.empty()) {
      fp.error = d.error;
      return;
    }
    const std::vector<float>& x = d.audio.samples;
    std::vector<long long> starts;
    for (long long s = 0; s + seg <= (long long)x.size(); s += hop) starts.push_back(s);
    std::vector<double> mean(static_cast<size_t>(c), 0.0);
    std::vector<float> clips, feats;
    for (size_t i = 0; i < starts.size(); i += 32) {
      const size_t m = std::min<size_t>(32, starts.size() - i);
      clips.resize(m * size_t(seg));
      for (size_t k = 0; k < m; ++k)
        std::copy(x.begin() + starts[i + k], x.begin() + starts[i + k] + seg,
                  clips.begin() + k * size_t(seg));
      feats.resize(m * per);
      pipeline.compute(clips.data(), int(m), feats.data());
      const std::vector<float> pr = predict_probabilities(run, feats.data(), int64_t(m));
      for (size_t k = 0; k < m; ++k)
        for (int j = 0; j < c; ++j) mean[size_t(j)] += pr[k * c + j];
    }
    fp.windows = int(starts.size());
    std::vector<int> order(static_cast<size_t>(c));
    for (int j = 0; j < c; ++j) order[size_t(j)] = j;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return mean[a] > mean[b]; });
    for (int k = 0; k < std::min(o.top, c); ++k)
      fp.top.emplace_back(run.label_names[size_t(order[k])], mean[order[k]] / fp.windows);
  });
  return out;
}

nlohmann::json to_json(const std::vector<FilePrediction>& preds) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& p : preds) {
    // File names are bytes; JSON strings are UTF-8: names that are not are
    // escaped (\xNN), so one odd name cannot lose every file's prediction.
    nlohmann::json j = {{"file", features::escape_non_utf8(p.file)}};
    if (!p.error.empty()) {
      j["error"] = features::escape_non_utf8(p.error);
    } else {
      j["windows"] = p.windows;
      nlohmann::json top = nlohmann::json::array();
      for (const auto& [g, pr] : p.top) top.push_back({{"genre", g}, {"probability", pr}});
      j["top"] = top;
    }
    a.push_back(j);
  }
  return a;
}

}  // namespace timbre::tools
