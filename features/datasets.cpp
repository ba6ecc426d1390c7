// datasets.cpp: FMA (tracks.csv via libcsv), GTZAN and plain label folders.
// See datasets.h for the rules; docs/features/datasets.md for the layouts.
#include "features/datasets.h"

#include "features/utf8.h"

#include <csv.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <system_error>

namespace fs = std::filesystem;

namespace timbre::features {

const char* split_name(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::validation: return "validation";
    case Split::test: return "test";
  }
  return "?";
}

size_t DatasetListing::count(Split split) const {
  return static_cast<size_t>(std::count_if(tracks.begin(), tracks.end(),
                                           [&](const Track& t) { return t.split == split; }));
}

// ---------------------------------------------------------------------------
// The seeded split.
//
// std::shuffle and std::uniform_int_distribution are not specified exactly by
// the C++ standard (libstdc++ and libc++ give different results), but the
// mt19937_64 engine is. So we draw raw 64-bit words from it and do the two
// remaining steps ourselves:
//   bounded(n):   a uniform integer in [0, n) by rejection: words at or above
//                 the largest multiple of n below 2^64 are thrown away, the
//                 rest taken modulo n (no modulo bias).
//   Fisher-Yates: for i = n-1 down to 1, swap a[i] with a[bounded(i+1)].
// Every permutation is then equally likely and the result is the same on any
// platform for the same seed and input order.
namespace {

uint64_t bounded(std::mt19937_64& gen, uint64_t n) {
  // 2^64 mod n, computed in 64-bit arithmetic as (2^64 - n) mod n.
  const uint64_t reject_below_top = (0 - n) % n;
  const uint64_t limit = ~uint64_t(0) - reject_below_top;  // last accepted word
  uint64_t x;
  do x = gen(); while (x > limit);
  return x % n;
}

template <class T>
void fisher_yates(std::vector<T>& a, std::mt19937_64& gen) {
  for (size_t i = a.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(bounded(gen, i));
    std::swap(a[i - 1], a[j]);
  }
}

}  // namespace

void split_random(std::vector<Track>& tracks, int n_labels, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::vector<size_t>> by_label(static_cast<size_t>(std::max(n_labels, 0)));
  for (size_t i = 0; i < tracks.size(); ++i) {
    const int l = tracks[i].label;
    if (l < 0 || l >= n_labels)
      throw std::invalid_argument("split_random: track " + tracks[i].name + " has label " +
                                  std::to_string(l) + " outside [0, " +
                                  std::to_string(n_labels) + ")");
    by_label[static_cast<size_t>(l)].push_back(i);
  }
  for (auto& members : by_label) {
    fisher_yates(members, gen);
    const size_t n = members.size();
    const size_t n_held = (n + 5) / 10;  // round(n / 10), halves up
    for (size_t k = 0; k < n; ++k) {
      Split s = Split::train;
      if (k < n_held) s = Split::validation;
      else if (k < 2 * n_held) s = Split::test;
      tracks[members[k]].split = s;
    }
  }
}

// ---------------------------------------------------------------------------
// Helpers shared by the readers.
namespace {

// Why an audio file cannot be used, or "" when it can.
std::string audio_problem(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)  // a symlink loop, no permission
    return "cannot reach audio file " + path + ": " + ec.message();
  if (ec || !fs::exists(st)) return "audio file missing: " + path;
  if (!fs::is_regular_file(st)) return "audio path is not a regular file: " + path;
  const auto size = fs::file_size(path, ec);
  if (ec) return "cannot read the size of audio file " + path + ": " + ec.message();
  if (size == 0) return "audio file is empty: " + path;
  return "";
}

std::vector<std::string> sorted_labels(const std::set<std::string>& names) {
  return std::vector<std::string>(names.begin(), names.end());  // std::set is sorted bytewise
}

int label_index(const std::vector<std::string>& names, const std::string& name) {
  return static_cast<int>(std::lower_bound(names.begin(), names.end(), name) - names.begin());
}

// ---------------------------------------------------------------------------
// FMA tracks.csv through libcsv.
//
// libcsv is a push parser: we feed it blocks of bytes and it calls back once
// per field (field_cb) and once per record (record_cb), having already undone
// the quoting ("a, b" -> a, b; "" -> "; newlines inside quotes kept). The
// state below collects the three header rows whole, then resolves the
// columns we need, then keeps only those four fields of every data record, so
// even the 100k-track tracks.csv of fma_large costs little memory.

