// extract.h: `timbre extract`, a dataset on disk -> an HDF5 feature store.
//
//   listing (features/datasets.h)          which file, which label, which split
//   decode on --jobs threads (audio.h)     mono float at 22,050 Hz, checked lengths
//   augment the training tracks (augment.h) time stretch 0.9/1.1, pitch -2/+2 semitones
//   cut segments                           all non-overlapping ones, or N seeded crops
//   log-mel on the device (logmel.h)       batches of segments: STFT, mel, dB per clip
//   append to the store (h5store.h)        temporary file, renamed when complete
//
// Tracks that cannot be read (missing, corrupt, too short, known bad) are
// reported with the reason and skipped; the summary counts them.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "features/datasets.h"
#include "features/params.h"

namespace timbre::tools {

struct ExtractOptions {
  std::string dataset = "fma";  // fma | gtzan | folder
  std::string audio_dir;
  std::string metadata;         // fma: tracks.csv
  std::string subset = "small"; // fma: small | medium | large
  std::string split = "official";  // fma: official | random (gtzan/folder: always random)
  std::string out;
  // Per track (and per augmented copy): 0 = every non-overlapping segment
  // (back to back from a seeded shift), N = N seeded random crops
  // (features/augment.h crop_offsets).
  int segments = 0;
  bool stretch = false;         // training tracks also time-stretched at 0.9 and 1.1
  bool pitch = false;           // training tracks also pitch-shifted by -2 and +2 semitones
  int jobs = 2;                 // decoding threads
  uint64_t seed = 0;            // random split and crops
  int batch = 64;               // segments per device batch
  bool force = false;           // replace an existing --out
  double rank_timeout = 600;    // several ranks: seconds a rank may go without finishing a
                                // track before it ends the job (a hung rank); 0: never
  long long debug_hang_track = -1;  // tests: the last rank stops (sleeps) at this track of its block
  features::FeatureParams params;
};

struct ExtractSummary {
  size_t tracks_listed = 0;     // tracks the dataset listing gave
  size_t tracks_read = 0;       // decoded and written
  std::vector<features::Skipped> skipped;  // listing skips and decode failures, with reasons
  int64_t segments[3] = {0, 0, 0};         // written per split (train, validation, test)
  std::vector<std::string> stale_removed;  // temporary files of dead extracts, deleted
  double seconds = 0;
  int64_t total_segments() const { return segments[0] + segments[1] + segments[2]; }
};

// Runs the whole extraction. Throws (std::runtime_error / invalid_argument)
// for problems with the request itself: bad options, a missing dataset, an
// existing --out without force, no track readable. Per-track problems are
// skipped and reported. The store is written to <out>.tmp-<pid> and renamed
// when complete; temporary files that earlier extracts of the same --out
// left behind (killed) are removed first when their process is gone.
// `stop` (may be null) is polled after every decoded track: when it holds a
// signal number the extraction stops, its temporary file is removed, and
// ExtractInterrupted is thrown.
ExtractSummary run_extract(const ExtractOptions& options,
                           const std::atomic<int>* stop = nullptr);

class ExtractInterrupted : public std::runtime_error {
 public:
  ExtractInterrupted(int sig, const std::string& out)
      : std::runtime_error("interrupted by signal " + std::to_string(sig) + "; " + out +
                           " was not written (its temporary file is removed)"),
        signal(sig) {}
  int signal;
};

// The closing summary as lines of text.
std::string format_summary(const ExtractSummary& s, const std::string& out);

}  // namespace timbre::tools
