// Tests of tools/report: the CSV log parser (column order, gaps, every
// error), escaping, the SVG plots and the HTML report (well-formed, escaped
// labels, the numbers, self-contained), and the atomic file writes.
#include "tools/report.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace {

namespace fs = std::filesystem;
using timbre::tools::EpochRecord;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

size_t count(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + part.size())) ++n;
  return n;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <class F>
std::string runtime_error_message(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// A tiny well-formedness checker for the XML-like subset we write: every
// start tag is closed by the matching end tag (or is self-closing "/>", or an
// HTML void element), tags nest, comments and <!DOCTYPE> are skipped, and
// every '&' in text or attributes starts an entity (&name; or &#digits;).
::testing::AssertionResult well_formed(const std::string& s) {
  std::vector<std::string> open;
  size_t i = 0;
  auto where = [&](size_t at) {
    return " at offset " + std::to_string(at) + ": ..." + s.substr(at, 40) + "...";
  };
  while (i < s.size()) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      const std::string ent = semi == std::string::npos ? "" : s.substr(i + 1, semi - i - 1);
      bool ok = !ent.empty() && ent.size() < 8;
      if (ok && ent[0] == '#')
        ok = ent.size() > 1 && ent.find_first_not_of("0123456789", 1) == std::string::npos;
      else if (ok)
        ok = ent.find_first_not_of("abcdefghijklmnopqrstuvwxyz") == std::string::npos;
      if (!ok) return ::testing::AssertionFailure() << "bare '&'" << where(i);
      ++i;
      continue;
    }
    if (s[i] == '>') return ::testing::AssertionFailure() << "bare '>'" << where(i);
    if (s[i] != '<') {
      ++i;
      continue;
    }
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t end = s.find("-->", i);
      if (end == std::string::npos) return ::testing::AssertionFailure() << "open comment" << where(i);
      i = end + 3;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unclosed tag" << where(i);
    const std::string tag = s.substr(i + 1, end - i - 1);
    if (tag.find('<') != std::string::npos)
      return ::testing::AssertionFailure() << "'<' inside a tag" << where(i);
    // Entities inside the tag (attribute values) are checked by the loop too.
    for (size_t k = i + 1; k < end; ++k)
      if (s[k] == '&') {
        const size_t semi = s.find(';', k);
        if (semi == std::string::npos || semi > end || semi - k > 8)
          return ::testing::AssertionFailure() << "bare '&' in a tag" << where(k);
      }
    i = end + 1;
    if (tag[0] == '!') continue;  // <!DOCTYPE html>
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name)
        return ::testing::AssertionFailure()
               << "</" << name << "> closes <" << (open.empty() ? "nothing" : open.back()) << ">"
               << where(end);
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (name.empty()) return ::testing::AssertionFailure() << "empty tag name" << where(end);
    if (tag.back() == '/' || name == "meta" || name == "br") continue;
    open.push_back(name);
  }
  if (!open.empty()) return ::testing::AssertionFailure() << "<" << open.back() << "> never closed";
  return ::testing::AssertionSuccess();
}

TEST(Report, CheckerCatchesMistakes) {  // the checker itself must be able to fail
  EXPECT_TRUE(well_formed("<a x=\"1\"><b/>t &amp; &#39;</a>"));
  EXPECT_FALSE(well_formed("<a><b></a></b>"));
  EXPECT_FALSE(well_formed("<a>"));
  EXPECT_FALSE(well_formed("<a>R&B</a>"));
  EXPECT_FALSE(well_formed("<a>1 > 0</a>"));
  EXPECT_FALSE(well_formed("<a t=\"<x>\"></a>"));
}

TEST(Report, HtmlEscape) {
  EXPECT_EQ(timbre::tools::html_escape("Rock & Roll <b>\"x\" 'y'"),
            "Rock &amp; Roll &lt;b&gt;&quot;x&quot; &#39;y&#39;");
  EXPECT_EQ(timbre::tools::html_escape("plain"), "plain");
  EXPECT_EQ(timbre::tools::html_escape("&amp;"), "&amp;amp;");  // escaped again, not trusted
}

