// The log-mel / MFCC pipeline (features/logmel.h) against librosa: the
// filterbank against librosa.filters.mel, the whole log-mel of six clips
// (sweep, white and pink noise, chord, silence, recorded music) within
// 1e-3 dB on both mel paths (banded and GEMM), MFCC, per-clip dB references
// in a mixed batch, chunking, the device-pointer variant, the STFT against a
// double-precision DFT at odd sizes, and parameter errors. Fixtures:
// tests/fixtures/make_feature_fixtures.py (librosa, float64).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "features/logmel.h"
#include "kernels/defaults.h"
#include "kernels/device_buffer.h"
#include "kernels/spectral.cuh"
#include "tests/fixtures/npy.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::features::FeatureParams;
using timbre::features::FftPath;
using timbre::features::LogMelPipeline;
using timbre::features::MelPath;
using timbre::features::PipelineOptions;
using timbre::features::Stft;
using timbre::features::StftF64;
using timbre::testing::all_close;
using timbre::testing::load_npy;

const char* kClips[] = {"sweep", "white", "pink", "chord", "silence", "music"};
constexpr int kNumClips = 6;

std::string fixture(const std::string& name) {
  return timbre::testing::fixtures_dir() + "/features/" + name + ".npy";
}

std::vector<float> load_clip(const std::string& name) {
  const auto a = load_npy(fixture("clip_" + name));
  if (a.dtype != "<f4") throw std::runtime_error(fixture("clip_" + name) + ": not float32");
  return a.as<float>();
}

double max_abs_diff(const float* got, const std::vector<double>& ref) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i]));
  return worst;
}

// The requirement (the project's numerical contract, docs/kernels/spectral.md): within 1e-3 dB of librosa in float64, at every
// value, including those near the -80 dB floor. Measured worst: see
// docs/kernels/spectral.md.
constexpr double kDbTol = 1e-3;

TEST(LogMelFilterbank, MatchesLibrosa) {
  const FeatureParams p;
  const auto nz = load_npy(fixture("mel_basis_nonzeros")).as<double>();
  std::vector<double> ref(size_t(p.n_mels) * p.bins(), 0.0);
  for (size_t r = 0; r + 2 < nz.size(); r += 3)
    ref[size_t(nz[r]) * p.bins() + size_t(nz[r + 1])] = nz[r + 2];
  const auto fb = timbre::kernels::mel_filterbank_slaney(p.sample_rate, p.n_fft, p.n_mels,
                                                          p.fmin, p.fmax);
  // The same float64 formula; librosa's mel edges go through numpy's
  // linspace and exp/log in another order: a few ulps of the weights
  // (~2e-3), and the zero pattern must agree exactly (atol 0 for zeros
  // needs rtol only: a misplaced nonzero fails).
  EXPECT_TRUE(all_close(fb, ref, {1e-17, 1e-12}));
}

struct PathCase {
  FftPath fft;
  MelPath mel;
  double tol;  // max |dB error| allowed
  const char* name;
};

class LogMelVsLibrosa : public ::testing::TestWithParam<PathCase> {};

