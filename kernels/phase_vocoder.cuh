// phase_vocoder: the device kernels of time stretching (features/augment.h):
// the phase vocoder on an STFT, and the inverse STFT's windowed overlap-add
// and window sum-square. The forward STFT's framing is kernels/spectral.cuh's
// launch_frame_window; the FFTs are cuFFT. Design: docs/kernels/phase_vocoder.md.
//
// Spectra are stored as cuFFT's batched R2C transforms leave them: clip c,
// column (frame) f, bin k at spec[(c*n_cols + f)*n_bins + k], n_bins =
// n_fft/2 + 1, bins contiguous; float2 is (re, im).
//
// Phase vocoder (librosa.phase_vocoder, librosa >= 0.10), per clip and bin k.
// The output has n_out = ceil(n_cols / rate) columns, column t reading the
// input at the fractional time step s_t = t*rate (numpy.arange(0, n_cols,
// rate)); i = floor(s_t), alpha = s_t - i. The input is padded by two zero
// columns, so D[i + 1] (and D[i] when i >= n_cols) may be 0.
//   magnitude  m_t   = (1 - alpha)|D[i, k]| + alpha |D[i + 1, k]|
//   output     S[t,k] = m_t * exp(j phi_t)
//   phase      phi_0 = arg D[0, k];
//              phi_{t+1} = phi_t + w_k + princ(arg D[i+1,k] - arg D[i,k] - w_k)
// where w_k = hop * 2 pi k / n_fft is the phase a sinusoid centred on bin k
// advances in one hop and princ() wraps to [-pi, pi] (x - 2 pi round(x/2pi),
// ties to even as numpy.round): the measured deviation from the bin centre
// is re-added to the expected advance, so each partial keeps its true
// frequency while the frames are re-spaced. (Modulo 2 pi, w_k cancels:
// w + princ(x - w) = x - 2 pi m, so phi_{t+1} = phi_t + arg D[i+1,k] -
// arg D[i,k] mod 2 pi. Here the synthesis hop equals the analysis hop, the
// stretch comes from reading the columns at rate-spaced times, and w_k only
// changes the float rounding; it would matter for a vocoder that re-spaces
// frames by changing the hop.) The arithmetic follows
// librosa's dtypes for a float32 signal: arg and |.| in float32 (atan2f,
// hypotf), the wrapped increment in double, phi_t stored in float32 after
// every step, exp(j phi) in float32 (cosf, sinf), m_t in double, S rounded
// to float32. The phase accumulator grows to ~hop*pi*n_out (1e5 rad at bin
// 1024 after 60 columns), where a float32 ulp is ~0.01 rad: keeping
// librosa's float32 accumulator reproduces its rounding, which a float64 one
// would not. Its rounding has a cost: at rate 1 the output is not the input
// spectrum to float precision (librosa's own rate-1 stretch of white noise
// is off by ~3e-3). PhaseAccumulator::wrapped_double is the accurate
// alternative: phi_t kept in double and wrapped to [-pi, pi] after each
// step (phi - 2 pi round(phi / 2 pi)), exp(j phi) of float(phi), so every
// phase carries float32 precision of an angle below pi. One departure from
// librosa in both modes: the imaginary parts of bins 0 and n_fft/2 are
// written as 0, since the C2R transform that follows requires a Hermitian
// spectrum (numpy's irfft discards them; cuFFT's result is undefined).
//
//   Parallel strategy: one thread per (clip, bin), looping over the n_out
//   output columns in order, because phi_t is a scan in time: step t needs
//   phi_{t-1}. The increments alone are independent and could be summed by
//   a parallel prefix scan, but librosa's float32 accumulator rounds after
//   every step, which only the sequential order reproduces; and the loop is
//   memory-bound anyway (two columns read, one written per step, each a
//   coalesced row of n_bins values across the threads of a warp). Each
//   thread keeps |.| and arg of its two current columns, so a step that
//   advances by one column reads and transforms only the new one. One clip
//   gives only n_bins = 1025 threads, too few to fill a GPU: batch clips
//   (features::time_stretch_batch) for n_clips*1025. No barrier, no shared
//   memory (simcuda's fast path); grid-stride loop.
//
// Inverse STFT (librosa.istft with center=True, length given):
//   window sum-square  wss[j] = sum_{f < n_frames} window[j - f*hop]^2
//     over 0 <= j - f*hop < n_fft, j in [0, n_fft + hop*(n_frames - 1)).
//   overlap-add  out[c, i] = (sum_f window[k] * scale * frames[c, f, k]) / wss[j]
//     with j = i + offset, k = j - f*hop in [0, n_fft), f < n_frames; the
//     division only where wss[j] > FLT_MIN (librosa's `tiny`), and none
//     when wss is null or j is past the wss length. For istft: frames =
//     cuFFT C2R outputs (unnormalised), scale = 1/n_fft, offset = n_fft/2
//     (the centre padding), out_len = the requested length (samples past the
//     last frame are 0).
//   Parallel strategy for both: a gather, one thread per output sample,
//   adding its <= ceil(n_fft/hop) terms in frame order (f ascending) in
//   float. Every output is written by one thread only: no atomics, and the
//   result is deterministic and independent of the launch shape. Reads of
//   a frame by consecutive threads are consecutive (coalesced).
//
// Arguments: n_clips, n_cols, n_frames >= 1 (n_clips may be 0: a no-op),
// n_bins >= 2, n_fft >= 1, hop >= 1, rate > 0 and finite, every count and
// flat index < 2^31; block a multiple of 32 in [32, 1024]; device pointers
// not null. Violations throw std::invalid_argument naming the launcher, the
// argument and its value.
#pragma once

