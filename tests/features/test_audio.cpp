// test_audio.cpp: decoding, resampling and every bad input of
// docs/features/decoding.md. Each input is made here, in a temporary
// directory, by tests/features/synth_audio.h (libsndfile, LAME).
#include <gtest/gtest.h>

#include <filesystem>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <complex>
#include <string>
#include <thread>
#include <vector>

#include "features/audio.h"
#include "tests/features/synth_audio.h"
#include "tests/testing.h"

namespace timbre::features {
namespace {

using testing::TempDir;
namespace synth = testing::synth;

// Runs f, which must throw AudioError for `path` with a reason containing
// every string of `parts`. Returns the reason for further checks.
template <class F>
std::string expect_audio_error(F&& f, const std::string& path,
                               const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const AudioError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_EQ(std::string(e.what()), path + ": " + e.reason());
    for (const auto& p : parts)
      EXPECT_NE(e.reason().find(p), std::string::npos)
          << "reason \"" << e.reason() << "\" lacks \"" << p << "\"";
    return e.reason();
  }
  ADD_FAILURE() << "no AudioError for " << path;
  return {};
}

// Least-squares fit of a*sin(w i) + b*cos(w i) + c to x[lo, hi) at the
// frequency f: returns the residual RMS divided by the fitted amplitude.
// Near 0 when x is a sine of frequency f; near 1 for a sine a few Hz off
// over a second or more (the fit then averages to nothing).
double sine_fit_residual(const std::vector<float>& x, std::size_t lo, std::size_t hi, double f,
                         double rate) {
  // Normal equations for 3 unknowns, in double.
  double A[3][3] = {}, r[3] = {};
  const double w = 2.0 * synth::kPi * f / rate;
  for (std::size_t i = lo; i < hi; ++i) {
    const double v[3] = {std::sin(w * double(i)), std::cos(w * double(i)), 1.0};
    for (int p = 0; p < 3; ++p) {
      r[p] += v[p] * x[i];
      for (int q = 0; q < 3; ++q) A[p][q] += v[p] * v[q];
    }
  }
  // Gaussian elimination (the matrix is well conditioned for many periods).
  for (int p = 0; p < 3; ++p)
    for (int q = p + 1; q < 3; ++q) {
      const double m = A[q][p] / A[p][p];
      for (int k = 0; k < 3; ++k) A[q][k] -= m * A[p][k];
      r[q] -= m * r[p];
    }
  double c[3];
  for (int p = 2; p >= 0; --p) {
    double s = r[p];
    for (int k = p + 1; k < 3; ++k) s -= A[p][k] * c[k];
    c[p] = s / A[p][p];
  }
  double e2 = 0;
  for (std::size_t i = lo; i < hi; ++i) {
    const double m = c[0] * std::sin(w * double(i)) + c[1] * std::cos(w * double(i)) + c[2];
    e2 += (x[i] - m) * (x[i] - m);
  }
  const double amp = std::hypot(c[0], c[1]);
  return std::sqrt(e2 / double(hi - lo)) / std::max(amp, 1e-30);
}

// The frequency (Hz) of the largest DFT magnitude of x[lo, lo + n), on a
// 1 Hz grid between fmin and fmax (a direct, slow DFT: a test reference).
double dominant_frequency(const std::vector<float>& x, std::size_t lo, std::size_t n, double rate,
                          double fmin, double fmax) {
  double best_f = 0, best = -1;
  for (double f = fmin; f <= fmax; f += 1.0) {
    std::complex<double> acc = 0;
    const double w = -2.0 * synth::kPi * f / rate;
    for (std::size_t i = 0; i < n; ++i)
      acc += double(x[lo + i]) * std::polar(1.0, w * double(i));
    if (std::abs(acc) > best) best = std::abs(acc), best_f = f;
  }
  return best_f;
}

// SNR in dB of `got` against `ref` after finding the best integer lag in
// [-max_lag, max_lag] (got[i + lag] ~ ref[i]) and the best gain, over the
// middle of the signal.
double aligned_snr_db(const std::vector<float>& got, const std::vector<float>& ref, int max_lag,
                      int* best_lag_out = nullptr, double* gain_out = nullptr) {
  const std::size_t lo = std::size_t(max_lag) + 2048, hi = ref.size() - std::size_t(max_lag) - 2048;
  double best = -1e300, best_gain = 0;
  int best_lag = 0;
  for (int lag = -max_lag; lag <= max_lag; ++lag) {
    double rg = 0, gg = 0, rr = 0;
    for (std::size_t i = lo; i < hi; ++i) {
      const std::size_t j = std::size_t(std::ptrdiff_t(i) + lag);
      if (j >= got.size()) continue;
      rg += double(ref[i]) * got[j];
      gg += double(got[j]) * got[j];
      rr += double(ref[i]) * ref[i];
    }
    if (gg == 0) continue;
    // Residual energy of ref - g * got with the least-squares gain g.
    const double err = rr - rg * rg / gg;
    const double snr = 10.0 * std::log10(rr / std::max(err, 1e-30));
    if (snr > best) best = snr, best_lag = lag, best_gain = rg / gg;
  }
  if (best_lag_out) *best_lag_out = best_lag;
  if (gain_out) *gain_out = best_gain;
  return best;
}

// ---- bad inputs --------------------------------------------------------------

TEST(AudioDecode, EmptyFileIsAnError) {
  TempDir dir;
  const std::string p = dir / "empty.mp3";
  synth::write_bytes(p, {});
  expect_audio_error([&] { load_audio(p); }, p, {"empty file (0 bytes)"});
  const std::string w = dir / "empty.wav";
  synth::write_bytes(w, {});
  expect_audio_error([&] { load_audio(w); }, w, {"empty file (0 bytes)"});
}

TEST(AudioDecode, MissingFileIsAnError) {
  TempDir dir;
  const std::string p = dir / "nothing_here.mp3";
  expect_audio_error([&] { load_audio(p); }, p, {"cannot open", "No such file"});
}

TEST(AudioDecode, DirectoryOrSymlinkLoopIsNamedAsSuch) {
  TempDir dir;
  const std::string d = dir / "album.mp3";
  std::filesystem::create_directories(d);
  expect_audio_error([&] { load_audio(d); }, d, {"a directory, not an audio file"});
  const std::string loop = dir / "loop.wav";
  std::filesystem::create_symlink(loop, loop);
  expect_audio_error([&] { load_audio(loop); }, loop, {"cannot open", "symbolic links"});
}

TEST(AudioDecode, PngRenamedMp3IsNotAudio) {
  TempDir dir;
  const std::string p = dir / "cover.mp3";
  synth::write_bytes(p, synth::png_bytes());
  expect_audio_error([&] { load_audio(p); }, p, {"not an audio file", "PNG image"});
}

TEST(AudioDecode, UnknownBytesAsWavIsNotReadable) {
  TempDir dir;
  const std::string p = dir / "text.wav";
  const std::string s = "this is not a sound file, just some text that happens to be long enough";
  synth::write_bytes(p, std::vector<unsigned char>(s.begin(), s.end()));
  expect_audio_error([&] { load_audio(p); }, p, {"not a readable audio file", "libsndfile"});
}

// 3 s of a chord at 44.1 kHz stereo, 128 kbps: the MP3 the next tests cut up.
std::vector<float> stereo_source(std::size_t n) {
  return synth::interleave({synth::chord(n, {220.0, 330.0, 440.0}, 44100.0, 0.6),
                            synth::chord(n, {277.2, 415.3}, 44100.0, 0.5)});
}

TEST(AudioDecode, TruncatedMp3IsAnError) {
  TempDir dir;
  const std::size_t n = 3 * 44100;
  auto bytes = synth::write_mp3(dir / "full.mp3", stereo_source(n), 2, 44100);
  ASSERT_NO_THROW(load_audio(dir / "full.mp3", 44100));
  bytes.resize(bytes.size() / 2);
  const std::string p = dir / "half.mp3";
  synth::write_bytes(p, bytes);
  // Half the bytes of a CBR stream is half the frames: the tag's length is
  // far from reached.
  expect_audio_error([&] { load_audio(p, 44100); }, p,
                     {"truncated or corrupt", "found 57 of the 116 MPEG frames",
                      "LAME/Xing tag declares", "of its " + std::to_string(n) + " samples"});
}

// Overwrites `len` bytes in the middle of `bytes` with seeded random bytes.
std::vector<unsigned char> damaged(std::vector<unsigned char> bytes, std::size_t len,
                                   std::uint32_t seed) {
  std::mt19937 gen(seed);
  const std::size_t at = bytes.size() / 2;
  for (std::size_t i = 0; i < len; ++i) bytes[at + i] = static_cast<unsigned char>(gen());
  return bytes;
}

TEST(AudioDecode, Mp3WithCorruptedMiddleIsAnError) {
  TempDir dir;
  const std::size_t n = 4 * 44100;
  const auto good = synth::write_mp3(dir / "good.mp3", stereo_source(n), 2, 44100);
  // 2,000 random bytes (about five 418-byte frames): longer than libmpg123's
  // 1,024-byte resync limit, so decoding stops with its error.
  const std::string p = dir / "corrupt2000.mp3";
  synth::write_bytes(p, damaged(good, 2000, 77));
  expect_audio_error([&] { load_audio(p, 44100); }, p,
                     {"corrupt MPEG data after", "(mpg123: ", "resync"});
  // 600 random bytes: libmpg123 resyncs past them, but two frames are lost;
  // the frame count against the LAME tag catches it.
  const std::string q = dir / "corrupt600.mp3";
  synth::write_bytes(q, damaged(good, 600, 1));
  expect_audio_error([&] { load_audio(q, 44100); }, q,
                     {"truncated or corrupt", "found 153 of the 155 MPEG frames"});
}

TEST(AudioDecode, Mp3WithSmallDamageInsideAFrameDecodesWithALocalGlitch) {
  // Documented policy: damage that leaves every frame header intact is not
  // detectable from the container and is accepted. The result has the
  // right length and differs from the clean decode only near the damage.
  TempDir dir;
  const std::size_t n = 4 * 44100;
  const auto good = synth::write_mp3(dir / "good.mp3", stereo_source(n), 2, 44100);
  // Find a frame header (sync 0xFFF, MPEG-1 layer III without CRC: FF FB)
  // past the middle and scratch 100 bytes of its audio data, well after the
  // 4-byte header and the 32-byte side information.
  std::size_t hdr = good.size() / 2;
  while (hdr + 1 < good.size() && !(good[hdr] == 0xFF && good[hdr + 1] == 0xFB)) ++hdr;
  ASSERT_LT(hdr + 400, good.size());
  auto bytes = good;
  std::mt19937 gen(3);
  for (std::size_t i = hdr + 150; i < hdr + 250; ++i) bytes[i] = static_cast<unsigned char>(gen());
  const std::string p = dir / "scratched.mp3";
  synth::write_bytes(p, bytes);
  const auto clean = load_audio(dir / "good.mp3", 44100);
  const auto a = load_audio(p, 44100);
  ASSERT_EQ(a.samples.size(), n);
  std::size_t first = n, last = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (std::fabs(a.samples[i] - clean.samples[i]) > 1e-4f) first = std::min(first, i), last = i;
  std::printf("100 damaged bytes: decode differs in samples [%zu, %zu]\n", first, last);
  ASSERT_LE(first, last);  // the damage is audible somewhere...
  // ...but only within a few frames (the damaged frame, and the next ones
  // that borrow its bit reservoir): 4 frames of 1152 samples at most.
  EXPECT_LE(last - first, 4u * 1152);
}

TEST(AudioDecode, Mp3WithOnlyAnId3TagHasNoAudio) {
  TempDir dir;
  const std::string p = dir / "tag_only.mp3";
  synth::write_bytes(p, synth::id3v2_with_cover(4000));
  expect_audio_error([&] { load_audio(p); }, p, {"no MPEG audio frames found"});
  // Same without even a tag: zero bytes named .mp3, no frame sync anywhere.
  const std::string z = dir / "zeros.mp3";
  synth::write_bytes(z, std::vector<unsigned char>(8192, 0));
  expect_audio_error([&] { load_audio(z); }, z, {"no MPEG audio frames found"});
}

TEST(AudioDecode, FloatWavWithNanNamesTheSample) {
  TempDir dir;
  auto x = synth::interleave({synth::sine(3000, 440, 22050), synth::sine(3000, 660, 22050)});
  x[2 * 1234 + 1] = std::nanf("");
  const std::string p = dir / "nan.wav";
  synth::write_wav(p, x, 2, 22050, synth::WavFormat::Float);
  expect_audio_error([&] { load_audio(p); }, p,
                     {"non-finite sample", "sample index 2469", "frame 1234", "channel 1"});
  x[2 * 1234 + 1] = 0.f;
  x[7] = INFINITY;
  synth::write_wav(p, x, 2, 22050, synth::WavFormat::Float);
  expect_audio_error([&] { load_audio(p); }, p, {"non-finite sample (inf)", "sample index 7"});
}

TEST(AudioDecode, TruncatedWavIsAnError) {
  TempDir dir;
  const std::string full = dir / "full.wav";
  synth::write_wav(full, synth::sine(10000, 440, 22050), 1, 22050, synth::WavFormat::Pcm16);
  auto bytes = synth::read_bytes(full);
  bytes.resize(bytes.size() - 5000);  // 2,500 frames short
  const std::string p = dir / "cut.wav";
  synth::write_bytes(p, bytes);
  expect_audio_error([&] { load_audio(p); }, p, {"truncated", "declares 10000 frames", "7500"});
}

TEST(AudioDecode, WavWithNoFramesHasNoAudio) {
  TempDir dir;
  const std::string p = dir / "silent_header.wav";
  synth::write_wav(p, {}, 1, 22050, synth::WavFormat::Pcm16);
  expect_audio_error([&] { load_audio(p); }, p, {"no audio"});
}

TEST(AudioDecode, TooShortForMinSamples) {
  TempDir dir;
  const std::string p = dir / "short.wav";
  synth::write_wav(p, synth::sine(1000, 440, 22050), 1, 22050, synth::WavFormat::Float);
  expect_audio_error([&] { load_audio(p, 22050, 1001); }, p,
                     {"too short", "1000 samples at 22050 Hz", "at least 1001 needed"});
  EXPECT_EQ(load_audio(p, 22050, 1000).samples.size(), 1000u);
  // The check is at the target rate: 1000 samples at 22050 Hz are 1451 at 32 kHz.
  EXPECT_EQ(load_audio(p, 32000, 1451).samples.size(), 1451u);
  expect_audio_error([&] { load_audio(p, 32000, 1452); }, p, {"too short", "1451 samples at 32000"});
}

TEST(AudioDecode, BadArgumentsAreRejected) {
  EXPECT_THROW(load_audio("x.wav", 0), std::invalid_argument);
  const float x[4] = {1, 2, 3, 4};
  EXPECT_THROW(resample(x, 4, 0.0, 22050), std::invalid_argument);
  EXPECT_THROW(resample(x, 4, 8000, -1.0), std::invalid_argument);
  EXPECT_THROW(resample(x, 4, NAN, 22050), std::invalid_argument);
}

// ---- good inputs ---------------------------------------------------------------

TEST(AudioDecode, WavAtTargetRateIsBitExact) {
  TempDir dir;
  const auto x = synth::noise(4321, 5);
  const std::string p = dir / "mono.wav";
  synth::write_wav(p, x, 1, 22050, synth::WavFormat::Float);
  const auto a = load_audio(p);
  EXPECT_EQ(a.sample_rate, 22050);
  EXPECT_EQ(a.source_rate, 22050);
  EXPECT_EQ(a.source_channels, 1);
  EXPECT_TRUE(testing::all_close(a.samples, x, {.atol = 0, .rtol = 0}));
  // 16-bit PCM: libsndfile writes round(x * 32767) and reads back v / 32768,
  // so the error is at most half a step plus the scale mismatch |x| / 32768.
  const std::string q = dir / "mono16.wav";
  synth::write_wav(q, x, 1, 22050, synth::WavFormat::Pcm16);
  const auto b = load_audio(q);
  EXPECT_TRUE(testing::all_close(b.samples, x, {.atol = 0.5 / 32767 + 0.5 / 32768, .rtol = 0}));
}

TEST(AudioDecode, FlacBehindAnId3TagGoesToLibsndfile) {
  // Taggers put ID3v2 in front of FLAC too: the sniffer looks past the tag.
  TempDir dir;
  const auto x = synth::sine(5000, 440, 22050, 0.5);
  const std::string flac = dir / "plain.flac";
  SF_INFO info{};
  info.samplerate = 22050;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(flac.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, x.data(), sf_count_t(x.size())), sf_count_t(x.size()));
  sf_close(f);
  const auto plain = load_audio(flac);
  auto bytes = synth::id3v2_with_cover(2000);
  const auto body = synth::read_bytes(flac);
  bytes.insert(bytes.end(), body.begin(), body.end());
  const std::string tagged = dir / "tagged.flac";
  synth::write_bytes(tagged, bytes);
  const auto a = load_audio(tagged);
  EXPECT_EQ(a.samples.size(), x.size());
  EXPECT_TRUE(testing::all_close(a.samples, plain.samples, {.atol = 0, .rtol = 0}));
}

