// audio.cpp: file -> mono float samples at the target rate.
//
// The chain (docs/features/decoding.md has the whole story and the table of
// bad inputs):
//
//   open + sniff   the first bytes decide the decoder: "ID3" or an MPEG
//                  frame sync -> libmpg123; RIFF/RF64/FLAC/Ogg/AU/AIFF ->
//                  libsndfile; a known non-audio signature (PNG, JPEG, ...)
//                  -> error; anything else by extension (.mp3/.mp2 ->
//                  libmpg123, the rest -> libsndfile, which then says what
//                  it does not recognise).
//   decode         float32 frames, channels averaged on the fly into mono:
//                  mono[i] = (x[i,0] + x[i,1] + ... + x[i,C-1]) / C, summed
//                  in channel order in float (a test reproduces it bit for bit).
//   length checks  the decoded length against what the container claims
//                  (the LAME/Xing tag for MP3, the WAV data chunk or the
//                  frame count for libsndfile), every sample finite.
//   resample       libsoxr's HQ recipe (soxr_quality_spec(SOXR_HQ, 0),
//                  float32 in and out: librosa's res_type="soxr_hq") when the
//                  file's rate differs; round(n * out / in) samples.
//   min_samples    the caller's need, checked at the target rate.
//
// Nothing here is on the device: decoding is branchy byte parsing, and the
// resampler is a library. The samples go to the GPU afterwards (logmel).
#include "features/audio.h"

#include <mpg123.h>
#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace timbre::features {

AudioError::AudioError(std::string path, std::string reason)
    : std::runtime_error(path + ": " + reason), path_(std::move(path)), reason_(std::move(reason)) {}

