// report.cpp: the CSV log parser, the SVG plots and the HTML report of report.h.
//
// The plots are drawn by hand: a data value v on an axis [lo, hi] goes to the
// pixel x0 + (v - lo) / (hi - lo) * width (y is flipped, SVG's y grows down).
// Axis ranges are widened to "nice" tick steps (1, 2 or 5 times a power of
// ten) so the gridlines fall on round numbers.
#include "tools/report.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace timbre::tools {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- escaping

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

// ---------------------------------------------------------------- CSV log

namespace {

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string_view::npos) return {};
  const size_t b = s.find_last_not_of(ws);
  return s.substr(a, b - a + 1);
}

// One field: trimmed, and without surrounding double quotes if it has them.
std::string_view field(std::string_view s) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = trim(s.substr(1, s.size() - 2));
  return s;
}

std::vector<std::string_view> split_commas(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    out.push_back(field(line.substr(start, comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

std::vector<EpochRecord> parse_training_log(std::string_view text, const std::string& name) {
  // The columns we need, and where each lands in EpochRecord.
  struct Column {
    const char* name;
    double EpochRecord::*member;
    size_t index = 0;  // position in the file's header
    bool found = false;
  };
  Column cols[] = {{"epoch", &EpochRecord::epoch},
                   {"loss", &EpochRecord::loss},
                   {"accuracy", &EpochRecord::accuracy},
                   {"val_loss", &EpochRecord::val_loss},
                   {"val_accuracy", &EpochRecord::val_accuracy},
                   {"lr", &EpochRecord::lr},
                   {"seconds", &EpochRecord::seconds}};

  std::vector<EpochRecord> out;
  size_t header_fields = 0;
  bool have_header = false;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (trim(line).empty()) continue;
    const std::vector<std::string_view> f = split_commas(line);

    if (!have_header) {
      have_header = true;
      header_fields = f.size();
      for (size_t i = 0; i < f.size(); ++i)
        for (Column& c : cols)
          if (f[i] == c.name) {
            if (c.found)
              throw std::runtime_error(fmt::format("{}:{}: column '{}' appears twice in the header",
                                                   name, line_no, c.name));
            c.found = true;
            c.index = i;
          }
      for (const Column& c : cols)
        if (!c.found)
          throw std::runtime_error(
              fmt::format("{}:{}: the header has no column '{}' (needs epoch, loss, accuracy, "
                          "val_loss, val_accuracy, lr, seconds in any order; got '{}')",
                          name, line_no, c.name, std::string(trim(line))));
      continue;
    }

    if (f.size() != header_fields)
      throw std::runtime_error(fmt::format("{}:{}: {} fields, but the header has {}", name,
                                           line_no, f.size(), header_fields));
    EpochRecord r;
    for (const Column& c : cols) {
      const std::string_view cell = f[c.index];
      double v = kNaN;  // empty cell or "nan": missing, drawn as a gap
      if (!cell.empty() && cell != "nan" && cell != "NaN") {
        const char* first = cell.data();
        if (*first == '+') ++first;  // from_chars takes no leading '+'
        const auto [ptr, ec] = std::from_chars(first, cell.data() + cell.size(), v);
        if (ec != std::errc() || ptr != cell.data() + cell.size())
          throw std::runtime_error(fmt::format("{}:{}: column '{}': '{}' is not a number", name,
                                               line_no, c.name, std::string(cell)));
      }
      r.*c.member = v;
    }
    out.push_back(r);
  }
  if (!have_header)
    throw std::runtime_error(fmt::format("{}: the file is empty, expected a CSV header line", name));
  return out;
}

std::vector<EpochRecord> read_training_log(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(fmt::format("{}: cannot open training log: {}", path.string(),
                                         std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error(fmt::format("{}: read error", path.string()));
  return parse_training_log(ss.str(), path.string());
}

// ---------------------------------------------------------------- plot helpers

namespace {

// A short number for tick labels and SVG coordinates.
std::string num(double v) { return fmt::format("{:.4g}", v); }
std::string px(double v) { return fmt::format("{:.1f}", v); }

// Axis range widened to a multiple of a 1-2-5 step, about `target` ticks.
struct Axis {
  double lo, hi, step;
};

Axis nice_axis(double lo, double hi, int target = 5) {
  if (!(lo <= hi)) lo = 0, hi = 1;  // no finite data
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {  // flat data: open a window around it
    const double pad = std::max(0.5, std::fabs(lo) * 0.1);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double frac = raw / mag;
  const double step = (frac <= 1 ? 1 : frac <= 2 ? 2 : frac <= 5 ? 5 : 10) * mag;
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

// The epoch axis: it starts at the first epoch logged (1 for a whole run),
// in whole-epoch steps of 1, 2 or 5 times a power of ten.
Axis epoch_axis(double lo, double hi, int target = 6) {
  if (!(lo <= hi)) lo = 1, hi = 2;
  const Axis a = nice_axis(lo, std::max(hi, lo + 1), target);
  const double step = std::max(1.0, a.step);
  return {lo, lo + std::ceil((std::max(hi, lo + 1) - lo) / step - 1e-9) * step, step};
}

struct Series {
  const char* name;
  double EpochRecord::*member;
  const char* colour;
  const char* dash;  // stroke-dasharray, "" for solid
};

// One panel: a frame with gridlines and tick labels, the series drawn as
// polylines (split where a value is missing) with a dot per point, and the
// best epoch (when finite) as a dashed vertical line.
void draw_panel(std::string& s, double x0, double y0, double w, double h, const std::string& title,
                const std::vector<EpochRecord>& log, const Series* series, int n_series,
                double best_epoch) {
  constexpr double ml = 56, mr = 12, mt = 34, mb = 42;  // margins around the plot area
  const double pw = w - ml - mr, ph = h - mt - mb, left = x0 + ml, top = y0 + mt;

  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const EpochRecord& r : log) {
    for (int k = 0; k < n_series; ++k) {
      const double v = r.*series[k].member;
      if (!std::isfinite(v) || !std::isfinite(r.epoch)) continue;
      xmin = std::min(xmin, r.epoch), xmax = std::max(xmax, r.epoch);
      ymin = std::min(ymin, v), ymax = std::max(ymax, v);
    }
  }
  const bool empty = !(xmin <= xmax);
  const Axis ax = epoch_axis(empty ? 1 : xmin, empty ? 2 : xmax);
  const Axis ay = nice_axis(empty ? 0 : ymin, empty ? 1 : ymax);
  auto X = [&](double v) { return left + (v - ax.lo) / (ax.hi - ax.lo) * pw; };
  auto Y = [&](double v) { return top + ph - (v - ay.lo) / (ay.hi - ay.lo) * ph; };

  s += fmt::format("<g class=\"panel\">\n<text x=\"{}\" y=\"{}\" class=\"title\">{}</text>\n",
                   px(left), px(y0 + 18), html_escape(title));
  // Gridlines and tick labels; i counts steps so rounding never adds or drops a tick.
  const int ny = int(std::lround((ay.hi - ay.lo) / ay.step));
  for (int i = 0; i <= ny; ++i) {
    const double v = ay.lo + i * ay.step;
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"grid\"/>\n", px(left),
                     px(Y(v)), px(left + pw), px(Y(v)));
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"ytick\">{}</text>\n", px(left - 6),
                     px(Y(v) + 4), num(v));
  }
  const int nx = int(std::lround((ax.hi - ax.lo) / ax.step));
  for (int i = 0; i <= nx; ++i) {
    const double v = ax.lo + i * ax.step;
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"grid\"/>\n", px(X(v)),
                     px(top), px(X(v)), px(top + ph));
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"xtick\">{}</text>\n", px(X(v)),
                     px(top + ph + 16), num(v));
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"frame\"/>\n",
                   px(left), px(top), px(pw), px(ph));
  s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"xlabel\">epoch</text>\n", px(left + pw / 2),
                   px(top + ph + 34));
  if (empty)
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"nodata\">no data</text>\n",
                     px(left + pw / 2), px(top + ph / 2));
  if (!empty && std::isfinite(best_epoch) && best_epoch >= ax.lo && best_epoch <= ax.hi)
    s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" class=\"best\"/>\n"
                     "<text x=\"{3}\" y=\"{4}\" class=\"bestlabel\">best</text>\n",
                     px(X(best_epoch)), px(top), px(top + ph), px(X(best_epoch) + 3),
                     px(top + 11));

  for (int k = 0; k < n_series; ++k) {
    const Series& se = series[k];
    const std::string dash =
        *se.dash ? fmt::format(" stroke-dasharray=\"{}\"", se.dash) : std::string();
    std::string pts;
    auto flush = [&] {
      if (!pts.empty())
        s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
                         pts, se.colour, dash);
      pts.clear();
    };
    for (const EpochRecord& r : log) {
      const double v = r.*se.member;
      if (!std::isfinite(v) || !std::isfinite(r.epoch)) {
        flush();
        continue;
      }
      pts += (pts.empty() ? "" : " ") + px(X(r.epoch)) + "," + px(Y(v));
    }
    flush();
    if (log.size() <= 60)
      for (const EpochRecord& r : log)
        if (std::isfinite(r.*se.member) && std::isfinite(r.epoch))
          s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{}\"/>\n", px(X(r.epoch)),
                           px(Y(r.*se.member)), se.colour);
    // Legend entry, top right.
    const double ly = y0 + 12 + 14 * k, lx = left + pw - 110;
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
                     px(lx), px(ly), px(lx + 22), px(ly), se.colour, dash);
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>\n", px(lx + 28),
                     px(ly + 4), html_escape(se.name));
  }
  s += "</g>\n";
}

