#include "features/logmel.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/defaults.h"
#include "kernels/spectral.cuh"

namespace timbre::features {

namespace k = timbre::kernels;

// ===========================================================================
// FeatureParams

void FeatureParams::validate() const {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("FeatureParams: " + what + " (" + str() + ")");
  };
  if (sample_rate <= 0) fail("sample_rate must be > 0, got " + std::to_string(sample_rate));
  if (n_fft < 2) fail("n_fft must be >= 2, got " + std::to_string(n_fft));
  if (n_fft > (1 << 20)) fail("n_fft must be <= 2^20, got " + std::to_string(n_fft));
  if (hop < 1) fail("hop must be >= 1, got " + std::to_string(hop));
  if (n_mels < 1) fail("n_mels must be >= 1, got " + std::to_string(n_mels));
  if (!(fmin >= 0)) fail("fmin must be >= 0 Hz, got " + std::to_string(fmin));
  if (!(fmax > fmin)) fail("fmax must be > fmin, got fmax=" + std::to_string(fmax));
  if (fmax > sample_rate / 2.0)
    fail("fmax must be <= sample_rate/2 = " + std::to_string(sample_rate / 2.0) + ", got " +
         std::to_string(fmax));
  if (frames < 2) fail("frames must be >= 2, got " + std::to_string(frames));
  if (!(top_db > 0) || !std::isfinite(top_db))
    fail("top_db must be a finite number > 0, got " + std::to_string(top_db));
  if (n_mfcc < 0 || n_mfcc > n_mels)
    fail("n_mfcc must be in [0, n_mels], got " + std::to_string(n_mfcc));
  if ((long long)n_mels * frames >= (1LL << 31) || segment_samples() >= (1LL << 31))
    fail("segment too large");
}

std::string FeatureParams::str() const {
  std::ostringstream s;
  s << "sample_rate=" << sample_rate << " n_fft=" << n_fft << " hop=" << hop
    << " n_mels=" << n_mels << " fmin=" << fmin << " fmax=" << fmax << " frames=" << frames
    << " top_db=" << top_db << " n_mfcc=" << n_mfcc;
  return s.str();
}

// ===========================================================================
// Stft

template <class Real>
BasicStft<Real>::BasicStft(int n_fft, int hop, long long clip_len, int max_clips)
    : n_fft_(n_fft), hop_(hop), frames_(0), max_clips_(max_clips), clip_len_(clip_len) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("Stft: " + what); };
  if (n_fft < 2) fail("n_fft must be >= 2, got " + std::to_string(n_fft));
  if (hop < 1) fail("hop must be >= 1, got " + std::to_string(hop));
  if (clip_len < 1) fail("clip_len must be >= 1, got " + std::to_string(clip_len));
  if (max_clips < 1) fail("max_clips must be >= 1, got " + std::to_string(max_clips));
  const long long frames = k::stft_frames(clip_len, hop);
  if ((long long)max_clips * frames * n_fft >= (1LL << 31))
    fail("max_clips*frames*n_fft = " + std::to_string((long long)max_clips * frames * n_fft) +
         " must be < 2^31 (n_fft " + std::to_string(n_fft) + " x " + std::to_string(frames) +
         " frames a clip is too large)");
  frames_ = int(frames);
  if constexpr (std::is_same_v<Real, double>) {
    window_ = DeviceBuffer<double>(k::hann_window_f64(n_fft));
  } else {
    std::vector<float> w(static_cast<size_t>(n_fft));
    k::hann_window(n_fft, w.data());
    window_ = DeviceBuffer<float>(w);
  }
  framed_ = DeviceBuffer<Real>(size_t(max_clips) * frames_ * n_fft_);
  plan_for(max_clips);  // the common plan up front: no allocation on the hot path
}

template <class Real>
BasicStft<Real>::~BasicStft() {
  for (auto& [n, plan] : plans_) cufftDestroy(plan);
}