TEST(AudioDecode, MultichannelWavIsTheChannelAverage) {
  for (int C : {3, 6}) {
    SCOPED_TRACE(C);
    TempDir dir;
    std::vector<std::vector<float>> chans;
    for (int c = 0; c < C; ++c) chans.push_back(synth::noise(2999, 100 + c, 0.9));
    const std::string p = dir / "multi.wav";
    synth::write_wav(p, synth::interleave(chans), C, 22050, synth::WavFormat::Float);
    const auto a = load_audio(p);
    EXPECT_EQ(a.source_channels, C);
    // Reference: the same float sum in channel order, divided by C: exact.
    std::vector<float> ref(2999);
    for (std::size_t i = 0; i < ref.size(); ++i) {
      float s = 0.f;
      for (int c = 0; c < C; ++c) s += chans[c][i];
      ref[i] = s / float(C);
    }
    EXPECT_TRUE(testing::all_close(a.samples, ref, {.atol = 0, .rtol = 0}));
  }
}

TEST(AudioDecode, WavsAtOtherRatesAreResampledTo22050) {
  struct Case {
    int rate;
    std::size_t n;
    double freq;
  };
  for (const Case c : {Case{8000, 8000 * 2 + 7, 440.0}, Case{48000, 48000 * 2 + 13, 1000.0},
                       Case{44100, 44100 + 1, 3000.0}}) {
    SCOPED_TRACE(c.rate);
    TempDir dir;
    const std::string p = dir / "tone.wav";
    synth::write_wav(p, synth::sine(c.n, c.freq, c.rate, 0.5), 1, c.rate, synth::WavFormat::Float);
    const auto a = load_audio(p);
    EXPECT_EQ(a.sample_rate, 22050);
    EXPECT_EQ(a.source_rate, c.rate);
    const auto want = std::size_t(std::llround(double(c.n) * 22050.0 / c.rate));
    EXPECT_EQ(a.samples.size(), want);
    // Away from the edges (the filter's transients, ~30 ms), the output is
    // the same sine at 22050 Hz: the fit residual is the resampler's error,
    // measured ~1e-5 relative for SOXR_HQ (20-bit); 1e-3 leaves room and
    // still fails at once for a frequency error of a fraction of a Hz.
    const std::size_t edge = 22050 / 20;
    const double res = sine_fit_residual(a.samples, edge, a.samples.size() - edge, c.freq, 22050);
    std::printf("rate %d -> 22050: %zu samples, sine fit residual %.3g\n", c.rate,
                a.samples.size(), res);
    EXPECT_LT(res, 1e-3);
    EXPECT_GT(sine_fit_residual(a.samples, edge, a.samples.size() - edge, c.freq + 2.0, 22050), 0.1);
    EXPECT_EQ(dominant_frequency(a.samples, edge, 11025, 22050, c.freq - 20, c.freq + 20), c.freq);
  }
}

