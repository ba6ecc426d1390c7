// augment.cpp: time stretch and pitch shift on the device, segment crops.
// The math and the launch sequence are in augment.h and
// docs/kernels/phase_vocoder.md; this file allocates, plans and launches.
#include "features/augment.h"

#include <cufft.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "features/audio.h"
#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "kernels/phase_vocoder.cuh"
#include "kernels/philox.cuh"
#include "kernels/spectral.cuh"

namespace timbre::features {

namespace {

[[noreturn]] void bad(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

constexpr long long kMaxIndex = 1LL << 31;  // the kernels index with 32 bits

// A cuFFT plan that is destroyed with its scope (also when a later step throws).
class FftPlan {
 public:
  FftPlan(int n, cufftType type, long long batch) {
    int dims[1] = {n};
    const int bins = n / 2 + 1;
    // Row-major batches: real rows of n floats, complex rows of n/2 + 1.
    int real_embed[1] = {n}, complex_embed[1] = {bins};
    const bool r2c = type == CUFFT_R2C;
    CUFFT_CHECK(cufftPlanMany(&plan_, 1, dims, r2c ? real_embed : complex_embed, 1,
                              r2c ? n : bins, r2c ? complex_embed : real_embed, 1,
                              r2c ? bins : n, type, int(batch)));
  }
  ~FftPlan() { cufftDestroy(plan_); }
  FftPlan(const FftPlan&) = delete;
  FftPlan& operator=(const FftPlan&) = delete;
  cufftHandle get() const { return plan_; }

 private:
  cufftHandle plan_ = 0;
};

void check_clips(const char* fn, const float* y, int n_clips, std::size_t n) {
  if (n_clips < 1) bad(fn, "n_clips must be >= 1, not " + std::to_string(n_clips));
  if (n == 0) bad(fn, "the input is empty (n = 0)");
  if (y == nullptr) bad(fn, "y is null");
}

void check_rate(const char* fn, double rate) {
  if (!(rate > 0) || !std::isfinite(rate))
    bad(fn, "rate must be a finite number > 0, not " + std::to_string(rate));
}

}  // namespace

std::size_t time_stretch_length(std::size_t n, double rate) {
  check_rate("time_stretch_length", rate);
  // Python's round(): to nearest, halves to even (the default FP rounding mode).
  const double len = std::nearbyint(double(n) / rate);
  if (len >= double(kMaxIndex))
    bad("time_stretch_length", "rate " + std::to_string(rate) + " stretches " +
                                   std::to_string(n) + " samples past 2^31");
  return std::size_t(len);
}

std::vector<float> time_stretch_batch(const float* y, int n_clips, std::size_t n, double rate,
                                      PhaseAccumulator phase) {
  const char* fn = "time_stretch";
  check_clips(fn, y, n_clips, n);
  check_rate(fn, rate);
  const int n_fft = kAugmentNfft, hop = kAugmentHop, n_bins = n_fft / 2 + 1;
  const long long n_cols = kernels::stft_frames((long long)n, hop);
  if ((long long)n_clips * n_cols * n_fft >= kMaxIndex || (long long)n_clips * (long long)n >= kMaxIndex)
    bad(fn, std::to_string(n_clips) + " clips of " + std::to_string(n) +
                " samples exceed 32-bit indexing: split the batch");
  const int n_out = kernels::phase_vocoder_steps(int(n_cols), rate);
  const long long out_len = (long long)time_stretch_length(n, rate);
  if ((long long)n_clips * n_out * n_fft >= kMaxIndex || (long long)n_clips * out_len >= kMaxIndex)
    bad(fn, "rate " + std::to_string(rate) + " on " + std::to_string(n_clips) + " clips of " +
                std::to_string(n) + " samples exceeds 32-bit indexing: split the batch");
  const cudaStream_t stream = 0;

  std::vector<float> window(static_cast<std::size_t>(n_fft));
  kernels::hann_window(n_fft, window.data());
  DeviceBuffer<float> d_window(window);
  DeviceBuffer<float> d_y(std::size_t(n_clips) * n);
  d_y.copy_from_host(y, d_y.size());

  // 1. STFT: frames times the window, one batched R2C over every frame.
  DeviceBuffer<float2> d_spec(std::size_t(n_clips) * std::size_t(n_cols) * n_bins);
  {
    DeviceBuffer<float> d_frames(std::size_t(n_clips) * std::size_t(n_cols) * n_fft);
    kernels::launch_frame_window(d_y.get(), (long long)n, n_clips, (long long)n, d_window.get(),
                                 n_fft, hop, d_frames.get(), stream);
    FftPlan r2c(n_fft, CUFFT_R2C, n_clips * n_cols);
    CUFFT_CHECK(cufftSetStream(r2c.get(), stream));
    CUFFT_CHECK(cufftExecR2C(r2c.get(), d_frames.get(), reinterpret_cast<cufftComplex*>(d_spec.get())));
  }

  // 2. Phase vocoder: n_out columns per clip.
  DeviceBuffer<float2> d_stretch(std::size_t(n_clips) * n_out * n_bins);
  kernels::phase_vocoder(d_spec.get(), d_stretch.get(), n_clips, int(n_cols), n_bins, rate, hop,
                         stream, 128, phase);

  // 3. ISTFT. librosa keeps only the first min(n_out, ceil((out_len +
  // n_fft)/hop)) columns; a column f past that starts at f*hop >= out_len +
  // n_fft, i.e. at output sample >= out_len + n_fft/2, so it touches neither
  // the output nor the window sums under it: inverting all n_out columns
  // gives the same samples and keeps the clips' columns evenly strided.
  DeviceBuffer<float> d_time(std::size_t(n_clips) * n_out * n_fft);
  {
    FftPlan c2r(n_fft, CUFFT_C2R, (long long)n_clips * n_out);
    CUFFT_CHECK(cufftSetStream(c2r.get(), stream));
    CUFFT_CHECK(cufftExecC2R(c2r.get(), reinterpret_cast<cufftComplex*>(d_stretch.get()),
                             d_time.get()));
  }
  DeviceBuffer<float> d_wss(std::size_t(kernels::wss_length(n_fft, hop, n_out)));
  kernels::window_sumsquare(d_window.get(), d_wss.get(), n_fft, hop, n_out, stream);
  DeviceBuffer<float> d_out(std::size_t(n_clips) * std::size_t(out_len));
  // cuFFT's C2R is unnormalised: scale 1/n_fft (exact, a power of two).
  kernels::overlap_add({d_time.get(), d_window.get(), d_wss.get(), d_out.get()},
                       {n_clips, n_out, n_fft, hop, n_fft / 2, out_len}, 1.f / float(n_fft),
                       stream);
  return d_out.to_host();
}

std::vector<float> time_stretch(const float* y, std::size_t n, double rate,
                                PhaseAccumulator phase) {
  return time_stretch_batch(y, 1, n, rate, phase);
}

double pitch_shift_rate(double n_steps) {
  if (!std::isfinite(n_steps))
    bad("pitch_shift", "n_steps must be finite, not " + std::to_string(n_steps));
  return std::pow(2.0, -n_steps / 12.0);
}

std::vector<float> pitch_shift_batch(const float* y, int n_clips, std::size_t n, int sr,
                                     double n_steps, PhaseAccumulator phase) {
  const char* fn = "pitch_shift";
  check_clips(fn, y, n_clips, n);
  if (sr <= 0) bad(fn, "sr must be > 0, not " + std::to_string(sr));
  const double rate = pitch_shift_rate(n_steps);
  const std::vector<float> stretched = time_stretch_batch(y, n_clips, n, rate, phase);
  const std::size_t len = time_stretch_length(n, rate);
  std::vector<float> out(std::size_t(n_clips) * n, 0.f);
  for (int c = 0; c < n_clips; ++c) {
    // From sr/rate to sr: a clip stretched to n/rate samples comes back to ~n
    // samples at the original speed, its pitch scaled by 1/rate.
    const std::vector<float> r =
        resample(stretched.data() + std::size_t(c) * len, len, double(sr) / rate, double(sr));
    // librosa.util.fix_length: cut or zero-pad at the end to n.
    std::copy_n(r.begin(), std::min(r.size(), n), out.begin() + std::ptrdiff_t(std::size_t(c) * n));
  }
  return out;
}

std::vector<float> pitch_shift(const float* y, std::size_t n, int sr, double n_steps,
                               PhaseAccumulator phase) {
  return pitch_shift_batch(y, 1, n, sr, n_steps, phase);
}

namespace {

// Draw i of the crop generator, uniform in [0, m) (see augment.h).
std::size_t uniform_below(std::uint64_t seed, std::uint64_t i, std::uint64_t m) {
  const kernels::PhiloxWords w = kernels::philox(seed, i);
  const std::uint64_t x = std::uint64_t(w.w[0]) | (std::uint64_t(w.w[1]) << 32);
  return std::size_t((unsigned __int128)x * m >> 64);
}

}  // namespace

std::vector<std::size_t> crop_offsets(std::size_t track_len, std::size_t segment_len,
                                      std::size_t count, std::uint64_t seed) {
  const char* fn = "crop_offsets";
  if (segment_len == 0) bad(fn, "segment_len must be >= 1");
  if (segment_len > track_len)
    bad(fn, "segment_len " + std::to_string(segment_len) + " exceeds track_len " +
                std::to_string(track_len));
  std::vector<std::size_t> starts;
  if (count > 0) {
    const std::uint64_t choices = std::uint64_t(track_len - segment_len) + 1;
    starts.reserve(count);
    for (std::size_t i = 0; i < count; ++i) starts.push_back(uniform_below(seed, i, choices));
  } else {
    const std::size_t k = track_len / segment_len;
    const std::size_t shift = uniform_below(seed, 0, std::uint64_t(track_len - k * segment_len) + 1);
    starts.reserve(k);
    for (std::size_t i = 0; i < k; ++i) starts.push_back(shift + i * segment_len);
  }
  return starts;
}

}  // namespace timbre::features