const char* kSvgStyle =
    "<style>text{font-family:sans-serif;font-size:11px;fill:#222}"
    ".title{font-size:13px;font-weight:bold}.ytick{text-anchor:end}.xtick{text-anchor:middle}"
    ".xlabel{text-anchor:middle}.nodata{text-anchor:middle;fill:#888}"
    ".grid{stroke:#e4e4e4;stroke-width:1}.frame{fill:none;stroke:#555;stroke-width:1}"
    ".cell{stroke:#fff;stroke-width:1}.count{text-anchor:middle;font-size:11px}"
    ".rowlabel{text-anchor:end}.axis{font-weight:bold;text-anchor:middle}"
    ".best{stroke:#2ca02c;stroke-width:1.5;stroke-dasharray:4 3}.bestlabel{fill:#2ca02c}</style>\n";

}  // namespace

int best_epoch_index(const std::vector<EpochRecord>& log) {
  int best = -1;
  for (size_t i = 0; i < log.size(); ++i)
    if (std::isfinite(log[i].val_accuracy) &&
        (best < 0 || log[i].val_accuracy > log[size_t(best)].val_accuracy))
      best = int(i);
  return best;
}

std::string curves_svg(const std::vector<EpochRecord>& log) {
  constexpr double W = 900, H = 620;
  static const Series loss[] = {{"loss", &EpochRecord::loss, "#1f77b4", ""},
                                {"val_loss", &EpochRecord::val_loss, "#d62728", "6 3"}};
  static const Series acc[] = {{"accuracy", &EpochRecord::accuracy, "#1f77b4", ""},
                               {"val_accuracy", &EpochRecord::val_accuracy, "#d62728", "6 3"}};
  static const Series lr[] = {{"lr", &EpochRecord::lr, "#9467bd", ""}};
  static const Series sec[] = {{"seconds", &EpochRecord::seconds, "#8c564b", ""}};
  const int b = best_epoch_index(log);
  const double best = b < 0 ? NAN : log[size_t(b)].epoch;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" role=\"img\" aria-label=\"training curves\">\n",
      W, H);
  s += kSvgStyle;
  s += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#fff\"/>\n", W, H);
  draw_panel(s, 0, 0, W / 2, H * 0.55, "Loss", log, loss, 2, best);
  draw_panel(s, W / 2, 0, W / 2, H * 0.55, "Accuracy", log, acc, 2, best);
  draw_panel(s, 0, H * 0.55, W / 2, H * 0.45, "Learning rate", log, lr, 1, best);
  draw_panel(s, W / 2, H * 0.55, W / 2, H * 0.45, "Seconds per epoch", log, sec, 1, best);
  s += "</svg>\n";
  return s;
}

