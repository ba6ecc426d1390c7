// Augmentation (features/augment.h) against librosa and against itself:
//   * time_stretch at rates 0.9 and 1.1 and pitch_shift at -2 and +2
//     semitones against librosa 0.11's results on the same 1.5 s signal
//     (tests/fixtures/make_augment_fixtures.py): lengths exactly equal,
//     sample values within a stated tolerance, and a spectral measure;
//   * the phase vocoder kernel alone against librosa.phase_vocoder on a
//     random spectrum;
//   * rate 1 reconstructs the input to float precision away from the edges;
//   * a batch call equals per-clip calls; lengths for awkward n and rates;
//   * crops: reproducible, in range, the documented generator's properties;
//   * argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "features/augment.h"
#include "kernels/device_buffer.h"
#include "kernels/phase_vocoder.cuh"
#include "kernels/philox.cuh"
#include "tests/fixtures/npy.h"
#include "tests/testing.h"

namespace {

namespace f = timbre::features;
using timbre::testing::all_close;
using timbre::testing::load_npy;
using timbre::testing::random_floats;
using timbre::testing::Tolerance;

std::string fixture(const std::string& name) {
  return timbre::testing::fixtures_dir() + "/augment/" + name;
}

std::vector<float> load(const std::string& name) { return load_npy(fixture(name)).as<float>(); }

constexpr int kSr = 22050;

double peak(const std::vector<float>& v) { return timbre::testing::max_abs(v); }

// Errors of `got` against `ref`: worst absolute error relative to the
// reference's peak, and the signal-to-error ratio in dB.
struct Mismatch {
  double worst_rel_peak, snr_db;
};
Mismatch signal_error(const std::vector<float>& got, const std::vector<float>& ref, size_t from = 0,
                  size_t to = SIZE_MAX) {
  to = std::min(to, ref.size());
  double worst = 0, e2 = 0, r2 = 0;
  for (size_t i = from; i < to; ++i) {
    const double d = double(got[i]) - double(ref[i]);
    worst = std::max(worst, std::fabs(d));
    e2 += d * d;
    r2 += double(ref[i]) * double(ref[i]);
  }
  return {worst / peak(ref), 10 * std::log10(r2 / std::max(e2, 1e-300))};
}

// Magnitude spectrogram (frames of 1024, hop 256, periodic Hann), by a
// plain DFT in double: the spectral measure, insensitive to small phase
// differences. Bins up to 256 (5.5 kHz, where the test signal lives).
std::vector<double> magnitudes(const std::vector<float>& x) {
  const int n = 1024, hop = 256, bins = 257;
  std::vector<double> w(n), out;
  for (int k = 0; k < n; ++k) w[size_t(k)] = 0.5 - 0.5 * std::cos(2 * M_PI * k / n);
  std::vector<std::complex<double>> tw(n);
  for (int k = 0; k < n; ++k) tw[size_t(k)] = std::polar(1.0, -2 * M_PI * k / n);
  for (size_t s = 0; s + n <= x.size(); s += hop)
    for (int b = 0; b < bins; ++b) {
      std::complex<double> acc = 0;
      for (int k = 0; k < n; ++k) acc += w[size_t(k)] * double(x[s + size_t(k)]) * tw[size_t((b * k) % n)];
      out.push_back(std::abs(acc));
    }
  return out;
}

// || |S_got| - |S_ref| ||_F / || |S_ref| ||_F.
double spectral_error(const std::vector<float>& got, const std::vector<float>& ref) {
  const auto a = magnitudes(got), b = magnitudes(ref);
  double e2 = 0, r2 = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    e2 += (a[i] - b[i]) * (a[i] - b[i]);
    r2 += b[i] * b[i];
  }
  return std::sqrt(e2 / r2);
}

// ---------------------------------------------------------------------------
// Against librosa.

