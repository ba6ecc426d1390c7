// Log-mel throughput, clips/s (items_per_second): 256 clips of 65,024
// samples (2.95 s at 22,050 Hz) from decoded audio in host memory to host
// log-mel output (256 x 128 x 128), through LogMelPipeline::compute, i.e.
// upload, STFT, mel, dB and download. Peers on the same clips:
// bench/peers_features.py (librosa, torch.stft + mel matmul).
//
// Variants: the FFT path (f64: our double-precision STFT-power kernel, the
// default and the 1e-3 dB contract; f32: cuFFT float, faster, ~1.1e-3 dB),
// the mel path (banded, gemm) and the chunk size (clips per internal chunk:
// 8 x 32 was found faster than 1 x 256 for an FFT over big buffers).
// The MFCC variant adds the dB-re-1 pass and the DCT. cpu_s_per_256: CPU
// seconds of all threads per batch of 256 (wall time depends on what else
// runs on a shared machine).
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <random>
#include <vector>

#include "features/logmel.h"
#include "kernels/device_buffer.h"
#include "kernels/spectral.cuh"

namespace {

using timbre::features::FeatureParams;
using timbre::features::FftPath;
using timbre::features::LogMelPipeline;
using timbre::features::MelPath;
using timbre::features::PipelineOptions;

constexpr int kClips = 256;

// Decoded-audio stand-in: a few tones in noise per clip, fixed seed (the
// cost does not depend on the values).
// CPU seconds used by the whole process so far (every thread: the caller
// and simcuda's workers), user + system.
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

const std::vector<float>& clips() {
  static const std::vector<float> x = [] {
    const long long seg = FeatureParams{}.segment_samples();
    std::vector<float> v(size_t(kClips) * size_t(seg));
    std::mt19937 g(7);
    std::normal_distribution<float> n(0.f, 0.05f);
    for (int c = 0; c < kClips; ++c)
      for (long long i = 0; i < seg; ++i)
        v[size_t(c * seg + i)] = 0.3f * std::sin(0.01f * float(c + 1) * float(i)) + n(g);
    return v;
  }();
  return x;
}

void BM_LogMel(benchmark::State& state, FftPath fft, MelPath mel, int n_mfcc) {
  FeatureParams p;
  p.n_mfcc = n_mfcc;
  PipelineOptions o;
  o.fft = fft;
  o.mel = mel;
  o.chunk_clips = int(state.range(0));
  LogMelPipeline pipe(p, kClips, o);
  const auto& x = clips();
  std::vector<float> out(size_t(kClips) * size_t(pipe.outputs_per_clip()));
  pipe.compute(x.data(), kClips, out.data());  // warm-up: first-touch of staging buffers
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    pipe.compute(x.data(), kClips, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kClips);
  state.counters["chunk"] = double(o.chunk_clips);
  // CPU seconds of all threads per 256 clips: less sensitive than wall time
  // to other processes on a shared machine.
  state.counters["cpu_s_per_256"] =
      (process_cpu_seconds() - cpu0) / double(state.iterations());
}

BENCHMARK_CAPTURE(BM_LogMel, cufft_f64_banded, FftPath::cufft_f64, MelPath::banded, 0)
    ->Arg(8)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_LogMel, f64_banded, FftPath::f64, MelPath::banded, 0)
    ->Arg(8)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_LogMel, f64_gemm, FftPath::f64, MelPath::gemm, 0)
    ->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_LogMel, f32_banded, FftPath::cufft_f32, MelPath::banded, 0)
    ->Arg(8)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_LogMel, f32_gemm, FftPath::cufft_f32, MelPath::gemm, 0)
    ->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_LogMel, f64_banded_mfcc20, FftPath::f64, MelPath::banded, 20)
    ->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();

// The STFT-power kernels alone on 32 clips (4,096 frames of n_fft, the
// second argument: 2,048, or 1,024 for v2, whose sub-FFTs must fit in
// registers): items = frames. v1 (radix-2, a barrier per stage), v2
// (four-step, 4 barriers per frame), v3 (a thread per frame, no barrier),
// and cuFFT's float R2C and double D2Z (Stft, StftF64) for scale.
void BM_StftPowerF64(benchmark::State& state, timbre::kernels::StftF64Version version) {
  namespace k = timbre::kernels;
  const FeatureParams p;
  const int n = 32, block = int(state.range(0)), n_fft = int(state.range(1));
  const long long seg = p.segment_samples();
  timbre::DeviceBuffer<float> d_x(std::vector<float>(clips().begin(), clips().begin() + n * seg));
  timbre::DeviceBuffer<double> d_w(k::hann_window_f64(n_fft)),
      d_p(size_t(n) * p.frames * (n_fft / 2 + 1));
  timbre::DeviceBuffer<double2> d_tw(k::fft_twiddles(n_fft));
  for (auto _ : state) {
    k::launch_stft_power_f64({d_x.get(), seg, n, seg}, d_w.get(), d_tw.get(), {n_fft, p.hop},
                             d_p.get(), nullptr, block, version);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  state.SetItemsProcessed(state.iterations() * n * p.frames);
}
BENCHMARK_CAPTURE(BM_StftPowerF64, v1_radix2, timbre::kernels::StftF64Version::v1_radix2)
    ->Args({32, 2048})->Args({128, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_StftPowerF64, v2_four_step, timbre::kernels::StftF64Version::v2_four_step)
    ->Args({32, 1024})->Args({64, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_StftPowerF64, v3_thread_per_frame,
                  timbre::kernels::StftF64Version::v3_thread_per_frame)
    ->Args({32, 2048})->Args({64, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();

template <class Stft>
void BM_StftCufft(benchmark::State& state) {
  const FeatureParams p;
  const int n = 32;
  const long long seg = p.segment_samples();
  Stft stft(p.n_fft, p.hop, seg, n);
  timbre::DeviceBuffer<float> d_x(std::vector<float>(clips().begin(), clips().begin() + n * seg));
  timbre::DeviceBuffer<typename Stft::Complex> d_out(stft.output_size(n));
  for (auto _ : state) {
    stft.forward(d_x.get(), seg, n, d_out.get());
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  state.SetItemsProcessed(state.iterations() * n * p.frames);
}
BENCHMARK_TEMPLATE(BM_StftCufft, timbre::features::Stft)
    ->Name("BM_StftCufftF32")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_StftCufft, timbre::features::StftF64)
    ->Name("BM_StftCufftF64")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