// ---- CSV training log

TEST(TrainingLog, ColumnsInAnyOrderExtraColumnsGapsAndCrlf) {
  const std::string text =
      "seconds, lr,val_accuracy,epoch,\"loss\",accuracy,val_loss,note\r\n"
      "\r\n"
      "12.5,0.001,0.41,1,1.9,0.35,1.7,x\r\n"
      "11.0,1e-3,,2,1.5,0.45,nan,y\r\n"
      "   \n"
      "10.25,5E-4,0.52,3,+1.25,0.55,1.4,z";  // no final newline
  const auto log = timbre::tools::parse_training_log(text, "run/log.csv");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].epoch, 1);
  EXPECT_EQ(log[0].loss, 1.9);
  EXPECT_EQ(log[0].accuracy, 0.35);
  EXPECT_EQ(log[0].val_loss, 1.7);
  EXPECT_EQ(log[0].val_accuracy, 0.41);
  EXPECT_EQ(log[0].lr, 0.001);
  EXPECT_EQ(log[0].seconds, 12.5);
  EXPECT_TRUE(std::isnan(log[1].val_accuracy));  // empty cell
  EXPECT_TRUE(std::isnan(log[1].val_loss));      // "nan"
  EXPECT_EQ(log[1].lr, 1e-3);
  EXPECT_EQ(log[2].loss, 1.25);
  EXPECT_EQ(log[2].lr, 5e-4);
  EXPECT_EQ(log[2].epoch, 3);
}

TEST(TrainingLog, HeaderOnlyIsAnEmptyLog) {
  EXPECT_TRUE(timbre::tools::parse_training_log(
                  "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n", "a.csv")
                  .empty());
}

TEST(TrainingLog, ErrorsNameTheFileLineAndProblem) {
  const std::string header = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n";
  auto parse = [](const std::string& text) {
    return runtime_error_message([&] { timbre::tools::parse_training_log(text, "runs/a/log.csv"); });
  };
  std::string msg = parse(header + "1,2,3,4,5,6,7\n1,2,3,4,5,6\n");
  EXPECT_TRUE(contains(msg, "runs/a/log.csv:3:")) << msg;
  EXPECT_TRUE(contains(msg, "6 fields, but the header has 7")) << msg;

  msg = parse(header + "1,2,3,4,5,6,7,8\n");  // too many fields is an error too
  EXPECT_TRUE(contains(msg, "runs/a/log.csv:2: 8 fields, but the header has 7")) << msg;

  msg = parse(header + "\n1,2,abc,4,5,6,7\n");
  EXPECT_TRUE(contains(msg, "runs/a/log.csv:3:")) << msg;
  EXPECT_TRUE(contains(msg, "'accuracy'")) << msg;
  EXPECT_TRUE(contains(msg, "'abc' is not a number")) << msg;

  msg = parse(header + "1,2,3,4,5,6,7x\n");
  EXPECT_TRUE(contains(msg, "'7x' is not a number")) << msg;

  msg = parse("epoch,loss,accuracy,val_accuracy,lr,seconds\n1,2,3,4,5,6\n");
  EXPECT_TRUE(contains(msg, "runs/a/log.csv:1:")) << msg;
  EXPECT_TRUE(contains(msg, "no column 'val_loss'")) << msg;

  msg = parse("epoch,loss,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
  EXPECT_TRUE(contains(msg, "column 'loss' appears twice")) << msg;

  msg = parse("\n  \n");
  EXPECT_TRUE(contains(msg, "runs/a/log.csv: the file is empty")) << msg;

  msg = runtime_error_message(
      [] { timbre::tools::read_training_log("/nonexistent/timbre/log.csv"); });
  EXPECT_TRUE(contains(msg, "/nonexistent/timbre/log.csv: cannot open")) << msg;
}

// ---- files

class ReportFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("timbre_test_report_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(ReportFiles, ReadTrainingLogFromDisk) {
  std::ofstream(dir_ / "log.csv") << "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
                                     "1,2.0,0.3,2.1,0.25,0.001,9\n";
  const auto log = timbre::tools::read_training_log(dir_ / "log.csv");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].val_loss, 2.1);
  std::ofstream(dir_ / "bad.csv") << "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,2\n";
  const std::string msg =
      runtime_error_message([&] { timbre::tools::read_training_log(dir_ / "bad.csv"); });
  EXPECT_TRUE(contains(msg, (dir_ / "bad.csv").string() + ":2:")) << msg;
}

