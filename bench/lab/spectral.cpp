// spectral: the log-mel pipeline's kernels per 128x128 segment (65,024
// samples at 22,050 Hz, n_fft 2048, hop 512: 128 frames, 128 Slaney mels;
// features/params.h), the batch counting segments: the GPU path (framing
// for cuFFT D2Z, banded mel on its spectrum), the sim path (the fused STFT
// + mel), the hand-written STFT versions (v2 at n_fft 1024, its largest),
// the banded mel on their power, the per-clip maximum and the decibels.
#include "bench/lab/lab.h"
#include "kernels/spectral.cuh"

#include <algorithm>
#include <cmath>

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr double kRate = 22050;
constexpr int kHop = 512, kMels = 128, kFrames = 128;
constexpr long long kSegment = (long long)(kFrames - 1) * kHop;  // 65,024 samples
constexpr double kTopDb = 80;

int bins(int n_fft) { return n_fft / 2 + 1; }
double log2i(int n) { return std::log2(double(n)); }

// The FFT part of the hand-written STFTs. spectral.cuh declares no cost for
// them: per frame read n_fft float samples, ~2.5 n_fft log2(n_fft) flops
// (a real FFT) and the window product; then |X|^2 (3 flops) per bin.
k::Cost fft_cost(double frames, int n_fft) {
  return k::elementwise_cost(frames * n_fft, 1, 0, 2.5 * log2i(n_fft) + 1);
}

// The host side of one STFT setup: the signal (clips x 65,024 samples), the
// Hann window and twiddles, the filterbank and its bands (for n_fft).
struct Setup {
  int n_fft, clips;
  std::vector<float> signal;
  std::vector<double> window, filterbank;
  k::MelBands bands;
  DeviceBuffer<float> d_signal;
  DeviceBuffer<double> d_window, d_weights;
  DeviceBuffer<double2> d_twiddles;
  DeviceBuffer<int> d_start, d_length, d_offset;
  Setup(int nfft, int batch)
      : n_fft(nfft), clips(batch), signal(random_values<float>(size_t(batch * kSegment), 111)),
        window(k::hann_window_f64(nfft)),
        filterbank(k::mel_filterbank_slaney(kRate, nfft, kMels, 0, kRate / 2)),
        bands(k::compact_mel_bands(filterbank.data(), kMels, bins(nfft))), d_signal(signal),
        d_window(window), d_weights(bands.weights), d_twiddles(k::fft_twiddles(nfft)),
        d_start(bands.start), d_length(bands.length), d_offset(bands.offset) {}
  k::MelBandsView view() const {
    return {d_start.get(), d_length.get(), d_offset.get(), d_weights.get(), kMels, bins(n_fft)};
  }
  // The power of frames [first, first + count) of clip c, by stft_power_cpu
  // (a direct O(n_fft^2) DFT per frame: too slow for all frames) on a piece
  // of the clip: its head (first = 0), or the tail from `pad` frames before
  // `first` (the piece's frames from `pad` on see the same samples as the
  // clip's, including the zero padding past its end).
  std::vector<double> ref_power(int c, int first, int count) const {
    const int pad = (n_fft / 2 + kHop - 1) / kHop;
    const long long start = first == 0 ? 0 : (long long)(first - pad) * kHop;
    const int skip = first == 0 ? 0 : pad;
    const long long len =
        first == 0 ? std::min<long long>(kSegment, (long long)(count - 1) * kHop + n_fft / 2)
                   : kSegment - start;
    const long long piece_frames = k::stft_frames(len, kHop);
    std::vector<double> p(size_t(piece_frames) * bins(n_fft));
    k::stft_power_cpu({signal.data() + c * kSegment + start, len, 1, len}, window.data(),
                      {n_fft, kHop}, p.data());
    return std::vector<double>(p.begin() + size_t(skip) * bins(n_fft),
                               p.begin() + size_t(skip + count) * bins(n_fft));
  }
};

// The frames checked: the first two of clip 0, the last two of the last clip.
constexpr int kChecked = 2;
struct Slice {
  int clip, first;
};
std::vector<Slice> checked_slices(int clips) {
  return {{0, 0}, {clips - 1, kFrames - kChecked}};
}

// launch_stft_power_f64: power [clip][frame][bin] in double.
struct StftPowerRun : Run {
  k::StftF64Version version;
  Setup s;
  DeviceBuffer<double> d_power;
  StftPowerRun(k::StftF64Version v, int n_fft, int batch)
      : version(v), s(n_fft, batch), d_power(size_t(batch) * kFrames * bins(n_fft)) {}
  void run(int block) override {
    k::launch_stft_power_f64({s.d_signal.get(), kSegment, s.clips, kSegment}, s.d_window.get(),
                             s.d_twiddles.get(), {s.n_fft, kHop}, d_power.get(), nullptr, block,
                             version);
  }
  std::vector<double> ref;  // computed once
  std::string check() override {
    const std::vector<double> power = d_power.to_host();
    const size_t nb = size_t(bins(s.n_fft));
    const bool fresh = ref.empty();
    std::vector<double> got;
    for (const Slice& sl : checked_slices(s.clips)) {
      if (fresh) {
        const auto r = s.ref_power(sl.clip, sl.first, kChecked);
        ref.insert(ref.end(), r.begin(), r.end());
      }
      const auto from = power.begin() + (size_t(sl.clip) * kFrames + sl.first) * nb;
      got.insert(got.end(), from, from + kChecked * nb);
    }
    // An FFT in double against a direct DFT in double: ~u n_fft |y|^2 per
    // bin, below 1e-11 of the peak power (the test's bound); 1e-10.
    return compare(got, ref, 1e-10);
  }
};

