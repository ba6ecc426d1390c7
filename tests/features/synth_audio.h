// synth_audio.h: test fixtures made at test time, so no audio file is
// committed. Header-only; a test that includes it links libsndfile
// (PkgConfig::SNDFILE) and LAME (timbre::mp3lame).
//
//   TempDir dir;                                   // removed with its files at scope exit
//   auto x = synth::sine(22050, 440.0, 22050.0);   // 1 s of A4 at half scale
//   synth::write_wav(dir / "a.wav", x, 1, 22050, synth::WavFormat::Float);
//   synth::write_mp3(dir / "a.mp3", x, 1, 22050, {.bitrate_kbps = 128});
//
// Signals are float in [-1, 1]. Multichannel data is interleaved
// (frame-major: x[frame * channels + channel]), the layout libsndfile and
// LAME take.
//
// MP3 anatomy, for the options of write_mp3 (and for the decoding tests):
//   [ID3v2 tag]  optional: "ID3", version, flags, a 28-bit "syncsafe" size,
//                then frames; here one APIC frame (a cover image).
//   [Info frame] optional: a silent first MPEG frame whose payload is the
//                Xing/LAME tag: the frame and byte counts of the stream and
//                the encoder delay/padding that gapless decoders trim.
//   [MPEG frames] 1152 samples each (MPEG-1 layer III, 32-48 kHz) or 576
//                (MPEG-2/2.5, 8-24 kHz), each starting with an 11-bit sync.
#pragma once

#include <lame/lame.h>
#include <sndfile.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/testing.h"  // TempDir

namespace timbre::testing {

namespace synth {

constexpr double kPi = 3.14159265358979323846;

// amp * sin(2 pi f t + phase), t = i / rate; computed in double.
inline std::vector<float> sine(std::size_t n, double freq, double rate, double amp = 0.5,
                               double phase = 0.0) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i)
    x[i] = float(amp * std::sin(2.0 * kPi * freq * double(i) / rate + phase));
  return x;
}

// A sum of sines of equal amplitude amp / freqs.size() (so the peak stays
// within amp).
inline std::vector<float> chord(std::size_t n, const std::vector<double>& freqs, double rate,
                                double amp = 0.5) {
  std::vector<double> acc(n, 0.0);
  for (std::size_t k = 0; k < freqs.size(); ++k)
    for (std::size_t i = 0; i < n; ++i)
      acc[i] += std::sin(2.0 * kPi * freqs[k] * double(i) / rate + 0.7 * double(k));
  std::vector<float> x(n);
  const double g = freqs.empty() ? 0.0 : amp / double(freqs.size());
  for (std::size_t i = 0; i < n; ++i) x[i] = float(g * acc[i]);
  return x;
}

// Linear chirp from f0 to f1 Hz over n samples: the phase is the integral
// of the instantaneous frequency f(t) = f0 + (f1 - f0) t / T.
inline std::vector<float> sweep(std::size_t n, double f0, double f1, double rate,
                                double amp = 0.5) {
  std::vector<float> x(n);
  const double T = double(n) / rate;
  for (std::size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    x[i] = float(amp * std::sin(2.0 * kPi * (f0 * t + 0.5 * (f1 - f0) * t * t / T)));
  }
  return x;
}

// Uniform noise in [-amp, amp] from a seeded mt19937 (same draws everywhere).
inline std::vector<float> noise(std::size_t n, std::uint32_t seed, double amp = 0.5) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-amp, amp);
  std::vector<float> x(n);
  for (auto& v : x) v = float(u(gen));
  return x;
}

// Interleaves equally long channels: out[i * C + c] = channels[c][i].
inline std::vector<float> interleave(const std::vector<std::vector<float>>& channels) {
  if (channels.empty()) return {};
  const std::size_t n = channels[0].size(), C = channels.size();
  for (const auto& ch : channels)
    if (ch.size() != n) throw std::invalid_argument("interleave: channels differ in length");
  std::vector<float> out(n * C);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < C; ++c) out[i * C + c] = channels[c][i];
  return out;
}

// ---- raw bytes -------------------------------------------------------------

