// logmel.h: the log-mel / MFCC pipeline on the device, librosa's
//   melspectrogram(center=True, pad_mode='constant', power=2, htk=False,
//                  norm='slaney') + power_to_db(ref=np.max, top_db)
// within 1e-3 dB, per clip, batched. Kernels: kernels/spectral.cuh; math,
// strategy and measured errors: docs/kernels/spectral.md.
//
// Steps for a chunk of clips (all on the device, buffers allocated once):
//   1. the spectrum, the default path being the table of backend defaults'
//      `stft` entry (kernels/defaults.h), either
//      FftPath::cufft_f64 (the GPU's default): framing + periodic Hann
//        window in double (launch_frame_window), batched D2Z cuFFT over every
//        frame of every clip -> complex double; |X|^2 is taken in step 2; or
//      FftPath::f64 (the sim build's default when n_fft is a power of two
//        <= 4096): timbre's own FFT kernels in double. With the banded mel
//        and n_fft <= 2048, steps 1 and 2 are one kernel (launch_stft_mel_f64,
//        a thread per frame); otherwise framing, window, FFT and |X|^2 in one
//        kernel (launch_stft_power_f64, v2 four-step, v1 for n_fft 4096) ->
//        double power; or
//      FftPath::cufft_f32: Stft: framing + periodic Hann window
//        (launch_frame_window), batched R2C cuFFT in float over every frame
//        of every clip (cufftPlanMany) -> complex float. A float FFT lands
//        up to ~1.1e-3 dB from librosa (float64) near the -80 dB floor
//        (measured on a chord; docs/kernels/spectral.md), just over the
//        1e-3 dB contract, so it is an option, not the default (and under
//        simcuda it is also slower than the fused f64 kernel).
//   2. mel: the Slaney filterbank in double, either banded (launch_mel_banded,
//      the default: only the ~1.5% nonzero weights; on the cuFFT path it
//      also squares) or power (launch_power_spectrum on the cuFFT path) +
//      cublasDgemmStridedBatched against the dense matrix (MelPath::gemm,
//      the reference path)
//   3. the maximum of each clip's mel power (launch_clip_max), never of the batch
//   4. dB relative to that maximum with the top_db floor (launch_power_to_db)
//   5. optional MFCC (params.n_mfcc > 0): dB relative to 1 (librosa mfcc's
//      power_to_db default, ref=1.0, same floor), then the orthonormal DCT-II
//      over the mel axis, first n_mfcc rows (launch_dct_rows). This is exactly
//      librosa.feature.mfcc(y=clip, sr, n_mfcc, n_fft, hop_length, n_mels,
//      fmin, fmax, htk=False) (its defaults: dct_type 2, norm 'ortho', lifter 0).
//
// Output per clip: (rows, frames) row-major, x[c][row][frame], rows = n_mels
// for log-mel or n_mfcc for MFCC: librosa's (n_mels, t) per clip.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cufft.h>

#include <map>
#include <memory>
#include <type_traits>
#include <vector>

#include "features/params.h"
#include "kernels/device_buffer.h"

namespace timbre::features {

// The complex STFT of a batch of equal-length clips, librosa.stft(center=True,
// pad_mode='constant', window='hann') semantics, bins 0 .. n_fft/2. Owns the
// window, the frame buffer and the cuFFT plans (one for max_clips clips, one
// more made on first use for each smaller count). Real: float (framing in
// float, cuFFT R2C, complex float out) or double (framing in double, cuFFT
// D2Z, complex double out). Reusable on its own (time stretch needs it).
template <class Real>
class BasicStft {
 public:
  using Complex = std::conditional_t<std::is_same_v<Real, double>, double2, float2>;

  BasicStft(int n_fft, int hop, long long clip_len, int max_clips);
  ~BasicStft();
  BasicStft(const BasicStft&) = delete;
  BasicStft& operator=(const BasicStft&) = delete;

  int n_fft() const { return n_fft_; }
  int hop() const { return hop_; }
  long long clip_len() const { return clip_len_; }
  int frames() const { return frames_; }          // 1 + clip_len / hop
  int bins() const { return n_fft_ / 2 + 1; }
  int max_clips() const { return max_clips_; }
  // Complex values forward() writes for n_clips clips.
  size_t output_size(int n_clips) const { return size_t(n_clips) * frames_ * bins(); }

  // d_signal: clip i at d_signal + i*clip_stride (clip_len samples each,
  // clip_stride >= clip_len); d_out: output_size(n_clips) values laid out
  // [clip][frame][bin]. 1 <= n_clips <= max_clips. Runs on `stream`.
  void forward(const float* d_signal, long long clip_stride, int n_clips, Complex* d_out,
               cudaStream_t stream = nullptr);