struct FmaRecord {
  size_t record = 0;  // 1-based record number in the file (headers are 1-3)
  std::string id, subset, split, genre;
};

struct CsvState {
  std::string path;
  size_t record = 0;   // 0-based record being parsed
  size_t field = 0;    // 0-based field within it
  std::array<std::vector<std::string>, 3> header;
  // Column indices once the header is resolved.
  bool resolved = false;
  size_t col_subset = 0, col_split = 0, col_genre = 0;
  size_t max_col = 0;
  FmaRecord current;
  std::vector<FmaRecord> records;
  std::string error;   // first error; parsing stops once set

  void resolve() {
    // Row 1's top-level names repeat for every column in pandas' output; a
    // hand-edited file may leave them blank after the first, so blanks
    // inherit the name to their left.
    std::vector<std::string> top = header[0];
    for (size_t c = 1; c < top.size(); ++c)
      if (top[c].empty()) top[c] = top[c - 1];
    const std::vector<std::string>& sub = header[1];
    auto find = [&](const char* t, const char* s, size_t* col) {
      for (size_t c = 0; c < std::min(top.size(), sub.size()); ++c)
        if (top[c] == t && sub[c] == s) {
          *col = c;
          return true;
        }
      return false;
    };
    std::string missing;
    if (!find("set", "subset", &col_subset)) missing += " ('set','subset')";
    if (!find("set", "split", &col_split)) missing += " ('set','split')";
    if (!find("track", "genre_top", &col_genre)) missing += " ('track','genre_top')";
    if (!missing.empty()) {
      error = path + ": not an FMA tracks.csv: the two-level header (row 1 top-level names, "
              "row 2 sub-names) lacks column(s)" + missing;
      return;
    }
    if (header[2].empty() || header[2][0] != "track_id") {
      error = path + ": not an FMA tracks.csv: row 3 should start with \"track_id\" (found \"" +
              (header[2].empty() ? std::string() : header[2][0]) + "\")";
      return;
    }
    max_col = std::max({col_subset, col_split, col_genre});
    resolved = true;
  }

  void on_field(const char* data, size_t len) {
    if (!error.empty()) return;
    const std::string value(data ? data : "", data ? len : 0);
    if (record < 3) {
      header[record].push_back(value);
    } else {
      if (field == 0) current.id = value;
      else if (field == col_subset) current.subset = value;
      else if (field == col_split) current.split = value;
      else if (field == col_genre) current.genre = value;
    }
    ++field;
  }

  void on_record() {
    if (!error.empty()) return;
    if (record < 3) {
      if (record == 2) resolve();
    } else {
      if (field <= max_col) {
        error = path + ": record " + std::to_string(record + 1) + " (track_id \"" + current.id +
                "\") has " + std::to_string(field) + " fields, fewer than the " +
                std::to_string(max_col + 1) + " the header needs";
        return;
      }
      current.record = record + 1;
      records.push_back(std::move(current));
      current = FmaRecord{};
    }
    ++record;
    field = 0;
  }
};

void csv_field_cb(void* data, size_t len, void* user) {
  static_cast<CsvState*>(user)->on_field(static_cast<const char*>(data), len);
}
void csv_record_cb(int /*terminator*/, void* user) { static_cast<CsvState*>(user)->on_record(); }

std::vector<FmaRecord> read_fma_csv(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw std::runtime_error(path + ": FMA tracks.csv not found (expected fma_metadata/tracks.csv)");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));

  csv_parser parser;
  if (csv_init(&parser, CSV_APPEND_NULL) != 0) {
    std::fclose(f);
    throw std::runtime_error(path + ": csv_init failed");
  }
  CsvState state;
  state.path = path;
  std::vector<char> block(1 << 16);
  std::string failure;
  while (state.error.empty()) {
    const size_t got = std::fread(block.data(), 1, block.size(), f);
    if (got == 0) {
      if (std::ferror(f)) failure = path + ": read error: " + std::strerror(errno);
      break;
    }
    if (csv_parse(&parser, block.data(), got, csv_field_cb, csv_record_cb, &state) != got) {
      failure = path + ": CSV parse error: " + csv_strerror(csv_error(&parser));
      break;
    }
  }
  if (failure.empty() && state.error.empty())
    csv_fini(&parser, csv_field_cb, csv_record_cb, &state);  // flushes a last line without newline
  csv_free(&parser);
  std::fclose(f);
  if (!failure.empty()) throw std::runtime_error(failure);
  if (!state.error.empty()) throw std::runtime_error(state.error);
  if (!state.resolved)
    throw std::runtime_error(path + ": not an FMA tracks.csv: fewer than the 3 header rows (" +
                             std::to_string(state.record) + " records)");
  return std::move(state.records);
}

