// tiny_data.h: the tools tests' tiny feature setting and tone dataset.
// 16 mel bands x 16 frames at 8 kHz keep an extraction, and a training run
// on it, to a second or so.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "features/params.h"
#include "tests/features/synth_audio.h"

namespace timbre::testing {

// sample rate 8 kHz, n_fft 256, hop 128, 16 mel bands up to 4 kHz, 16
// frames: segments of 15 x 128 = 1920 samples.
inline features::FeatureParams tiny_params() {
  features::FeatureParams p;
  p.sample_rate = 8000;
  p.n_fft = 256;
  p.hop = 128;
  p.n_mels = 16;
  p.fmax = 4000;
  p.frames = 16;
  return p;
}

// The same setting as `timbre extract` flags.
inline std::string tiny_feature_flags() {
  return " --sample-rate 8000 --n-fft 256 --hop 128 --n-mels 16 --fmax 4000 --frames 16";
}

// A folder dataset of three labels under `audio`, `clips` WAVs of 1 s at
// 8 kHz each (4 segments): "low" and "high" are sines whose frequency
// steps with the clip, "noise" is white noise.
inline void write_three_label_audio(const std::string& audio, int clips) {
  const size_t n = 8000;
  for (const char* label : {"low", "high", "noise"})
    std::filesystem::create_directories(audio + "/" + label);
  for (int k = 0; k < clips; ++k) {
    const std::string name = "/" + std::to_string(k) + ".wav";
    synth::write_wav(audio + "/low" + name, synth::sine(n, 150.0 + 10 * k, 8000), 1, 8000,
                     synth::WavFormat::Float);
    synth::write_wav(audio + "/high" + name, synth::sine(n, 2500.0 + 40 * k, 8000), 1, 8000,
                     synth::WavFormat::Float);
    synth::write_wav(audio + "/noise" + name, synth::noise(n, uint32_t(k + 1)), 1, 8000,
                     synth::WavFormat::Float);
  }
}

}  // namespace timbre::testing