template <class Real>
cufftHandle BasicStft<Real>::plan_for(int n_clips) {
  auto it = plans_.find(n_clips);
  if (it != plans_.end()) return it->second;
  // n_clips*frames transforms of n_fft real samples each, packed (distance
  // n_fft in, n_fft/2 + 1 complex out).
  int n = n_fft_;
  const cufftType type = std::is_same_v<Real, double> ? CUFFT_D2Z : CUFFT_R2C;
  cufftHandle plan;
  CUFFT_CHECK(cufftPlanMany(&plan, 1, &n, nullptr, 1, n_fft_, nullptr, 1, bins(), type,
                            n_clips * frames_));
  plans_.emplace(n_clips, plan);
  return plan;
}

template <class Real>
void BasicStft<Real>::forward(const float* d_signal, long long clip_stride, int n_clips,
                              Complex* d_out, cudaStream_t stream) {
  if (n_clips < 1 || n_clips > max_clips_)
    throw std::invalid_argument("Stft::forward: n_clips must be in [1, " +
                                std::to_string(max_clips_) + "], got " +
                                std::to_string(n_clips));
  if (clip_stride < clip_len_)
    throw std::invalid_argument("Stft::forward: clip_stride " + std::to_string(clip_stride) +
                                " < clip_len " + std::to_string(clip_len_));
  if (!d_signal || !d_out) throw std::invalid_argument("Stft::forward: null device pointer");
  k::launch_frame_window(d_signal, clip_stride, n_clips, clip_len_, window_.get(), n_fft_, hop_,
                         framed_.get(), stream);
  const cufftHandle plan = plan_for(n_clips);
  CUFFT_CHECK(cufftSetStream(plan, stream));
  if constexpr (std::is_same_v<Real, double>)
    CUFFT_CHECK(cufftExecD2Z(plan, framed_.get(), reinterpret_cast<cufftDoubleComplex*>(d_out)));
  else
    CUFFT_CHECK(cufftExecR2C(plan, framed_.get(), reinterpret_cast<cufftComplex*>(d_out)));
}

template class BasicStft<float>;
template class BasicStft<double>;

// ===========================================================================
// LogMelPipeline

namespace {

const FeatureParams& validated(const FeatureParams& p) {
  p.validate();
  return p;
}

FftPath resolve_fft(const FeatureParams& p, FftPath f) {
  if (f == FftPath::automatic)
    return k::defaults().stft == k::StftDefault::kernel_f64 && k::stft_f64_supports(p.n_fft)
               ? FftPath::f64
               : FftPath::cufft_f64;
  if (f == FftPath::f64 && !k::stft_f64_supports(p.n_fft))
    throw std::invalid_argument("LogMelPipeline: FftPath::f64 needs n_fft a power of two in "
                                "[4, 4096], got " + std::to_string(p.n_fft));
  return f;
}

int chunk_size(int max_batch, const PipelineOptions& o) {
  if (max_batch < 1)
    throw std::invalid_argument("LogMelPipeline: max_batch must be >= 1, got " +
                                std::to_string(max_batch));
  if (o.chunk_clips < 1)
    throw std::invalid_argument("LogMelPipeline: options.chunk_clips must be >= 1, got " +
                                std::to_string(o.chunk_clips));
  return std::min(max_batch, o.chunk_clips);
}

}  // namespace

