// Every example runs: each `timbre` command line in the README's and
// docs/tools.md's sh blocks, and each "e.g." in the --help texts, is run on
// tiny data made here, in the order the page gives them (one sandbox per
// page, so that a page's later lines use what its earlier ones made). A line
// whose comment says "illustrative" (it needs several GPUs, say) is not run;
// lines of other programs (scripts, tensorboard, python3) are listed, not run.
// For speed, `timbre train` lines get `--epochs 1 --max-steps 1` appended
// (`--epochs 2` when resuming, so that one more epoch runs): flags given last
// win. Also: every relative link in README.md and docs/ names a file that
// exists, and every #anchor a heading of that file.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include "features/datasets.h"
#include "tests/features/synth_audio.h"
#include "tests/testing.h"
#include "tests/tools/command.h"

namespace {

namespace fs = std::filesystem;
namespace synth = timbre::testing::synth;
using timbre::testing::TempDir;

const std::string kSource = TIMBRE_SOURCE_DIR;
const std::string kTimbre = timbre::testing::timbre_exe();
using timbre::testing::sh;

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The text before a comment: " #" outside quotes.
std::string strip_comment(const std::string& line, std::string* comment) {
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '#' && i > 0 && line[i - 1] == ' ') {
      *comment = line.substr(i + 1);
      std::string code = line.substr(0, i);
      code.erase(code.find_last_not_of(' ') + 1);
      return code;
    }
  }
  comment->clear();
  return line;
}

struct Example {
  std::string command, comment;
  int line = 0;
};

// The command lines of a page's ```sh blocks (continuations joined).
std::vector<Example> sh_examples(const std::string& page) {
  std::ifstream in(kSource + "/" + page);
  std::vector<Example> out;
  std::string line, pending;
  bool in_sh = false;
  int no = 0, start = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.rfind("```", 0) == 0) {
      in_sh = !in_sh && line == "```sh";
      continue;
    }
    if (!in_sh || line.empty()) continue;
    if (pending.empty()) start = no;
    if (!line.empty() && line.back() == '\\') {
      pending += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    pending += line;
    Example e;
    e.line = start;
    e.command = strip_comment(pending, &e.comment);
    e.command.erase(0, e.command.find_first_not_of(' '));
    out.push_back(e);
    pending.clear();
  }
  return out;
}

// Tiny data under the names the pages use.
void make_sandbox(const std::string& d) {
  // FMA: tracks.csv with the two-level header; 3 genres x (6 training, 2
  // validation, 2 test) tracks of 3.2 s, one 128-frame segment each.
  const std::vector<std::string> genres = {"Folk", "Hip-Hop", "Rock"};
  fs::create_directories(d + "/fma_metadata");
  std::ofstream csv(d + "/fma_metadata/tracks.csv");
  csv << ",set,set,track\n,split,subset,genre_top\ntrack_id,,,\n";
  const size_t n = size_t(3.2 * 22050);
  int id = 2;
  for (size_t g = 0; g < genres.size(); ++g) {
    for (int k = 0; k < 10; ++k, ++id) {
      const char* split = k < 6 ? "training" : k < 8 ? "validation" : "test";
      csv << id << "," << split << ",small," << genres[g] << "\n";
      const std::string path = timbre::features::fma_audio_path(d + "/fma_small", id);
      fs::create_directories(fs::path(path).parent_path());
      const double f = 200.0 * double(g + 1) + 7 * k;
      synth::write_mp3(path, g == 2 ? synth::noise(n, uint32_t(id)) : synth::sine(n, f, 22050), 1,
                       22050);
    }
  }
  csv.close();
  // GTZAN (genres/<genre>/<genre>.000NN.wav) and a plain label folder.
  for (const std::string g : {"blues", "disco"})
    for (int k = 0; k < 5; ++k) {
      const std::string dir = d + "/gtzan/genres/" + g;
      fs::create_directories(dir);
      synth::write_wav(dir + "/" + g + ".0000" + std::to_string(k) + ".wav",
                       synth::sine(n, g == "blues" ? 300 + 5 * k : 1200 + 9 * k, 22050), 1, 22050,
                       synth::WavFormat::Float);
    }
  for (const std::string label : {"calm", "loud"})
    for (int k = 0; k < 4; ++k) {
      const std::string dir = d + "/my_music/" + label;
      fs::create_directories(dir);
      synth::write_wav(dir + "/" + std::to_string(k) + ".wav",
                       label == "calm" ? synth::sine(n, 250 + 3 * k, 22050)
                                       : synth::noise(n, uint32_t(k + 1)),
                       1, 22050, synth::WavFormat::Float);
    }
  // Songs for predict: MP3s and a FLAC.
  synth::write_mp3(d + "/song.mp3", synth::sine(2 * n, 400, 22050), 1, 22050);
  synth::write_mp3(d + "/another.mp3", synth::noise(2 * n, 9), 1, 22050);
  SF_INFO info{};
  info.samplerate = 22050;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open((d + "/other.flac").c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr);
  const auto x = synth::sine(2 * n, 600, 22050);
  sf_writef_float(f, x.data(), sf_count_t(x.size()));
  sf_close(f);
}