struct Golden {
  const char* file;
  bool pitch;     // pitch_shift (n_steps) or time_stretch (rate)
  double param;
};

class AgainstLibrosa : public ::testing::TestWithParam<Golden> {};

TEST_P(AgainstLibrosa, MatchesFixture) {
  const Golden g = GetParam();
  const std::vector<float> y = load("signal.npy");
  ASSERT_EQ(y.size(), 33075u);
  const std::vector<float> ref = load(g.file);
  const std::vector<float> got = g.pitch ? f::pitch_shift(y.data(), y.size(), kSr, g.param)
                                         : f::time_stretch(y.data(), y.size(), g.param);
  // Lengths: exactly librosa's.
  ASSERT_EQ(got.size(), ref.size());
  if (!g.pitch) {
    EXPECT_EQ(f::time_stretch_length(y.size(), g.param), ref.size());
  }
  const Mismatch m = signal_error(got, ref);
  const double spec = spectral_error(got, ref);
  std::printf("  %s: worst |diff| %.3g of peak %.3g, SNR %.1f dB, spectral error %.3g\n", g.file,
              m.worst_rel_peak, peak(ref), m.snr_db, spec);
  // Sample values. Tolerance atol = 2e-3 * peak, why: librosa's STFT runs
  // in float64 (numpy) and ours in float32 (cuFFT): ~1e-7 relative
  // differences in each bin's value become angle differences of 1e-7/|D|,
  // large in quiet bins, and the phase vocoder sums them over the columns;
  // its float32 phase accumulator (both sides) grows to ~1e5 rad at high
  // bins, where one ulp is ~0.008 rad, so a single different rounding moves
  // that bin's output by ~0.8% of its magnitude for the rest of the clip.
  // The resampler of pitch_shift (Debian's libsoxr vs python-soxr's bundled
  // copy, both 0.1.3 HQ) adds float32 filter rounding. The measured worst
  // is printed above (a few 1e-4 of the peak); an error in the algorithm (a
  // column off by one, a wrong phase advance, a missing normalisation or
  // trim) gives differences of the order of the peak.
  EXPECT_TRUE(all_close(got, ref, {2e-3 * peak(ref), 0}));
  // And the spectral measure, which small phase differences do not move:
  // magnitude spectrogram within 1e-3 (relative Frobenius) of librosa's
  // (measured: up to 1.3e-4). For scale, on this signal a 1% gain error
  // gives 1e-2 and a one-sample delay 1.7e-3.
  EXPECT_LT(spec, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, AgainstLibrosa,
                         ::testing::Values(Golden{"time_stretch_0.9.npy", false, 0.9},
                                           Golden{"time_stretch_1.1.npy", false, 1.1},
                                           Golden{"pitch_shift_-2.npy", true, -2.0},
                                           Golden{"pitch_shift_+2.npy", true, 2.0}));

// The phase vocoder kernel against librosa.phase_vocoder itself (33 bins,
// 19 columns of random complex64, hop 5): evidence that the kernel's recipe
// (and its CPU reference's, which kernels/test_phase_vocoder checks it
// against) is librosa's, independent of any STFT or resampler.
TEST(PhaseVocoder, MatchesLibrosa) {
  const auto in = load_npy(fixture("pv_input.npy"));
  ASSERT_EQ(in.shape, (std::vector<int64_t>{19, 33, 2}));
  const std::vector<float> d = in.as<float>();
  const int cols = 19, bins = 33, hop = 5;
  timbre::DeviceBuffer<float2> d_spec(size_t(cols) * bins);
  d_spec.copy_from_host(reinterpret_cast<const float2*>(d.data()), d_spec.size());
  for (double rate : {0.7, 1.3}) {
    const auto ref_npy = load_npy(fixture(rate < 1 ? "pv_rate_0.7.npy" : "pv_rate_1.3.npy"));
    std::vector<float> ref = ref_npy.as<float>();
    const int n_out = timbre::kernels::phase_vocoder_steps(cols, rate);
    ASSERT_EQ(ref_npy.shape[0], n_out);  // numpy.arange(0, 19, rate) columns
    timbre::DeviceBuffer<float2> d_out(size_t(n_out) * bins);
    timbre::kernels::phase_vocoder(d_spec.get(), d_out.get(), 1, cols, bins, rate, hop, 0);
    std::vector<float2> got2 = d_out.to_host();
    const std::vector<float> got(reinterpret_cast<const float*>(got2.data()),
                                 reinterpret_cast<const float*>(got2.data()) + 2 * got2.size());
    // The kernel writes DC and Nyquist real (the C2R transform's input).
    for (int t = 0; t < n_out; ++t)
      for (int k : {0, bins - 1}) ref[(size_t(t) * bins + size_t(k)) * 2 + 1] = 0.f;
    // Same dtypes step by step; what differs is the float32 math library
    // (numpy's SIMD arctan2/hypot, numba's cos/sin vs glibc or CUDA): an ulp
    // in an angle becomes an ulp of the accumulated phase (|phi| < 300 rad
    // here, ulp 3e-5) and can flip later roundings: |diff| <= |S| (< 1.5)
    // times a few such ulps: atol 1e-4. A wrong column, weight or phase
    // advance is off by O(|S|) (measured: printed).
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - ref[i])));
    std::printf("  librosa.phase_vocoder rate %.1f: worst |diff| %.3g\n", rate, worst);
    EXPECT_TRUE(all_close(got, ref, {1e-4, 0})) << "rate " << rate;
  }
}