int subset_rank(const std::string& s) {
  if (s == "small") return 0;
  if (s == "medium") return 1;
  if (s == "large") return 2;
  return -1;
}

}  // namespace

const std::vector<int64_t>& fma_known_bad() {
  static const std::vector<int64_t> ids = {98565, 98567, 98569, 99134, 108925, 133297};
  return ids;
}

std::string fma_audio_path(const std::string& audio_dir, int64_t track_id) {
  if (track_id < 0 || track_id > 999999)
    throw std::invalid_argument("fma_audio_path: track_id " + std::to_string(track_id) +
                                " is outside [0, 999999]");
  char name[32];
  std::snprintf(name, sizeof(name), "%06lld", static_cast<long long>(track_id));
  return (fs::path(audio_dir) / std::string(name, 3) / (std::string(name) + ".mp3")).string();
}

DatasetListing list_fma(const FmaOptions& o) {
  const int want = subset_rank(o.subset);
  if (want < 0)
    throw std::invalid_argument("list_fma(" + o.tracks_csv + "): subset \"" + o.subset +
                                "\" is not one of small, medium, large");
  const std::vector<FmaRecord> records = read_fma_csv(o.tracks_csv);

  struct Candidate {
    int64_t id;
    std::string genre, split;
  };
  std::vector<Candidate> in_subset;
  std::set<std::string> genres;
  std::map<long long, size_t> record_of;  // a track listed twice could land in two splits
  DatasetListing out;
  for (const FmaRecord& r : records) {
    char* end = nullptr;
    errno = 0;
    const long long id = std::strtoll(r.id.c_str(), &end, 10);
    if (r.id.empty() || *end != '\0' || errno != 0 || id < 0 || id > 999999)
      throw std::runtime_error(o.tracks_csv + ": record " + std::to_string(r.record) +
                               ": track_id \"" + r.id + "\" is not an integer in [0, 999999]");
    const auto [it, fresh] = record_of.emplace(id, r.record);
    if (!fresh)
      throw std::runtime_error(o.tracks_csv + ": track_id " + std::to_string(id) +
                               " is listed twice, in records " + std::to_string(it->second) +
                               " and " + std::to_string(r.record) +
                               " (one track could land in two splits with two labels)");
    const int rank = subset_rank(r.subset);
    if (rank < 0) {
      if (!r.subset.empty())
        out.skipped.push_back({std::to_string(id), "unknown subset value \"" + r.subset + "\""});
      continue;
    }
    if (rank > want) continue;  // small ⊂ medium ⊂ large
    if (!is_valid_utf8(r.genre))
      throw std::runtime_error(o.tracks_csv + ": record " + std::to_string(r.record) +
                               ": genre_top \"" + escape_non_utf8(r.genre) +
                               "\" is not valid UTF-8 (labels are stored as UTF-8 text)");
    in_subset.push_back({id, r.genre, r.split});
    if (!r.genre.empty()) genres.insert(r.genre);
  }
  out.label_names = sorted_labels(genres);

  const auto& bad = fma_known_bad();
  for (const Candidate& c : in_subset) {
    char name[16];
    std::snprintf(name, sizeof(name), "%06lld", static_cast<long long>(c.id));
    if (std::find(bad.begin(), bad.end(), c.id) != bad.end()) {
      out.skipped.push_back({name, "known bad: the MP3 in the FMA archive is broken "
                                   "(empty or too short for one segment)"});
      continue;
    }
    if (c.genre.empty()) {
      out.skipped.push_back({name, "no ('track','genre_top') label"});
      continue;
    }
    Split split = Split::train;
    if (o.split == SplitMode::official) {
      if (c.split == "training") split = Split::train;
      else if (c.split == "validation") split = Split::validation;
      else if (c.split == "test") split = Split::test;
      else {
        out.skipped.push_back({name, "unknown ('set','split') value \"" + c.split + "\""});
        continue;
      }
    }
    Track t;
    t.id = c.id;
    t.name = name;
    t.audio = fma_audio_path(o.audio_dir, c.id);
    const std::string problem = audio_problem(t.audio);
    if (!problem.empty()) {
      out.skipped.push_back({name, problem});
      continue;
    }
    t.label = label_index(out.label_names, c.genre);
    t.split = split;
    out.tracks.push_back(std::move(t));
  }
  std::sort(out.tracks.begin(), out.tracks.end(),
            [](const Track& a, const Track& b) { return a.id < b.id; });
  if (o.split == SplitMode::random)
    split_random(out.tracks, static_cast<int>(out.label_names.size()), o.seed);
  out.source = "fma subset=" + o.subset + " split=" +
               (o.split == SplitMode::official ? std::string("official")
                                               : "random seed=" + std::to_string(o.seed)) +
               " tracks_csv=" + o.tracks_csv + " audio_dir=" + o.audio_dir;
  return out;
}