std::string confusion_svg(const std::vector<std::vector<int64_t>>& confusion,
                          const std::vector<std::string>& labels, const std::string& title) {
  const size_t C = labels.size();
  if (confusion.size() != C)
    throw std::invalid_argument(fmt::format("confusion_svg: {} rows for {} labels", confusion.size(), C));
  for (const auto& row : confusion)
    if (row.size() != C)
      throw std::invalid_argument(fmt::format("confusion_svg: a row has {} columns, expected {}",
                                              row.size(), C));
  // Layout: room for the longest label (about 6.5 px a character at 11 px),
  // on the left for rows and above (rotated 45 degrees) for columns.
  size_t longest = 4;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  const double label_px = std::min(200.0, 6.5 * double(longest) + 12);
  const double cell = C <= 12 ? 44 : C <= 24 ? 30 : 20;
  const double left = label_px + 24, top = label_px * 0.72 + 46;
  // The last column's label, rotated, reaches about 0.72 label_px to the right.
  const double W = left + cell * C + label_px * 0.72 + 10, H = top + cell * C + 20;

  // Each cell's share of its row; the colour scale runs from 0 to the largest
  // share, so the darkest cell is the most concentrated one even for a weak model.
  std::vector<int64_t> row_total(C, 0);
  double max_share = 0;
  for (size_t a = 0; a < C; ++a) {
    for (size_t b = 0; b < C; ++b) row_total[a] += confusion[a][b];
    for (size_t b = 0; b < C; ++b)
      if (row_total[a] > 0) max_share = std::max(max_share, double(confusion[a][b]) / double(row_total[a]));
  }

  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" role=\"img\" aria-label=\"{2}\">\n",
      px(W), px(H), html_escape(title));
  s += kSvgStyle;
  s += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#fff\"/>\n", px(W), px(H));
  s += fmt::format("<text x=\"10\" y=\"18\" class=\"title\">{}</text>\n", html_escape(title));
  s += fmt::format("<text x=\"{}\" y=\"34\" class=\"axis\">predicted</text>\n",
                   px(left + cell * C / 2));
  s += fmt::format("<text class=\"axis\" transform=\"translate(12,{}) rotate(-90)\">true</text>\n",
                   px(top + cell * C / 2));

  for (size_t a = 0; a < C; ++a) {
    const std::string name = html_escape(labels[a]);
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"rowlabel\">{}</text>\n", px(left - 6),
                     px(top + cell * (a + 0.5) + 4), name);
    for (size_t b = 0; b < C; ++b) {
      const int64_t n = confusion[a][b];
      // Colour: white (share 0) to dark blue (the largest share).
      const double share = row_total[a] > 0 ? double(n) / double(row_total[a]) : 0;
      const double f = max_share > 0 ? share / max_share : 0;
      const int r = int(std::lround(255 + f * (8 - 255))), g = int(std::lround(255 + f * (48 - 255))),
                bl = int(std::lround(255 + f * (107 - 255)));
      const double x = left + cell * b, y = top + cell * a;
      s += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"cell\" "
          "fill=\"#{:02x}{:02x}{:02x}\"><title>true {}, predicted {}: {} ({:.1f}% of row)</title></rect>\n",
          px(x), px(y), px(cell), px(cell), r, g, bl, name, html_escape(labels[b]), n, 100 * share);
      s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"count\" style=\"fill:{}\">{}</text>\n",
                       px(x + cell / 2), px(y + cell / 2 + 4), f > 0.5 ? "#fff" : "#222", n);
    }
  }
  for (size_t b = 0; b < C; ++b)
    s += fmt::format("<text transform=\"translate({},{}) rotate(-45)\">{}</text>\n",
                     px(left + cell * (b + 0.5)), px(top - 6), html_escape(labels[b]));
  s += "</svg>\n";
  return s;
}