// ---------------------------------------------------------------------------
// Identity: at rate 1 the phase vocoder returns the STFT and the ISTFT
// inverts it (each sample is under up to four Hann frames at hop n_fft/4,
// and the window sum-square divides out). With the accurate (wrapped
// double) phase accumulator this holds to float precision.
TEST(TimeStretch, RateOneReconstructsInput) {
  const std::vector<float> y = random_floats(20000 + 77, 3);
  const std::vector<float> z =
      f::time_stretch(y.data(), y.size(), 1.0, f::PhaseAccumulator::wrapped_double);
  ASSERT_EQ(z.size(), y.size());
  // Away from the edges (the first and last n_fft samples, where the zero
  // padding and the partial window sums lie). Tolerance: float32 FFTs of
  // 2048 points forward and back (error ~ log2(2048) u = 7e-7 of the
  // frame's rms, |y| <= 1), the float32 phase and cos/sin (a few u), the
  // four-term overlap-add and the division: atol 1e-5 on inputs in [-1, 1].
  // A wrong scale, shift or normalisation is off by O(1).
  const size_t edge = 2048;
  const std::vector<float> mid_z(z.begin() + edge, z.end() - edge),
      mid_y(y.begin() + edge, y.end() - edge);
  const Mismatch m = signal_error(mid_z, mid_y);
  std::printf("  rate 1, wrapped_double: worst |diff| %.3g (inputs in [-1, 1]), SNR %.1f dB\n",
              m.worst_rel_peak * peak(mid_y), m.snr_db);
  EXPECT_TRUE(all_close(mid_z, mid_y, {1e-5, 0}));
  // The edges too: every output sample still lies under at least two
  // frames whose window sum-square is >= 0.25 (the last sample: taps
  // 1023 + n%512 and 512 more), far above FLT_MIN, so the division
  // restores it; same tolerance (measured 7e-7 over the whole clip).
  EXPECT_TRUE(all_close(z, y, {1e-5, 0}));
}