namespace {

// ---- sniffing ----------------------------------------------------------------

enum class Container { Mpeg, Sndfile };

std::string lower_extension(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot + 1);
  for (auto& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

bool starts_with(const unsigned char* b, std::size_t n, const char* sig, std::size_t len) {
  return n >= len && std::memcmp(b, sig, len) == 0;
}

// Reads the head of the file and picks the decoder. Throws for a missing,
// unreadable or empty file and for well-known non-audio signatures (a cover
// image or a web page saved as .mp3 is a common dataset accident).
Container sniff(const std::string& path, std::uintmax_t* file_size) {
  // A directory opens (and "reads") on Linux: say what it is, not what a
  // decoder makes of it.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw AudioError(path, "a directory, not an audio file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw AudioError(path, std::string("cannot open: ") + std::strerror(errno));
  const auto end = f.tellg();
  if (end < 0) throw AudioError(path, "cannot read the file size");
  *file_size = std::uintmax_t(end);
  if (end == 0) throw AudioError(path, "empty file (0 bytes)");
  unsigned char b[16] = {};
  f.seekg(0);
  f.read(reinterpret_cast<char*>(b), sizeof b);
  const std::size_t n = std::size_t(f.gcount());

  if (starts_with(b, n, "ID3", 3) && n >= 10) {
    // An ID3v2 tag: 10-byte header, a 28-bit "syncsafe" size (7 bits per
    // byte), a 10-byte footer when flag 0x10 is set. Usually MP3 follows,
    // but taggers also put ID3v2 in front of FLAC: look past the tag.
    const std::uintmax_t tag = 10 + (std::uintmax_t(b[6] & 0x7F) << 21 |
                                     std::uintmax_t(b[7] & 0x7F) << 14 |
                                     std::uintmax_t(b[8] & 0x7F) << 7 | std::uintmax_t(b[9] & 0x7F)) +
                               ((b[5] & 0x10) ? 10 : 0);
    unsigned char after[4] = {};
    f.clear();
    f.seekg(std::streamoff(tag));
    f.read(reinterpret_cast<char*>(after), 4);
    if (f.gcount() == 4 && starts_with(after, 4, "fLaC", 4)) return Container::Sndfile;
    return Container::Mpeg;
  }
  if (n >= 2 && b[0] == 0xFF && (b[1] & 0xE0) == 0xE0) return Container::Mpeg;  // 11-bit sync
  if (starts_with(b, n, "RIFF", 4) || starts_with(b, n, "RIFX", 4) || starts_with(b, n, "RF64", 4) ||
      starts_with(b, n, "fLaC", 4) || starts_with(b, n, "OggS", 4) || starts_with(b, n, ".snd", 4) ||
      starts_with(b, n, "FORM", 4) || starts_with(b, n, "caff", 4) || starts_with(b, n, "wvpk", 4))
    return Container::Sndfile;

  struct Known {
    const char* sig;
    std::size_t len;
    const char* what;
  };
  static const Known kNotAudio[] = {
      {"\x89PNG\r\n\x1a\n", 8, "PNG image"}, {"\xFF\xD8\xFF", 3, "JPEG image"},
      {"GIF8", 4, "GIF image"},              {"%PDF", 4, "PDF document"},
      {"PK\x03\x04", 4, "ZIP archive"},      {"<!DOCTYPE", 9, "HTML page"},
      {"<html", 5, "HTML page"},             {"<?xml", 5, "XML document"},
      {"\x1F\x8B", 2, "gzip archive"},
  };
  for (const auto& k : kNotAudio)
    if (starts_with(b, n, k.sig, k.len))
      throw AudioError(path, std::string("not an audio file: it starts with the signature of a ") +
                                 k.what);

  const std::string ext = lower_extension(path);
  if (ext == "mp3" || ext == "mp2" || ext == "mpga") return Container::Mpeg;
  return Container::Sndfile;
}

// ---- mono mix ----------------------------------------------------------------

// Appends the channel average of `frames` interleaved frames to `mono`, and
// checks every input sample is finite. `first_sample` is the interleaved
// index of in[0] within the file, for the error message.
void mix_into(std::vector<float>& mono, const float* in, std::size_t frames, int channels,
              std::size_t first_sample, const std::string& path) {
  const std::size_t C = std::size_t(channels);
  for (std::size_t i = 0; i < frames * C; ++i)
    if (!std::isfinite(in[i])) {
      std::ostringstream msg;
      msg << "non-finite sample (" << in[i] << ") at sample index " << first_sample + i
          << " (frame " << (first_sample + i) / C << ", channel " << (first_sample + i) % C << ")";
      throw AudioError(path, msg.str());
    }
  const std::size_t at = mono.size();
  mono.resize(at + frames);
  if (C == 1) {
    std::copy(in, in + frames, mono.begin() + std::ptrdiff_t(at));
    return;
  }
  const float channels_f = float(C);
  for (std::size_t f = 0; f < frames; ++f) {
    float s = 0.0f;
    for (std::size_t c = 0; c < C; ++c) s += in[f * C + c];
    mono[at + f] = s / channels_f;
  }
}

struct Decoded {
  std::vector<float> mono;
  int rate = 0;
  int channels = 0;
};

// ---- MP3 (libmpg123) ------------------------------------------------------------

// mpg123_init() must run once before any handle exists, and is not safe to
// race. Since libmpg123 1.27 it does nothing, but the documented contract is
// what we code to: std::call_once makes it run exactly once even when
// decode_all's threads all start at the same moment.
int mpg123_init_once() {
  static std::once_flag once;
  static int status = MPG123_ERR;
  std::call_once(once, [] { status = mpg123_init(); });
  return status;
}

struct Mpg123Closer {
  void operator()(mpg123_handle* h) const {
    mpg123_close(h);
    mpg123_delete(h);
  }
};

// The corrupt-MP3 policy (docs/features/decoding.md has the measurements):
//  1. libmpg123 resyncs over junk between frames (up to its resync limit,
//     1024 bytes); an error from mpg123_read - such as junk longer than that
//     limit - is fatal, as is a change of rate or channel count mid-stream
//     (a damaged header that happened to parse as a different stream).
//  2. A decoded sample beyond +-kMaxMagnitude (8, +18 dBFS) cannot come out
//     of a real encoder (the overshoot of a clipped master stays well under
//     +6 dB); it is what garbage Huffman data with a random global gain can
//     decode to: the file is corrupt.
//  3. With a LAME/Xing "Info" tag the stream's frame count is known:
//     mpg123_scan must find exactly that many frames (one lost to damage,
//     one cut off or one spliced in is an error), and the gapless decoded
//     length must match the tag's length to within one frame.
//  Damage confined inside a frame's audio data (a few hundred bytes) that
//  leaves every header intact decodes with a local glitch and is accepted:
//  nothing in the container can tell it apart. Without a tag, a cut on a
//  frame boundary is indistinguishable from a shorter song: only
//  min_samples can catch it.
constexpr float kMaxMagnitude = 8.0f;

Decoded decode_mpeg(const std::string& path) {
  if (mpg123_init_once() != MPG123_OK) throw AudioError(path, "mpg123_init failed");
  int err = MPG123_OK;
  std::unique_ptr<mpg123_handle, Mpg123Closer> mh(mpg123_new(nullptr, &err));
  if (!mh) throw AudioError(path, std::string("mpg123_new: ") + mpg123_plain_strerror(err));
  auto fail = [&](const std::string& what) {
    throw AudioError(path, what + " (mpg123: " + mpg123_strerror(mh.get()) + ")");
  };
  // Quiet (errors come back as codes), gapless (encoder delay and padding
  // trimmed as the LAME tag says), float output only, at whatever rate and
  // channel count the stream has.
  mpg123_param(mh.get(), MPG123_ADD_FLAGS, MPG123_QUIET | MPG123_GAPLESS | MPG123_FORCE_FLOAT, 0.0);
  mpg123_format_none(mh.get());
  const long* rates = nullptr;
  std::size_t nrates = 0;
  mpg123_rates(&rates, &nrates);
  for (std::size_t i = 0; i < nrates; ++i)
    mpg123_format(mh.get(), rates[i], MPG123_MONO | MPG123_STEREO, MPG123_ENC_FLOAT_32);
  if (mpg123_open(mh.get(), path.c_str()) != MPG123_OK) fail("cannot open as MPEG audio");

  long rate = 0;
  int channels = 0, encoding = 0;
  if (mpg123_getformat(mh.get(), &rate, &channels, &encoding) != MPG123_OK)
    fail("no MPEG audio frames found");
  if (encoding != MPG123_ENC_FLOAT_32) fail("libmpg123 cannot give float32 output");

  // The LAME/Xing tag, read with the first frame: encoder delay >= 0 means
  // it was there, and then mpg123_length/framelength report its counts (the
  // gapless length: frames * samples per frame - delay - padding).
  long enc_delay = -1;
  double unused = 0.0;
  mpg123_getstate(mh.get(), MPG123_ENC_DELAY, &enc_delay, &unused);
  const bool has_tag = enc_delay >= 0;
  const off_t tag_samples = has_tag ? mpg123_length(mh.get()) : -1;
  const off_t tag_frames = has_tag ? mpg123_framelength(mh.get()) : -1;
  mpg123_frameinfo2 fi{};
  mpg123_info2(mh.get(), &fi);
  // Samples per frame: layer I 384, layer II 1152, layer III 1152 for
  // MPEG-1 (32-48 kHz) and 576 for MPEG-2/2.5 (8-24 kHz).
  const long spf = fi.layer == 1 ? 384 : (fi.layer == 2 || fi.version == MPG123_1_0) ? 1152 : 576;

  // Walk every frame header to the end (this also makes seeking exact).
  if (mpg123_scan(mh.get()) != MPG123_OK) fail("scanning the MPEG frames failed");
  const off_t scanned_frames = mpg123_framelength(mh.get());

  Decoded out;
  out.rate = int(rate);
  out.channels = channels;
  std::vector<float> buf(std::size_t(16384) * std::size_t(channels));
  std::size_t decoded_frames = 0;
  float peak = 0.0f;
  for (;;) {
    std::size_t bytes = 0;
    const int r = mpg123_read(mh.get(), buf.data(), buf.size() * sizeof(float), &bytes);
    const std::size_t frames = bytes / (sizeof(float) * std::size_t(channels));
    if (frames > 0) {
      for (std::size_t i = 0; i < frames * std::size_t(channels); ++i)
        peak = std::max(peak, std::fabs(buf[i]));  // NaN is caught by mix_into
      mix_into(out.mono, buf.data(), frames, channels, decoded_frames * std::size_t(channels), path);
      decoded_frames += frames;
    }
    if (r == MPG123_DONE) break;
    if (r == MPG123_NEW_FORMAT) {
      long r2 = 0;
      int c2 = 0, e2 = 0;
      mpg123_getformat(mh.get(), &r2, &c2, &e2);
      if (r2 != rate || c2 != channels) {
        std::ostringstream msg;
        msg << "corrupt: the stream changes format mid-way (" << rate << " Hz x" << channels
            << " -> " << r2 << " Hz x" << c2 << ") after " << decoded_frames << " samples";
        throw AudioError(path, msg.str());
      }
      continue;
    }
    if (r != MPG123_OK) {
      std::ostringstream msg;
      msg << "corrupt MPEG data after " << decoded_frames << " samples";
      fail(msg.str());
    }
  }
  if (decoded_frames == 0) throw AudioError(path, "no audio: no MPEG audio frame decoded");
  if (!(peak <= kMaxMagnitude)) {
    std::ostringstream msg;
    msg << "corrupt MPEG data: decodes to a peak of " << peak
        << " (over 8x full scale, impossible for a real encoding)";
    throw AudioError(path, msg.str());
  }
  if (has_tag) {
    const auto claimed = std::intmax_t(tag_samples);
    const auto got = std::intmax_t(decoded_frames);
    if (scanned_frames != tag_frames || got + spf < claimed || got > claimed + spf) {
      const bool short_ = scanned_frames < tag_frames || got < claimed;
      std::ostringstream msg;
      msg << (short_ ? "truncated or corrupt" : "corrupt") << ": found " << scanned_frames
          << " of the " << tag_frames << " MPEG frames the LAME/Xing tag declares, decoded " << got
          << " of its " << claimed << " samples";
      throw AudioError(path, msg.str());
    }
  }
  return out;
}

// ---- WAV/FLAC/OGG/AU (libsndfile) -------------------------------------------------

// For RIFF WAV, the data chunk's declared size in frames, or -1 when it is
// not available (not RIFF, streaming size 0 / 0xFFFFFFFF, no data chunk).
// libsndfile quietly shortens a data chunk that runs past the end of the
// file, so this is how a cut WAV is told from a short one.
long long wav_declared_frames(const std::string& path, std::uintmax_t file_size,
                              std::uintmax_t* data_offset) {
  std::ifstream f(path, std::ios::binary);
  unsigned char h[12];
  if (!f.read(reinterpret_cast<char*>(h), 12)) return -1;
  if (std::memcmp(h, "RIFF", 4) != 0 || std::memcmp(h + 8, "WAVE", 4) != 0) return -1;
  auto le32 = [](const unsigned char* p) {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
           std::uint32_t(p[3]) << 24;
  };
  unsigned block_align = 0;
  std::uintmax_t pos = 12;
  while (pos + 8 <= file_size) {
    unsigned char ch[8];
    f.seekg(std::streamoff(pos));
    if (!f.read(reinterpret_cast<char*>(ch), 8)) return -1;
    const std::uint32_t size = le32(ch + 4);
    if (std::memcmp(ch, "fmt ", 4) == 0 && size >= 16) {
      unsigned char fmt[16];
      if (!f.read(reinterpret_cast<char*>(fmt), 16)) return -1;
      block_align = unsigned(fmt[12]) | unsigned(fmt[13]) << 8;
    } else if (std::memcmp(ch, "data", 4) == 0) {
      if (block_align == 0 || size == 0 || size == 0xFFFFFFFFu) return -1;
      *data_offset = pos + 8;
      return (long long)(size / block_align);
    }
    pos += 8 + size + (size & 1);  // chunks are padded to even sizes
  }
  return -1;
}

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};

Decoded decode_sndfile(const std::string& path, std::uintmax_t file_size) {
  SF_INFO info{};
  std::unique_ptr<SNDFILE, SndfileCloser> sf(sf_open(path.c_str(), SFM_READ, &info));
  if (!sf)
    throw AudioError(path, std::string("not a readable audio file (libsndfile: ") +
                               sf_strerror(nullptr) + ")");
  if (info.channels < 1 || info.samplerate < 1)
    throw AudioError(path, "no audio: the header declares no channels or no sample rate");
  // Integer PCM comes back scaled to [-1, 1) (x / 32768 for 16 bit); float
  // files come back as stored, NaN and Inf included, so they can be caught.
  Decoded out;
  out.rate = info.samplerate;
  out.channels = info.channels;
  const std::size_t C = std::size_t(info.channels);
  std::vector<float> buf(std::size_t(16384) * C);
  std::size_t got = 0;
  for (;;) {
    const sf_count_t n = sf_readf_float(sf.get(), buf.data(), sf_count_t(buf.size() / C));
    if (n <= 0) break;
    mix_into(out.mono, buf.data(), std::size_t(n), info.channels, got * C, path);
    got += std::size_t(n);
  }
  if (sf_error(sf.get()) != SF_ERR_NO_ERROR)
    throw AudioError(path, std::string("corrupt: decoding stopped after ") + std::to_string(got) +
                               " frames (libsndfile: " + sf_strerror(sf.get()) + ")");
  if (got == 0) throw AudioError(path, "no audio: the file holds 0 sample frames");
  if (info.frames > 0 && sf_count_t(got) < info.frames)
    throw AudioError(path, "truncated: read " + std::to_string(got) + " of the " +
                               std::to_string(info.frames) + " frames the header declares");
  std::uintmax_t data_offset = 0;
  const long long declared = wav_declared_frames(path, file_size, &data_offset);
  if (declared >= 0 && (long long)got < declared)
    throw AudioError(path, "truncated: the WAV data chunk declares " + std::to_string(declared) +
                               " frames but the file holds " + std::to_string(got));
  return out;
}

}  // namespace