TEST_P(LogMelVsLibrosa, EveryClip) {
  const PathCase pc = GetParam();
  FeatureParams p;
  PipelineOptions o;
  o.fft = pc.fft;
  o.mel = pc.mel;
  o.chunk_clips = 4;  // 6 clips: a full chunk and a partial one
  LogMelPipeline pipe(p, 8, o);
  EXPECT_EQ(pipe.fft_path(), pc.fft);
  std::vector<float> batch;
  for (const char* name : kClips) {
    const auto c = load_clip(name);
    ASSERT_EQ((long long)c.size(), p.segment_samples()) << name;
    batch.insert(batch.end(), c.begin(), c.end());
  }
  const auto out = pipe.compute(batch);
  ASSERT_EQ(out.size(), size_t(kNumClips) * p.n_mels * p.frames);
  for (int i = 0; i < kNumClips; ++i) {
    const auto ref = load_npy(fixture(std::string("logmel_") + kClips[i])).as<double>();
    ASSERT_EQ(ref.size(), size_t(p.n_mels) * p.frames);
    const float* got = out.data() + size_t(i) * ref.size();
    const double err = max_abs_diff(got, ref);
    std::printf("  %s %-8s max |dB error| = %.3g\n", pc.name, kClips[i], err);
    EXPECT_TRUE(all_close(std::vector<double>(got, got + ref.size()), ref, {pc.tol, 0}))
        << kClips[i];
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, LogMelVsLibrosa,
    ::testing::Values(
        // The contract: 1e-3 dB, on both backends' default paths (cuFFT D2Z
        // on a GPU, our own double FFT kernels under simcuda) and the GEMM
        // reference.
        PathCase{FftPath::cufft_f64, MelPath::banded, kDbTol, "cufft_f64_banded"},
        PathCase{FftPath::cufft_f64, MelPath::gemm, kDbTol, "cufft_f64_gemm"},
        PathCase{FftPath::f64, MelPath::banded, kDbTol, "f64_banded"},
        PathCase{FftPath::f64, MelPath::gemm, kDbTol, "f64_gemm"},
        // The float32 cuFFT path is the fast option, not the contract: its
        // FFT rounding (~u log2(n) of the frame's norm) reaches 1.14e-3 dB on
        // the chord at -79.3 dB (measured); 2e-3 keeps it honest (a wrong
        // window, band or reference is off by far more).
        PathCase{FftPath::cufft_f32, MelPath::banded, 2e-3, "f32_banded"},
        PathCase{FftPath::cufft_f32, MelPath::gemm, 2e-3, "f32_gemm"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(LogMelMfcc, MatchesLibrosa) {
  FeatureParams p;
  p.n_mfcc = 20;
  LogMelPipeline pipe(p, kNumClips);
  EXPECT_EQ(pipe.rows(), 20);
  for (const char* name : kClips) {
    const auto ref = load_npy(fixture(std::string("mfcc_") + name)).as<double>();
    const auto got = pipe.compute(load_clip(name));
    ASSERT_EQ(got.size(), ref.size());
    // Each coefficient is an orthonormal combination of the 128 dB values
    // (relative to 1, librosa mfcc's default): its error is at most the L2
    // norm of the dB errors, <= sqrt(128) * 1e-3 = 1.13e-2 if every band were
    // off by the whole dB tolerance. The float32 dB staging adds 1 ulp of
    // |dB| <= ~150 (1e-5) per value. Measured: see the docs.
    const double err = max_abs_diff(got.data(), ref);
    std::printf("  %-8s max |MFCC error| = %.3g\n", name, err);
    EXPECT_TRUE(all_close(got, ref, {1.2e-2, 0})) << name;
  }
}

TEST(LogMelPerClip, EachClipRelativeToItsOwnMaximum) {
  // A loud and a quiet clip (the same music 40 dB down) in one batch give
  // what each gives alone: the dB reference and the floor are per clip.
  const FeatureParams p;
  LogMelPipeline pipe(p, 4);
  const auto loud = load_clip("music");
  std::vector<float> quiet(loud);
  for (auto& v : quiet) v *= 1e-2f;
  std::vector<float> batch(loud);
  batch.insert(batch.end(), quiet.begin(), quiet.end());
  const auto both = pipe.compute(batch);
  const auto alone_loud = pipe.compute(loud), alone_quiet = pipe.compute(quiet);
  const size_t per = alone_loud.size();
  EXPECT_EQ(std::vector<float>(both.begin(), both.begin() + per), alone_loud);
  EXPECT_EQ(std::vector<float>(both.begin() + per, both.end()), alone_quiet);
  // And scaling a clip does not change its dB relative to its own maximum,
  // as long as its floor (max - 80 dB) stays above amin = 1e-10: the music's
  // maximum mel power is 275, 40 dB down 2.75e-2, floor 2.75e-10. 1e-2 is
  // not exact in float: each sample is off by <= 2^-24 relative, ~1e-6 dB.
  EXPECT_TRUE(all_close(alone_quiet, alone_loud, {1e-4, 0}));
  // Each clip's maximum is 0 dB and its floor -80 dB.
  for (int c = 0; c < 2; ++c) {
    const auto mm = std::minmax_element(both.begin() + c * per, both.begin() + (c + 1) * per);
    EXPECT_EQ(*mm.second, 0.f);
    EXPECT_NEAR(*mm.first, -80.f, 1e-4);
  }
}

TEST(LogMelPipelineApi, DeviceVariantAndChunkingAgree) {
  const FeatureParams p;
  std::vector<float> batch;
  for (const char* name : {"music", "chord", "pink"}) {
    const auto c = load_clip(name);
    batch.insert(batch.end(), c.begin(), c.end());
  }
  PipelineOptions one;
  one.chunk_clips = 1;
  LogMelPipeline a(p, 3), b(p, 3, one);
  const auto host_a = a.compute(batch), host_b = b.compute(batch);
  EXPECT_EQ(b.chunk_clips(), 1);
  // A transform's result does not depend on how many are batched with it
  // (FFTW/cuFFT batch loops over one plan), but allow float noise: 1e-5 dB.
  EXPECT_TRUE(all_close(host_a, host_b, {1e-5, 0}));
  DeviceBuffer<float> d_in(batch), d_out(host_a.size());
  timbre::testing::poison(d_out);
  a.compute_device(d_in.get(), 3, d_out.get());
  EXPECT_EQ(d_out.to_host(), host_a);
}

// The STFT against a direct double-precision DFT of the same framed,
// windowed samples: odd n_fft, odd hop, a clip length not a multiple of the
// hop, three clips, and partial batches (plans for 1 and 3 clips); in float
// (Stft, cuFFT R2C) and double (StftF64, cuFFT D2Z).
template <class S>
void check_stft_against_dft() {
  using Real = std::conditional_t<std::is_same_v<S, StftF64>, double, float>;
  struct Case { int n_fft, hop; long long len; };
  for (const Case cs : {Case{63, 17, 500}, Case{256, 100, 1234}, Case{31, 31, 31}}) {
    SCOPED_TRACE("n_fft " + std::to_string(cs.n_fft) + " hop " + std::to_string(cs.hop) +
                 (sizeof(Real) == 8 ? " (double)" : " (float)"));
    const int n_clips = 3;
    S stft(cs.n_fft, cs.hop, cs.len, n_clips);
    ASSERT_EQ(stft.frames(), 1 + cs.len / cs.hop);
    const auto x = timbre::testing::random_floats(size_t(n_clips * cs.len), 21);
    std::vector<Real> w(size_t(cs.n_fft));
    if constexpr (sizeof(Real) == 8) {
      w = timbre::kernels::hann_window_f64(cs.n_fft);
    } else {
      timbre::kernels::hann_window(cs.n_fft, w.data());
    }
    const int F = stft.frames(), B = stft.bins();
    std::vector<Real> framed(size_t(n_clips) * F * cs.n_fft);
    timbre::kernels::frame_window_cpu(x.data(), cs.len, n_clips, cs.len, w.data(), cs.n_fft,
                                      cs.hop, framed.data());
    std::vector<double> ref_re(size_t(n_clips) * F * B), ref_im(ref_re.size());
    double peak = 0;
    const double pi = 3.14159265358979323846;
    for (size_t r = 0; r < size_t(n_clips) * F; ++r)
      for (int b = 0; b < B; ++b) {
        std::complex<double> s = 0;
        for (int t = 0; t < cs.n_fft; ++t)
          s += double(framed[r * cs.n_fft + t]) *
               std::polar(1.0, -2 * pi * double((long long)t * b % cs.n_fft) / cs.n_fft);
        ref_re[r * B + b] = s.real();
        ref_im[r * B + b] = s.imag();
        peak = std::max(peak, std::abs(s));
      }
    DeviceBuffer<float> d_x(x);
    DeviceBuffer<typename S::Complex> d_out(stft.output_size(n_clips));
    for (int n : {n_clips, 1}) {
      timbre::testing::poison(d_out);
      stft.forward(d_x.get(), cs.len, n, d_out.get());
      const auto got = d_out.to_host();
      std::vector<double> re, im;
      for (size_t i = 0; i < stft.output_size(n); ++i) {
        re.push_back(got[i].x);
        im.push_back(got[i].y);
      }
      const std::vector<double> want_re(ref_re.begin(), ref_re.begin() + re.size());
      const std::vector<double> want_im(ref_im.begin(), ref_im.begin() + im.size());
      // An FFT's error is about u * log2(n) * (the frame's L2 norm): 1e-5 of
      // the largest |X| covers float (u = 6e-8) with margin for n <= 256,
      // 1e-12 covers double (u = 1.1e-16), where a float FFT would fail.
      const double tol = sizeof(Real) == 8 ? 1e-12 : 1e-5;
      EXPECT_TRUE(all_close(re, want_re, {tol * peak, 0}));
      EXPECT_TRUE(all_close(im, want_im, {tol * peak, 0}));
    }
    EXPECT_THROW(stft.forward(d_x.get(), cs.len, 4, d_out.get()), std::invalid_argument);
  }
}

TEST(LogMelStft, MatchesDirectDft) { check_stft_against_dft<Stft>(); }
TEST(LogMelStft, DoubleMatchesDirectDft) { check_stft_against_dft<StftF64>(); }

// FftPath::automatic takes the `stft` entry of the table of backend defaults
// (kernels/defaults.h): cuFFT D2Z with the GPU's row, our kernels with the
// sim row where they support n_fft, cuFFT D2Z for any other n_fft.
TEST(LogMelPipelineApi, AutomaticPathFollowsBackendDefaults) {
  namespace k = timbre::kernels;
  const k::BackendDefaults saved = k::defaults();
  FeatureParams p, odd;
  odd.n_fft = 1000;
  k::use_defaults(k::gpu_defaults());
  EXPECT_EQ(LogMelPipeline(p, 1).fft_path(), FftPath::cufft_f64);
  EXPECT_EQ(LogMelPipeline(odd, 1).fft_path(), FftPath::cufft_f64);
  k::use_defaults(k::sim_defaults());
  EXPECT_EQ(LogMelPipeline(p, 1).fft_path(), FftPath::f64);
  EXPECT_EQ(LogMelPipeline(odd, 1).fft_path(), FftPath::cufft_f64);
  k::use_defaults(saved);
}

// ---------------------------------------------------------------------------
// Errors.

void expect_invalid(const FeatureParams& p, const std::string& fragment) {
  try {
    p.validate();
    ADD_FAILURE() << "no exception for " << p.str();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
  EXPECT_THROW(LogMelPipeline(p, 1), std::invalid_argument);
}

// An n_fft too large for the batch names the sizes, not an internal knob
// (a user cannot set the chunk size from the command line).
TEST(LogMelErrors, AnFftTooLargeForTheClipsSaysSo) {
  FeatureParams p;
  p.n_fft = 16384;
  p.frames = 4096;  // 32 clips x 4096 frames x 16384 = 2^31 values of frames
  try {
    LogMelPipeline pipe(p, 32);
    FAIL() << "a 2^31-value frame buffer accepted";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("(n_fft 16384 x 4096 frames a clip is too large)"), std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("chunk"), std::string::npos) << msg;
  }
}

TEST(LogMelErrors, BadParameters) {
  EXPECT_NO_THROW(FeatureParams{}.validate());
  EXPECT_EQ(FeatureParams{}.str(),
            "sample_rate=22050 n_fft=2048 hop=512 n_mels=128 fmin=0 fmax=11025 frames=128 "
            "top_db=80 n_mfcc=0");
  FeatureParams p;
  p.sample_rate = 0;
  expect_invalid(p, "sample_rate must be > 0");
  p = {};
  p.n_fft = 1;
  expect_invalid(p, "n_fft must be >= 2");
  p = {};
  p.hop = 0;
  expect_invalid(p, "hop must be >= 1");
  p = {};
  p.n_mels = 0;
  expect_invalid(p, "n_mels must be >= 1");
  p = {};
  p.fmin = -1;
  expect_invalid(p, "fmin");
  p = {};
  p.fmax = 12000;
  expect_invalid(p, "fmax must be <= sample_rate/2");
  p = {};
  p.fmin = 5000;
  p.fmax = 4000;
  expect_invalid(p, "fmax must be > fmin");
  p = {};
  p.frames = 1;
  expect_invalid(p, "frames must be >= 2");
  p = {};
  p.top_db = 0;
  expect_invalid(p, "top_db");
  p = {};
  p.n_mfcc = 129;
  expect_invalid(p, "n_mfcc must be in [0, n_mels]");

  EXPECT_THROW(LogMelPipeline(FeatureParams{}, 0), std::invalid_argument);
  LogMelPipeline pipe(FeatureParams{}, 1);
  try {
    pipe.compute(std::vector<float>(1000));
    ADD_FAILURE() << "no exception for a partial clip";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not a whole number of 65024-sample clips"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Stft(2048, 512, 0, 1), std::invalid_argument);
}

}  // namespace
