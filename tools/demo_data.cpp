// demo_data.cpp: rendering the demo dataset (see demo_data.h for the design).
#include "tools/demo_data.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace timbre::tools {
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------
// The shared pool: a tiny counter-based generator.
//
// SplitMix64 (Steele, Lea, Flood 2014): state += golden gamma, then two
// xor-shift-multiply rounds. We key it by (seed, k) so clip k's draw depends
// on nothing else (not the style, not the order clips are drawn in, not the
// number of clips), and we reduce with `% n` instead of a std::
// distribution, whose algorithm differs between standard libraries: the same
// seed gives the same dataset with any compiler. (The bias of `% n` for
// n <= 64 is below 2^-58.)
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
};

// Tempos from 88 to 148 bpm: slow enough for a waltz, fast enough for a polka;
// every style plays every tempo of the pool.
constexpr int kTempoMin = 88, kTempoMax = 148;

// Key roots, spelled with flats (MMA reads "Eb", "Bb", ...).
constexpr const char* kRoots[12] = {"C",  "Db", "D",  "Eb", "E",  "F",
                                    "Gb", "G",  "Ab", "A",  "Bb", "B"};

// Four-bar progressions in a major key: each chord is (semitones above the
// key root, MMA chord suffix). Common pop/jazz/folk cadences, so that every
// style sounds idiomatic over each of them.
struct ChordDegree {
  int semitones;
  const char* suffix;
};
constexpr ChordDegree kProgressions[][4] = {
    {{0, ""}, {9, "m"}, {2, "m"}, {7, "7"}},          // I vi ii V7
    {{0, ""}, {5, ""}, {7, "7"}, {0, ""}},            // I IV V7 I
    {{0, ""}, {7, ""}, {9, "m"}, {5, ""}},            // I V vi IV
    {{2, "m7"}, {7, "7"}, {0, "maj7"}, {0, "maj7"}},  // ii7 V7 Imaj7 Imaj7
    {{0, ""}, {4, "m"}, {5, ""}, {7, ""}},            // I iii IV V
    {{9, "m"}, {5, ""}, {0, ""}, {7, ""}},            // vi IV I V
    {{0, "maj7"}, {5, "maj7"}, {2, "m7"}, {7, "7"}},  // Imaj7 IVmaj7 ii7 V7
    {{0, ""}, {0, "7"}, {5, ""}, {5, "m"}},           // I I7 IV iv
};
constexpr int kNumProgressions = sizeof(kProgressions) / sizeof(kProgressions[0]);

// The shortest bar among the default styles (waltz: 3 beats). Bars are
// counted in it so that a clip has the same chords whatever its style; a
// 4/4 style simply plays longer and is trimmed.
constexpr int kShortestBarBeats = 3;

bool valid_style_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
  });
}

// "%g" of a double, locale-independent enough for our numbers.
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// ---------------------------------------------------------------------------
// Running a program: posix_spawn with an argument vector.
//
// No shell is involved, so file names with spaces or quotes are passed as
// they are and nothing in them is interpreted. stdin is /dev/null; stdout and
// stderr both go to `log_path` (mma prints its errors on stdout, fluidsynth
// on stderr), which we read back when the program fails.

// The command line for messages: arguments with unusual characters quoted.
std::string command_line(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    const bool plain = !a.empty() && std::all_of(a.begin(), a.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || (c && std::strchr("-_./=:+,", c));
    });
    s += plain ? a : "'" + a + "'";
  }
  return s;
}

std::string read_text(const fs::path& p, std::size_t max_chars = 4000) {
  std::ifstream in(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > max_chars) s = "... " + s.substr(s.size() - max_chars);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// Runs argv (argv[0] an absolute path) and waits; throws DemoDataError with
// the command and its output if it cannot start, is killed or exits non-zero,
// or (errors_in_output) exits 0 but wrote a line with "error" in it.
void run_program(const std::vector<std::string>& argv, const fs::path& log_path,
                 bool errors_in_output = false) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw DemoDataError("cannot start `" + command_line(argv) + "`: " + std::strerror(rc));

  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      throw DemoDataError("waiting for `" + command_line(argv) + "`: " + std::strerror(errno));
  }
  std::string how;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    if (!errors_in_output) return;
    std::string out = read_text(log_path, 1 << 20);
    for (auto& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (out.find("error") == std::string::npos) return;
    how = "exited with status 0 but reported errors";
  } else if (WIFEXITED(status))
    how = "exited with status " + std::to_string(WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    how = std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  else
    how = "failed";
  const std::string out = read_text(log_path);
  throw DemoDataError("`" + command_line(argv) + "` " + how +
                      (out.empty() ? std::string(" (no output)") : ", output:\n" + out));
}