// ---------------------------------------------------------------------------
// Label folders (GTZAN and plain).
namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

DatasetListing list_label_folders(const std::string& what, const fs::path& root,
                                  const std::string& dir,
                                  const std::vector<std::string>& extensions, uint64_t seed) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw std::runtime_error(dir + ": not found or not a directory (the " + what +
                             " dataset's folder)");
  auto is_audio = [&](const fs::path& p) {
    const std::string ext = lower(p.extension().string());
    return !ext.empty() &&
           std::find(extensions.begin(), extensions.end(), ext.substr(1)) != extensions.end();
  };
  DatasetListing out;
  // label -> sorted file paths
  std::map<std::string, std::vector<std::string>> files;
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(root, ec)) entries.push_back(e.path());
  if (ec) throw std::runtime_error(root.string() + ": cannot list: " + ec.message());
  std::sort(entries.begin(), entries.end());
  for (const fs::path& p : entries) {
    const std::string base = p.filename().string();
    if (base.empty() || base[0] == '.') continue;  // hidden files and folders
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> audio;
      for (const auto& f : fs::directory_iterator(p, ec)) {
        const std::string fb = f.path().filename().string();
        if (fb.empty() || fb[0] == '.' || !is_audio(f.path())) continue;
        const std::string problem = audio_problem(f.path().string());
        if (!problem.empty()) out.skipped.push_back({f.path().string(), problem});
        else audio.push_back(f.path().string());
      }
      if (ec) throw std::runtime_error(p.string() + ": cannot list: " + ec.message());
      if (audio.empty()) {
        out.skipped.push_back({p.string(), "label folder holds no usable audio files"});
        continue;
      }
      // A label becomes data (HDF5's label names, run.json, reports), which
      // must be UTF-8: refused here, by name, not by a later stage.
      if (!is_valid_utf8(base))
        throw std::runtime_error(escape_non_utf8(p.string()) +
                                 ": the label folder's name is not valid UTF-8; rename it "
                                 "(labels are stored as UTF-8 text)");
      std::sort(audio.begin(), audio.end());
      files[base] = std::move(audio);
    } else if (is_audio(p)) {
      out.skipped.push_back({p.string(), "audio file outside a <label>/ folder"});
    }
  }
  if (files.empty()) {
    std::string exts;
    for (const auto& e : extensions) exts += (exts.empty() ? "" : " ") + e;
    throw std::runtime_error(root.string() + ": the " + what + " dataset is empty: no <label>/ "
                             "folder holds audio files (" + exts + ")");
  }
  for (const auto& [label, paths] : files) {
    const int index = static_cast<int>(out.label_names.size());
    out.label_names.push_back(label);
    for (const std::string& p : paths) {
      Track t;
      t.id = static_cast<int64_t>(out.tracks.size());
      t.name = label + "/" + fs::path(p).filename().string();
      t.audio = p;
      t.label = index;
      out.tracks.push_back(std::move(t));
    }
  }
  std::sort(out.skipped.begin(), out.skipped.end(),
            [](const Skipped& a, const Skipped& b) { return a.what < b.what; });
  split_random(out.tracks, static_cast<int>(out.label_names.size()), seed);
  out.source = what + " dir=" + dir + " split=random seed=" + std::to_string(seed);
  return out;
}

}  // namespace

DatasetListing list_gtzan(const std::string& dir, uint64_t seed) {
  std::error_code ec;
  fs::path root = fs::path(dir) / "genres";
  if (!fs::is_directory(root, ec)) root = dir;
  return list_label_folders("gtzan", root, dir, {"wav", "au"}, seed);
}

DatasetListing list_folder(const std::string& dir, uint64_t seed) {
  return list_label_folders("folder", dir, dir, {"mp3", "wav", "flac", "ogg", "au"}, seed);
}

}  // namespace timbre::features
