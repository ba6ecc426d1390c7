#include "tools/extract.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/distributed.h"
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

// <out>.tmp-<pid> files, and the folders <out>.tmp-<pid>.rank<r> of a
// distributed extraction's ranks, whose process is gone (a SIGKILL or a
// crash left them; for the folders, the process of the job's rank 0):
// removed, and listed for the summary. Those of live processes (an extract
// running now) are left alone.
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
    std::string pid_text = name.substr(prefix.size());
    if (const size_t dot = pid_text.find(".rank"); dot != std::string::npos &&
        pid_text.find_first_not_of("0123456789", dot + 5) == std::string::npos &&
        pid_text.size() > dot + 5)
      pid_text.resize(dot);
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos ||
        pid_text.size() > 10)
      continue;
    const long long pid = std::stoll(pid_text);
    if (pid == ::getpid() || pid > INT32_MAX) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to probe)
    std::error_code rm;
    if (fs::remove_all(it->path(), rm) > 0) removed.push_back(it->path().string());
  }
  return removed;
}

// Extraction on several ranks (`mpirun -np N timbre extract`): rank r
// decodes and computes a contiguous block of the listing, [r T / N,
// (r + 1) T / N) of its T tracks, and the blocks in rank order are the
// listing's order. Ranks 1..N-1 write their features into a part folder,
// <out>.tmp-<pid of rank 0>.rank<r>: per split, the features as raw f32
// (x<split>) and the labels, track ids and starts as packed records
// (m<split>), then summary.json last. Rank 0 writes its block straight into
// the store, then appends the parts in rank order through the same batches
// of --batch segments, so the store is the one a single process writes,
// band statistics included (they are merged batch by batch), and removes
// the parts. Still atomic: the store is a temporary file until rank 0
// renames it; a failed rank ends the job (dist::fail), and the next
// extract of the same --out removes what the job left.
struct SegmentRecord {
  int32_t y;
  int64_t track_id, start;
};

class RankPart {
 public:
  explicit RankPart(std::string dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    for (int s = 0; s < 3; ++s) {
      x_[s] = open(dir_ + "/x" + std::to_string(s), "wb");
      m_[s] = open(dir_ + "/m" + std::to_string(s), "wb");
    }
  }
  ~RankPart() {
    for (int s = 0; s < 3; ++s) {
      if (x_[s]) std::fclose(x_[s]);
      if (m_[s]) std::fclose(m_[s]);
    }
  }
  void append(Split split, int64_t count, const float* x, size_t per_segment, const int32_t* y,
              const int64_t* track_id, const int64_t* start) {
    const int s = int(split);
    write(x_[s], x, sizeof(float) * per_segment * size_t(count), "x");
    for (int64_t i = 0; i < count; ++i) {
      const SegmentRecord r{y[i], track_id[i], start[i]};
      write(m_[s], &r, sizeof r, "m");
    }
  }
  // Closes the files, then writes summary.json (the part is complete once it exists).
  void finish(const ExtractSummary& summary) {
    for (int s = 0; s < 3; ++s) {
      close(x_[s]);
      close(m_[s]);
    }
    nlohmann::json skipped = nlohmann::json::array();
    for (const auto& k : summary.skipped) skipped.push_back({k.what, k.reason});
    const nlohmann::json j = {{"tracks_read", summary.tracks_read},
                              {"segments", {summary.segments[0], summary.segments[1],
                                            summary.segments[2]}},
                              {"skipped", skipped}};
    FILE* f = open(dir_ + "/summary.json", "wb");
    const std::string text = j.dump();
    write(f, text.data(), text.size(), "summary.json");
    close(f);
  }

 private:
  static FILE* open(const std::string& path, const char* mode) {
    FILE* f = std::fopen(path.c_str(), mode);
    if (!f) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
    return f;
  }
  void write(FILE* f, const void* p, size_t bytes, const char* what) {
    if (bytes && std::fwrite(p, 1, bytes, f) != bytes)
      throw std::runtime_error("cannot write " + dir_ + "/" + what + ": " + std::strerror(errno));
  }
  void close(FILE*& f) {
    if (f && std::fclose(f) != 0)
      throw std::runtime_error("cannot write " + dir_ + ": " + std::strerror(errno));
    f = nullptr;
  }
  std::string dir_;
  FILE* x_[3] = {};
  FILE* m_[3] = {};
};