// librosa's own rate-1 stretch is not the identity (its float32 phase
// accumulator drifts: ~1e-3 of the peak on the test signal); the default
// mode reproduces that drift, sample for sample.
TEST(TimeStretch, RateOneMatchesLibrosasDrift) {
  const std::vector<float> y = load("signal.npy");
  const std::vector<float> ref = load("time_stretch_1.0.npy");
  const std::vector<float> z = f::time_stretch(y.data(), y.size(), 1.0);
  ASSERT_EQ(z.size(), ref.size());
  const Mismatch vs_librosa = signal_error(z, ref), vs_input = signal_error(z, y, 2048, y.size() - 2048);
  std::printf("  rate 1, librosa_float32: worst |diff| %.3g of peak vs librosa, %.3g vs the input\n",
              vs_librosa.worst_rel_peak, vs_input.worst_rel_peak);
  // Same tolerance and reasons as the other fixtures (AgainstLibrosa).
  EXPECT_TRUE(all_close(z, ref, {2e-3 * peak(ref), 0}));
  // The drift is real: farther from the input than from librosa.
  EXPECT_LT(vs_librosa.worst_rel_peak, vs_input.worst_rel_peak);
}

// A batch call gives each clip what a per-clip call gives.
TEST(TimeStretch, BatchEqualsPerClip) {
  const size_t n = 9001;
  const int clips = 3;
  const std::vector<float> y = random_floats(n * clips, 11);
  for (double rate : {0.9, 1.3}) {
    const std::vector<float> all = f::time_stretch_batch(y.data(), clips, n, rate);
    const size_t len = f::time_stretch_length(n, rate);
    ASSERT_EQ(all.size(), clips * len);
    for (int c = 0; c < clips; ++c) {
      const std::vector<float> one = f::time_stretch(y.data() + c * n, n, rate);
      std::vector<float> part(all.begin() + c * len, all.begin() + (c + 1) * len);
      // The same kernels on the same values; only the FFT library's batch
      // plan may differ (FFTW/cuFFT pick algorithms per batch size): a few
      // ulps of the frame energy.
      EXPECT_TRUE(all_close(part, one, {1e-5, 1e-5})) << "clip " << c << ", rate " << rate;
    }
    const std::vector<float> shifted = f::pitch_shift_batch(y.data(), clips, n, kSr, 1.5);
    ASSERT_EQ(shifted.size(), clips * n);
    const std::vector<float> one = f::pitch_shift(y.data() + n, n, kSr, 1.5);
    EXPECT_TRUE(all_close(std::vector<float>(shifted.begin() + n, shifted.begin() + 2 * n), one,
                          {1e-5, 1e-5}));
  }
}

// Lengths: round(n / rate) with halves to even; short inputs; any rate.
TEST(TimeStretch, Lengths) {
  EXPECT_EQ(f::time_stretch_length(33075, 0.9), 36750u);
  EXPECT_EQ(f::time_stretch_length(33075, 1.1), 30068u);  // 30068.18
  EXPECT_EQ(f::time_stretch_length(5, 2.0), 2u);          // 2.5 -> 2 (even)
  EXPECT_EQ(f::time_stretch_length(7, 2.0), 4u);          // 3.5 -> 4 (even)
  for (size_t n : {1, 100, 511, 512, 513, 3000})
    for (double rate : {0.5, 0.9, 1.0, 1.7, 4.0}) {
      const std::vector<float> y = random_floats(n, n + 1);
      EXPECT_EQ(f::time_stretch(y.data(), n, rate).size(), f::time_stretch_length(n, rate))
          << n << " " << rate;
      EXPECT_EQ(f::pitch_shift(y.data(), n, kSr, -3.0).size(), n);
    }
  EXPECT_DOUBLE_EQ(f::pitch_shift_rate(12.0), 0.5);
  EXPECT_DOUBLE_EQ(f::pitch_shift_rate(-12.0), 2.0);
}

// ---------------------------------------------------------------------------
// Crops.

