// audio.h: decoding and resampling on the host (libmpg123 for MP3,
// libsndfile for WAV/FLAC/OGG/AU, libsoxr "HQ" for resampling, librosa's
// default). Design and the result for every bad input: docs/features/decoding.md.
#pragma once

#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace timbre::features {

// A file that cannot give the audio asked for. what() is
// "<path>: <reason>"; path() and reason() give the parts.
class AudioError : public std::runtime_error {
 public:
  AudioError(std::string path, std::string reason);
  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_, reason_;
};

struct DecodedAudio {
  std::vector<float> samples;  // mono (channel average), at sample_rate
  int sample_rate = 0;
  int source_rate = 0;       // the file's own rate
  int source_channels = 0;   // the file's own channel count
};

// Decodes `path`, averages its channels and resamples to target_rate.
// Throws AudioError when the file is empty, not audio, truncated or corrupt,
// holds no audio, holds non-finite samples, or gives fewer than min_samples
// samples at target_rate. The decoder is chosen by the file's first bytes
// (then its extension); the reason texts and the corrupt-MP3 policy are in
// docs/features/decoding.md. Thread-safe: decode_all calls it from its
// workers. target_rate <= 0: std::invalid_argument.
DecodedAudio load_audio(const std::string& path, int target_rate = 22050,
                        std::size_t min_samples = 0);

// Band-limited resampling with libsoxr at its HQ recipe (librosa's
// res_type="soxr_hq"). The output has round(n * out_rate / in_rate) samples
// (python-soxr's length; librosa pads to the ceiling with a zero) and is
// bit-identical to python-soxr's for float32 input. Equal rates: a copy.
// Non-positive or non-finite rates: std::invalid_argument.
std::vector<float> resample(const float* x, std::size_t n, double in_rate, double out_rate);

// Decodes `paths` on `jobs` threads and hands each result to `on_result` on
// the calling thread, in the order of `paths`, with at most a few files per
// thread in flight (memory stays bounded for any number of files). error is
// empty on success; otherwise audio is empty and error is the AudioError's
// reason (or the exception's message).
//
// Precisely: min(jobs, paths.size()) threads; a file is claimed only while
// its index is below (next index to deliver) + 2 * threads, so at most two
// files per thread are decoded or waiting at any time. An exception from
// on_result stops the workers, joins them and propagates. jobs < 1 or an
// empty on_result: std::invalid_argument.
struct DecodeResult {
  std::size_t index = 0;
  DecodedAudio audio;
  std::string error;
};
void decode_all(const std::vector<std::string>& paths, int target_rate, std::size_t min_samples,
                int jobs, const std::function<void(DecodeResult&&)>& on_result);

}  // namespace timbre::features