LogMelPipeline::LogMelPipeline(const FeatureParams& params, int max_batch,
                               PipelineOptions options)
    : params_(validated(params)),
      options_(options),
      chunk_(chunk_size(max_batch, options)),
      fft_(resolve_fft(params_, options.fft)) {
  if (k::stft_frames(params_.segment_samples(), params_.hop) != params_.frames)
    throw std::logic_error("LogMelPipeline: the STFT gives a frame count other than params.frames");
  const int bins = params_.bins(), F = params_.frames, M = params_.n_mels;
  filterbank_ = k::mel_filterbank_slaney(params_.sample_rate, params_.n_fft, M, params_.fmin,
                                         params_.fmax);
  if (fft_ == FftPath::f64) {
    window_ = DeviceBuffer<double>(k::hann_window_f64(params_.n_fft));
    twiddles_ = DeviceBuffer<double2>(k::fft_twiddles(params_.n_fft));
  } else if (fft_ == FftPath::cufft_f64) {
    stft64_ =
        std::make_unique<StftF64>(params_.n_fft, params_.hop, params_.segment_samples(), chunk_);
    spec64_ = DeviceBuffer<double2>(stft64_->output_size(chunk_));
  } else {
    stft_ = std::make_unique<Stft>(params_.n_fft, params_.hop, params_.segment_samples(), chunk_);
    spec_ = DeviceBuffer<float2>(stft_->output_size(chunk_));
  }
  fused_ = fft_ == FftPath::f64 && options_.mel == MelPath::banded && params_.n_fft <= 2048;
  if ((fft_ == FftPath::f64 && !fused_) || options_.mel == MelPath::gemm)
    power_ = DeviceBuffer<double>(size_t(chunk_) * F * bins);
  if (options_.mel == MelPath::gemm) {
    dense_fb_ = DeviceBuffer<double>(filterbank_);
    CUBLAS_CHECK(cublasCreate(&cublas_));
  } else {
    const k::MelBands b = k::compact_mel_bands(filterbank_.data(), M, bins);
    band_start_ = DeviceBuffer<int>(b.start);
    band_length_ = DeviceBuffer<int>(b.length);
    band_offset_ = DeviceBuffer<int>(b.offset);
    band_weights_ = DeviceBuffer<double>(b.weights.empty() ? std::vector<double>{0.0}
                                                           : b.weights);
  }
  mel_ = DeviceBuffer<double>(size_t(chunk_) * M * F);
  clip_max_ = DeviceBuffer<double>(size_t(chunk_));
  if (params_.n_mfcc > 0) {
    db_ = DeviceBuffer<float>(size_t(chunk_) * M * F);
    dct_ = DeviceBuffer<double>(k::dct_ortho_matrix(params_.n_mfcc, M));
  }
}

LogMelPipeline::~LogMelPipeline() {
  if (cublas_) cublasDestroy(cublas_);
}

void LogMelPipeline::run_chunk(const float* d_clips, int n, float* d_out, cudaStream_t stream) {
  const int bins = params_.bins(), F = params_.frames, M = params_.n_mels;
  const long long seg = params_.segment_samples();
  // f64, banded, n_fft <= 2048: one fused kernel (a thread per frame computes
  // its power and its band sums). Otherwise the spectrum goes through global
  // memory: cuFFT's complex output, or our kernels' power.
  const k::MelBandsView view{band_start_.get(), band_length_.get(), band_offset_.get(),
                             band_weights_.get(), M, bins};
  if (fused_) {
    k::launch_stft_mel_f64({d_clips, seg, n, seg}, window_.get(), twiddles_.get(),
                           {params_.n_fft, params_.hop}, view, mel_.get(), stream);
    return finish_chunk(n, d_out, stream);
  }
  if (fft_ == FftPath::f64) {
    // v2 (a block per frame, sub-FFTs in registers) up to n_fft 1024, v1
    // (radix-2 stages in shared memory) beyond.
    const auto version = k::stft_f64_v2_supports(params_.n_fft) ? k::StftF64Version::v2_four_step
                                                                : k::StftF64Version::v1_radix2;
    k::launch_stft_power_f64({d_clips, seg, n, seg}, window_.get(), twiddles_.get(),
                             {params_.n_fft, params_.hop}, power_.get(), stream, 32, version);
  } else if (fft_ == FftPath::cufft_f64) {
    stft64_->forward(d_clips, seg, n, spec64_.get(), stream);
    if (options_.mel == MelPath::gemm)
      k::launch_power_spectrum(spec64_.get(), (long long)n * F * bins, power_.get(), stream);
  } else {
    stft_->forward(d_clips, seg, n, spec_.get(), stream);
    if (options_.mel == MelPath::gemm)
      k::launch_power_spectrum(spec_.get(), (long long)n * F * bins, power_.get(), stream);
  }
  if (options_.mel == MelPath::gemm) {
    // Per clip, row-major mel (M x F) = fb (M x bins) * P^T, P the clip's
    // (F x bins) power. In cuBLAS's column-major view that is
    // mel^T (F x M) = P (F x bins, stored as a bins x F matrix: op T) * fb^T
    // (bins x M, which is fb's row-major storage: op N).
    const double one = 1.0, zero = 0.0;
    CUBLAS_CHECK(cublasSetStream(cublas_, stream));
    CUBLAS_CHECK(cublasDgemmStridedBatched(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, F, M, bins, &one,
                                           power_.get(), bins, (long long)F * bins,
                                           dense_fb_.get(), bins, 0, &zero, mel_.get(), F,
                                           (long long)M * F, n));
  } else if (fft_ == FftPath::f64) {
    k::launch_mel_banded(power_.get(), n, F, view, mel_.get(), stream);
  } else if (fft_ == FftPath::cufft_f64) {
    k::launch_mel_banded(spec64_.get(), n, F, view, mel_.get(), stream);
  } else {
    k::launch_mel_banded(spec_.get(), n, F, view, mel_.get(), stream);
  }
  finish_chunk(n, d_out, stream);
}

