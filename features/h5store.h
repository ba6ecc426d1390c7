// h5store.h: the HDF5 feature store: log-mel segments, their labels and
// where they came from, written once by feature extraction and read many
// times, in random order, by training.
//
// Layout (format_version 1; h5py reads it as-is, docs/features/datasets.md
// has the full table). R = rows per segment = n_mels (n_mfcc when > 0),
// F = frames:
//
//   /train, /validation, /test          groups, always all three
//     x              float32 (N, R, F)  chunked one sample per chunk, maxdims (unlimited, R, F)
//     y              int32   (N,)       label index into label_names
//     track_id       int64   (N,)       dataset track id (FMA track_id)
//     segment_start  int64   (N,)       first sample of the segment in the decoded track
//   root attributes
//     sample_rate n_fft hop n_mels frames n_mfcc   int32 scalars (FeatureParams fields)
//     fmin fmax top_db                              float64 scalars
//     label_names      string array (variable-length UTF-8 when we write; fixed accepted)
//     band_mean, band_std  float32 (R,): per-row mean and population standard deviation
//                      of x over the TRAINING split only (all samples and frames)
//     source           string: dataset kind and paths
//     timbre_version   string
//     format_version   int32 scalar (1)
//
// One sample per chunk makes a random read touch exactly one chunk, which is
// what shuffled training batches do; the 1-D datasets, always read whole,
// are chunked by 1024 elements (4-8 KB).
//
// The statistics are accumulated while writing, in double: each appended
// batch gives, per row, its count, mean and sum of squared deviations from
// that mean (two passes over the batch), merged into the running totals with
// Chan et al.'s pairwise update
//     delta = mean_b - mean_a
//     mean  = mean_a + delta * n_b / n
//     M2    = M2_a + M2_b + delta^2 * n_a * n_b / n
// so no E[x^2] - E[x]^2 cancellation, and std = sqrt(M2 / n).
//
// Atomic writes: FeatureWriter writes `path + ".tmp-<pid>"`; finish() adds
// the statistics, closes, fsyncs the file, renames it onto `path` and fsyncs
// the folder. A writer destroyed before finish() (an exception, Ctrl-C
// unwinding) removes its temporary file, so an existing `path` is never
// replaced by a partial file.
//
// Threads: HDF5 serial (Debian's libhdf5 1.10) is not thread-safe. A
// FeatureWriter or FeatureStore must be used by one thread at a time; each
// object holds a mutex that serialises its own calls, but two different
// objects used from two threads at once are NOT safe (HDF5's global state is
// shared), so a background prefetcher must own all HDF5 access itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "features/datasets.h"
#include "features/params.h"

namespace timbre::features {

// The store's format version, written as the format_version attribute.
inline constexpr int kFeatureFormatVersion = 1;
// timbre's version string, written as the timbre_version attribute (one place).
const char* timbre_version();

class FeatureWriter {
 public:
  // Creates `path + ".tmp-<pid>"` with the three groups and empty datasets.
  // Throws std::runtime_error naming the file when it cannot be created,
  // std::invalid_argument when params give no rows/frames or label_names is empty.
  FeatureWriter(std::string path, const FeatureParams& params,
                std::vector<std::string> label_names, std::string source);
  ~FeatureWriter();  // removes the temporary file unless finish() ran
  FeatureWriter(const FeatureWriter&) = delete;
  FeatureWriter& operator=(const FeatureWriter&) = delete;

  // Appends `count` samples to `split`: x is count*R*F floats (sample-major,
  // then row, then frame), y/track_id/segment_start count values each. Throws
  // std::invalid_argument for a label outside label_names, a non-finite x
  // value or a negative segment_start (nothing of that batch is written).
  void append(Split split, int64_t count, const float* x, const int32_t* y,
              const int64_t* track_id, const int64_t* segment_start);

  // Writes band_mean/band_std, closes, fsyncs and renames onto the final
  // path. Throws std::runtime_error when the training split is empty (the
  // statistics would be undefined) or a file operation fails; the writer is
  // then unusable and its destructor removes the temporary file.
  void finish();

  int64_t size(Split split) const;
  const std::string& temp_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class FeatureStore {
 public:
  // Opens and validates a store: every group and dataset present with the
  // right dtype and rank, x of shape (N, R, F) matching the params, y,
  // track_id and segment_start of length N, every label in range, all
  // attributes present. Throws std::runtime_error naming the file and what
  // is wrong.
  static FeatureStore open(const std::string& path);
  FeatureStore(FeatureStore&&) noexcept;
  FeatureStore& operator=(FeatureStore&&) noexcept;
  ~FeatureStore();

  const std::string& path() const;
  const FeatureParams& params() const;
  int rows() const;    // R: n_mels, or n_mfcc when > 0
  int frames() const;  // F
  const std::vector<std::string>& label_names() const;
  const std::vector<float>& band_mean() const;
  const std::vector<float>& band_std() const;
  const std::string& source() const;
  const std::string& version() const;  // the timbre_version attribute
  int format_version() const;
  int64_t size(Split split) const;

  // Throws std::runtime_error when any FeatureParams field differs from the
  // request, naming each differing field with the file's and the requested value.
  void check_params(const FeatureParams& requested) const;

  // Reads samples indices[0..n) of `split` into out (n*R*F floats, in the
  // order given: random access for shuffled batches). Throws
  // std::out_of_range naming the index when one is outside [0, size).
  void read_x(Split split, const int64_t* indices, size_t n, float* out) const;
  std::vector<int32_t> read_y(Split split) const;
  std::vector<int64_t> read_track_id(Split split) const;
  std::vector<int64_t> read_segment_start(Split split) const;

 private:
  FeatureStore();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace timbre::features
