// datasets.h: the dataset readers. Each one turns a dataset on disk into a
// listing: which audio file belongs to which track, its genre label and its
// split (train / validation / test), plus everything that was left out and
// why. Nothing here decodes audio; the listing is what the feature
// extraction walks through (features/audio.h decodes, features/logmel.h turns
// samples into log-mel segments, features/h5store.h stores them).
//
// Three layouts (docs/features/datasets.md has the details):
//
//   FMA      AUDIO_DIR/NNN/NNNNNN.mp3 and fma_metadata/tracks.csv. tracks.csv
//            has a two-level header (pandas MultiIndex columns): row 1 holds
//            top-level names ("track", "set", "album", ...), row 2 sub-names
//            ("genre_top", "split", "subset", ...), row 3 is "track_id" and
//            empties; fields may be quoted and hold commas and newlines. It is
//            parsed with libcsv. Used columns: (set, subset), (set, split),
//            (track, genre_top).
//   GTZAN    DIR/genres/<label>/*.wav|*.au (or DIR/<label>/ when there is no
//            genres/ folder).
//   folder   DIR/<label>/<audio files> with extensions mp3 wav flac ogg au.
//
// Labels are always sorted alphabetically (byte order) and a label's index is
// its position in that list, so the same set of genres always gets the same
// indices whatever order the files were found in.
//
// Random splits (FMA's SplitMode::random, GTZAN, folders) are 80/10/10 and
// stratified per label, drawn by `split_random` below from a seeded
// std::mt19937_64 with our own Fisher-Yates and bounded draws, so the result
// depends only on the seed and the file names, not on the C++ library or on
// directory enumeration order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace timbre::features {

enum class Split { train = 0, validation = 1, test = 2 };
// "train", "validation", "test" (the HDF5 group names).
const char* split_name(Split split);

struct Track {
  int64_t id = 0;        // FMA: track_id; GTZAN/folder: position in the sorted file list
  std::string name;      // FMA: 6-digit id "000002"; GTZAN/folder: "<label>/<file name>"
  std::string audio;     // path of the audio file
  int label = 0;         // index into DatasetListing::label_names
  Split split = Split::train;
};

// Something that was left out of the listing: the track id (FMA) or the
// file path, and the reason ("known bad: ...", "audio file missing: ...").
struct Skipped {
  std::string what;
  std::string reason;
};

struct DatasetListing {
  std::vector<Track> tracks;            // sorted by id
  std::vector<std::string> label_names; // sorted alphabetically
  std::vector<Skipped> skipped;
  std::string source;                   // one line: dataset kind and paths (stored in HDF5)

  // Tracks in one split (counting, for reports and tests).
  size_t count(Split split) const;
};

enum class SplitMode {
  official,  // FMA's own (set, split) column: training / validation / test
  random,    // seeded random 80/10/10 per label
};

struct FmaOptions {
  std::string tracks_csv;      // path of fma_metadata/tracks.csv
  std::string audio_dir;       // folder holding NNN/NNNNNN.mp3
  std::string subset = "small";  // small, medium or large (small ⊂ medium ⊂ large)
  SplitMode split = SplitMode::official;
  uint64_t seed = 0;           // for SplitMode::random
};

// FMA. Throws std::runtime_error naming the file for a missing/unreadable
// tracks.csv, a header without the needed columns or a malformed track_id,
// and std::invalid_argument for a subset name other than small/medium/large.
// Tracks of the subset without a genre_top, the known-bad fma_small tracks
// (fma_known_bad) and tracks whose audio file is missing or empty are
// reported in `skipped`, never listed.
DatasetListing list_fma(const FmaOptions& options);

// The fma_small tracks whose MP3 files are broken in the published archives
// (empty or far too short to give a single segment).
const std::vector<int64_t>& fma_known_bad();

// The audio path of an FMA track: AUDIO_DIR/NNN/NNNNNN.mp3 with the id
// zero-padded to 6 digits and its first 3 digits as the folder.
std::string fma_audio_path(const std::string& audio_dir, int64_t track_id);

// GTZAN: DIR/genres/<label>/*.wav|*.au, else DIR/<label>/. Seeded random
// stratified 80/10/10 split. Throws std::runtime_error naming the folder when
// it does not exist or holds no audio files.
DatasetListing list_gtzan(const std::string& dir, uint64_t seed = 0);

// Any folder DIR/<label>/<audio files> (mp3 wav flac ogg au, extension case
// ignored). Files with other extensions are ignored; empty audio files are
// reported in `skipped`. Same seeded split and errors as list_gtzan.
DatasetListing list_folder(const std::string& dir, uint64_t seed = 0);

// The random split used above, exposed for tests and other readers: within
// each label, tracks (taken in their current order, which callers make
// deterministic by sorting) are shuffled with the seeded generator; the first
// round(n/10) go to validation, the next round(n/10) to test, the rest to
// train (n = 10 gives 8/1/1, n = 5 gives 3/1/1, n = 1 gives 1/0/0).
// Labels are processed in increasing index order from one generator.
void split_random(std::vector<Track>& tracks, int n_labels, uint64_t seed);

}  // namespace timbre::features
