// The demo dataset: the .mma text (pure), real renders with mma and
// fluidsynth, errors, and idempotent re-runs. The rendered WAVs are read back
// with libsndfile (not with the renderer's own WAV code).
#include <gtest/gtest.h>
#include <sndfile.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tools/demo_data.h"

namespace fs = std::filesystem;
using timbre::tools::DemoClipDraw;
using timbre::tools::DemoDataError;
using timbre::tools::DemoDataOptions;
using timbre::tools::DemoProgress;
using timbre::tools::default_demo_styles;
using timbre::tools::demo_mma_text;
using timbre::tools::draw_demo_clip;
using timbre::tools::render_demo_dataset;

namespace {

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A fresh directory under the system temp dir, removed at the end.
struct Scratch {
  fs::path path;
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "timbre-demo-test-XXXXXX").string();
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path = pattern;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct Wav {
  int rate = 0, channels = 0;
  std::vector<float> x;
};
Wav read_wav(const fs::path& p) {
  SF_INFO info{};
  SNDFILE* f = sf_open(p.c_str(), SFM_READ, &info);
  Wav w;
  if (!f) {
    ADD_FAILURE() << p << ": " << sf_strerror(nullptr);
    return w;
  }
  w.rate = info.samplerate;
  w.channels = info.channels;
  w.x.resize(static_cast<size_t>(info.frames) * info.channels);
  EXPECT_EQ(sf_readf_float(f, w.x.data(), info.frames), info.frames);
  sf_close(f);
  return w;
}

bool have_renderers() {
  return !timbre::tools::find_program("mma").empty() &&
         !timbre::tools::find_program("fluidsynth").empty() &&
         fs::exists("/usr/share/sounds/sf2/FluidR3_GM.sf2");
}

// Sets PATH for the scope of the object.
struct PathOverride {
  std::string saved;
  explicit PathOverride(const std::string& v) {
    const char* p = std::getenv("PATH");
    saved = p ? p : "";
    setenv("PATH", v.c_str(), 1);
  }
  ~PathOverride() { setenv("PATH", saved.c_str(), 1); }
};

}  // namespace

// --- The .mma text ---------------------------------------------------------

TEST(DemoMmaText, SameSeedSameTextOtherSeedOtherText) {
  for (int k : {0, 1, 7, 123}) {
    const DemoClipDraw a = draw_demo_clip(42, k, 10.0), b = draw_demo_clip(42, k, 10.0);
    EXPECT_EQ(demo_mma_text("swing", a), demo_mma_text("swing", b)) << "k=" << k;
  }
  // Other seeds and other clips draw other texts (a pool, not a constant).
  std::set<std::string> texts;
  for (std::uint64_t seed : {1ull, 2ull, 3ull})
    for (int k = 0; k < 10; ++k)
      texts.insert(demo_mma_text("swing", draw_demo_clip(seed, k, 10.0)));
  EXPECT_EQ(texts.size(), 30u);
}

TEST(DemoMmaText, StylesDifferOnlyInTheGrooveLine) {
  const auto styles = default_demo_styles();
  ASSERT_GE(styles.size(), 4u);
  for (int k = 0; k < 25; ++k) {
    const DemoClipDraw d = draw_demo_clip(7, k, 10.0);
    const auto ref = lines(demo_mma_text(styles[0], d));
    for (const auto& s : styles) {
      const auto got = lines(demo_mma_text(s, d));
      ASSERT_EQ(got.size(), ref.size()) << s << " k=" << k;
      int differing = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        if (got[i] == ref[i]) continue;
        ++differing;
        EXPECT_EQ(got[i], "Groove " + s) << "k=" << k << " line " << i;
      }
      EXPECT_EQ(differing, s == styles[0] ? 0 : 1) << s;
      EXPECT_EQ(std::count(got.begin(), got.end(), "Groove " + s), 1);
    }
  }
}