TEST_F(ReportFiles, AtomicWriteReplacesAndLeavesNoTemporaries) {
  const fs::path p = dir_ / "out.txt";
  timbre::tools::write_file_atomic(p, "first");
  timbre::tools::write_file_atomic(p, "second, longer");
  EXPECT_EQ(read(p), "second, longer");
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) ++files, (void)entry;
  EXPECT_EQ(files, 1);  // no .tmp left behind

  const std::string msg = runtime_error_message(
      [&] { timbre::tools::write_file_atomic(dir_ / "missing" / "x.txt", "data"); });
  EXPECT_TRUE(contains(msg, (dir_ / "missing" / "x.txt").string())) << msg;
  EXPECT_FALSE(fs::exists(dir_ / "missing"));
}

// Labels that need every escape, with hand-made predictions.
timbre::tools::ReportInputs sample_inputs() {
  // 3 classes, 6 segments in 3 tracks (2 each).
  //   segments: truth 0 0 1 1 2 2, clip predictions 0 1 1 1 0 2 (see test_metrics).
  const std::vector<float> p = {0.8f, 0.15f, 0.05f,  0.3f, 0.6f, 0.1f,  0.1f, 0.7f, 0.2f,
                                0.2f, 0.5f,  0.3f,   0.5f, 0.1f, 0.4f,  0.1f, 0.2f, 0.7f};
  timbre::tools::ReportInputs in;
  in.title = "run <17> & co";
  in.evaluation = timbre::tools::evaluate(p, {0, 0, 1, 1, 2, 2}, {10, 10, 20, 20, 30, 30},
                                          {"Rock & Roll", "<script>alert(1)</script>", "Hip-Hop's \"best\""},
                                          {1, 2});
  for (int e = 1; e <= 5; ++e) {
    EpochRecord r;
    r.epoch = e;
    r.loss = 2.0 / e;
    r.accuracy = 0.3 + 0.1 * e;
    r.val_loss = e == 3 ? NAN : 2.2 / e + 0.1;  // a gap in val_loss
    r.val_accuracy = 0.25 + 0.08 * e;
    r.lr = 1e-3;
    r.seconds = 10;
    in.log.push_back(r);
  }
  in.config = {{"model", "crnn"}, {"data", "fma_small </pre> & more"}, {"epochs", 5}};
  return in;
}