// launch_stft_mel_f64: mel [clip][mel][frame], the fused sim path.
struct StftMelRun : Run {
  Setup s;
  DeviceBuffer<double> d_mel;
  StftMelRun(int batch) : s(2048, batch), d_mel(size_t(batch) * kMels * kFrames) {}
  void run(int block) override {
    k::launch_stft_mel_f64({s.d_signal.get(), kSegment, s.clips, kSegment}, s.d_window.get(),
                           s.d_twiddles.get(), {s.n_fft, kHop}, s.view(), d_mel.get(), nullptr,
                           block);
  }
  std::vector<double> ref;  // computed once
  std::string check() override {
    const std::vector<double> mel = d_mel.to_host();
    const bool fresh = ref.empty();
    std::vector<double> got;
    for (const Slice& sl : checked_slices(s.clips)) {
      if (fresh) {
        const auto p = s.ref_power(sl.clip, sl.first, kChecked);
        std::vector<double> r(size_t(kMels) * kChecked);
        k::mel_project_cpu(p.data(), 1, kChecked, s.filterbank.data(), kMels, bins(s.n_fft),
                           r.data());
        ref.insert(ref.end(), r.begin(), r.end());
      }
      for (int m = 0; m < kMels; ++m)
        for (int j = 0; j < kChecked; ++j)
          got.push_back(mel[(size_t(sl.clip) * kMels + m) * kFrames + sl.first + j]);
    }
    // The FFT's error (1e-11 of the peak power per bin) summed with
    // positive weights: 1e-10 of the largest band (the test's bound).
    return compare(got, ref, 1e-10);
  }
};

// launch_frame_window with the double window (the GPU path, before cuFFT D2Z).
struct FrameRun : Run {
  Setup s;
  DeviceBuffer<double> d_frames;
  FrameRun(int batch) : s(2048, batch), d_frames(size_t(batch) * kFrames * 2048) {}
  void run(int) override {
    k::launch_frame_window(s.d_signal.get(), kSegment, s.clips, kSegment, s.d_window.get(),
                           s.n_fft, kHop, d_frames.get(), nullptr);
  }
  std::vector<double> ref;  // computed once
  std::string check() override {
    if (ref.empty()) {
      ref.resize(d_frames.size());
      k::frame_window_cpu<double>(s.signal.data(), kSegment, s.clips, kSegment, s.window.data(),
                                  s.n_fft, kHop, ref.data());
    }
    return compare(d_frames.to_host(), ref, 0);  // one product, as the reference
  }
};

// launch_mel_banded on a random spectrum: double2 (cuFFT D2Z's, the GPU
// path) or a double power (the hand-written STFTs').
struct MelBandedRun : Run {
  bool complex_input;
  Setup s;
  std::vector<double> power;
  DeviceBuffer<double2> d_spec;
  DeviceBuffer<double> d_power, d_mel;
  MelBandedRun(bool cplx, int batch)
      : complex_input(cplx), s(2048, batch), d_mel(size_t(batch) * kMels * kFrames) {
    const size_t n = size_t(batch) * kFrames * bins(2048);
    const std::vector<double> v = random_values<double>(2 * n, 112, -30, 30);
    power.resize(n);
    std::vector<double2> spec(n);
    for (size_t i = 0; i < n; ++i) {
      spec[i] = double2{v[2 * i], v[2 * i + 1]};
      power[i] = v[2 * i] * v[2 * i] + v[2 * i + 1] * v[2 * i + 1];
    }
    if (complex_input)
      d_spec = DeviceBuffer<double2>(spec);
    else
      d_power = DeviceBuffer<double>(power);
  }
  void run(int block) override {
    if (complex_input)
      k::launch_mel_banded(d_spec.get(), s.clips, kFrames, s.view(), d_mel.get(), nullptr, block);
    else
      k::launch_mel_banded(d_power.get(), s.clips, kFrames, s.view(), d_mel.get(), nullptr,
                           block);
  }
  std::vector<double> ref;  // computed once
  std::string check() override {
    if (ref.empty()) {
      ref.resize(d_mel.size());
      k::mel_project_cpu(power.data(), s.clips, kFrames, s.filterbank.data(), kMels, bins(2048),
                         ref.data());
    }
    // Positive terms summed in double in another order (the band only, not
    // the dense row): a few u relative (the test's 1e-13).
    return compare(d_mel.to_host(), ref, 1e-13);
  }
};

