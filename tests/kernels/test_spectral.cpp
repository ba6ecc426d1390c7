// Spectral kernels (kernels/spectral.cuh) against their loop-based CPU
// references: framing at odd n_fft, odd hops, clip lengths that are not a
// multiple of the hop, frames longer than the clip, several clips with a
// stride; the power spectrum; the banded mel projection against the dense
// product at odd sizes and two block sizes; the per-clip maximum (NaN, all
// negative, odd lengths, two block sizes); decibels with and without the
// floor, relative to the maximum or to 1; the DCT. Every kernel runs under
// three simcuda thread orders. Also the host constants (Hann window, Slaney
// mel scale, DCT orthonormality, band compaction) and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/spectral.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::random_floats;
using timbre::testing::Tolerance;

std::vector<double> random_doubles(size_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

std::vector<float2> random_complex(size_t n, uint64_t seed) {
  const auto r = random_floats(2 * n, seed, -3.f, 3.f);
  std::vector<float2> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float2{r[2 * i], r[2 * i + 1]};
  return v;
}

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ---------------------------------------------------------------------------
// Framing.

struct FrameCase {
  int n_clips;
  long long clip_len, clip_stride;
  int n_fft, hop;
};

TEST(SpectralFrameWindow, ReferenceIsCenteredWithZeroPadding) {
  // The reference itself, by hand: clip [1..10], n_fft 4, hop 3, window 1.
  std::vector<float> x(10), w(4, 1.f);
  for (int i = 0; i < 10; ++i) x[size_t(i)] = float(i + 1);
  const long long frames = k::stft_frames(10, 3);
  ASSERT_EQ(frames, 4);
  std::vector<float> out(size_t(frames * 4));
  k::frame_window_cpu(x.data(), 10, 1, 10, w.data(), 4, 3, out.data());
  // Frame f starts at sample 3f - 2.
  const std::vector<float> want = {0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8, 9, 10, 0};
  EXPECT_EQ(out, want);
}

TEST(SpectralHann, PeriodicWindow) {
  std::vector<float> w(8);
  k::hann_window(8, w.data());
  const std::vector<double> want = {0, 0.1464466094, 0.5, 0.8535533906, 1, 0.8535533906, 0.5,
                                    0.1464466094};
  EXPECT_TRUE(all_close(as_double(w), want, {1e-7, 0}));
  std::vector<float> odd(7);
  k::hann_window(7, odd.data());
  EXPECT_EQ(odd[0], 0.f);
  for (int i = 1; i < 7; ++i)
    EXPECT_NEAR(odd[size_t(i)], odd[size_t(7 - i)], 1e-7);  // periodic symmetry
  EXPECT_THROW(k::hann_window(0, w.data()), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// The fused double-precision STFT power against a direct DFT.

TEST(SpectralStftMelF64, RejectsUnsupportedSizes) {
  DeviceBuffer<double> d_m(64);
  EXPECT_THROW(k::launch_stft_mel_f64({nullptr, 64, 1, 64}, nullptr, nullptr, {4096, 4},
                                      k::MelBandsView{nullptr, nullptr, nullptr, nullptr, 4, 2049},
                                      d_m.get(), nullptr),
               std::invalid_argument);  // n_fft above 2048
  EXPECT_THROW(k::launch_stft_mel_f64({nullptr, 64, 1, 64}, nullptr, nullptr, {64, 4},
                                      k::MelBandsView{nullptr, nullptr, nullptr, nullptr, 4, 32},
                                      d_m.get(), nullptr),
               std::invalid_argument);  // bands for another n_fft
}

TEST(SpectralStftPowerF64, RejectsUnsupportedSizes) {
  DeviceBuffer<float> d_x(64);
  DeviceBuffer<double> d_w(64), d_p(1024);
  DeviceBuffer<double2> d_tw(32);
  EXPECT_THROW(k::launch_stft_power_f64({d_x.get(), 64, 1, 64}, d_w.get(), d_tw.get(), {48, 4},
                                        d_p.get(), nullptr),
               std::invalid_argument);  // not a power of two
  EXPECT_THROW(k::launch_stft_power_f64({d_x.get(), 64, 1, 64}, d_w.get(), d_tw.get(), {8192, 4},
                                        d_p.get(), nullptr),
               std::invalid_argument);  // too large for shared memory
  EXPECT_THROW(k::launch_stft_power_f64({d_x.get(), 64, 1, 64}, d_w.get(), d_tw.get(), {4096, 4},
                                        d_p.get(), nullptr, 32,
                                        k::StftF64Version::v3_thread_per_frame),
               std::invalid_argument);  // v3 holds at most 2048 samples per thread
  EXPECT_THROW(k::launch_stft_power_f64({d_x.get(), 64, 1, 64}, d_w.get(), d_tw.get(), {2048, 4},
                                        d_p.get(), nullptr, 32, k::StftF64Version::v2_four_step),
               std::invalid_argument);  // v2's sub-FFTs in registers: n_fft <= 1024
  EXPECT_THROW(k::launch_stft_power_f64({d_x.get(), 64, 1, 64}, d_w.get(), d_tw.get(), {64, 4},
                                        d_p.get(), nullptr, 512, k::StftF64Version::v2_four_step),
               std::invalid_argument);  // __launch_bounds__(256): 255 registers a thread
  EXPECT_FALSE(k::stft_f64_supports(2));
  EXPECT_TRUE(k::stft_f64_supports(2048));
}

// ---------------------------------------------------------------------------
// Power spectrum and mel projection.

struct MelCase {
  double sr;
  int n_fft, n_mels, n_clips, n_frames;
  double fmin, fmax;
};

TEST(SpectralMelBanded, CompactBandsRebuildTheMatrix) {
  const int n_fft = 2048, n_mels = 128, n_bins = n_fft / 2 + 1;
  const auto fb = k::mel_filterbank_slaney(22050, n_fft, n_mels, 0, 11025);
  const auto b = k::compact_mel_bands(fb.data(), n_mels, n_bins);
  std::vector<double> rebuilt(fb.size(), 0.0);
  for (int m = 0; m < n_mels; ++m)
    for (int j = 0; j < b.length[size_t(m)]; ++j)
      rebuilt[size_t(m) * n_bins + b.start[size_t(m)] + j] =
          b.weights[size_t(b.offset[size_t(m)] + j)];
  EXPECT_EQ(rebuilt, fb);
  // The sparsity the banded kernel exploits: under 2% of the dense matrix.
  EXPECT_LT(double(b.weights.size()) / double(fb.size()), 0.02);
}

TEST(SpectralMelScale, SlaneyScale) {
  EXPECT_DOUBLE_EQ(k::hz_to_mel_slaney(0), 0);
  EXPECT_NEAR(k::hz_to_mel_slaney(1000), 15, 1e-12);  // linear part: 3 mels per 200 Hz
  EXPECT_NEAR(k::hz_to_mel_slaney(6400), 15 + 27, 1e-12);  // 27 mels per factor 6.4
  for (double hz : {0.0, 50.0, 999.0, 1000.0, 4321.0, 11025.0})
    EXPECT_NEAR(k::mel_to_hz_slaney(k::hz_to_mel_slaney(hz)), hz, 1e-9 * (1 + hz));
  // Area normalisation: each triangle has area 1 in Hz (height 2/width).
  const auto fb = k::mel_filterbank_slaney(22050, 2048, 10, 0, 11025);
  EXPECT_THROW(k::mel_filterbank_slaney(22050, 2048, 10, 500, 400), std::invalid_argument);
  EXPECT_THROW(k::mel_filterbank_slaney(22050, 2048, 0, 0, 400), std::invalid_argument);
  for (int m = 0; m < 10; ++m) {
    double area = 0;
    for (int b = 0; b < 1025; ++b) area += fb[size_t(m) * 1025 + b] * 22050.0 / 2048;
    EXPECT_NEAR(area, 1.0, 0.02) << "band " << m;  // a sum over bins approximates the integral
  }
}

// ---------------------------------------------------------------------------
// Per-clip maximum, decibels, DCT.

// Properties of the decibel reference (the op-case rows compare the kernel
// with it): the floor, the reference level, the silent clip.
TEST(SpectralPowerToDb, ReferenceFloorAndLevels) {
  const int n_clips = 3;
  const long long per_clip = 13 * 17 * 11;
  auto mel = random_doubles(size_t(n_clips * per_clip), 9, -14.0, 2.0);
  for (auto& v : mel) v = std::pow(10.0, v);
  for (long long i = 0; i < per_clip; i += 7) mel[size_t(i)] = 0;
  for (long long i = 0; i < per_clip; ++i) mel[size_t(2 * per_clip + i)] = 0;
  std::vector<double> cmax(n_clips);
  k::clip_max_cpu(mel.data(), n_clips, per_clip, cmax.data());
  for (double top_db : {80.0, -1.0}) {
    for (bool ref_is_max : {true, false}) {
      std::vector<float> ref(mel.size());
      k::power_to_db_cpu(mel.data(), n_clips, per_clip, cmax.data(), top_db, ref_is_max,
                         ref.data());
      const auto mm = std::minmax_element(ref.begin(), ref.begin() + per_clip);
      if (ref_is_max) {
        EXPECT_EQ(*mm.second, 0.f);
      }
      if (top_db > 0) {
        EXPECT_NEAR(*mm.second - *mm.first, 80.0, 1e-4);
      }
      // The silent clip: everything at amin, 0 dB relative to itself, -100 absolute.
      EXPECT_EQ(ref[size_t(2 * per_clip)], ref_is_max ? 0.f : -100.f);
    }
  }
}

TEST(SpectralDct, MatrixIsOrthonormal) {
  const int n_in = 23;
  // Orthonormal: the square matrix times its transpose is the identity.
  const auto sq = k::dct_ortho_matrix(n_in, n_in);
  for (int a = 0; a < n_in; ++a)
    for (int b = 0; b < n_in; ++b) {
      double s = 0;
      for (int m = 0; m < n_in; ++m) s += sq[size_t(a) * n_in + m] * sq[size_t(b) * n_in + m];
      EXPECT_NEAR(s, a == b ? 1.0 : 0.0, 1e-12);
    }
  EXPECT_THROW(k::dct_ortho_matrix(24, 23), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h). Launchers that choose their
// own block (framing, the power spectrum, decibels) have the block list
// {0}, which the run ignores.

using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::once;

std::string frame_shape(const FrameCase& c) {
  return "clips=" + std::to_string(c.n_clips) + " len=" + std::to_string(c.clip_len) +
         " stride=" + std::to_string(c.clip_stride) + " n_fft=" + std::to_string(c.n_fft) +
         " hop=" + std::to_string(c.hop);
}

// Framing: odd n_fft, odd hops, lengths not a multiple of the hop, frames
// longer than the clip, clips in a wider buffer, the default segment; float
// (the cuFFT R2C path) and double (the D2Z path).
template <class T>
void frame_rows(OpTable& table) {
  const FrameCase cases[] = {
      {3, 1001, 1001, 37, 13},       // odd n_fft, odd hop, 1001 % 13 != 0
      {2, 500, 517, 64, 7},          // stride > clip length (clips in a wider buffer)
      {1, 20, 20, 33, 4},            // frames longer than the clip: padding on both sides
      {4, 4097, 4100, 255, 100},     // odd n_fft, hop not dividing the length
      {2, 65024, 65024, 2048, 512},  // the default segment
  };
  for (const FrameCase cs : cases) {
    const long long frames = k::stft_frames(cs.clip_len, cs.hop);
    const auto signal = once([=] { return random_floats(size_t(cs.clip_stride * cs.n_clips), 11); });
    const auto window = once([=] {
      std::vector<float> wf(size_t(cs.n_fft));
      k::hann_window(cs.n_fft, wf.data());
      std::vector<T> w(wf.begin(), wf.end());
      if constexpr (sizeof(T) == 8) w = k::hann_window_f64(cs.n_fft);
      return w;
    });
    const size_t out_n = size_t(cs.n_clips * frames * cs.n_fft);
    table.add(OpCase{
        "spectral/frame_window", sizeof(T) == 8 ? "double" : "float", frame_shape(cs), {0},
        {0, 0}, "one product per tap in both: bit-exact",
        [=](int) {
          DeviceBuffer<float> d_signal(signal());
          DeviceBuffer<T> d_window(window()), d_frames(out_n);
          timbre::testing::poison(d_frames);
          k::launch_frame_window(d_signal.get(), cs.clip_stride, cs.n_clips, cs.clip_len,
                                 d_window.get(), cs.n_fft, cs.hop, d_frames.get(), nullptr);
          return as_double(d_frames.to_host());
        },
        [=] {
          std::vector<T> ref(out_n);
          k::frame_window_cpu(signal().data(), cs.clip_stride, cs.n_clips, cs.clip_len,
                              window().data(), cs.n_fft, cs.hop, ref.data());
          return as_double(ref);
        }});
  }
}

// The fused double-precision STFT power (v1 radix-2, v2 four-step, v3
// thread-per-frame) against a direct DFT.
void stft_rows(OpTable& table) {
  const FrameCase cases[] = {
      {3, 1001, 1001, 64, 13},      // odd hop, 1001 % 13 != 0
      {2, 500, 517, 256, 7},        // stride > clip length
      {1, 20, 20, 32, 3},           // frames longer than the clip
      {2, 37, 40, 4, 5},            // the smallest size (M = 2, one butterfly)
      {1, 3000, 3000, 2048, 512},   // the pipeline's size (v1, v3)
      {1, 2100, 2100, 4096, 1000},  // the largest (v1)
      {2, 300, 300, 128, 50},       // v2: 8 x 8
      {1, 4000, 4000, 1024, 256},   // v2's largest: 16 x 32
      {1, 900, 900, 512, 100},      // v2: 16 x 16
  };
  for (const FrameCase cs : cases) {
    const long long frames = k::stft_frames(cs.clip_len, cs.hop);
    const size_t out_n = size_t(cs.n_clips * frames * (cs.n_fft / 2 + 1));
    const auto signal = once([=] { return random_floats(size_t(cs.clip_stride * cs.n_clips), 13); });
    const auto ref = once([=] {
      std::vector<double> r(out_n);
      const auto window = k::hann_window_f64(cs.n_fft);
      k::stft_power_cpu({signal().data(), cs.clip_stride, cs.n_clips, cs.clip_len}, window.data(),
                        {cs.n_fft, cs.hop}, r.data());
      return r;
    });
    for (auto version : {k::StftF64Version::v1_radix2, k::StftF64Version::v2_four_step,
                         k::StftF64Version::v3_thread_per_frame}) {
      if (version == k::StftF64Version::v3_thread_per_frame && cs.n_fft > 2048) continue;
      if (version == k::StftF64Version::v2_four_step && cs.n_fft > 1024) continue;
      const char* vname = version == k::StftF64Version::v1_radix2      ? "v1_radix2"
                          : version == k::StftF64Version::v2_four_step ? "v2_four_step"
                                                                       : "v3_thread_per_frame";
      table.add(OpCase{
          std::string("spectral/stft_power_f64/") + vname, "double", frame_shape(cs), {32, 128},
          {}, "an FFT's error ~u log2(n) |y|_2 per bin, the direct DFT's ~u n |y|_2",
          [=](int block) {
            DeviceBuffer<float> d_signal(signal());
            DeviceBuffer<double> d_window(k::hann_window_f64(cs.n_fft)), d_power(out_n);
            DeviceBuffer<double2> d_tw(k::fft_twiddles(cs.n_fft));
            timbre::testing::poison(d_power);
            k::launch_stft_power_f64({d_signal.get(), cs.clip_stride, cs.n_clips, cs.clip_len},
                                     d_window.get(), d_tw.get(), {cs.n_fft, cs.hop}, d_power.get(),
                                     nullptr, block, version);
            return d_power.to_host();
          },
          [=] { return ref(); },
          // |X|^2's absolute error ~2|X| times the FFT's, below 1e-11 of the
          // peak power for n <= 2048 (u = 1.1e-16). A wrong twiddle, bin or
          // sample is off by O(peak).
          [=](int) {
            return Tolerance{1e-11 * *std::max_element(ref().begin(), ref().end()), 1e-9};
          }});
    }
  }
  // The fused STFT + banded mel against the power, then the dense product.
  struct Case {
    FrameCase f;
    double sr;
    int n_mels;
  };
  const Case mel_cases[] = {
      {{3, 1001, 1001, 64, 13}, 8000, 7},        // odd hop and length, odd band count
      {{2, 500, 517, 256, 7}, 16000, 24},        // clip stride > length
      {{1, 3000, 3000, 2048, 512}, 22050, 128},  // the pipeline's filterbank
  };
  for (const Case cs : mel_cases) {
    const FrameCase fc = cs.f;
    const long long frames = k::stft_frames(fc.clip_len, fc.hop);
    const int bins = fc.n_fft / 2 + 1;
    const auto signal = once([=] { return random_floats(size_t(fc.clip_stride * fc.n_clips), 17); });
    const auto fb = once([=] { return k::mel_filterbank_slaney(cs.sr, fc.n_fft, cs.n_mels, 0, cs.sr / 2); });
    const auto ref = once([=] {
      std::vector<double> power(size_t(fc.n_clips * frames * bins));
      const auto window = k::hann_window_f64(fc.n_fft);
      k::stft_power_cpu({signal().data(), fc.clip_stride, fc.n_clips, fc.clip_len}, window.data(),
                        {fc.n_fft, fc.hop}, power.data());
      std::vector<double> r(size_t(fc.n_clips * cs.n_mels * frames));
      k::mel_project_cpu(power.data(), fc.n_clips, int(frames), fb().data(), cs.n_mels, bins,
                         r.data());
      return r;
    });
    table.add(OpCase{
        "spectral/stft_mel_f64", "double", frame_shape(fc) + " n_mels=" + std::to_string(cs.n_mels),
        {32, 64}, {}, "the FFT's error (1e-11 of the peak power per bin) summed with positive weights",
        [=](int block) {
          const auto bands = k::compact_mel_bands(fb().data(), cs.n_mels, bins);
          DeviceBuffer<float> d_signal(signal());
          DeviceBuffer<double> d_window(k::hann_window_f64(fc.n_fft)), d_mel(ref().size()),
              d_w(bands.weights);
          DeviceBuffer<double2> d_tw(k::fft_twiddles(fc.n_fft));
          DeviceBuffer<int> d_start(bands.start), d_len(bands.length), d_off(bands.offset);
          const k::MelBandsView view{d_start.get(), d_len.get(), d_off.get(), d_w.get(),
                                     cs.n_mels, bins};
          timbre::testing::poison(d_mel);
          k::launch_stft_mel_f64({d_signal.get(), fc.clip_stride, fc.n_clips, fc.clip_len},
                                 d_window.get(), d_tw.get(), {fc.n_fft, fc.hop}, view, d_mel.get(),
                                 nullptr, block);
          return d_mel.to_host();
        },
        [=] { return ref(); },
        [=](int) {
          return Tolerance{1e-10 * *std::max_element(ref().begin(), ref().end()), 1e-9};
        }});
  }
}

// The power spectrum from a float spectrum (exact in double: a float times
// a float is exact) and from a double one (cuFFT D2Z's: 2 ulps of double).
void power_rows(OpTable& table) {
  const long long n = 3 * 7 * 129 + 5;
  const auto spec = once([=] { return random_complex(size_t(n), 3); });
  table.add(OpCase{
      "spectral/power_spectrum", "float2", "n=" + std::to_string(n), {0}, {0, 1e-15},
      "two products and one add in double from float inputs: exact (an FMA keeps it so)",
      [=](int) {
        DeviceBuffer<float2> d_spec(spec());
        DeviceBuffer<double> d_pow(static_cast<size_t>(n));
        timbre::testing::poison(d_pow);
        k::launch_power_spectrum(d_spec.get(), n, d_pow.get(), nullptr);
        return d_pow.to_host();
      },
      [=] {
        std::vector<double> ref(static_cast<size_t>(n));
        k::power_spectrum_cpu(spec().data(), n, ref.data());
        return ref;
      }});
  // Values with bits below float's, against the same formula in double.
  const auto spec64 = once([=] {
    std::vector<double2> s(static_cast<size_t>(n));
    for (size_t i = 0; i < s.size(); ++i)
      s[i] = double2{spec()[i].x * (1 + 1e-9 * double(i % 13)),
                     spec()[i].y - 1e-10 * double(i % 7)};
    return s;
  });
  table.add(OpCase{
      "spectral/power_spectrum", "double2", "n=" + std::to_string(n), {0}, {0, 4.5e-16},
      "re*re + im*im rounds twice (an FMA once): 2 ulps of double",
      [=](int) {
        DeviceBuffer<double2> d_spec(spec64());
        DeviceBuffer<double> d_pow(static_cast<size_t>(n));
        timbre::testing::poison(d_pow);
        k::launch_power_spectrum(d_spec.get(), n, d_pow.get(), nullptr);
        return d_pow.to_host();
      },
      [=] {
        std::vector<double> ref(static_cast<size_t>(n));
        for (size_t i = 0; i < ref.size(); ++i)
          ref[i] = spec64()[i].x * spec64()[i].x + spec64()[i].y * spec64()[i].y;
        return ref;
      }});
}

// The banded mel projection against the dense product, from a float
// complex spectrum, a double power spectrum and a double complex spectrum.
void mel_rows(OpTable& table) {
  const MelCase cases[] = {
      {8000, 255, 13, 3, 17, 0, 4000},       // odd n_fft, odd everything
      {22050, 2048, 128, 2, 9, 0, 11025},    // the default filterbank
      {16000, 400, 40, 1, 33, 133.3, 6800},  // fmin > 0, fmax < sr/2
  };
  for (const MelCase cs : cases) {
    const int n_bins = cs.n_fft / 2 + 1;
    const size_t n_spec = size_t(cs.n_clips) * cs.n_frames * n_bins;
    const auto fb = once([=] { return k::mel_filterbank_slaney(cs.sr, cs.n_fft, cs.n_mels, cs.fmin, cs.fmax); });
    const auto spec = once([=] { return random_complex(n_spec, 7); });
    const auto power = once([=] {
      std::vector<double> p(n_spec);
      k::power_spectrum_cpu(spec().data(), (long long)n_spec, p.data());
      return p;
    });
    const auto ref = once([=] {
      std::vector<double> r(size_t(cs.n_clips) * cs.n_mels * cs.n_frames);
      k::mel_project_cpu(power().data(), cs.n_clips, cs.n_frames, fb().data(), cs.n_mels, n_bins,
                         r.data());
      return r;
    });
    const std::string shape = "n_fft=" + std::to_string(cs.n_fft) + " n_mels=" +
                              std::to_string(cs.n_mels) + " clips=" + std::to_string(cs.n_clips) +
                              " frames=" + std::to_string(cs.n_frames);
    const char* inputs[] = {"float2", "double_power", "double2"};
    for (int input = 0; input < 3; ++input)
      table.add(OpCase{
          "spectral/mel_banded", inputs[input], shape, {32, 128}, {0, 1e-13},
          "positive terms summed in double in the same bin order; the dense reference adds "
          "exact zeros besides",
          [=](int block) {
            const auto bands = k::compact_mel_bands(fb().data(), cs.n_mels, n_bins);
            DeviceBuffer<int> d_start(bands.start), d_len(bands.length), d_off(bands.offset);
            DeviceBuffer<double> d_w(bands.weights), d_mel(ref().size());
            const k::MelBandsView view{d_start.get(), d_len.get(), d_off.get(), d_w.get(),
                                       cs.n_mels, n_bins};
            timbre::testing::poison(d_mel);
            if (input == 0) {
              DeviceBuffer<float2> d_spec(spec());
              k::launch_mel_banded(d_spec.get(), cs.n_clips, cs.n_frames, view, d_mel.get(),
                                   nullptr, block);
            } else if (input == 1) {
              DeviceBuffer<double> d_power(power());
              k::launch_mel_banded(d_power.get(), cs.n_clips, cs.n_frames, view, d_mel.get(),
                                   nullptr, block);
            } else {
              // cuFFT D2Z's output: the float values widened exactly, so the same sums.
              std::vector<double2> spec64(n_spec);
              for (size_t i = 0; i < n_spec; ++i) spec64[i] = double2{spec()[i].x, spec()[i].y};
              DeviceBuffer<double2> d_spec64(spec64);
              k::launch_mel_banded(d_spec64.get(), cs.n_clips, cs.n_frames, view, d_mel.get(),
                                   nullptr, block);
            }
            return d_mel.to_host();
          },
          [=] { return ref(); }});
  }
}

// The per-clip maximum (odd lengths; an all-negative clip; a NaN, which
// wins), decibels (over 16 decades, exact zeros clamped to amin, a silent
// clip; with and without the floor, relative to the maximum or to 1), and
// the DCT.
void clip_db_dct_rows(OpTable& table) {
  for (long long per_clip : {1LL, 31LL, 1000LL, 128LL * 128 + 3}) {
    const int n_clips = 5;
    const auto x = once([=] {
      auto v = random_doubles(size_t(n_clips * per_clip), 5, -2.0, 1e3);
      if (per_clip > 1) {
        for (long long i = 0; i < per_clip; ++i) v[size_t(2 * per_clip + i)] -= 2e3;
        v[size_t(3 * per_clip + per_clip / 2)] = std::numeric_limits<double>::quiet_NaN();
      }
      return v;
    });
    table.add(OpCase{
        "spectral/clip_max", "double", "clips=5 per_clip=" + std::to_string(per_clip), {32, 256},
        {0, 0, /*nan_equal=*/true}, "a maximum: exact, NaN propagated",
        [=](int block) {
          DeviceBuffer<double> d_x(x()), d_max(static_cast<size_t>(n_clips));
          timbre::testing::poison(d_max);
          k::launch_clip_max(d_x.get(), n_clips, per_clip, d_max.get(), nullptr, block);
          return d_max.to_host();
        },
        [=] {
          std::vector<double> ref(static_cast<size_t>(n_clips));
          k::clip_max_cpu(x().data(), n_clips, per_clip, ref.data());
          if (per_clip > 1 && !std::isnan(ref[3])) throw std::logic_error("clip_max_cpu lost the NaN");
          return ref;
        }});
  }
  const int n_clips = 3;
  const long long per_clip = 13 * 17 * 11;  // > 8 blocks of 256: the block-stride loop runs
  const auto mel = once([=] {
    auto m = random_doubles(size_t(n_clips * per_clip), 9, -14.0, 2.0);
    for (auto& v : m) v = std::pow(10.0, v);
    for (long long i = 0; i < per_clip; i += 7) m[size_t(i)] = 0;
    for (long long i = 0; i < per_clip; ++i) m[size_t(2 * per_clip + i)] = 0;
    return m;
  });
  const auto cmax = once([=] {
    std::vector<double> c(n_clips);
    k::clip_max_cpu(mel().data(), n_clips, per_clip, c.data());
    return c;
  });
  for (double top_db : {80.0, -1.0})
    for (bool ref_is_max : {true, false})
      table.add(OpCase{
          std::string("spectral/power_to_db") + (top_db > 0 ? "/top_db=80" : "/no_floor") +
              (ref_is_max ? "/ref=max" : "/ref=1"),
          "double", "clips=3 per_clip=" + std::to_string(per_clip), {0}, {2e-5, 0},
          "the same double formula; a GPU's log10 may differ by an ulp of double: 1 float ulp "
          "of |dB| <= 160",
          [=](int) {
            DeviceBuffer<double> d_mel(mel()), d_max(cmax());
            DeviceBuffer<float> d_out(mel().size());
            timbre::testing::poison(d_out);
            k::launch_power_to_db(d_mel.get(), n_clips, per_clip, d_max.get(), top_db, ref_is_max,
                                  d_out.get(), nullptr);
            return as_double(d_out.to_host());
          },
          [=] {
            std::vector<float> ref(mel().size());
            k::power_to_db_cpu(mel().data(), n_clips, per_clip, cmax().data(), top_db, ref_is_max,
                               ref.data());
            return as_double(ref);
          }});
  const int n_in = 23, n_out = 7, n_frames = 37;
  const auto x = once([=] { return random_floats(size_t(n_clips) * n_in * n_frames, 4, -80.f, 0.f); });
  table.add(OpCase{
      "spectral/dct_rows", "float", "clips=3 n_in=23 n_out=7 frames=37", {32, 64}, {4e-5, 0},
      "double sums in the same order, one rounding to float: a float ulp of ~400",
      [=](int block) {
        DeviceBuffer<float> d_x(x()), d_out(size_t(n_clips) * n_out * n_frames);
        DeviceBuffer<double> d_t(k::dct_ortho_matrix(n_out, n_in));
        timbre::testing::poison(d_out);
        k::launch_dct_rows(d_x.get(), n_clips, n_in, n_frames, d_t.get(), n_out, d_out.get(),
                           nullptr, block);
        return as_double(d_out.to_host());
      },
      [=] {
        std::vector<float> ref(size_t(n_clips) * n_out * n_frames);
        const auto t = k::dct_ortho_matrix(n_out, n_in);
        k::dct_rows_cpu(x().data(), n_clips, n_in, n_frames, t.data(), n_out, ref.data());
        return as_double(ref);
      }});
}

OP_CASES(spectral) {
  frame_rows<float>(table);
  frame_rows<double>(table);
  stft_rows(table);
  power_rows(table);
  mel_rows(table);
  clip_db_dct_rows(table);
}

// ---------------------------------------------------------------------------
// Argument errors name the launcher and the argument.

template <class F>
void expect_error(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << fragment << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(SpectralErrors, BadArgumentsThrow) {
  DeviceBuffer<float> d_x(64), d_w(16), d_f(1024);
  expect_error(
      [&] { k::launch_frame_window(d_x.get(), 64, 1, 64, d_w.get(), 16, 0, d_f.get(), nullptr); },
      "launch_frame_window: hop must be >= 1");
  expect_error(
      [&] { k::launch_frame_window(d_x.get(), 64, 1, 64, d_w.get(), 0, 4, d_f.get(), nullptr); },
      "n_fft must be >= 1");
  expect_error(
      [&] { k::launch_frame_window(d_x.get(), 10, 2, 64, d_w.get(), 16, 4, d_f.get(), nullptr); },
      "clip_stride");
  expect_error(
      [&] { k::launch_frame_window(nullptr, 64, 1, 64, d_w.get(), 16, 4, d_f.get(), nullptr); },
      "null");
  DeviceBuffer<double> d_d(64);
  expect_error([&] { k::launch_clip_max(d_d.get(), 1, 64, d_d.get(), nullptr, 96); },
               "power of two");
  expect_error([&] { k::launch_clip_max(d_d.get(), 1, 0, d_d.get(), nullptr); }, "per_clip");
  expect_error(
      [&] { k::launch_power_to_db(d_d.get(), 1, 8, d_d.get(), NAN, true, d_x.get(), nullptr); },
      "top_db");
  expect_error(
      [&] {
        k::launch_mel_banded(static_cast<const float2*>(nullptr), 1, 4,
                             k::MelBandsView{nullptr, nullptr, nullptr, nullptr, 2, 9}, d_d.get(),
                             nullptr);
      },
      "null");
  expect_error(
      [&] { k::launch_dct_rows(d_x.get(), 1, 4, 4, d_d.get(), 2, d_x.get(), nullptr, 48); },
      "block");
}

}  // namespace