// Whether a command line runs timbre: "timbre ..." after optional
// NAME=value environment settings.
bool runs_timbre(const std::string& command) {
  std::istringstream words(command);
  std::string w;
  while (words >> w) {
    const size_t eq = w.find('=');
    if (eq != std::string::npos && eq > 0 &&
        w.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") == eq)
      continue;
    return w == "timbre";
  }
  return false;
}

// Runs a page's examples in its own sandbox; returns the lines not run.
std::vector<std::string> run_page(const std::string& page, int* ran) {
  TempDir sb;
  make_sandbox(sb.path());
  // "other.h5": a second feature file with the same labels and parameters.
  const auto other = sh("cd " + std::string(sb.path()) + " && " + kTimbre +
                        " extract --dataset fma --audio fma_small --metadata "
                        "fma_metadata/tracks.csv --out other.h5 --jobs 2");
  EXPECT_EQ(other.first, 0) << other.second;
  std::vector<std::string> skipped;
  for (const Example& e : sh_examples(page)) {
    const std::string where = page + ":" + std::to_string(e.line) + ": " + e.command;
    if (!runs_timbre(e.command) ||
        e.comment.find("illustrative") != std::string::npos) {
      skipped.push_back(where);
      continue;
    }
    std::string cmd = e.command;
    cmd.replace(cmd.find("timbre"), 6, kTimbre);
    if (cmd.find(" train ") != std::string::npos) {
      const bool resume = cmd.find("--resume") != std::string::npos;
      if (!resume) cmd += " --epochs 1 --max-steps 1";
      else if (cmd.find("--epochs") != std::string::npos) cmd += " --epochs 2";
    }
    const auto [rc, out] = sh("cd " + std::string(sb.path()) + " && " + cmd);
    EXPECT_EQ(rc, 0) << where << "\n" << out;
    ++*ran;
  }
  return skipped;
}

TEST(Examples, EveryTimbreCommandInTheReadmeAndToolsPageRuns) {
  int ran = 0;
  std::vector<std::string> skipped;
  for (const char* page : {"README.md", "docs/tools.md"})
    for (const auto& s : run_page(page, &ran)) skipped.push_back(s);
  EXPECT_GE(ran, 20);  // the pages hold more than 20 timbre lines; the parser must find them
  std::string list;
  for (const auto& s : skipped) list += "\n  " + s;
  std::printf("ran %d command lines; not run (illustrative or not timbre):%s\n", ran, list.c_str());
}

// "e.g. '...'" in a --help text is an example too.
TEST(Examples, HelpTextExamplesRun) {
  TempDir sb;
  make_sandbox(sb.path());
  const std::string cd = "cd " + std::string(sb.path()) + " && ";
  const auto ex = sh(cd + kTimbre + " extract --dataset fma --audio fma_small --metadata "
                          "fma_metadata/tracks.csv --out f.h5");
  ASSERT_EQ(ex.first, 0) << ex.second;
  int found = 0;
  for (const char* sub : {"", "extract", "train", "eval", "predict", "export", "baseline",
                          "demo", "models", "info", "kernels"}) {
    const std::string help = sh(kTimbre + " " + sub + " --help").second;
    const std::string eg = "e.g. '";
    for (size_t at = help.find(eg); at != std::string::npos; at = help.find(eg, at + 1)) {
      ++found;
      const size_t begin = at + eg.size(), end = help.find('\'', begin);
      ASSERT_NE(end, std::string::npos);
      const std::string example = help.substr(begin, end - begin);
      // The option the example belongs to: the last "--flag" before it.
      const std::string before = help.substr(0, at);
      const size_t flag_at = before.rfind("  --");
      ASSERT_NE(flag_at, std::string::npos);
      const std::string flag = before.substr(flag_at + 2, before.find(' ', flag_at + 2) - flag_at - 2);
      ASSERT_EQ(std::string(sub), "train") << "an example in `timbre " << sub << " --help` (" << flag
                                           << "): teach this test to run it";
      const auto [rc, out] = sh(cd + kTimbre + " train --model rescnn --data f.h5 --out r" +
                                std::to_string(found) + " --epochs 1 --max-steps 1 " + flag +
                                " '" + example + "'");
      EXPECT_EQ(rc, 0) << flag << " " << example << "\n" << out;
    }
  }
  EXPECT_GE(found, 1);
}

// GitHub's anchor of a heading: lower case, spaces to '-', everything but
// letters, digits, '-' and '_' dropped.
std::string anchor_of(const std::string& heading) {
  std::string a;
  for (unsigned char c : heading) {
    if (std::isalnum(c) || c == '-' || c == '_') a += char(std::tolower(c));
    else if (c == ' ') a += '-';
    else if (c >= 0x80) a += char(c);
  }
  return a;
}

std::set<std::string> anchors(const std::string& file) {
  std::set<std::string> out;
  std::ifstream in(file);
  std::string line;
  bool code = false;
  while (std::getline(in, line)) {
    if (line.rfind("```", 0) == 0) code = !code;
    if (code || line.empty() || line[0] != '#') continue;
    const size_t text = line.find_first_not_of('#');
    if (text == std::string::npos || line[text] != ' ') continue;
    out.insert(anchor_of(line.substr(text + 1)));
  }
  return out;
}

TEST(Examples, DocLinksPointAtFilesThatExist) {
  std::vector<std::string> pages = {kSource + "/README.md"};
  for (const auto& e : fs::recursive_directory_iterator(kSource + "/docs"))
    if (e.path().extension() == ".md") pages.push_back(e.path().string());
  int checked = 0;
  for (const std::string& page : pages) {
    const std::string text = read(page);
    // Markdown links: "](target)", the target without spaces.
    for (size_t at = text.find("]("); at != std::string::npos; at = text.find("](", at + 2)) {
      const size_t end = text.find(')', at + 2);
      if (end == std::string::npos) break;
      const std::string target = text.substr(at + 2, end - at - 2);
      if (target.empty() || target.find_first_of(" \t\n") != std::string::npos) continue;
      if (target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0) continue;
      const size_t hash = target.find('#');
      const std::string file = target.substr(0, hash);
      const fs::path resolved =
          file.empty() ? fs::path(page) : fs::path(page).parent_path() / file;
      ++checked;
      EXPECT_TRUE(fs::exists(resolved)) << page << ": link to " << target;
      if (hash != std::string::npos && resolved.extension() == ".md" && fs::exists(resolved)) {
        EXPECT_TRUE(anchors(resolved.string()).count(target.substr(hash + 1)))
            << page << ": no heading for " << target;
      }
    }
  }
  EXPECT_GE(checked, 30);
}

}  // namespace