TEST(AudioResample, LengthIsRoundedRatio) {
  const auto x = synth::noise(10007, 9);
  for (double in : {8000.0, 11025.0, 16000.0, 44100.0, 48000.0, 96000.0})
    for (std::size_t n : {std::size_t(1), std::size_t(5), std::size_t(999), std::size_t(10007)}) {
      const auto y = resample(x.data(), n, in, 22050);
      EXPECT_EQ(y.size(), std::size_t(std::llround(double(n) * 22050 / in))) << in << " " << n;
    }
  EXPECT_TRUE(resample(x.data(), 0, 8000, 22050).empty());
  // Same rate: a copy.
  const auto same = resample(x.data(), x.size(), 22050, 22050);
  EXPECT_TRUE(testing::all_close(same, x, {.atol = 0, .rtol = 0}));
}

TEST(AudioDecode, Mp3WithLargeCoverDecodesToTheSourceLength) {
  TempDir dir;
  const std::size_t n = 3 * 44100 + 123;
  const auto src = synth::sine(n, 1000.0, 44100, 0.5);
  const std::string p = dir / "cover.mp3";
  synth::Mp3Options opt;
  opt.id3_cover_bytes = 300 * 1024;
  const auto bytes = synth::write_mp3(p, src, 1, 44100, opt);
  ASSERT_GT(bytes.size(), 300u * 1024);
  // Gapless decoding with the LAME tag gives back exactly the source length.
  const auto a = load_audio(p, 44100);
  EXPECT_EQ(a.source_rate, 44100);
  EXPECT_EQ(a.source_channels, 1);
  EXPECT_EQ(a.samples.size(), n);
  // And at 22050 Hz, the resampled length.
  const auto b = load_audio(p);
  EXPECT_EQ(b.samples.size(), std::size_t(std::llround(n / 2.0)));
}