// launch_clip_max and launch_power_to_db on a positive mel (clips x 128 x 128).
struct DbRun : Run {
  bool to_db;
  int clips;
  long long per_clip;
  std::vector<double> mel, clip_max;
  DeviceBuffer<double> d_mel, d_max;
  DeviceBuffer<float> d_db;
  DbRun(bool db, int batch)
      : to_db(db), clips(batch), per_clip((long long)kMels * kFrames),
        mel(random_values<double>(size_t(batch * per_clip), 113, 1e-12, 1e3)),
        clip_max(size_t(batch)), d_mel(mel), d_max(size_t(batch)),
        d_db(size_t(batch * per_clip)) {
    k::clip_max_cpu(mel.data(), clips, per_clip, clip_max.data());
    if (to_db) d_max.copy_from_host(clip_max);
  }
  void run(int block) override {
    if (to_db)
      k::launch_power_to_db(d_mel.get(), clips, per_clip, d_max.get(), kTopDb, true, d_db.get(),
                            nullptr);
    else
      k::launch_clip_max(d_mel.get(), clips, per_clip, d_max.get(), nullptr, block);
  }
  std::vector<float> ref;  // computed once
  std::string check() override {
    if (!to_db) return compare(d_max.to_host(), clip_max, 0);  // a maximum: exact
    if (ref.empty()) {
      ref.resize(d_db.size());
      k::power_to_db_cpu(mel.data(), clips, per_clip, clip_max.data(), kTopDb, true, ref.data());
    }
    // log10 in double, one float rounding (the test's 2e-5 dB of 80 dB).
    return compare(d_db.to_host(), widen(ref), 1e-6);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(spectral) {
  using namespace timbre::lab;
  const std::string seg = "segment.128x128";
  const double nonzeros =
      double(k::compact_mel_bands(k::mel_filterbank_slaney(kRate, 2048, kMels, 0, kRate / 2).data(),
                                  kMels, bins(2048))
                 .weights.size());
  add({"spectral", "frame_window_f64", seg,
       [](int b) { return k::frame_window_cost(b, kFrames, 2048); }, {0},
       [](int b) { return std::make_unique<FrameRun>(b); }});
  struct V {
    k::StftF64Version v;
    const char* name;
    int n_fft;
    std::vector<int> blocks;
  };
  for (const V& v : {V{k::StftF64Version::v1_radix2, "stft_power_f64_v1_radix2", 2048,
                       block_sweep()},
                     V{k::StftF64Version::v2_four_step, "stft_power_f64_v2_four_step", 1024,
                       {64, 128, 256}},  // v2: block <= 256 (its registers)
                     V{k::StftF64Version::v3_thread_per_frame, "stft_power_f64_v3_thread_per_frame",
                       2048, block_sweep()}}) {
    const int n_fft = v.n_fft;
    add({"spectral", v.name, n_fft == 2048 ? seg : seg + ".n_fft1024",
         [n_fft](int b) {
           const double frames = double(b) * kFrames;
           k::Cost c = fft_cost(frames, n_fft);
           c += k::elementwise_cost(frames * bins(n_fft), 0, 1, 3, 8);  // |X|^2, power in double
           return c;
         },
         v.blocks, [v, n_fft](int b) { return std::make_unique<StftPowerRun>(v.v, n_fft, b); }});
  }
  add({"spectral", "stft_mel_f64", seg,
       [nonzeros](int b) {
         // No cost declared: the FFT as above, |X|^2 per bin, a multiply-add
         // per filter weight, the mel rows written in double.
         const double frames = double(b) * kFrames;
         k::Cost c = fft_cost(frames, 2048);
         c += k::elementwise_cost(frames * bins(2048), 0, 0, 3);
         c += k::elementwise_cost(frames * nonzeros, 0, 0, 2);
         c += k::elementwise_cost(frames * kMels, 0, 1, 0, 8);
         return c;
       },
       block_sweep(), [](int b) { return std::make_unique<StftMelRun>(b); }});
  for (bool cplx : {true, false})
    add({"spectral", cplx ? "mel_banded_spectrum_f64" : "mel_banded_power_f64", seg,
         // mel_banded_cost counts 8 bytes a nonzero (a float2); the double2
         // spectrum reads 16 and the double power 8.
         [nonzeros](int b) { return k::mel_banded_cost(b, kFrames, nonzeros, kMels); },
         block_sweep(), [cplx](int b) { return std::make_unique<MelBandedRun>(cplx, b); }});
  const double per_clip = double(kMels) * kFrames;
  add({"spectral", "clip_max", seg,
       // No cost declared: a read and a compare per double value.
       [per_clip](int b) { return k::elementwise_cost(b * per_clip, 1, 0, 1, 8); },
       block_sweep(),  // block: a power of two in [32, 1024]
       [](int b) { return std::make_unique<DbRun>(false, b); }});
  add({"spectral", "power_to_db", seg,
       [per_clip](int b) {
         // No cost declared: read a double, max, log10, max, subtract (4);
         // write a float.
         k::Cost c = k::elementwise_cost(b * per_clip, 1, 0, 4, 8);
         c += k::elementwise_cost(b * per_clip, 0, 1, 0, 4);
         return c;
       },
       {0}, [](int b) { return std::make_unique<DbRun>(true, b); }});
}