// ---------------------------------------------------------------- HTML

namespace {

std::string pct(double v) { return fmt::format("{:.2f}%", 100 * v); }
std::string score(double v) { return fmt::format("{:.3f}", v); }

void summary_rows(std::string& h, const char* level, const ClassificationMetrics& m) {
  h += fmt::format("<tr><th colspan=\"2\">{} level ({} predictions)</th></tr>\n", level, m.count);
  h += fmt::format("<tr><td>accuracy</td><td>{}</td></tr>\n", pct(m.accuracy));
  for (const auto& [k, v] : m.top_k)
    if (k > 1) h += fmt::format("<tr><td>top-{} accuracy</td><td>{}</td></tr>\n", k, pct(v));
  h += fmt::format("<tr><td>macro precision</td><td>{}</td></tr>\n", score(m.macro_precision));
  h += fmt::format("<tr><td>macro recall</td><td>{}</td></tr>\n", score(m.macro_recall));
  h += fmt::format("<tr><td>macro F1</td><td>{}</td></tr>\n", score(m.macro_f1));
  h += fmt::format("<tr><td>weighted F1</td><td>{}</td></tr>\n", score(m.weighted_f1));
}

}  // namespace

namespace {

// The run's facts, from its configuration (run.json): what, on what, when.
void facts_table(std::string& h, const nlohmann::json& config) {
  static const std::pair<const char*, const char*> keys[] = {
      {"model", "model"},          {"data", "data"},          {"started", "started (UTC)"},
      {"resumed", "resumed (UTC)"}, {"device", "device"},      {"backend", "backend"},
      {"timbre_version", "timbre"}, {"commit", "commit"}};
  std::string rows;
  for (const auto& [key, name] : keys) {
    if (!config.is_object() || !config.contains(key)) continue;
    const nlohmann::json& v = config.at(key);
    const std::string text =
        v.is_string() ? v.get<std::string>()
                      : v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    rows += fmt::format("<tr><td>{}</td><td>{}</td></tr>\n", name, html_escape(text));
  }
  if (!rows.empty()) h += "<table class=\"facts\">\n" + rows + "</table>\n";
}

void evaluation_sections(std::string& h, const ReportInputs& in) {
  const Evaluation& e = *in.evaluation;
  h += "<h2>Summary</h2>\n<table class=\"summary\">\n";
  summary_rows(h, "Clip", e.clip);
  summary_rows(h, "Track", e.track);
  h += "</table>\n<p>Clip level: every segment is one prediction. Track level: the mean of a "
       "track's segment probabilities, then the most probable class. A class never predicted "
       "has precision 0, a class absent from the data recall 0 (see docs/evaluation.md).</p>\n";
  if (!in.comparisons.empty()) {
    h += "<h2>Against the baselines</h2>\n<table class=\"comparison\">\n<tr><th>method</th>"
         "<th>clip accuracy</th><th>track accuracy</th></tr>\n";
    h += fmt::format("<tr><td>this network</td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
                     "</tr>\n", pct(e.clip.accuracy), pct(e.track.accuracy));
    for (const ReportComparison& c : in.comparisons)
      h += fmt::format("<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
                       html_escape(c.name), pct(c.clip_accuracy), pct(c.track_accuracy));
    h += "</table>\n";
  }
}

void confusion_sections(std::string& h, const Evaluation& e) {
  const size_t C = e.labels.size();
  h += "<h2>Confusion matrices</h2>\n<p>Rows are the true class, columns the predicted one; "
       "the shade is the cell's share of its row, darkest for the largest share.</p>\n<div class=\"matrices\">\n";
  h += "<figure>\n" + confusion_svg(e.clip.confusion, e.labels, "Clip level") + "</figure>\n";
  h += "<figure>\n" + confusion_svg(e.track.confusion, e.labels, "Track level") + "</figure>\n";
  h += "</div>\n";

  h += "<h2>Per-class scores</h2>\n<table class=\"per-class\">\n<tr><th rowspan=\"2\">class</th>"
       "<th colspan=\"4\">clip</th><th colspan=\"4\">track</th></tr>\n<tr>";
  for (int lvl = 0; lvl < 2; ++lvl) h += "<th>support</th><th>precision</th><th>recall</th><th>F1</th>";
  h += "</tr>\n";
  for (size_t c = 0; c < C; ++c) {
    h += fmt::format("<tr><td>{}</td>", html_escape(e.labels[c]));
    for (const ClassificationMetrics* m : {&e.clip, &e.track}) {
      const ClassScores& s = m->per_class[c];
      h += fmt::format("<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
                       "<td class=\"n\">{}</td>",
                       s.support, score(s.precision), score(s.recall), score(s.f1));
    }
    h += "</tr>\n";
  }
  h += fmt::format("<tr><th>macro</th><td></td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
                   "<td class=\"n\">{}</td><td></td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
                   "<td class=\"n\">{}</td></tr>\n</table>\n",
                   score(e.clip.macro_precision), score(e.clip.macro_recall),
                   score(e.clip.macro_f1), score(e.track.macro_precision),
                   score(e.track.macro_recall), score(e.track.macro_f1));
}

}  // namespace