// ---------------------------------------------------------------------------
// WAV input (fluidsynth's render) and output (the clip). Little-endian RIFF.

std::uint32_t le32(const unsigned char* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t(p[3]) << 24);
}
std::uint16_t le16(const unsigned char* p) { return std::uint16_t(p[0] | (p[1] << 8)); }

struct Pcm16 {
  int rate = 0, channels = 0;
  std::vector<std::int16_t> samples;  // interleaved
};

// Reads a 16-bit PCM WAV, walking its chunks ("fmt ", "data"; others are
// skipped). A data chunk whose size runs past the end of the file (a writer
// that never patched its header) is cut at the end of the file.
Pcm16 read_wav16(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DemoDataError(path.string() + ": cannot open the rendered WAV");
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
  auto bad = [&](const std::string& why) {
    return DemoDataError(path.string() + ": not the WAV fluidsynth should write: " + why);
  };
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) || std::memcmp(b.data() + 8, "WAVE", 4))
    throw bad("no RIFF/WAVE header");
  Pcm16 w;
  int bits = 0;
  bool have_fmt = false;
  std::size_t pos = 12;
  while (pos + 8 <= b.size()) {
    const std::uint32_t size = le32(b.data() + pos + 4);
    const unsigned char* body = b.data() + pos + 8;
    const std::size_t avail = b.size() - (pos + 8);
    if (!std::memcmp(b.data() + pos, "fmt ", 4)) {
      if (size < 16 || avail < 16) throw bad("short fmt chunk");
      const int format = le16(body);
      w.channels = le16(body + 2);
      w.rate = static_cast<int>(le32(body + 4));
      bits = le16(body + 14);
      // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE (its sub-format is PCM here).
      if ((format != 1 && format != 0xFFFE) || bits != 16 || w.channels < 1)
        throw bad("format " + std::to_string(format) + ", " + std::to_string(bits) +
                  " bits, " + std::to_string(w.channels) + " channels (expected 16-bit PCM)");
      have_fmt = true;
    } else if (!std::memcmp(b.data() + pos, "data", 4)) {
      if (!have_fmt) throw bad("data chunk before fmt chunk");
      const std::size_t n = std::min<std::size_t>(size, avail) / 2;
      w.samples.resize(n - n % w.channels);
      for (std::size_t i = 0; i < w.samples.size(); ++i)
        w.samples[i] = static_cast<std::int16_t>(le16(body + 2 * i));
      return w;
    }
    pos += 8 + size + (size & 1);  // chunks are padded to even sizes
  }
  throw bad("no data chunk");
}

void put32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put16(std::string& s, std::uint16_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>(v >> 8);
}

// Writes mono 16-bit PCM to `tmp`, flushes it to the disk, then renames it
// to `path`: readers see either no file or the whole file.
void write_wav16_atomic(const fs::path& path, const fs::path& tmp,
                        const std::vector<std::int16_t>& mono, int rate) {
  std::string h;
  const std::uint32_t data_bytes = static_cast<std::uint32_t>(mono.size() * 2);
  h += "RIFF";
  put32(h, 36 + data_bytes);
  h += "WAVEfmt ";
  put32(h, 16);
  put16(h, 1);                          // PCM
  put16(h, 1);                          // channels
  put32(h, static_cast<std::uint32_t>(rate));
  put32(h, static_cast<std::uint32_t>(rate) * 2);  // bytes per second
  put16(h, 2);                          // bytes per frame
  put16(h, 16);                         // bits per sample
  h += "data";
  put32(h, data_bytes);
  std::string body(data_bytes, '\0');
  for (std::size_t i = 0; i < mono.size(); ++i) {
    const auto v = static_cast<std::uint16_t>(mono[i]);
    body[2 * i] = static_cast<char>(v & 0xFF);
    body[2 * i + 1] = static_cast<char>(v >> 8);
  }

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw DemoDataError(tmp.string() + ": cannot create: " + std::strerror(errno));
  auto write_all = [&](const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  };
  const bool ok = write_all(h) && write_all(body) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw DemoDataError(tmp.string() + ": cannot write: " + std::strerror(err));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw DemoDataError(path.string() + ": cannot rename the finished clip: " + ec.message());
}

// ---------------------------------------------------------------------------
// One clip, start to end, in a worker thread.

struct Tools {
  std::string mma, fluidsynth;
};

struct Clip {
  std::string style;
  int k = 0;
  fs::path wav;  // final path
};