// Steps 3-5 on mel_: the clip maxima, dB, and the DCT for MFCCs.
void LogMelPipeline::finish_chunk(int n, float* d_out, cudaStream_t stream) {
  const int F = params_.frames, M = params_.n_mels;
  k::launch_clip_max(mel_.get(), n, (long long)M * F, clip_max_.get(), stream);
  if (params_.n_mfcc == 0) {
    k::launch_power_to_db(mel_.get(), n, (long long)M * F, clip_max_.get(), params_.top_db,
                          /*ref_is_max=*/true, d_out, stream);
  } else {
    k::launch_power_to_db(mel_.get(), n, (long long)M * F, clip_max_.get(), params_.top_db,
                          /*ref_is_max=*/false, db_.get(), stream);
    k::launch_dct_rows(db_.get(), n, M, F, dct_.get(), params_.n_mfcc, d_out, stream);
  }
}

void LogMelPipeline::compute_device(const float* d_clips, int n, float* d_out,
                                    cudaStream_t stream) {
  if (n < 0) throw std::invalid_argument("LogMelPipeline::compute_device: n must be >= 0");
  if (n == 0) return;
  if (!d_clips || !d_out)
    throw std::invalid_argument("LogMelPipeline::compute_device: null device pointer");
  const long long seg = params_.segment_samples(), per_out = outputs_per_clip();
  for (int c0 = 0; c0 < n; c0 += chunk_) {
    const int m = std::min(chunk_, n - c0);
    run_chunk(d_clips + c0 * seg, m, d_out + c0 * per_out, stream);
  }
}

void LogMelPipeline::compute(const float* clips, int n, float* out) {
  if (n < 0) throw std::invalid_argument("LogMelPipeline::compute: n must be >= 0");
  if (n == 0) return;
  if (!clips || !out) throw std::invalid_argument("LogMelPipeline::compute: null host pointer");
  const long long seg = params_.segment_samples(), per_out = outputs_per_clip();
  if (host_in_.size() == 0) {  // staging buffers on first use (compute_device needs none)
    host_in_ = DeviceBuffer<float>(size_t(chunk_) * seg);
    host_out_ = DeviceBuffer<float>(size_t(chunk_) * per_out);
  }
  for (int c0 = 0; c0 < n; c0 += chunk_) {
    const int m = std::min(chunk_, n - c0);
    host_in_.copy_from_host(clips + c0 * seg, size_t(m) * seg);
    run_chunk(host_in_.get(), m, host_out_.get(), nullptr);
    host_out_.copy_to_host(out + c0 * per_out, size_t(m) * per_out);
  }
}

std::vector<float> LogMelPipeline::compute(const std::vector<float>& clips) {
  const long long seg = params_.segment_samples();
  if (clips.size() % size_t(seg) != 0)
    throw std::invalid_argument("LogMelPipeline::compute: " + std::to_string(clips.size()) +
                                " samples is not a whole number of " + std::to_string(seg) +
                                "-sample clips");
  const int n = int(clips.size() / size_t(seg));
  std::vector<float> out(size_t(n) * size_t(outputs_per_clip()));
  compute(clips.data(), n, out.data());
  return out;
}

}  // namespace timbre::features