TEST(Report, CurvesSvg) {
  const auto in = sample_inputs();
  const std::string svg = timbre::tools::curves_svg(in.log);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  for (const char* name : {"loss", "val_loss", "accuracy", "val_accuracy", "epoch"})
    EXPECT_TRUE(contains(svg, std::string(">") + name + "<")) << name;
  // loss, accuracy, val_accuracy, lr, seconds: one line each; val_loss: two
  // pieces around the gap at epoch 3.
  EXPECT_EQ(count(svg, "<polyline"), 7u);
  EXPECT_EQ(count(svg, "<circle"), 29u);  // 6 series x 5 epochs, one missing
  for (const char* title : {"Loss", "Accuracy", "Learning rate", "Seconds per epoch"})
    EXPECT_TRUE(contains(svg, std::string("class=\"title\">") + title + "<")) << title;
  // Epochs are numbered from 1, and the axis starts there.
  EXPECT_TRUE(contains(svg, "class=\"xtick\">1<"));
  EXPECT_FALSE(contains(svg, "class=\"xtick\">0<"));
  // The best epoch (val_accuracy rises to epoch 5) is marked in each panel.
  EXPECT_EQ(count(svg, "class=\"bestlabel\">best<"), 4u);
  EXPECT_EQ(timbre::tools::best_epoch_index(in.log), 4);
  // A tie keeps the first epoch (the trainer saves best.ckpt only when
  // val_accuracy is strictly higher); a missing value is no candidate.
  std::vector<EpochRecord> tie(4);
  for (int i = 0; i < 4; ++i) tie[size_t(i)].epoch = i + 1;
  tie[0].val_accuracy = 0.5, tie[1].val_accuracy = 0.7, tie[2].val_accuracy = 0.7;
  tie[3].val_accuracy = NAN;
  EXPECT_EQ(timbre::tools::best_epoch_index(tie), 1);
  EXPECT_EQ(timbre::tools::best_epoch_index({}), -1);
  // The empty log still gives a valid picture.
  const std::string empty = timbre::tools::curves_svg({});
  EXPECT_TRUE(well_formed(empty));
  EXPECT_TRUE(contains(empty, "no data"));
  EXPECT_EQ(count(empty, "<polyline"), 0u);
}

TEST(Report, ConfusionSvgShowsEveryCount) {
  const std::vector<std::vector<int64_t>> m = {{11, 2, 0}, {3, 17, 5}, {0, 0, 123}};
  const std::string svg = timbre::tools::confusion_svg(m, {"a&b", "<c>", "d"}, "Clip \"level\"");
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "class=\"count\""), 9u);
  for (int64_t v : {11, 2, 3, 17, 5, 123}) EXPECT_TRUE(contains(svg, fmt::format(">{}</text>", v))) << v;
  EXPECT_TRUE(contains(svg, ">a&amp;b<"));
  EXPECT_TRUE(contains(svg, ">&lt;c&gt;<"));
  EXPECT_TRUE(contains(svg, "Clip &quot;level&quot;"));
  EXPECT_FALSE(contains(svg, "<c>"));
  // The diagonal of the last row is its whole row: the darkest fill.
  EXPECT_EQ(count(svg, "fill=\"#08306b\""), 1u);
  EXPECT_EQ(count(svg, "fill=\"#ffffff\""), 3u);  // the zero cells
  EXPECT_THROW(timbre::tools::confusion_svg(m, {"a", "b"}, "t"), std::invalid_argument);
}