void render_clip(const Clip& c, const DemoDataOptions& o, const Tools& tools,
                 const fs::path& work, bool keep_sources) {
  const std::string stem = c.style + "_" + std::to_string(c.k);
  const fs::path dir = work / c.style;
  const fs::path mma_file = dir / (stem + ".mma"), mid = dir / (stem + ".mid");
  const fs::path full = dir / (stem + ".full.wav"), log = dir / (stem + ".log");

  {
    std::ofstream out(mma_file, std::ios::binary);
    out << demo_mma_text(c.style, draw_demo_clip(o.seed, c.k, o.seconds));
    if (!out) throw DemoDataError(mma_file.string() + ": cannot write");
  }
  run_program({tools.mma, "-f", mid.string(), mma_file.string()}, log);
  // fluidsynth exits 0 when it cannot read the soundfont (it falls back to
  // the system's default-GM.sf2, or renders silence), so an "error" line in
  // its output fails the clip.
  // -n -i: no MIDI input, no interactive shell; -F: render offline to a file
  // (no audio device, as fast as the CPU goes); -T/-O: WAV, 16-bit signed.
  // dynamic-sample-loading reads only the samples of the instruments the
  // MIDI uses instead of the whole 140 MB soundfont: 0.16 s of CPU instead of 0.27 s
  // per clip (docs/demo.md); its output is deterministic too, but differs
  // from a full load by +-1 LSB in a few samples, so it is part of the recipe.
  run_program({tools.fluidsynth, "-n", "-i", "-q", "-o", "synth.dynamic-sample-loading=1", "-F",
               full.string(), "-T", "wav", "-O", "s16", "-r", std::to_string(o.sample_rate), "-g",
               num(o.gain), o.soundfont, mid.string()},
              log, /*errors_in_output=*/true);

  const Pcm16 w = read_wav16(full);
  if (w.rate != o.sample_rate)
    throw DemoDataError(full.string() + ": fluidsynth rendered at " + std::to_string(w.rate) +
                        " Hz, asked for " + std::to_string(o.sample_rate));
  const std::size_t n = static_cast<std::size_t>(std::llround(o.seconds * o.sample_rate));
  const std::size_t frames = w.samples.size() / w.channels;
  if (frames < n)
    throw DemoDataError(full.string() + ": fluidsynth rendered " + num(double(frames) / w.rate) +
                        " s, the clip needs " + num(o.seconds) + " s (is '" + c.style +
                        "' a style with bars shorter than 3 beats?)");
  // Average the channels (the dataset is mono, like the feature pipeline's
  // input), rounding to nearest; report silence, which would mean a broken
  // soundfont or an empty style.
  std::vector<std::int16_t> mono(n);
  int peak = 0;
  for (std::size_t i = 0; i < n; ++i) {
    long sum = 0;
    for (int ch = 0; ch < w.channels; ++ch) sum += w.samples[i * w.channels + ch];
    const long v = std::lround(double(sum) / w.channels);
    mono[i] = static_cast<std::int16_t>(v);
    peak = std::max(peak, static_cast<int>(std::labs(v)));
  }
  if (peak < 64) {  // -54 dBFS: nothing audible was played
    // fluidsynth exits 0 even when it cannot read the soundfont; its
    // complaint is in the log.
    const std::string said = read_text(log);
    throw DemoDataError(full.string() + ": fluidsynth rendered silence (peak " +
                        std::to_string(peak) + "/32767) for style '" + c.style + "'" +
                        (said.empty() ? std::string() : "; fluidsynth said:\n" + said));
  }
  write_wav16_atomic(c.wav, fs::path(c.wav.string() + ".tmp"), mono, o.sample_rate);

  std::error_code ec;
  fs::remove(full, ec);
  fs::remove(log, ec);
  if (!keep_sources) {
    fs::remove(mma_file, ec);
    fs::remove(mid, ec);
  }
}