std::string report_html(const ReportInputs& in) {
  if (in.evaluation) {
    const Evaluation& e = *in.evaluation;
    const size_t C = e.labels.size();
    if (e.clip.per_class.size() != C || e.track.per_class.size() != C)
      throw std::invalid_argument(fmt::format(
          "report_html: {} labels but {} clip and {} track classes", C, e.clip.per_class.size(),
          e.track.per_class.size()));
  }
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n";
  h += fmt::format("<title>{}</title>\n", html_escape(in.title));
  h += "<style>\nbody{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\n"
       "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}\n"
       "td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}\n"
       "pre{background:#f6f6f6;padding:1em;overflow:auto}figure{margin:1em 0}\n"
       ".matrices{display:flex;flex-wrap:wrap;gap:2em}\n</style>\n</head>\n<body>\n";
  h += fmt::format("<h1>{}</h1>\n", html_escape(in.title));
  facts_table(h, in.config);
  if (!in.links.empty()) {
    h += "<p class=\"links\">";
    for (size_t i = 0; i < in.links.size(); ++i)
      h += fmt::format("{}<a href=\"{}\">{}</a>", i ? " &middot; " : "",
                       html_escape(in.links[i].second), html_escape(in.links[i].first));
    h += "</p>\n";
  }
  if (in.evaluation) evaluation_sections(h, in);

  h += "<h2>Training curves</h2>\n";
  if (in.log.empty())
    h += "<p>No training log was given.</p>\n";
  else {
    h += "<figure>\n" + curves_svg(in.log) + "</figure>\n";
    // One line of facts from the log: its length, the best validation epoch, the time.
    double total_s = 0;
    for (const EpochRecord& r : in.log)
      if (std::isfinite(r.seconds)) total_s += r.seconds;
    h += fmt::format("<p class=\"log-summary\">{} epochs logged, {:.1f} s of training", in.log.size(),
                     total_s);
    if (const int b = best_epoch_index(in.log); b >= 0) {
      const EpochRecord& best = in.log[size_t(b)];
      h += fmt::format("; best val_accuracy {:.4g} at epoch {:g} (val_loss {:.4g}), marked "
                       "\"best\" in the plots: the weights in best.ckpt",
                       best.val_accuracy, best.epoch, best.val_loss);
    }
    h += ".</p>\n";
  }
  if (in.evaluation) confusion_sections(h, *in.evaluation);
  else
    h += "<p>No evaluation in this report: <code>timbre eval --run RUN --split test</code> "
         "writes report-test.html with the scores and confusion matrices.</p>\n";

  h += "<h2>Configuration</h2>\n<pre class=\"config\">";
  // replace: a label or path with invalid UTF-8 must not stop the report.
  h += html_escape(in.config.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  h += "</pre>\n<p><small>Written by timbre. This file is self-contained and works offline."
       "</small></p>\n</body>\n</html>\n";
  return h;
}

// ---------------------------------------------------------------- files

void write_file_atomic(const fs::path& path, std::string_view content) {
  // The temporary file lives in the target's folder: rename() is atomic only
  // within one file system. The pid and a counter keep concurrent writers apart.
  static std::atomic<unsigned> counter{0};
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const fs::path tmp =
      dir / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), counter++);
  auto fail = [&](const char* what) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(
        fmt::format("{}: {} failed: {}", path.string(), what, std::strerror(err)));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error(fmt::format("{}: cannot create temporary file {}: {}", path.string(),
                                         tmp.string(), std::strerror(errno)));
  const char* p = content.data();
  size_t left = content.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail("write");
    }
    p += w;
    left -= size_t(w);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
}