TEST(AudioDecode, Mp3WithoutXingTagDecodes) {
  TempDir dir;
  const std::size_t n = 2 * 44100 + 77;
  // A sweep, so that the alignment is unambiguous (a steady sine matches
  // itself at every whole number of periods).
  const auto src = synth::sweep(n, 200.0, 4000.0, 44100, 0.5);
  const std::string p = dir / "notag.mp3";
  synth::Mp3Options opt;
  opt.vbr_tag = false;
  synth::write_mp3(p, src, 1, 44100, opt);
  const auto a = load_audio(p, 44100);
  std::printf("no Xing tag: %zu samples decoded from %zu\n", a.samples.size(), n);
  // Without the tag libmpg123 knows neither LAME's encoder delay (576
  // samples, plus the 529-sample delay of the decoder's filter bank) nor
  // the padding that fills the last frame, so it trims nothing: the output
  // is whole 1152-sample frames, the source shifted by 1105 samples, and
  // ends within one frame after the source's end.
  constexpr std::size_t kDelay = 576 + 529;
  EXPECT_EQ(a.samples.size() % 1152, 0u);
  EXPECT_GE(a.samples.size(), n + kDelay);
  EXPECT_LT(a.samples.size(), n + kDelay + 1152);
  int lag = 0;
  const double snr = aligned_snr_db(a.samples, src, 1200, &lag);
  std::printf("no Xing tag: SNR %.1f dB at lag %d\n", snr, lag);
  EXPECT_EQ(lag, int(kDelay));
  EXPECT_GT(snr, 50.0);  // the bound of Mp3ContentIsCloseToTheSource, which explains it
}