TEST_F(ReportFiles, ReportIsSelfContainedEscapedAndHasTheNumbers) {
  const auto in = sample_inputs();
  const fs::path report = timbre::tools::write_report(dir_ / "eval", in);
  EXPECT_EQ(report, dir_ / "eval" / "report.html");
  for (const char* f : {"report.html", "curves.svg", "confusion.svg", "confusion_track.svg"})
    EXPECT_TRUE(fs::is_regular_file(dir_ / "eval" / f)) << f;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir_ / "eval")) ++files, (void)entry;
  EXPECT_EQ(files, 4);  // no temporaries left

  const std::string h = read(report);
  EXPECT_TRUE(well_formed(h));
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_TRUE(well_formed(read(dir_ / "eval" / "curves.svg")));
  EXPECT_TRUE(well_formed(read(dir_ / "eval" / "confusion.svg")));
  EXPECT_EQ(read(dir_ / "eval" / "curves.svg"), timbre::tools::curves_svg(in.log));

  // Self-contained: nothing fetched from anywhere. The only URL is the SVG
  // namespace name, which is an identifier, never loaded.
  for (const char* bad : {"<script", "<link", "<img", "src=", "href=", "url(", "@import"})
    EXPECT_FALSE(contains(h, bad)) << bad;
  EXPECT_EQ(count(h, "http"), count(h, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(count(h, "<svg"), 3u);  // curves, clip and track confusion

  // Every label escaped, never raw.
  EXPECT_TRUE(contains(h, "Rock &amp; Roll"));
  EXPECT_TRUE(contains(h, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(contains(h, "Hip-Hop&#39;s &quot;best&quot;"));
  EXPECT_FALSE(contains(h, "Rock & Roll"));
  EXPECT_FALSE(contains(h, "Hip-Hop's"));
  EXPECT_TRUE(contains(h, "<title>run &lt;17&gt; &amp; co</title>"));
  EXPECT_TRUE(contains(h, "fma_small &lt;/pre&gt; &amp; more"));  // the config, escaped
  EXPECT_TRUE(contains(h, "&quot;model&quot;: &quot;crnn&quot;"));

  // The numbers, worked out by hand (see sample_inputs): clip accuracy 4/6,
  // class 1 (clip) P 2/3 R 1 F1 0.8, clip macro F1 (1/2+4/5+2/3)/3 = 0.656.
  // Tracks: 10 -> mean [.55 .375 .075] -> 0 (right); 20 -> [.15 .6 .25] -> 1
  // (right); 30 -> [.3 .15 .55] -> 2 (right): track accuracy 100%.
  const auto& e = *in.evaluation;
  ASSERT_NEAR(e.clip.accuracy, 4.0 / 6, 1e-12);
  ASSERT_EQ(e.track.accuracy, 1.0);
  EXPECT_TRUE(contains(h, "<td>accuracy</td><td>66.67%</td>"));
  EXPECT_TRUE(contains(h, "<td>accuracy</td><td>100.00%</td>"));
  EXPECT_TRUE(contains(h, "<td>macro F1</td><td>0.656</td>"));
  EXPECT_TRUE(contains(h, "<td>top-2 accuracy</td>"));
  // Per-class row of class 1: clip support 2, P 0.667, R 1.000, F1 0.800, then track.
  EXPECT_TRUE(contains(h, "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td class=\"n\">2</td>"
                          "<td class=\"n\">0.667</td><td class=\"n\">1.000</td><td class=\"n\">0.800</td>"
                          "<td class=\"n\">1</td><td class=\"n\">1.000</td>"));
  // The log summary: 5 epochs of 10 s, val_accuracy best at epoch 5 (0.65).
  EXPECT_TRUE(contains(h, "5 epochs logged, 50.0 s of training; best val_accuracy 0.65 at epoch 5"));
  // Confusion counts appear as cell texts (clip row 0 is [1 1 0]).
  EXPECT_EQ(count(h, "class=\"count\""), 18u);
}

TEST_F(ReportFiles, ComparisonsStandBesideTheNetwork) {
  auto in = sample_inputs();
  EXPECT_FALSE(contains(timbre::tools::report_html(in), "Against the baselines"));
  in.comparisons = {{"SVM <rbf> & PCA", 0.5, 0.75}, {"k-NN", 0.125, 1.0}};
  const std::string h = timbre::tools::report_html(in);
  EXPECT_TRUE(well_formed(h));
  EXPECT_TRUE(contains(h, "<tr><td>this network</td><td class=\"n\">66.67%</td>"
                          "<td class=\"n\">100.00%</td></tr>"));
  EXPECT_TRUE(contains(h, "<tr><td>SVM &lt;rbf&gt; &amp; PCA</td><td class=\"n\">50.00%</td>"
                          "<td class=\"n\">75.00%</td></tr>"));
  EXPECT_TRUE(contains(h, "<tr><td>k-NN</td><td class=\"n\">12.50%</td>"));
}

TEST_F(ReportFiles, ReportWithoutLogSaysSo) {
  auto in = sample_inputs();
  in.log.clear();
  const std::string h = read(timbre::tools::write_report(dir_, in));
  EXPECT_TRUE(well_formed(h));
  EXPECT_TRUE(contains(h, "No training log was given."));
  EXPECT_EQ(count(h, "<svg"), 2u);
}

}  // namespace
