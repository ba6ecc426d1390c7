// params.h: every parameter of the feature pipeline, with the reference
// study's defaults (docs/tools.md, "extract"; the librosa conventions they
// follow: docs/kernels/spectral.md). The HDF5 store
// writes each field as a file attribute and refuses a file whose fields
// differ from a request; checkpoints keep them so `predict` computes the
// same features the model was trained on.
#pragma once

#include <string>

namespace timbre::features {

struct FeatureParams {
  int sample_rate = 22050;  // Hz, after resampling
  int n_fft = 2048;         // FFT size = frame length (periodic Hann window)
  int hop = 512;            // samples between frames; center=True, zero padding
  int n_mels = 128;         // Slaney mel scale, Slaney area normalisation
  double fmin = 0.0;        // Hz
  double fmax = 11025.0;    // Hz (sr / 2)
  int frames = 128;         // frames per segment: a segment is n_mels x frames
  double top_db = 80.0;     // dB floor below each clip's own maximum
  int n_mfcc = 0;           // 0: log-mel only; else MFCC coefficients (DCT-II, ortho)

  int bins() const { return n_fft / 2 + 1; }
  // Samples in one segment: with center=True a clip of (frames-1)*hop
  // samples gives exactly `frames` frames (65,024 samples by default).
  long long segment_samples() const { return static_cast<long long>(frames - 1) * hop; }
  // Throws std::invalid_argument naming the first field out of range.
  void validate() const;
  // "n_fft=2048 hop=512 ..." for messages.
  std::string str() const;
};

}  // namespace timbre::features