#include "kernels/grid.h"

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

// Output columns of the phase vocoder: ceil(n_cols / rate), the length of
// numpy.arange(0, n_cols, rate). Throws for rate <= 0, non-finite, or a
// count >= 2^31.
int phase_vocoder_steps(int n_cols, double rate);

// Window sum-square length for n_frames frames: n_fft + hop*(n_frames - 1).
constexpr long long wss_length(int n_fft, int hop, int n_frames) {
  return (long long)n_fft + (long long)hop * (n_frames - 1);
}

// How the phase vocoder keeps phi_t (see above): librosa's float32 sum
// (reproduces librosa.phase_vocoder), or a wrapped float64 one (accurate:
// rate 1 is the identity to float precision).
enum class PhaseAccumulator { librosa_float32, wrapped_double };

// The tensors of one overlap-add: device pointers for overlap_add, host
// pointers for overlap_add_cpu. Aggregate: OverlapAddTensors{frames, window,
// wss, out}.
struct OverlapAddTensors {
  const float* frames;  // n_clips*n_frames*n_fft: [clip][frame][tap]
  const float* window;  // n_fft taps: the synthesis window
  const float* wss;     // the window sum-square, wss_length(n_fft, hop, n_frames) values, or
                        // null (no division)
  float* out;           // n_clips*out_len: [clip][sample]
};

// The geometry of one overlap-add (see the inverse STFT above). Aggregate:
// OverlapAddShape{n_clips, n_frames, n_fft, hop, offset, out_len}.
struct OverlapAddShape {
  int n_clips;        // clips in the batch (0: nothing to do)
  int n_frames;       // frames per clip
  int n_fft;          // taps per frame
  int hop;            // samples between the starts of consecutive frames
  long long offset;   // output sample i is the sum at j = i + offset (istft: n_fft/2)
  long long out_len;  // output samples per clip
};

// A launch uses at most max_grid_threads() threads (kernels/grid.h); a
// grid-stride loop does the rest.

// ---------------------------------------------------------------------------
// Launchers. d_spec: n_clips*n_cols*n_bins; d_out: n_clips*n_out*n_bins with
// n_out = phase_vocoder_steps(n_cols, rate). hop is the STFT's hop (sets w_k).
void phase_vocoder(const float2* d_spec, float2* d_out, int n_clips, int n_cols, int n_bins,
                   double rate, int hop, cudaStream_t s, int block = 128,
                   PhaseAccumulator acc = PhaseAccumulator::librosa_float32);

// d_wss: wss_length(n_fft, hop, n_frames) values.
void window_sumsquare(const float* d_window, float* d_wss, int n_fft, int hop, int n_frames,
                      cudaStream_t s, int block = 256);

// out = the overlap-add of scale * window * frames (see above); t.wss may be
// null (no normalisation).
void overlap_add(const OverlapAddTensors& t, const OverlapAddShape& shape, float scale,
                 cudaStream_t s, int block = 256);

// ---------------------------------------------------------------------------
// References: plain loops. phase_vocoder_cpu follows the same dtype recipe
// as the kernel (it is librosa's), with std::complex; the other two scatter
// frame by frame into a double buffer (the kernels gather), then round.
void phase_vocoder_cpu(const float2* spec, float2* out, int n_clips, int n_cols, int n_bins,
                       double rate, int hop,
                       PhaseAccumulator acc = PhaseAccumulator::librosa_float32);
void window_sumsquare_cpu(const float* window, float* wss, int n_fft, int hop, int n_frames);
void overlap_add_cpu(const OverlapAddTensors& t, const OverlapAddShape& shape, float scale);

// ---------------------------------------------------------------------------
// Costs, for benchmarks. Phase vocoder per output value: two |.|, two
// atan2, sin and cos (counted ~20 flops each) and ~10 more; bytes: two
// input columns read (from cache after the first) and one written, ~24 per
// value. Overlap-add: ~n_fft/hop multiply-adds per output, frames read once.
inline Cost phase_vocoder_cost(double n_clips, double n_out, double n_bins) {
  const double v = n_clips * n_out * n_bins;
  return Cost{130 * v, 16 * v};
}
inline Cost overlap_add_cost(double n_clips, double n_frames, double n_fft, double hop,
                             double out_len) {
  return Cost{n_clips * out_len * 3 * (n_fft / hop),
              4 * (n_clips * n_frames * n_fft + n_clips * out_len + n_fft + out_len)};
}

}  // namespace timbre::kernels
