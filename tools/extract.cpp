#include "tools/extract.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>

#include "features/audio.h"
#include "features/augment.h"
#include "features/h5store.h"
#include "features/logmel.h"
#include "tools/progress.h"

namespace timbre::tools {

using features::Split;

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

features::DatasetListing list_dataset(const ExtractOptions& o) {
  if (o.audio_dir.empty()) throw std::invalid_argument("--audio is required");
  if (o.dataset == "fma") {
    if (o.metadata.empty())
      throw std::invalid_argument("--dataset fma needs --metadata (fma_metadata/tracks.csv)");
    features::FmaOptions f;
    f.tracks_csv = o.metadata;
    f.audio_dir = o.audio_dir;
    f.subset = o.subset;
    if (o.split == "official")
      f.split = features::SplitMode::official;
    else if (o.split == "random")
      f.split = features::SplitMode::random;
    else
      throw std::invalid_argument("--split must be 'official' or 'random', not '" + o.split + "'");
    f.seed = o.seed;
    return features::list_fma(f);
  }
  if (o.dataset == "gtzan") return features::list_gtzan(o.audio_dir, o.seed);
  if (o.dataset == "folder") return features::list_folder(o.audio_dir, o.seed);
  throw std::invalid_argument("--dataset must be fma, gtzan or folder, not '" + o.dataset + "'");
}

// Segments waiting for one device batch, all of one split (a batch is
// appended to one HDF5 group).
struct Pending {
  std::vector<float> audio;  // count * segment_samples
  std::vector<int32_t> y;
  std::vector<int64_t> track_id, start;
  int64_t count = 0;
};

}  // namespace

namespace {

// <out>.tmp-<pid> files whose process is gone (a SIGKILL or a crash left
// them): removed, and listed for the summary. Those of live processes (an
// extract running now) are left alone.
std::vector<std::string> remove_stale_temporaries(const std::string& out) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  const fs::path target(out);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos ||
        pid_text.size() > 10)
      continue;
    const long long pid = std::stoll(pid_text);
    if (pid == ::getpid() || pid > INT32_MAX) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to probe)
    std::error_code rm;
    if (fs::remove(it->path(), rm)) removed.push_back(it->path().string());
  }
  return removed;
}

}  // namespace

