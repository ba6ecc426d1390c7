// augment.h: data augmentation for training: time stretch and pitch shift
// (librosa >= 0.10's effects.time_stretch and effects.pitch_shift, computed
// on the device), and random segment crops. Design, math and tolerances:
// docs/kernels/phase_vocoder.md.
//
// Time stretch by `rate` (> 1 faster/shorter, < 1 slower/longer), per clip:
//   1. STFT: n_fft 2048, hop 512, periodic Hann, center=True with zero
//      padding: 1 + n/512 columns (kernels/spectral.cuh's launch_frame_window,
//      then one batched R2C cuFFT over every frame of every clip).
//   2. Phase vocoder to ceil(n_cols/rate) columns (kernels/phase_vocoder.cuh):
//      magnitudes interpolated between neighbouring columns, phases advanced
//      by each bin's measured frequency.
//   3. ISTFT: a batched C2R cuFFT of every column, then one gather kernel
//      doing the windowed overlap-add, the 1/n_fft scaling, the division by
//      the window's sum of squares (where it exceeds FLT_MIN) and the
//      centre trim of n_fft/2 samples, to exactly round(n/rate) samples
//      (Python's round: halves to even, as librosa's int(round(n/rate))).
// Pitch shift by n_steps semitones (12 per octave): rate = 2^(-n_steps/12);
//   time stretch by rate, resample from sr/rate to sr with libsoxr HQ
//   (features/audio.h's resample, librosa's res_type="soxr_hq"; the one host
//   step), then cut or zero-pad at the end to the input's length. The pitch
//   moves by n_steps semitones, the duration stays.
//
// `phase` picks the phase vocoder's accumulator: librosa_float32 (the
// default) reproduces librosa, whose float32 phase sum drifts by up to
// ~1e-2 rad in the top bins over a few seconds (its rate-1 "stretch" of
// white noise is off by ~3e-3); wrapped_double is accurate (rate 1 gives
// the input back to float precision). The two differ by about -60 dB.
//
// Device buffers and the two cuFFT plans are created once per call (for all
// the clips of a batch call) and freed on return; the default stream is
// used and the call returns when the result is on the host.
//
// Errors: std::invalid_argument naming the function, the argument and the
// problem (null or empty input, rate <= 0 or not finite, sizes past 32-bit
// indexing, sr <= 0, segment longer than the track, ...).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/phase_vocoder.cuh"  // PhaseAccumulator

namespace timbre::features {

using kernels::PhaseAccumulator;

// The STFT used by the augmentations (librosa's defaults).
constexpr int kAugmentNfft = 2048;
constexpr int kAugmentHop = 512;

// Samples of time_stretch(y, n, rate): round(n / rate), halves to even.
std::size_t time_stretch_length(std::size_t n, double rate);

// librosa.effects.time_stretch(y, rate=rate) of one clip of n samples.
std::vector<float> time_stretch(const float* y, std::size_t n, double rate,
                                PhaseAccumulator phase = PhaseAccumulator::librosa_float32);

// The same for n_clips clips of n samples each, stored one after another;
// the result holds n_clips * time_stretch_length(n, rate) samples, clip by
// clip. One STFT, phase vocoder and ISTFT launch sequence for all of them.
std::vector<float> time_stretch_batch(const float* y, int n_clips, std::size_t n, double rate,
                                      PhaseAccumulator phase = PhaseAccumulator::librosa_float32);

// The stretch rate of a pitch shift: 2^(-n_steps / 12).
double pitch_shift_rate(double n_steps);

// librosa.effects.pitch_shift(y, sr=sr, n_steps=n_steps, bins_per_octave=12,
// res_type="soxr_hq") of one clip: n samples out.
std::vector<float> pitch_shift(const float* y, std::size_t n, int sr, double n_steps,
                               PhaseAccumulator phase = PhaseAccumulator::librosa_float32);

// The same for n_clips clips of n samples each: n_clips * n samples out.
std::vector<float> pitch_shift_batch(const float* y, int n_clips, std::size_t n, int sr,
                                     double n_steps,
                                     PhaseAccumulator phase = PhaseAccumulator::librosa_float32);

// Start offsets of segment_len-sample segments of a track_len-sample track,
// reproducible from `seed`:
//   count > 0: `count` segments, each start uniform in [0, track_len -
//     segment_len] independently (segments may overlap);
//   count == 0: every non-overlapping segment: k = floor(track_len /
//     segment_len) of them, back to back, starting at a shift uniform in
//     [0, track_len - k*segment_len] (so the leftover samples at the ends
//     differ from seed to seed), in increasing order.
// The generator: draw i (i = 0, 1, ...) is Philox4x32-10 (kernels/philox.cuh)
// with key `seed` and counter i; its first two words form x = w0 + 2^32 w1,
// and a value uniform in [0, m) is floor(x * m / 2^64) (bias below m/2^64).
// Draw i depends only on (seed, i): asking for more segments keeps the
// first ones. Throws when segment_len is 0 or exceeds track_len.
std::vector<std::size_t> crop_offsets(std::size_t track_len, std::size_t segment_len,
                                      std::size_t count, std::uint64_t seed);

}  // namespace timbre::features