std::string report_name(const ReportInputs& in) {
  return in.evaluation && !in.split.empty() ? "report-" + in.split + ".html" : "report.html";
}

fs::path write_report(const fs::path& dir, const ReportInputs& in) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw std::runtime_error(
        fmt::format("{}: cannot create report folder: {}", dir.string(), ec.message()));
  // The plots first, the report last: when the report is there, so are they.
  write_file_atomic(dir / "curves.svg", curves_svg(in.log));
  if (in.evaluation) {
    const Evaluation& e = *in.evaluation;
    const std::string suffix = in.split.empty() ? "" : "-" + in.split;
    write_file_atomic(dir / ("confusion" + suffix + ".svg"),
                      confusion_svg(e.clip.confusion, e.labels, "Clip level"));
    write_file_atomic(dir / ("confusion_track" + suffix + ".svg"),
                      confusion_svg(e.track.confusion, e.labels, "Track level"));
  }
  const fs::path report = dir / report_name(in);
  write_file_atomic(report, report_html(in));
  return report;
}

std::vector<std::pair<std::string, std::string>> run_report_links(const fs::path& run,
                                                                  const std::string& except) {
  std::vector<std::pair<std::string, std::string>> links;
  if (except != "report.html" && fs::exists(run / "report.html"))
    links.emplace_back("training", "report.html");
  for (const char* split : {"train", "validation", "test"}) {
    const std::string f = std::string("report-") + split + ".html";
    if (f != except && fs::exists(run / f)) links.emplace_back(split + std::string(" split"), f);
  }
  return links;
}

fs::path write_training_report(const fs::path& run) {
  ReportInputs in;
  in.title = "timbre: " + run.filename().string() + " (training)";
  const fs::path config = run / "run.json";
  std::ifstream f(config);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open", config.string()));
  try {
    in.config = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON: {}", config.string(), e.what()));
  }
  if (fs::exists(run / "log.csv")) in.log = read_training_log(run / "log.csv");
  in.links = run_report_links(run, "report.html");
  return write_report(run, in);
}

}  // namespace timbre::tools