ExtractSummary run_extract(const ExtractOptions& o, const std::atomic<int>* stop) {
  o.params.validate();
  if (o.out.empty()) throw std::invalid_argument("--out is required");
  if (o.jobs < 1) throw std::invalid_argument("--jobs must be at least 1");
  if (o.batch < 1) throw std::invalid_argument("--batch must be at least 1");
  if (o.segments < 0) throw std::invalid_argument("--segments must be 'all' or a positive count");
  if (file_exists(o.out) && !o.force) {
    std::string why = o.out + " already exists";
    try {
      features::FeatureStore::open(o.out).check_params(o.params);
      why += " (same feature parameters)";
    } catch (const std::exception& e) {
      why += std::string(": ") + e.what();
    }
    throw std::runtime_error(why + "; pass --force to replace it, or choose another --out");
  }

  const auto t0 = std::chrono::steady_clock::now();
  ExtractSummary summary;
  summary.stale_removed = remove_stale_temporaries(o.out);
  const features::DatasetListing listing = list_dataset(o);
  summary.tracks_listed = listing.tracks.size();
  summary.skipped = listing.skipped;
  if (listing.tracks.empty())
    throw std::runtime_error("the dataset lists no readable track (" + listing.source + ")");
  std::set<int> classes;
  for (const auto& t : listing.tracks) classes.insert(t.label);
  if (classes.size() < 2) {
    const std::string only = listing.label_names.at(size_t(listing.tracks.front().label));
    throw std::runtime_error("the dataset's readable tracks all have one label ('" + only +
                             "'): a classifier needs at least two classes (" + listing.source +
                             ")");
  }

  const int sr = o.params.sample_rate;
  const long long seg = o.params.segment_samples();
  const int rows = o.params.n_mfcc > 0 ? o.params.n_mfcc : o.params.n_mels;
  const size_t out_per_segment = size_t(rows) * o.params.frames;

  features::FeatureWriter writer(o.out, o.params, listing.label_names, listing.source);
  features::LogMelPipeline pipeline(o.params, o.batch);
  Pending pending[3];
  std::vector<float> out_buf(size_t(o.batch) * out_per_segment);

  auto flush = [&](Split split) {
    Pending& p = pending[int(split)];
    if (p.count == 0) return;
    pipeline.compute(p.audio.data(), int(p.count), out_buf.data());
    writer.append(split, p.count, out_buf.data(), p.y.data(), p.track_id.data(), p.start.data());
    summary.segments[int(split)] += p.count;
    p.audio.clear(), p.y.clear(), p.track_id.clear(), p.start.clear();
    p.count = 0;
  };
  // Cuts the segments of one signal (a track or an augmented copy of it).
  auto add_segments = [&](const features::Track& t, const std::vector<float>& x,
                          uint64_t crop_seed) {
    if ((long long)x.size() < seg) return;  // a stretch at 1.1 can fall below one segment
    const std::vector<size_t> starts =
        features::crop_offsets(x.size(), size_t(seg), size_t(o.segments), crop_seed);
    Pending& p = pending[int(t.split)];
    for (size_t s : starts) {
      p.audio.insert(p.audio.end(), x.begin() + s, x.begin() + s + seg);
      p.y.push_back(t.label);
      p.track_id.push_back(t.id);
      p.start.push_back(int64_t(s));
      if (++p.count == o.batch) flush(t.split);
    }
  };

  std::vector<std::string> paths;
  paths.reserve(listing.tracks.size());
  for (const auto& t : listing.tracks) paths.push_back(t.audio);

  Progress progress("extract", (long long)paths.size(), "tracks");
  size_t done = 0;
  features::decode_all(paths, sr, size_t(seg), o.jobs, [&](features::DecodeResult&& r) {
    // Thrown out of decode_all, which joins its workers; the writer's
    // destructor then removes the temporary file.
    if (stop && stop->load() != 0) throw ExtractInterrupted(stop->load(), o.out);
    const features::Track& t = listing.tracks[r.index];
    ++done;
    if (!r.error.empty()) {
      summary.skipped.push_back({t.audio, r.error});
    } else {
      // Crops differ per track and per copy but depend only on the seed.
      const uint64_t base = o.seed * 0x9E3779B97F4A7C15ull + uint64_t(t.id) * 8;
      const std::vector<float>& x = r.audio.samples;
      add_segments(t, x, base);
      if (t.split == Split::train) {
        if (o.stretch) {
          add_segments(t, features::time_stretch(x.data(), x.size(), 0.9), base + 1);
          add_segments(t, features::time_stretch(x.data(), x.size(), 1.1), base + 2);
        }
        if (o.pitch) {
          add_segments(t, features::pitch_shift(x.data(), x.size(), sr, -2.0), base + 3);
          add_segments(t, features::pitch_shift(x.data(), x.size(), sr, +2.0), base + 4);
        }
      }
      ++summary.tracks_read;
    }
    progress.update((long long)done, std::to_string(summary.skipped.size()) + " skipped");
  });
  for (Split s : {Split::train, Split::validation, Split::test}) flush(s);
  progress.finish(std::to_string(summary.skipped.size()) + " skipped");

  if (stop && stop->load() != 0) throw ExtractInterrupted(stop->load(), o.out);
  if (summary.segments[int(Split::train)] == 0)
    throw std::runtime_error("no training segment was extracted (" +
                             std::to_string(summary.skipped.size()) +
                             " tracks skipped); " + o.out + " was not written");
  writer.finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

std::string format_summary(const ExtractSummary& s, const std::string& out) {
  std::ostringstream os;
  for (const std::string& f : s.stale_removed)
    os << "extract: removed " << f << ", left by an extract that did not finish\n";
  os << "extract: " << s.tracks_read << " of " << s.tracks_listed << " listed tracks read, "
     << s.skipped.size() << " skipped\n";
  const size_t shown = std::min<size_t>(s.skipped.size(), 20);
  for (size_t i = 0; i < shown; ++i)
    os << "  skipped " << s.skipped[i].what << ": " << s.skipped[i].reason << "\n";
  if (s.skipped.size() > shown) os << "  ... and " << s.skipped.size() - shown << " more\n";
  char line[256];
  std::snprintf(line, sizeof line,
                "extract: %lld segments (train %lld, validation %lld, test %lld) in %.1f s, "
                "%.1f tracks/s, %.1f clips/s -> %s\n",
                (long long)s.total_segments(), (long long)s.segments[0], (long long)s.segments[1],
                (long long)s.segments[2], s.seconds,
                s.seconds > 0 ? double(s.tracks_read) / s.seconds : 0.0,
                s.seconds > 0 ? double(s.total_segments()) / s.seconds : 0.0, out.c_str());
  os << line;
  return os.str();
}

}  // namespace timbre::tools