std::string part_dir(const std::string& out, long long root_pid, int rank) {
  return out + ".tmp-" + std::to_string(root_pid) + ".rank" + std::to_string(rank);
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
  const int ranks = dist::size(), me = dist::rank();
  ExtractSummary summary;
  // Rank 0 cleans up before any rank makes its part (the collective waits).
  if (dist::is_root()) summary.stale_removed = remove_stale_temporaries(o.out);
  double root_pid = dist::is_root() ? double(::getpid()) : 0.0;
  dist::host_sum(&root_pid, 1);
  const features::DatasetListing listing = list_dataset(o);
  summary.tracks_listed = listing.tracks.size();
  if (dist::is_root()) summary.skipped = listing.skipped;  // the parts add only their own
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

  // Rank 0 (a single process: the only one) writes the store; the others their parts.
  std::optional<features::FeatureWriter> writer;
  std::optional<RankPart> part;
  if (dist::is_root())
    writer.emplace(o.out, o.params, listing.label_names, listing.source);
  else
    part.emplace(part_dir(o.out, (long long)root_pid, me));
  features::LogMelPipeline pipeline(o.params, o.batch);
  Pending pending[3];
  std::vector<float> out_buf(size_t(o.batch) * out_per_segment);

  // What reaches the store, per split, in batches of o.batch segments (the
  // last one shorter): the same batches whichever ranks computed them, so
  // the same file and statistics.
  struct Computed {
    std::vector<float> x;
    std::vector<int32_t> y;
    std::vector<int64_t> track_id, start;
    int64_t count = 0;
  } computed[3];
  auto store = [&](Split split, int64_t count, const float* x, const int32_t* y,
                   const int64_t* track_id, const int64_t* start, bool last) {
    Computed& c = computed[int(split)];
    if (c.count == 0 && (count == o.batch || (last && count > 0))) {  // a whole batch: as it is
      writer->append(split, count, x, y, track_id, start);
      return;
    }
    for (int64_t i = 0; i < count; ++i) {
      c.x.insert(c.x.end(), x + size_t(i) * out_per_segment, x + size_t(i + 1) * out_per_segment);
      c.y.push_back(y[i]);
      c.track_id.push_back(track_id[i]);
      c.start.push_back(start[i]);
      if (++c.count == o.batch || (last && i + 1 == count)) {
        writer->append(split, c.count, c.x.data(), c.y.data(), c.track_id.data(), c.start.data());
        c = Computed{};
      }
    }
    if (last && c.count > 0) {
      writer->append(split, c.count, c.x.data(), c.y.data(), c.track_id.data(), c.start.data());
      c = Computed{};
    }
  };
  // last: the split's final batch of this rank's block (on one process,
  // of the store).
  auto flush = [&](Split split, bool last) {
    Pending& p = pending[int(split)];
    if (p.count == 0) return;
    pipeline.compute(p.audio.data(), int(p.count), out_buf.data());
    if (writer)
      store(split, p.count, out_buf.data(), p.y.data(), p.track_id.data(), p.start.data(),
            last && ranks == 1);
    else
      part->append(split, p.count, out_buf.data(), out_per_segment, p.y.data(), p.track_id.data(),
                   p.start.data());
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
      if (++p.count == o.batch) flush(t.split, false);
    }
  };

  // This rank's block of the listing (all of it for a single process).
  const size_t T = listing.tracks.size();
  const size_t first = T * size_t(me) / size_t(ranks), last = T * size_t(me + 1) / size_t(ranks);
  std::vector<std::string> paths;
  paths.reserve(last - first);
  for (size_t i = first; i < last; ++i) paths.push_back(listing.tracks[i].audio);

  std::optional<Progress> progress;
  if (dist::is_root())
    progress.emplace(ranks > 1 ? "extract (rank 0's " + std::to_string(paths.size()) + " of " +
                                     std::to_string(T) + ")"
                               : std::string("extract"),
                     (long long)paths.size(), "tracks");
  size_t done = 0;
  // Several ranks: a rank that finishes no track for --rank-timeout seconds
  // (stuck I/O, a wedged device) ends itself, and the launcher the job;
  // else the others would wait for its part forever. Disarmed before the
  // wait for the other ranks, which may take longer than the timeout.
  if (ranks > 1)
    dist::arm_watchdog(o.rank_timeout, "in extraction (rank " + std::to_string(me) + "'s " +
                                           std::to_string(paths.size()) + " tracks)");
  features::decode_all(paths, sr, size_t(seg), o.jobs, [&](features::DecodeResult&& r) {
    // Thrown out of decode_all, which joins its workers; the writer's
    // destructor then removes the temporary file.
    if (stop && stop->load() != 0) throw ExtractInterrupted(stop->load(), o.out);
    if ((long long)done == o.debug_hang_track && me == ranks - 1 && ranks > 1)
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    const features::Track& t = listing.tracks[first + r.index];
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
    if (progress) progress->update((long long)done, std::to_string(summary.skipped.size()) + " skipped");
    dist::heartbeat();
  });
  for (Split s : {Split::train, Split::validation, Split::test}) flush(s, true);
  if (progress) progress->finish(std::to_string(summary.skipped.size()) + " skipped");
  if (stop && stop->load() != 0) throw ExtractInterrupted(stop->load(), o.out);

  if (ranks > 1) {
    if (part) part->finish(summary);
    dist::disarm_watchdog();
    dist::host_max(0);  // every part is complete
    if (part) return summary;  // rank 0 reports
    // Rank 0: the parts in rank order, through the same batches.
    std::vector<float> x(size_t(o.batch) * out_per_segment);
    std::vector<SegmentRecord> m(size_t(o.batch));
    std::vector<int32_t> y(size_t(o.batch));
    std::vector<int64_t> id(size_t(o.batch)), start(size_t(o.batch));
    for (int r = 1; r < ranks; ++r) {
      const std::string dir = part_dir(o.out, (long long)root_pid, r);
      std::ifstream js(dir + "/summary.json");
      const nlohmann::json j = nlohmann::json::parse(js, nullptr, false);
      if (j.is_discarded())
        throw std::runtime_error(dir + "/summary.json: missing or unreadable (rank " +
                                 std::to_string(r) + "'s part is incomplete)");
      summary.tracks_read += size_t(j.at("tracks_read"));
      for (const auto& k : j.at("skipped"))
        summary.skipped.push_back({k.at(0).get<std::string>(), k.at(1).get<std::string>()});
      for (Split split : {Split::train, Split::validation, Split::test}) {
        const int s = int(split);
        const int64_t n = j.at("segments").at(size_t(s));
        std::ifstream xs(dir + "/x" + std::to_string(s), std::ios::binary);
        std::ifstream ms(dir + "/m" + std::to_string(s), std::ios::binary);
        for (int64_t done_here = 0; done_here < n;) {
          const int64_t k = std::min<int64_t>(o.batch, n - done_here);
          xs.read(reinterpret_cast<char*>(x.data()), std::streamsize(sizeof(float) * out_per_segment * size_t(k)));
          ms.read(reinterpret_cast<char*>(m.data()), std::streamsize(sizeof(SegmentRecord) * size_t(k)));
          if (!xs || !ms)
            throw std::runtime_error(dir + ": rank " + std::to_string(r) + "'s part is shorter "
                                     "than its summary says");
          for (int64_t i = 0; i < k; ++i)
            y[size_t(i)] = m[size_t(i)].y, id[size_t(i)] = m[size_t(i)].track_id,
                      start[size_t(i)] = m[size_t(i)].start;
          store(split, k, x.data(), y.data(), id.data(), start.data(), false);
          done_here += k;
        }
        summary.segments[s] += n;
      }
    }
    for (Split split : {Split::train, Split::validation, Split::test})
      store(split, 0, nullptr, nullptr, nullptr, nullptr, true);
    for (int r = 1; r < ranks; ++r) {
      std::error_code ec;
      std::filesystem::remove_all(part_dir(o.out, (long long)root_pid, r), ec);
    }
  }
  if (summary.segments[int(Split::train)] == 0)
    throw std::runtime_error("no training segment was extracted (" +
                             std::to_string(summary.skipped.size()) +
                             " tracks skipped); " + o.out + " was not written");
  writer->finish();
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