TEST(AudioDecode, Mp3ContentIsCloseToTheSource) {
  TempDir dir;
  // Mono chord at 44.1 kHz, 192 kbps; and a stereo pair (channel average).
  const std::size_t n = 2 * 44100;
  const auto src = synth::chord(n, {440.0, 554.4, 659.3}, 44100, 0.6);
  const std::string p = dir / "chord.mp3";
  synth::Mp3Options opt;
  opt.bitrate_kbps = 192;
  synth::write_mp3(p, src, 1, 44100, opt);
  const auto a = load_audio(p, 44100);
  int lag = 99;
  double gain = 0;
  const double snr = aligned_snr_db(a.samples, src, 64, &lag, &gain);
  std::printf("MP3 192 kbps chord: SNR %.1f dB at lag %d, gain %.5f\n", snr, lag, gain);
  // Gapless decoding lines the output up with the source (lag 0) at the
  // source's level (best-fit gain 1). The SNR bound: MP3 is lossy, but on a
  // few steady tones LAME spends its bits on them; we measured ~80 dB for
  // these signals (LAME 3.100, libmpg123 1.31). 50 dB leaves 30 dB for other
  // encoder/decoder versions; a misaligned, mis-rated, wrongly mixed or
  // garbled decode lands near 0 dB. The gain is within 5%: at 192 kbps
  // LAME's quantisation leaves these steady tones 0.26 dB low (best-fit
  // gain 1.031; an independent decoder, libsndfile 1.2.2 via Python's
  // soundfile, measures the same 1.0309, and 320 kbps gives 0.99999). A mix
  // by sum instead of average would be off by 2x.
  EXPECT_EQ(lag, 0);
  EXPECT_GT(snr, 50.0);
  EXPECT_NEAR(gain, 1.0, 0.05);
  EXPECT_EQ(dominant_frequency(a.samples, 4096, 44100, 44100, 420, 460), 440.0);

  const auto left = synth::sine(n, 500.0, 44100, 0.5), right = synth::sine(n, 500.0, 44100, 0.3, 1.0);
  std::vector<float> mono(n);
  for (std::size_t i = 0; i < n; ++i) mono[i] = (left[i] + right[i]) / 2.f;
  const std::string s = dir / "stereo.mp3";
  synth::write_mp3(s, synth::interleave({left, right}), 2, 44100, opt);
  const auto b = load_audio(s, 44100);
  EXPECT_EQ(b.source_channels, 2);
  EXPECT_EQ(b.samples.size(), n);
  const double snr2 = aligned_snr_db(b.samples, mono, 64, &lag, &gain);
  std::printf("MP3 192 kbps stereo sine: SNR %.1f dB at lag %d, gain %.5f\n", snr2, lag, gain);
  EXPECT_EQ(lag, 0);
  EXPECT_GT(snr2, 50.0);  // same bounds and reasons as above
  EXPECT_NEAR(gain, 1.0, 0.05);
}