void validate(const DemoDataOptions& o) {
  auto fail = [](const std::string& m) {
    throw std::invalid_argument("render_demo_dataset: " + m);
  };
  if (o.out_dir.empty()) fail("out_dir is empty");
  if (o.styles.empty()) fail("styles is empty");
  std::set<std::string> seen;
  for (const auto& s : o.styles) {
    if (!valid_style_name(s))
      fail("style '" + s + "' is not an MMA groove name (letters, digits, '-', '_')");
    if (!seen.insert(s).second) fail("style '" + s + "' is listed twice");
  }
  if (o.clips_per_style < 1 || o.clips_per_style > 100000)
    fail("clips_per_style " + std::to_string(o.clips_per_style) + " is outside [1, 100000]");
  if (!(o.seconds >= 1.0 && o.seconds <= 600.0))
    fail("seconds " + num(o.seconds) + " is outside [1, 600]");
  if (o.jobs < 1 || o.jobs > 256) fail("jobs " + std::to_string(o.jobs) + " is outside [1, 256]");
  if (o.sample_rate < 8000 || o.sample_rate > 96000)
    fail("sample_rate " + std::to_string(o.sample_rate) + " is outside [8000, 96000]");
  if (!(o.gain > 0.0 && o.gain <= 10.0)) fail("gain " + num(o.gain) + " is outside (0, 10]");
}

// OUT/timbre-demo.txt: the options that decide the audio of a clip. Clip
// counts and styles may grow between runs (clip k does not depend on them).
std::string manifest_text(const DemoDataOptions& o) {
  return "timbre demo dataset (tools/demo_data.cpp); options that decide the audio:\n"
         "seed=" + std::to_string(o.seed) + "\nseconds=" + num(o.seconds) +
         "\nsample_rate=" + std::to_string(o.sample_rate) + "\ngain=" + num(o.gain) +
         "\nsoundfont=" + o.soundfont + "\n";
}

void check_or_write_manifest(const fs::path& out, const DemoDataOptions& o) {
  const fs::path m = out / "timbre-demo.txt";
  const std::string want = manifest_text(o);
  if (fs::exists(m)) {
    const std::string have = read_text(m, 1 << 16) + "\n";
    if (have != want)
      throw DemoDataError(out.string() + " holds a demo dataset rendered with other options:\n" +
                          have + "this run asks for:\n" + want +
                          "use another directory or delete this one");
    return;
  }
  const fs::path tmp = out / "timbre-demo.txt.tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << want;
    if (!f) throw DemoDataError(tmp.string() + ": cannot write");
  }
  fs::rename(tmp, m);
}

// A scratch directory removed on every exit path.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "timbre-demo-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw DemoDataError(pattern + ": cannot create a temporary directory: " +
                          std::strerror(errno));
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

std::vector<std::string> default_demo_styles() {
  return {"swing", "bossanova", "basicrock", "waltz", "polka"};
}

DemoClipDraw draw_demo_clip(std::uint64_t seed, int k, double seconds) {
  if (k < 0) throw std::invalid_argument("draw_demo_clip: k " + std::to_string(k) + " < 0");
  if (!(seconds > 0.0 && seconds <= 600.0))
    throw std::invalid_argument("draw_demo_clip: seconds " + num(seconds) + " is outside (0, 600]");
  // Key the generator by (seed, k): two SplitMix64 outputs mixed, so that
  // neighbouring seeds or clips give unrelated streams.
  SplitMix64 r{seed};
  r.state = r.next() ^ (static_cast<std::uint64_t>(k) * 0xD1B54A32D192ED03ull);
  r.next();

  DemoClipDraw d;
  d.tempo = kTempoMin + r.below(kTempoMax - kTempoMin + 1);
  const int root = r.below(12);
  d.key = kRoots[root];
  d.mma_seed = static_cast<std::uint32_t>(r.next() >> 33);  // < 2^31: a plain int for MMA
  // Bars: the beats `seconds` lasts at this tempo, in the shortest bar, plus
  // one bar of margin; one progression (4 bars) drawn per phrase.
  const double beats = seconds * d.tempo / 60.0;
  const int bars = static_cast<int>(std::ceil(beats / kShortestBarBeats)) + 1;
  int prog = 0;
  for (int b = 0; b < bars; ++b) {
    if (b % 4 == 0) prog = r.below(kNumProgressions);
    const ChordDegree& c = kProgressions[prog][b % 4];
    d.chords.push_back(std::string(kRoots[(root + c.semitones) % 12]) + c.suffix);
  }
  return d;
}

std::string demo_mma_text(const std::string& style, const DemoClipDraw& d) {
  if (!valid_style_name(style))
    throw std::invalid_argument("demo_mma_text: style '" + style +
                                "' is not an MMA groove name (letters, digits, '-', '_')");
  std::ostringstream s;
  s << "// timbre demo clip (tools/demo_data.cpp): key " << d.key << " major, " << d.chords.size()
    << " bars\n";
  s << "RndSeed " << d.mma_seed << "\n";  // MMA's humanising (timing, velocity) repeatable
  s << "Tempo " << d.tempo << "\n";
  s << "Groove " << style << "\n";
  for (std::size_t b = 0; b < d.chords.size(); ++b) s << (b + 1) << " " << d.chords[b] << "\n";
  return s.str();
}