TEST(DemoMmaText, PoolCoversTemposKeysAndEnoughBars) {
  std::set<int> tempos;
  std::set<std::string> keys, chords;
  for (int k = 0; k < 300; ++k) {
    for (double seconds : {2.0, 10.0}) {
      const DemoClipDraw d = draw_demo_clip(3, k, seconds);
      EXPECT_GE(d.tempo, 80);
      EXPECT_LE(d.tempo, 160);
      tempos.insert(d.tempo);
      keys.insert(d.key);
      chords.insert(d.chords.begin(), d.chords.end());
      // Enough bars even for 3-beat bars, with at least one bar to spare.
      const double bar_seconds = 3 * 60.0 / d.tempo;
      EXPECT_GE(d.chords.size() * bar_seconds, seconds + bar_seconds) << "k=" << k;
      const auto text = demo_mma_text("waltz", d);
      EXPECT_NE(text.find("Tempo " + std::to_string(d.tempo) + "\n"), std::string::npos);
      EXPECT_NE(text.find("RndSeed " + std::to_string(d.mma_seed) + "\n"), std::string::npos);
      EXPECT_NE(text.find("\n1 " + d.chords[0] + "\n"), std::string::npos);
    }
  }
  EXPECT_GE(tempos.size(), 40u);
  EXPECT_EQ(keys.size(), 12u);
  EXPECT_GE(chords.size(), 30u);
}

TEST(DemoMmaText, RejectsStyleNamesThatWouldInjectLines) {
  const DemoClipDraw d = draw_demo_clip(1, 0, 5.0);
  EXPECT_THROW(demo_mma_text("swing\nTempo 300", d), std::invalid_argument);
  EXPECT_THROW(demo_mma_text("", d), std::invalid_argument);
  EXPECT_THROW(demo_mma_text("rock ballad", d), std::invalid_argument);
  EXPECT_THROW(draw_demo_clip(1, -1, 5.0), std::invalid_argument);
}