TEST(AudioDecode, LowRateMp3IsResampled) {
  // MPEG-2 layer III at 16 kHz (576-sample frames), resampled up to 22050.
  TempDir dir;
  const std::size_t n = 16000 * 2 + 5;
  const std::string p = dir / "low.mp3";
  synth::Mp3Options opt;
  opt.bitrate_kbps = 64;
  synth::write_mp3(p, synth::sine(n, 700.0, 16000, 0.5), 1, 16000, opt);
  const auto a = load_audio(p);
  EXPECT_EQ(a.source_rate, 16000);
  EXPECT_EQ(a.samples.size(), std::size_t(std::llround(n * 22050.0 / 16000)));
  EXPECT_EQ(dominant_frequency(a.samples, 2048, 22050, 22050, 680, 720), 700.0);
}

// ---- decode_all -----------------------------------------------------------------------

TEST(AudioDecodeAll, MixOfGoodAndBadFilesInOrder) {
  TempDir dir;
  std::vector<std::string> paths;
  std::vector<std::string> expect_error;  // "" for a good file, else a reason fragment
  for (int i = 0; i < 14; ++i) {
    const std::string p = dir / ("f" + std::to_string(i));
    switch (i % 7) {
      case 0:  // good WAV at 22050, length depends on i
        synth::write_wav(p + ".wav", synth::noise(3000 + 100 * i, i), 1, 22050,
                         synth::WavFormat::Float);
        paths.push_back(p + ".wav"), expect_error.push_back("");
        break;
      case 1:
        synth::write_bytes(p + ".mp3", {});
        paths.push_back(p + ".mp3"), expect_error.push_back("empty file");
        break;
      case 2:  // good 48 kHz stereo WAV
        synth::write_wav(p + ".wav",
                         synth::interleave({synth::sine(9600, 300.0 + i, 48000), synth::noise(9600, i)}),
                         2, 48000, synth::WavFormat::Pcm16);
        paths.push_back(p + ".wav"), expect_error.push_back("");
        break;
      case 3:
        synth::write_bytes(p + ".mp3", synth::png_bytes());
        paths.push_back(p + ".mp3"), expect_error.push_back("PNG image");
        break;
      case 4:  // good MP3
        synth::write_mp3(p + ".mp3", synth::sine(44100 / 2 + i, 440, 44100), 1, 44100);
        paths.push_back(p + ".mp3"), expect_error.push_back("");
        break;
      case 5: {  // truncated MP3
        auto b = synth::write_mp3(p + ".mp3", synth::sine(44100, 440, 44100), 1, 44100);
        b.resize(b.size() / 2);
        synth::write_bytes(p + ".mp3", b);
        paths.push_back(p + ".mp3"), expect_error.push_back("truncated");
        break;
      }
      case 6:  // too short for min_samples
        synth::write_wav(p + ".wav", synth::noise(500, i), 1, 22050, synth::WavFormat::Float);
        paths.push_back(p + ".wav"), expect_error.push_back("too short");
        break;
    }
  }
  const std::size_t min_samples = 1000;
  std::vector<DecodeResult> got;
  const auto caller = std::this_thread::get_id();
  decode_all(paths, 22050, min_samples, 3, [&](DecodeResult&& r) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    got.push_back(std::move(r));
  });
  ASSERT_EQ(got.size(), paths.size());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    SCOPED_TRACE(paths[i]);
    EXPECT_EQ(got[i].index, i);
    if (expect_error[i].empty()) {
      EXPECT_EQ(got[i].error, "");
      // Same samples as a direct, single-threaded load.
      const auto ref = load_audio(paths[i], 22050, min_samples);
      EXPECT_TRUE(testing::all_close(got[i].audio.samples, ref.samples, {.atol = 0, .rtol = 0}));
      EXPECT_EQ(got[i].audio.source_rate, ref.source_rate);
    } else {
      EXPECT_NE(got[i].error.find(expect_error[i]), std::string::npos) << got[i].error;
      EXPECT_TRUE(got[i].audio.samples.empty());
    }
  }
}