 private:
  cufftHandle plan_for(int n_clips);

  int n_fft_, hop_, frames_, max_clips_;
  long long clip_len_;
  DeviceBuffer<Real> window_;   // n_fft taps
  DeviceBuffer<Real> framed_;   // max_clips * frames * n_fft
  std::map<int, cufftHandle> plans_;  // by clip count
};
using Stft = BasicStft<float>;
using StftF64 = BasicStft<double>;

enum class MelPath {
  banded,  // fused power + banded projection (default; ~65x fewer multiply-adds)
  gemm,    // power spectrum + cublasDgemmStridedBatched on the dense filterbank
};

enum class FftPath {
  automatic,  // the backend default's (kernels/defaults.h: stft): cufft_f64 on a
              // GPU; f64 in the sim build when stft_f64_supports(n_fft), else cufft_f64
  cufft_f64,  // StftF64 (framing kernel + cuFFT D2Z, double) + power in the mel step
  f64,        // timbre's own double-precision FFT kernels (teaching versions)
  cufft_f32,  // Stft (cuFFT R2C, float): misses the 1e-3 dB contract near the floor
};

struct PipelineOptions {
  int chunk_clips = 32;  // clips per internal chunk (cache-sized buffers)
  MelPath mel = MelPath::banded;
  FftPath fft = FftPath::automatic;
};

class LogMelPipeline {
 public:
  // Validates params (std::invalid_argument naming the field) and allocates
  // every device buffer and the cuFFT plan for min(max_batch, chunk_clips)
  // clips. Calls accept any number of clips and work chunk by chunk.
  LogMelPipeline(const FeatureParams& params, int max_batch, PipelineOptions options = {});
  ~LogMelPipeline();
  LogMelPipeline(const LogMelPipeline&) = delete;
  LogMelPipeline& operator=(const LogMelPipeline&) = delete;

  const FeatureParams& params() const { return params_; }
  // Output rows per clip: n_mfcc if params.n_mfcc > 0, else n_mels.
  int rows() const { return params_.n_mfcc > 0 ? params_.n_mfcc : params_.n_mels; }
  long long samples_per_clip() const { return params_.segment_samples(); }
  long long outputs_per_clip() const { return (long long)rows() * params_.frames; }
  int chunk_clips() const { return chunk_; }
  FftPath fft_path() const { return fft_; }  // never automatic

  // Host in, host out: clips is n x segment_samples() floats, out n x rows()
  // x frames. Synchronous.
  void compute(const float* clips, int n, float* out);
  std::vector<float> compute(const std::vector<float>& clips);  // n = size / segment_samples()

  // Device in, device out, same layouts, on `stream` (asynchronous).
  void compute_device(const float* d_clips, int n, float* d_out, cudaStream_t stream = nullptr);

  // The dense Slaney filterbank, n_mels x bins, row-major (host, double).
  const std::vector<double>& filterbank() const { return filterbank_; }

 private:
  void run_chunk(const float* d_clips, int n, float* d_out, cudaStream_t stream);
  void finish_chunk(int n, float* d_out, cudaStream_t stream);

  FeatureParams params_;
  PipelineOptions options_;
  int chunk_;
  FftPath fft_;
  bool fused_ = false;              // launch_stft_mel_f64: no power buffer
  std::unique_ptr<Stft> stft_;      // cufft_f32 path
  std::unique_ptr<StftF64> stft64_;  // cufft_f64 path
  std::vector<double> filterbank_;
  DeviceBuffer<double> window_;     // f64 path: n_fft taps
  DeviceBuffer<double2> twiddles_;  // f64 path: n_fft / 2
  DeviceBuffer<float2> spec_;       // cufft_f32 path: chunk * frames * bins
  DeviceBuffer<double2> spec64_;    // cufft_f64 path: chunk * frames * bins
  DeviceBuffer<double> power_;      // unfused f64 or gemm path: chunk * frames * bins
  DeviceBuffer<double> dense_fb_;   // gemm path: n_mels * bins
  DeviceBuffer<int> band_start_, band_length_, band_offset_;
  DeviceBuffer<double> band_weights_;
  DeviceBuffer<double> mel_;        // chunk * n_mels * frames
  DeviceBuffer<double> clip_max_;   // chunk
  DeviceBuffer<float> db_;          // MFCC: chunk * n_mels * frames (dB re 1)
  DeviceBuffer<double> dct_;        // MFCC: n_mfcc * n_mels
  DeviceBuffer<float> host_in_;     // compute(): chunk * segment_samples
  DeviceBuffer<float> host_out_;    // compute(): chunk * rows * frames
  cublasHandle_t cublas_ = nullptr;  // gemm path only
};

}  // namespace timbre::features