std::string find_program(const std::string& program) {
  if (program.empty()) return "";
  if (program.find('/') != std::string::npos)
    return ::access(program.c_str(), X_OK) == 0 ? program : "";
  const char* env = std::getenv("PATH");
  std::string path = env ? env : "";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";  // POSIX: an empty PATH entry is the current directory
    const fs::path candidate = fs::path(dir) / program;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return fs::absolute(candidate, ec).string();
    start = end + 1;
  }
  return "";
}

DemoDataResult render_demo_dataset(const DemoDataOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  validate(o);

  // Everything we need, checked before any work starts.
  Tools tools;
  tools.mma = find_program("mma");
  if (tools.mma.empty())
    throw DemoDataError("mma not found on PATH: install the Debian package mma");
  tools.fluidsynth = find_program("fluidsynth");
  if (tools.fluidsynth.empty())
    throw DemoDataError("fluidsynth not found on PATH: install the Debian package fluidsynth");
  if (!fs::is_regular_file(o.soundfont))
    throw DemoDataError("soundfont " + o.soundfont +
                        " not found: install the Debian package fluid-soundfont-gm");

  const fs::path out = fs::absolute(o.out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw DemoDataError(out.string() + ": cannot create: " + ec.message());
  check_or_write_manifest(out, o);

  std::unique_ptr<TempDir> temp;
  fs::path work;
  if (o.sources_dir.empty()) {
    temp = std::make_unique<TempDir>();
    work = temp->path;
  } else {
    work = fs::absolute(o.sources_dir);
  }
  for (const auto& s : o.styles) {
    for (const fs::path& d : {out / s, work / s}) {
      fs::create_directories(d, ec);
      if (ec) throw DemoDataError(d.string() + ": cannot create: " + ec.message());
    }
  }

  DemoDataResult res;
  std::vector<Clip> todo;
  for (const auto& s : o.styles) {
    for (int k = 0; k < o.clips_per_style; ++k) {
      Clip c{s, k, out / s / (s + "_" + std::to_string(k) + ".wav")};
      res.paths.push_back(c.wav.string());
      res.labels.push_back(s);
      if (fs::exists(c.wav))
        ++res.skipped;
      else
        todo.push_back(std::move(c));
    }
  }

  DemoProgress p;
  p.total = res.paths.size();
  p.done = p.skipped = res.skipped;
  if (o.on_progress) o.on_progress(p);

  // Workers take the next clip from a shared counter and post what they
  // finished; the calling thread reports progress (so the callback never
  // runs concurrently) and stops handing out work at the first error.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> finished;
  std::exception_ptr error;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  double busy_seconds = 0;
  int running = std::min<int>(o.jobs, static_cast<int>(todo.size()));
  const bool keep_sources = !o.sources_dir.empty();

  std::vector<std::thread> workers;
  for (int j = 0; j < running; ++j) {
    workers.emplace_back([&] {
      for (;;) {
        const std::size_t i = next.fetch_add(1);
        if (i >= todo.size() || stop.load()) break;
        const auto t = Clock::now();
        try {
          render_clip(todo[i], o, tools, work, keep_sources);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!error) error = std::current_exception();
          stop = true;
          break;
        }
        const double dt = std::chrono::duration<double>(Clock::now() - t).count();
        std::lock_guard<std::mutex> lock(mu);
        busy_seconds += dt;
        finished.push_back(todo[i].wav.string());
        cv.notify_one();
      }
      std::lock_guard<std::mutex> lock(mu);
      --running;
      cv.notify_one();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return !finished.empty() || running == 0; });
      while (!finished.empty()) {
        p.path = std::move(finished.front());
        finished.pop_front();
        ++p.done;
        ++p.rendered;
        ++res.rendered;
        if (o.on_progress && !error) {
          lock.unlock();
          try {
            o.on_progress(p);
          } catch (...) {
            lock.lock();
            if (!error) error = std::current_exception();
            stop = true;
            continue;
          }
          lock.lock();
        }
      }
      if (running == 0) break;
    }
  }
  for (auto& w : workers) w.join();
  if (error) {
    // Leave no empty class folder behind (a reader would take it for a
    // class without clips); folders holding finished clips stay.
    for (const auto& s : o.styles) fs::remove(out / s, ec);  // removes only if empty
    std::rethrow_exception(error);
  }

  res.seconds_per_clip = res.rendered ? busy_seconds / res.rendered : 0.0;
  res.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return res;
}

}  // namespace timbre::tools