TEST(DemoDataOptions, BadOptionsNameTheOption) {
  DemoDataOptions o;
  o.out_dir = "/tmp/unused-timbre-demo";
  auto message = [](const DemoDataOptions& bad) -> std::string {
    try {
      render_demo_dataset(bad);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  DemoDataOptions a = o;
  a.out_dir = "";
  EXPECT_NE(message(a).find("out_dir"), std::string::npos);
  a = o;
  a.clips_per_style = 0;
  EXPECT_NE(message(a).find("clips_per_style"), std::string::npos);
  a = o;
  a.seconds = 0.5;
  EXPECT_NE(message(a).find("seconds"), std::string::npos);
  a = o;
  a.jobs = 0;
  EXPECT_NE(message(a).find("jobs"), std::string::npos);
  a = o;
  a.styles = {"swing", "swing"};
  EXPECT_NE(message(a).find("twice"), std::string::npos);
  a = o;
  a.styles = {"swing;rm"};
  EXPECT_NE(message(a).find("swing;rm"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.out_dir));
}

// --- Missing programs --------------------------------------------------------

TEST(DemoRender, MissingMmaNamesTheDebianPackage) {
  Scratch s;
  // A PATH with fluidsynth but no mma.
  const fs::path bin = s.path / "bin";
  fs::create_directories(bin);
  const std::string fluidsynth = timbre::tools::find_program("fluidsynth");
  if (!fluidsynth.empty()) fs::create_symlink(fluidsynth, bin / "fluidsynth");
  PathOverride path(bin.string());
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  try {
    render_demo_dataset(o);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    EXPECT_NE(std::string(e.what()).find("mma not found"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("install the Debian package mma"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(s.path / "out"));  // nothing started
}

TEST(DemoRender, MissingFluidsynthNamesTheDebianPackage) {
  Scratch s;
  const fs::path bin = s.path / "bin";
  fs::create_directories(bin);
  const std::string mma = timbre::tools::find_program("mma");
  if (!mma.empty()) fs::create_symlink(mma, bin / "mma");
  PathOverride path(bin.string());
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  try {
    render_demo_dataset(o);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    const std::string m = e.what();
    // Without mma on the machine the first complaint is about mma.
    if (!mma.empty()) {
      EXPECT_NE(m.find("install the Debian package fluidsynth"), std::string::npos) << m;
    }
  }
}

TEST(DemoRender, MissingSoundfontNamesTheDebianPackage) {
  if (!have_renderers()) GTEST_SKIP() << "mma, fluidsynth or the soundfont is not installed";
  Scratch s;
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  o.soundfont = (s.path / "none.sf2").string();
  try {
    render_demo_dataset(o);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    EXPECT_NE(std::string(e.what()).find("fluid-soundfont-gm"), std::string::npos) << e.what();
  }
}

// --- Real renders ------------------------------------------------------------

// Two short clips of two styles (4/4 and 3/4): the files, their format,
// length and loudness, the kept .mma sources, the progress reports; then a
// re-run that skips everything, and a re-run after deleting one clip (and
// leaving a stale temp file, as an interrupted run could) that renders the
// same bytes again.
TEST(DemoRender, TwoStylesShortClipsIdempotentAndDeterministic) {
  if (!have_renderers()) GTEST_SKIP() << "mma, fluidsynth or the soundfont is not installed";
  Scratch s;
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  o.sources_dir = (s.path / "src").string();
  o.styles = {"swing", "waltz"};
  o.clips_per_style = 2;
  o.seconds = 2.5;
  o.seed = 11;
  o.jobs = 2;
  std::vector<DemoProgress> reports;
  o.on_progress = [&](const DemoProgress& p) { reports.push_back(p); };

  const auto r = render_demo_dataset(o);
  EXPECT_EQ(r.rendered, 4u);
  EXPECT_EQ(r.skipped, 0u);
  EXPECT_GT(r.seconds_per_clip, 0.0);
  std::printf("rendered 4 clips of %.1f s in %.2f s wall, %.2f s per clip in one worker\n",
              o.seconds, r.wall_seconds, r.seconds_per_clip);
  ASSERT_EQ(r.paths.size(), 4u);
  ASSERT_EQ(reports.size(), 5u);  // the start, then one per clip
  EXPECT_EQ(reports.front().done, 0u);
  EXPECT_EQ(reports.back().done, 4u);
  EXPECT_EQ(reports.back().rendered, 4u);
  for (size_t i = 0; i < reports.size(); ++i) EXPECT_EQ(reports[i].total, 4u);

  const size_t n = static_cast<size_t>(std::llround(o.seconds * 22050));
  std::vector<std::string> bytes;
  for (size_t i = 0; i < r.paths.size(); ++i) {
    const std::string& style = r.labels[i];
    const int k = static_cast<int>(i % 2);
    const fs::path want = fs::path(o.out_dir) / style / (style + "_" + std::to_string(k) + ".wav");
    EXPECT_EQ(fs::path(r.paths[i]), fs::absolute(want));
    ASSERT_TRUE(fs::exists(want)) << want;
    EXPECT_FALSE(fs::exists(want.string() + ".tmp"));
    const Wav w = read_wav(want);
    EXPECT_EQ(w.rate, 22050);
    EXPECT_EQ(w.channels, 1);
    EXPECT_EQ(w.x.size(), n) << want;
    double sum2 = 0, peak = 0;
    for (float v : w.x) {
      sum2 += double(v) * v;
      peak = std::max(peak, double(std::fabs(v)));
    }
    const double rms = std::sqrt(sum2 / std::max<size_t>(w.x.size(), 1));
    // Music, not silence and not a clipped square wave: RMS between -40 and
    // -3 dBFS, and no full-scale samples.
    EXPECT_GT(rms, 0.01) << want;
    EXPECT_LT(rms, 0.7) << want;
    EXPECT_LT(peak, 0.9999) << want;
    // The .mma kept in sources_dir is the pure function's text.
    const fs::path mma =
        fs::path(o.sources_dir) / style / (style + "_" + std::to_string(k) + ".mma");
    EXPECT_EQ(slurp(mma), demo_mma_text(style, draw_demo_clip(o.seed, k, o.seconds)));
    EXPECT_TRUE(fs::exists(fs::path(mma).replace_extension(".mid")));
    bytes.push_back(slurp(want));
  }
  // The two styles sound different: clip 0 of swing and of waltz share tempo
  // and chords but not their audio.
  EXPECT_NE(bytes[0], bytes[2]);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "timbre-demo.txt"));

  // Re-run: nothing to do.
  const auto before = fs::last_write_time(r.paths[1]);
  reports.clear();
  const auto r2 = render_demo_dataset(o);
  EXPECT_EQ(r2.rendered, 0u);
  EXPECT_EQ(r2.skipped, 4u);
  EXPECT_EQ(fs::last_write_time(r.paths[1]), before);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].done, 4u);
  EXPECT_EQ(reports[0].skipped, 4u);

  // An interrupted run: clip 1 of waltz gone, a half-written temp file left.
  fs::remove(r.paths[3]);
  { std::ofstream(r.paths[3] + ".tmp") << "half a file"; }
  const auto r3 = render_demo_dataset(o);
  EXPECT_EQ(r3.rendered, 1u);
  EXPECT_EQ(r3.skipped, 3u);
  EXPECT_FALSE(fs::exists(r.paths[3] + ".tmp"));
  EXPECT_EQ(slurp(r.paths[3]), bytes[3]) << "the same seed rendered other audio";

  // The same options into another directory, one job: the same bytes
  // (mma is seeded, fluidsynth renders offline deterministically).
  DemoDataOptions o2 = o;
  o2.out_dir = (s.path / "out2").string();
  o2.sources_dir = "";
  o2.jobs = 1;
  o2.on_progress = nullptr;
  const auto r4 = render_demo_dataset(o2);
  ASSERT_EQ(r4.paths.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(slurp(r4.paths[i]), bytes[i]) << r4.paths[i];

  // Other audio options into the same directory are refused, not mixed in.
  DemoDataOptions o3 = o;
  o3.seed = 12;
  try {
    render_demo_dataset(o3);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    EXPECT_NE(std::string(e.what()).find("other options"), std::string::npos) << e.what();
  }
}

TEST(DemoRender, FailingCommandIsNamedWithItsOutput) {
  if (!have_renderers()) GTEST_SKIP() << "mma, fluidsynth or the soundfont is not installed";
  Scratch s;
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  o.styles = {"nosuchstyle"};
  o.clips_per_style = 1;
  o.seconds = 1.0;
  try {
    render_demo_dataset(o);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mma -f "), std::string::npos) << m;           // the command
    EXPECT_NE(m.find("exited with status"), std::string::npos) << m;
    EXPECT_NE(m.find("could not be found"), std::string::npos) << m;  // mma's own words
  }
  // Nothing half-made in the dataset, not even an empty class folder.
  EXPECT_FALSE(fs::exists(s.path / "out" / "nosuchstyle"));
}

// fluidsynth exits 0 when the soundfont is not one, and renders with the
// system's default soundfont instead (or silence): the renderer must notice,
// say so with fluidsynth's words, and write no clip.
TEST(DemoRender, CorruptSoundfontIsReportedNotRenderedAsSilence) {
  if (!have_renderers()) GTEST_SKIP() << "mma, fluidsynth or the soundfont is not installed";
  Scratch s;
  const fs::path sf2 = s.path / "garbage.sf2";
  {
    std::ofstream f(sf2, std::ios::binary);
    for (int i = 0; i < 4096; ++i) f << static_cast<char>((i * 7919) & 0xFF);
  }
  DemoDataOptions o;
  o.out_dir = (s.path / "out").string();
  o.styles = {"swing"};
  o.clips_per_style = 1;
  o.seconds = 1.0;
  o.soundfont = sf2.string();
  try {
    render_demo_dataset(o);
    FAIL() << "no exception";
  } catch (const DemoDataError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("fluidsynth"), std::string::npos) << m;
    EXPECT_NE(m.find("reported errors"), std::string::npos) << m;
    EXPECT_NE(m.find("not a SoundFont"), std::string::npos) << m;  // fluidsynth's words
  }
  EXPECT_FALSE(fs::exists(s.path / "out" / "swing"));
}