inline void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("write_bytes: cannot create " + path);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("write_bytes: write failed for " + path);
}

inline std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("read_bytes: cannot open " + path);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), {});
}

// The first bytes of a real PNG: the 8-byte signature, then the IHDR chunk
// (length 13, "IHDR", 1x1 pixels, 8-bit RGB, CRC) and an empty IEND chunk.
inline std::vector<unsigned char> png_bytes() {
  return {0x89, 'P',  'N',  'G',  0x0D, 0x0A, 0x1A, 0x0A,                    // signature
          0x00, 0x00, 0x00, 0x0D, 'I',  'H',  'D',  'R',                     // IHDR, 13 bytes
          0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,                    // 1 x 1
          0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xDE,              // RGB8, CRC
          0x00, 0x00, 0x00, 0x00, 'I',  'E',  'N',  'D',  0xAE, 0x42, 0x60, 0x82};
}

// ---- WAV -----------------------------------------------------------------

enum class WavFormat { Float, Pcm16 };

// Writes interleaved samples (frames = samples.size() / channels) as a WAV
// file through libsndfile. Pcm16 converts with libsndfile's float -> int
// scaling (x * 32767, clipped), Float stores the values bit for bit (NaN and
// Inf included: clipping is off).
inline void write_wav(const std::string& path, const std::vector<float>& samples, int channels,
                      int rate, WavFormat format) {
  if (channels < 1 || samples.size() % std::size_t(channels) != 0)
    throw std::invalid_argument("write_wav: samples not a whole number of frames for " + path);
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | (format == WavFormat::Float ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16);
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  if (!f) throw std::runtime_error("write_wav: " + path + ": " + sf_strerror(nullptr));
  if (format == WavFormat::Pcm16) sf_command(f, SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t frames = sf_count_t(samples.size() / std::size_t(channels));
  const sf_count_t wrote = sf_writef_float(f, samples.data(), frames);
  sf_close(f);
  if (wrote != frames) throw std::runtime_error("write_wav: short write to " + path);
}

// ---- MP3 -----------------------------------------------------------------

struct Mp3Options {
  int bitrate_kbps = 128;           // constant bit rate
  bool vbr_tag = true;              // write the Xing/LAME "Info" frame (lame_set_bWriteVbrTag)
  std::size_t id3_cover_bytes = 0;  // > 0: prepend an ID3v2.3 tag with an APIC image this big
  int quality = 5;                  // LAME's algorithm quality, 0 (best) .. 9 (fastest)
};

// The ID3v2.3 tag with one APIC (attached picture) frame of `image_bytes`
// bytes: a JPEG start-of-image marker followed by seeded random bytes, so
// the "image" is full of bytes that look like MPEG frame syncs (0xFF 0xFx) -
// the decoder must skip the tag by its declared size, not search through it.
inline std::vector<unsigned char> id3v2_with_cover(std::size_t image_bytes) {
  std::vector<unsigned char> body;  // APIC frame payload
  body.push_back(0x00);             // text encoding: ISO-8859-1
  for (char c : std::string("image/jpeg")) body.push_back(static_cast<unsigned char>(c));
  body.push_back(0x00);
  body.push_back(0x03);  // picture type: front cover
  body.push_back(0x00);  // empty description
  std::mt19937 gen(1234);
  const std::size_t start = body.size();
  body.resize(start + image_bytes);
  for (std::size_t i = 0; i < image_bytes; ++i) body[start + i] = static_cast<unsigned char>(gen());
  if (image_bytes >= 3) body[start] = 0xFF, body[start + 1] = 0xD8, body[start + 2] = 0xFF;

  std::vector<unsigned char> tag = {'I', 'D', '3', 3, 0, 0, 0, 0, 0, 0};  // v2.3.0, no flags
  const std::uint32_t fsize = std::uint32_t(body.size());
  // Frame header: id, 4-byte big-endian payload size (v2.3 sizes are plain,
  // not syncsafe), 2 flag bytes.
  for (char c : std::string("APIC")) tag.push_back(static_cast<unsigned char>(c));
  for (int shift = 24; shift >= 0; shift -= 8) tag.push_back(static_cast<unsigned char>(fsize >> shift));
  tag.push_back(0);
  tag.push_back(0);
  tag.insert(tag.end(), body.begin(), body.end());
  // The tag size (excluding its 10-byte header) in 4 bytes of 7 bits each.
  const std::uint32_t tsize = std::uint32_t(tag.size() - 10);
  tag[6] = (tsize >> 21) & 0x7F;
  tag[7] = (tsize >> 14) & 0x7F;
  tag[8] = (tsize >> 7) & 0x7F;
  tag[9] = tsize & 0x7F;
  return tag;
}

// Encodes interleaved float samples (1 or 2 channels) at `rate` with LAME at
// a constant bit rate and writes `path`. The output rate is the input rate
// (LAME must not resample). With vbr_tag the first frame is the Xing/LAME
// tag, filled in after the flush (lame_get_lametag_frame) once LAME knows the
// frame count and padding. Returns the bytes written.
inline std::vector<unsigned char> write_mp3(const std::string& path,
                                            const std::vector<float>& samples, int channels,
                                            int rate, const Mp3Options& opt = {}) {
  if (channels != 1 && channels != 2)
    throw std::invalid_argument("write_mp3: 1 or 2 channels, got " + std::to_string(channels));
  if (samples.size() % std::size_t(channels) != 0)
    throw std::invalid_argument("write_mp3: samples not a whole number of frames");
  lame_global_flags* gf = lame_init();
  if (!gf) throw std::runtime_error("write_mp3: lame_init failed");
  lame_set_in_samplerate(gf, rate);
  lame_set_out_samplerate(gf, rate);
  lame_set_num_channels(gf, channels);
  lame_set_mode(gf, channels == 1 ? MONO : JOINT_STEREO);
  lame_set_brate(gf, opt.bitrate_kbps);
  lame_set_VBR(gf, vbr_off);
  lame_set_quality(gf, opt.quality);
  lame_set_bWriteVbrTag(gf, opt.vbr_tag ? 1 : 0);
  lame_set_write_id3tag_automatic(gf, 0);
  if (lame_init_params(gf) < 0) {
    lame_close(gf);
    throw std::runtime_error("write_mp3: lame_init_params rejected the settings for " + path);
  }
  const int frames = int(samples.size() / std::size_t(channels));
  // LAME's documented worst case: 1.25 * samples + 7200 bytes.
  std::vector<unsigned char> mp3(std::size_t(1.25 * frames) + 7200 + 8192);
  int n = channels == 2
              ? lame_encode_buffer_interleaved_ieee_float(gf, samples.data(), frames, mp3.data(),
                                                          int(mp3.size()))
              : lame_encode_buffer_ieee_float(gf, samples.data(), samples.data(), frames,
                                              mp3.data(), int(mp3.size()));
  if (n < 0) {
    lame_close(gf);
    throw std::runtime_error("write_mp3: LAME encoding failed (" + std::to_string(n) + ")");
  }
  std::size_t used = std::size_t(n);
  n = lame_encode_flush(gf, mp3.data() + used, int(mp3.size() - used));
  if (n < 0) {
    lame_close(gf);
    throw std::runtime_error("write_mp3: LAME flush failed");
  }
  used += std::size_t(n);
  mp3.resize(used);
  if (opt.vbr_tag) {
    // The first frame of the stream was reserved for the tag: overwrite it.
    unsigned char tag[8192];
    const std::size_t tn = lame_get_lametag_frame(gf, tag, sizeof tag);
    if (tn == 0 || tn > mp3.size()) {
      lame_close(gf);
      throw std::runtime_error("write_mp3: no LAME tag frame");
    }
    std::copy(tag, tag + tn, mp3.begin());
  }
  lame_close(gf);
  std::vector<unsigned char> file;
  if (opt.id3_cover_bytes > 0) file = id3v2_with_cover(opt.id3_cover_bytes);
  file.insert(file.end(), mp3.begin(), mp3.end());
  write_bytes(path, file);
  return file;
}

}  // namespace synth
}  // namespace timbre::testing