TEST(Crops, ReproducibleAndInRange) {
  const size_t track = 661500, seg = 65024;  // 30 s, one segment of 128 frames
  const auto a = f::crop_offsets(track, seg, 50, 42);
  const auto b = f::crop_offsets(track, seg, 50, 42);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 50u);
  for (size_t s : a) EXPECT_LE(s + seg, track);
  EXPECT_NE(a, f::crop_offsets(track, seg, 50, 43));
  // Draw i depends only on (seed, i): more segments keep the first ones.
  const auto more = f::crop_offsets(track, seg, 80, 42);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), more.begin()));
  // Spread: 2000 draws over [0, 596476] fill every tenth of the range.
  std::set<size_t> deciles;
  for (size_t s : f::crop_offsets(track, seg, 2000, 7)) deciles.insert(s * 10 / (track - seg + 1));
  EXPECT_EQ(deciles.size(), 10u);
  // The documented generator by hand: draw i is Philox4x32-10 of counter i
  // under key 42, x = w0 + 2^32 w1, start = floor(x * m / 2^64) with m =
  // track - seg + 1 (test_philox pins Philox itself to Random123's vectors).
  const uint64_t m = track - seg + 1;
  for (uint64_t i : {0, 1, 49}) {
    const timbre::kernels::PhiloxWords w = timbre::kernels::philox(42, i);
    const uint64_t x = uint64_t(w.w[0]) | (uint64_t(w.w[1]) << 32);
    EXPECT_EQ(a[i], size_t((unsigned __int128)x * m >> 64)) << "draw " << i;
  }
  EXPECT_EQ(f::crop_offsets(seg, seg, 3, 5), (std::vector<size_t>{0, 0, 0}));  // m = 1
}

TEST(Crops, AllNonOverlapping) {
  const size_t track = 661500, seg = 65024;  // 10 segments, 11260 samples left over
  std::set<size_t> shifts;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto s = f::crop_offsets(track, seg, 0, seed);
    ASSERT_EQ(s.size(), 10u);
    for (size_t i = 0; i < s.size(); ++i) {
      if (i > 0) {
        EXPECT_EQ(s[i], s[i - 1] + seg);  // back to back
      }
      EXPECT_LE(s[i] + seg, track);
    }
    EXPECT_EQ(s, f::crop_offsets(track, seg, 0, seed));
    shifts.insert(s[0]);
  }
  EXPECT_GT(shifts.size(), 15u);  // the shift varies with the seed
  EXPECT_EQ(f::crop_offsets(3 * seg, seg, 0, 9), (std::vector<size_t>{0, seg, 2 * seg}));
}

// ---------------------------------------------------------------------------
// Errors name the function and the problem.

template <class F>
void expect_error(F&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Augment, BadArguments) {
  const std::vector<float> y(1000, 0.5f);
  expect_error([&] { f::time_stretch(y.data(), y.size(), 0.0); }, "time_stretch: rate");
  expect_error([&] { f::time_stretch(y.data(), y.size(), -1.0); }, "rate");
  expect_error([&] { f::time_stretch(y.data(), y.size(), NAN); }, "rate");
  expect_error([&] { f::time_stretch(y.data(), y.size(), INFINITY); }, "rate");
  expect_error([&] { f::time_stretch(nullptr, 10, 1.0); }, "y is null");
  expect_error([&] { f::time_stretch(y.data(), 0, 1.0); }, "empty");
  expect_error([&] { f::time_stretch_batch(y.data(), 0, 10, 1.0); }, "n_clips");
  expect_error([&] { f::time_stretch(y.data(), y.size(), 1e-7); }, "2^31");
  expect_error([&] { f::pitch_shift(y.data(), y.size(), 0, 1.0); }, "pitch_shift: sr");
  expect_error([&] { f::pitch_shift(y.data(), y.size(), kSr, NAN); }, "n_steps");
  expect_error([&] { f::crop_offsets(100, 0, 1, 0); }, "segment_len");
  expect_error([&] { f::crop_offsets(100, 101, 1, 0); }, "exceeds track_len");
}

}  // namespace