TEST(AudioDecodeAll, InFlightFilesAreBounded) {
  // With jobs = 3 at most 2 * 3 files are claimed ahead of delivery. Only
  // the first 6 files exist when decode_all starts; the rest are written by
  // the callback for file 0, which first waits 300 ms. A pipeline that ran
  // ahead would have tried file 6 during the wait and reported it missing.
  TempDir dir;
  const int jobs = 3, total = 16;
  std::vector<std::string> paths;
  for (int i = 0; i < total; ++i) paths.push_back(dir / ("b" + std::to_string(i) + ".wav"));
  auto make = [&](int i) {
    synth::write_wav(paths[i], synth::noise(1500 + i, i), 1, 22050, synth::WavFormat::Float);
  };
  for (int i = 0; i < 2 * jobs; ++i) make(i);
  std::vector<std::string> errors;
  decode_all(paths, 22050, 0, jobs, [&](DecodeResult&& r) {
    if (r.index == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      for (int i = 2 * jobs; i < total; ++i) make(i);
    }
    errors.push_back(r.error);
    EXPECT_EQ(r.audio.samples.size(), 1500u + r.index);
  });
  ASSERT_EQ(errors.size(), std::size_t(total));
  for (int i = 0; i < total; ++i) EXPECT_EQ(errors[i], "") << i;
}

TEST(AudioDecodeAll, CallbackExceptionStopsAndPropagates) {
  TempDir dir;
  std::vector<std::string> paths;
  for (int i = 0; i < 20; ++i) {
    paths.push_back(dir / ("g" + std::to_string(i) + ".wav"));
    synth::write_wav(paths.back(), synth::noise(2000, i), 1, 22050, synth::WavFormat::Float);
  }
  int calls = 0;
  EXPECT_THROW(decode_all(paths, 22050, 0, 2,
                          [&](DecodeResult&&) {
                            if (++calls == 3) throw std::runtime_error("stop");
                          }),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_THROW(decode_all(paths, 22050, 0, 0, [](DecodeResult&&) {}), std::invalid_argument);
  int none = 0;
  decode_all({}, 22050, 0, 4, [&](DecodeResult&&) { ++none; });
  EXPECT_EQ(none, 0);
}

}  // namespace
}  // namespace timbre::features