// ---- resampling ------------------------------------------------------------------

std::vector<float> resample(const float* x, std::size_t n, double in_rate, double out_rate) {
  if (!(in_rate > 0) || !std::isfinite(in_rate))
    throw std::invalid_argument("resample: in_rate must be positive, got " + std::to_string(in_rate));
  if (!(out_rate > 0) || !std::isfinite(out_rate))
    throw std::invalid_argument("resample: out_rate must be positive, got " +
                                std::to_string(out_rate));
  if (n > 0 && x == nullptr) throw std::invalid_argument("resample: x is null");
  if (in_rate == out_rate) return std::vector<float>(x, x + n);
  const auto want = std::size_t(std::llround(double(n) * out_rate / in_rate));
  if (n == 0 || want == 0) return {};
  // SOXR_HQ is libsoxr's 20-bit recipe: a linear-phase low-pass FIR whose
  // pass band keeps 91.3% of the lower Nyquist frequency, with stop-band
  // attenuation for 20-bit precision (about 120 dB). soxr's one-shot call
  // runs the whole signal through it and flushes the filter tail, giving
  // the rounded n * out / in samples; the headroom only guards against a
  // library that rounds up.
  std::vector<float> y(want + 16);
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
  std::size_t idone = 0, odone = 0;
  const soxr_error_t e =
      soxr_oneshot(in_rate, out_rate, 1, x, n, &idone, y.data(), y.size(), &odone, &io, &q, nullptr);
  if (e) throw std::runtime_error(std::string("resample: libsoxr: ") + e);
  if (odone < want)
    throw std::runtime_error("resample: libsoxr gave " + std::to_string(odone) + " samples, " +
                             std::to_string(want) + " expected");
  y.resize(want);
  return y;
}

