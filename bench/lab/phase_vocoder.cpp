// phase_vocoder: time stretching's device kernels, per 30 s clip at 22,050
// Hz (n_fft 2048, hop 512: 1,292 STFT columns of 1,025 bins): the phase
// vocoder at rates 1.25 and 0.8 with both phase accumulators, and the
// inverse STFT's overlap-add of the 1.25x-stretched frames (1,034 frames to
// 529,200 samples). The batch is clips.
#include "bench/lab/lab.h"
#include "kernels/phase_vocoder.cuh"
#include "kernels/spectral.cuh"

#include <cmath>

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

constexpr long long kClipLen = 30LL * 22050;
constexpr int kNfft = 2048, kHop = 512, kBins = kNfft / 2 + 1;
const int kCols = int(k::stft_frames(kClipLen, kHop));  // 1,292

struct Version {
  double rate;
  k::PhaseAccumulator acc;
  const char* name;
  const char* shape;
};
const Version kVersions[] = {
    {1.25, k::PhaseAccumulator::librosa_float32, "phase_vocoder_librosa_float32", "clip30s.rate1.25"},
    {1.25, k::PhaseAccumulator::wrapped_double, "phase_vocoder_wrapped_double", "clip30s.rate1.25"},
    {0.8, k::PhaseAccumulator::librosa_float32, "phase_vocoder_librosa_float32", "clip30s.rate0.8"},
    {0.8, k::PhaseAccumulator::wrapped_double, "phase_vocoder_wrapped_double", "clip30s.rate0.8"},
};

std::vector<double> flat(const std::vector<float2>& s) {
  std::vector<double> v(2 * s.size());
  for (size_t i = 0; i < s.size(); ++i) v[2 * i] = s[i].x, v[2 * i + 1] = s[i].y;
  return v;
}
#if !TIMBRE_BACKEND_SIM
std::vector<double> magnitudes(const std::vector<float2>& s) {
  std::vector<double> v(s.size());
  for (size_t i = 0; i < s.size(); ++i) v[i] = std::hypot(double(s[i].x), double(s[i].y));
  return v;
}
#endif

// A random spectrum (clips x 1,292 columns x 1,025 bins) and its stretch.
struct VocoderRun : Run {
  Version ver;
  int clips, n_out;
  std::vector<float2> spec;
  DeviceBuffer<float2> d_spec, d_out;
  VocoderRun(const Version& v, int batch)
      : ver(v), clips(batch), n_out(k::phase_vocoder_steps(kCols, v.rate)),
        spec(size_t(batch) * kCols * kBins), d_out(size_t(batch) * n_out * kBins) {
    const std::vector<float> re_im = random_values<float>(2 * spec.size(), 101);
    for (size_t i = 0; i < spec.size(); ++i) spec[i] = float2{re_im[2 * i], re_im[2 * i + 1]};
    d_spec = DeviceBuffer<float2>(spec);
  }
  void run(int block) override {
    k::phase_vocoder(d_spec.get(), d_out.get(), clips, kCols, kBins, ver.rate, kHop, nullptr,
                     block, ver.acc);
  }
  std::vector<float2> ref;  // computed once
  std::string check() override {
    if (ref.empty()) {
      ref.resize(d_out.size());
      k::phase_vocoder_cpu(spec.data(), ref.data(), clips, kCols, kBins, ver.rate, kHop, ver.acc);
    }
    const std::vector<float2> got = d_out.to_host();
#if TIMBRE_BACKEND_SIM
    // The same recipe and the same glibc functions: equal to the last
    // rounding (the test's 4u|D|).
    return compare(flat(got), flat(ref), 1e-6);
#else
    // CUDA's atan2f/cosf/sinf differ from glibc's by a few ulp. The float32
    // accumulator reaches ~1e6 rad (an ulp ~0.1 rad), so its phases can
    // drift apart: compare the magnitudes only (interpolated in double,
    // independent of the phase). The wrapped double accumulator keeps every
    // phase below pi: a few ulps per step over ~1,600 steps.
    if (ver.acc == k::PhaseAccumulator::librosa_float32)
      return compare(magnitudes(got), magnitudes(ref), 1e-6);
    return compare(flat(got), flat(ref), 2e-3);
#endif
  }
};

// The inverse STFT of the 1.25x stretch: frames (clips x n_frames x n_fft),
// Hann window, its window sum-square (from the CPU reference: the timed op
// is the overlap-add), scale 1/n_fft, offset n_fft/2 (center=True).
struct OverlapAddRun : Run {
  int clips, n_frames;
  long long out_len;
  std::vector<float> frames, window, wss;
  DeviceBuffer<float> d_frames, d_window, d_wss, d_out;
  OverlapAddRun(int batch)
      : clips(batch), n_frames(k::phase_vocoder_steps(kCols, 1.25)),
        out_len(std::llround(kClipLen / 1.25)),
        frames(random_values<float>(size_t(batch) * n_frames * kNfft, 102)),
        window(size_t(kNfft)), wss(size_t(k::wss_length(kNfft, kHop, n_frames))) {
    k::hann_window(kNfft, window.data());
    k::window_sumsquare_cpu(window.data(), wss.data(), kNfft, kHop, n_frames);
    d_frames = DeviceBuffer<float>(frames);
    d_window = DeviceBuffer<float>(window);
    d_wss = DeviceBuffer<float>(wss);
    d_out = DeviceBuffer<float>(size_t(clips) * size_t(out_len));
  }
  void run(int block) override {
    k::overlap_add({d_frames.get(), d_window.get(), d_wss.get(), d_out.get()},
                   {clips, n_frames, kNfft, kHop, kNfft / 2, out_len}, 1.f / kNfft, nullptr, block);
  }
  std::vector<float> ref;  // computed once
  std::string check() override {
    if (ref.empty()) {
      ref.resize(d_out.size());
      k::overlap_add_cpu({frames.data(), window.data(), wss.data(), ref.data()},
                         {clips, n_frames, kNfft, kHop, kNfft / 2, out_len}, 1.f / kNfft);
    }
    // A float sum of <= 4 terms against a double one, divided by wss: a few
    // ulps of the terms; near the last frame wss falls below 1 and the
    // quotient carries the terms' error: 1e-5 of the largest output.
    return compare(d_out.to_host(), widen(ref), 1e-5);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(phase_vocoder) {
  using namespace timbre::lab;
  for (const Version& v : kVersions) {
    const int n_out = k::phase_vocoder_steps(kCols, v.rate);
    add({"phase_vocoder", v.name, v.shape,
         [n_out](int b) { return k::phase_vocoder_cost(b, n_out, kBins); }, block_sweep(),
         [v](int b) { return std::make_unique<VocoderRun>(v, b); }});
  }
  const int n_frames = k::phase_vocoder_steps(kCols, 1.25);
  const long long out_len = std::llround(kClipLen / 1.25);
  add({"phase_vocoder", "overlap_add", "clip30s.rate1.25.istft",
       [n_frames, out_len](int b) {
         return k::overlap_add_cost(b, n_frames, kNfft, kHop, double(out_len));
       },
       block_sweep(), [](int b) { return std::make_unique<OverlapAddRun>(b); }});
}