// ---- load_audio ---------------------------------------------------------------------

DecodedAudio load_audio(const std::string& path, int target_rate, std::size_t min_samples) {
  if (target_rate <= 0)
    throw std::invalid_argument("load_audio: target_rate must be positive, got " +
                                std::to_string(target_rate) + " (for " + path + ")");
  std::uintmax_t size = 0;
  const Container kind = sniff(path, &size);
  Decoded d = kind == Container::Mpeg ? decode_mpeg(path) : decode_sndfile(path, size);
  DecodedAudio out;
  out.source_rate = d.rate;
  out.source_channels = d.channels;
  out.sample_rate = target_rate;
  if (d.rate == target_rate) {
    out.samples = std::move(d.mono);
  } else {
    out.samples = resample(d.mono.data(), d.mono.size(), d.rate, target_rate);
    std::vector<float>().swap(d.mono);
  }
  if (out.samples.size() < min_samples) {
    std::ostringstream msg;
    msg << "too short: " << out.samples.size() << " samples at " << target_rate << " Hz ("
        << double(out.samples.size()) / target_rate << " s), at least " << min_samples
        << " needed";
    throw AudioError(path, msg.str());
  }
  return out;
}

// ---- decode_all -------------------------------------------------------------------------
//
// A small ordered pipeline. Workers claim the next index from a shared
// counter, but only while it is within `window` of the next index to deliver
// (window = 2 per thread), so at most `window` decoded files exist at once
// whatever the number of paths or the order in which files finish. The
// calling thread waits for the result at the head of the window, hands it to
// on_result (outside the lock, so decoding goes on meanwhile) and slides the
// window. If on_result throws, the workers are told to stop, joined, and the
// exception propagates.
void decode_all(const std::vector<std::string>& paths, int target_rate, std::size_t min_samples,
                int jobs, const std::function<void(DecodeResult&&)>& on_result) {
  if (jobs < 1) throw std::invalid_argument("decode_all: jobs must be >= 1, got " + std::to_string(jobs));
  if (!on_result) throw std::invalid_argument("decode_all: on_result is empty");
  const std::size_t total = paths.size();
  if (total == 0) return;
  const std::size_t nthreads = std::min<std::size_t>(std::size_t(jobs), total);
  const std::size_t window = 2 * nthreads;

  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  std::size_t next_claim = 0, next_deliver = 0;
  bool stop = false;
  // Slot i % window holds result i while it waits to be delivered.
  std::vector<std::optional<DecodeResult>> slots(window);

  auto worker = [&] {
    for (;;) {
      std::size_t i;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, [&] { return stop || next_claim >= total || next_claim < next_deliver + window; });
        if (stop || next_claim >= total) return;
        i = next_claim++;
      }
      DecodeResult r;
      r.index = i;
      try {
        r.audio = load_audio(paths[i], target_rate, min_samples);
      } catch (const AudioError& e) {
        r.audio = {};
        r.error = e.reason();
      } catch (const std::exception& e) {
        r.audio = {};
        r.error = e.what();
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        slots[i % window] = std::move(r);
      }
      cv_done.notify_all();
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  auto shutdown = [&] {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv_work.notify_all();
    for (auto& t : threads) t.join();
  };
  try {
    for (std::size_t t = 0; t < nthreads; ++t) threads.emplace_back(worker);
    while (next_deliver < total) {
      DecodeResult r;
      {
        std::unique_lock<std::mutex> lk(mu);
        auto& slot = slots[next_deliver % window];
        cv_done.wait(lk, [&] { return slot.has_value() && slot->index == next_deliver; });
        r = std::move(*slot);
        slot.reset();
      }
      on_result(std::move(r));
      {
        std::lock_guard<std::mutex> lk(mu);
        ++next_deliver;
      }
      cv_work.notify_all();
    }
  } catch (...) {
    shutdown();
    throw;
  }
  shutdown();
}

}  // namespace timbre::features
