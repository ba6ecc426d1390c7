// spectral: the device kernels of the feature pipeline: STFT framing, power
// spectrum, mel projection, per-clip maximum, decibels and the DCT of MFCCs,
// plus the host-side constants they need (Hann window, Slaney mel filterbank,
// orthonormal DCT-II matrix). Design, math and measured errors:
// docs/kernels/spectral.md. features/logmel.h chains them into a pipeline.
//
// The math, for one clip x[0..L) (librosa >= 0.10 conventions):
//   frame    y_f[k] = w[k] * x[f*hop + k - n_fft/2]   (0 outside [0, L): center=True,
//            zero padding), f = 0 .. F-1, F = 1 + L/hop, w periodic Hann
//   STFT     X_f[b] = sum_k y_f[k] e^{-2 pi i k b / n_fft}, b = 0 .. n_fft/2 (cuFFT R2C)
//   power    P_f[b] = |X_f[b]|^2                        (computed in double)
//   mel      S[m][f] = sum_b M[m][b] P_f[b]             (M: Slaney filterbank, double)
//   dB       D[m][f] = max(10 log10 max(S, amin), 10 log10 max(Smax, amin) - top_db)
//                      - 10 log10 max(ref, amin),  amin = 1e-10,
//            Smax = max of S over the clip; ref = Smax (librosa ref=np.max) or 1
//   MFCC     C[q][f] = sum_m T[q][m] D[m][f], T the orthonormal DCT-II
//
// Layouts: clips are rows of a batch; frames are [clip][frame][tap]; the
// complex spectrum [clip][frame][bin] (cuFFT's batched R2C output); mel,
// dB and MFCC outputs [clip][row][frame] (librosa's (n_mels, t) per clip).
//
// Every launcher checks its arguments and throws std::invalid_argument naming
// the launcher, the argument and its value. Sizes use 64-bit arithmetic for
// addresses; per-launch element counts must stay below 2^31 (32-bit loop
// indices, as in the other kernel families); the pipeline works in chunks
// of a few dozen clips, far below that.
#pragma once

#include <cuda_runtime_api.h>

#include <vector>

#include "kernels/cost.h"

namespace timbre::kernels {

// ---------------------------------------------------------------------------
// The input of an STFT: a batch of clips in one float buffer, clip c's
// sample i at signal[c*clip_stride + i], 0 <= i < clip_len. Aggregate:
// ClipBatch{signal, clip_stride, n_clips, clip_len}.
struct ClipBatch {
  const float* signal;    // the samples: device memory (host for the references)
  long long clip_stride;  // samples from the start of one clip to the next (>= clip_len)
  int n_clips;            // clips in the batch (0: nothing to do)
  long long clip_len;     // samples per clip
};

// The frames of a center=True STFT. Aggregate: StftFraming{n_fft, hop}.
struct StftFraming {
  int n_fft;  // taps per frame, and the length of its FFT
  int hop;    // samples between the starts of consecutive frames
};

// ---------------------------------------------------------------------------
// Framing.

// Framing for a batched STFT with center=True and zero padding (librosa
// >= 0.10's default pad_mode="constant"): clip c, frame f, tap k gets
//   frames[(c*n_frames + f)*n_fft + k] = window[k] * x_c[f*hop + k - n_fft/2]
// where x_c[i] = signal[c*clip_stride + i] for 0 <= i < clip_len, else 0.
// n_frames = 1 + clip_len / hop. window has n_fft taps (device). The frames
// feed a batched cuFFT (n_clips*n_frames transforms of n_fft): R2C in float,
// D2Z in double (the double overload widens each sample before the window).
// Parallel strategy: grid.y walks the frame rows (c, f) (one division per
// row), the threads of a block walk the taps of a row: consecutive threads
// read consecutive samples and write consecutive taps (coalesced); no
// barrier, no shared memory.
void launch_frame_window(const float* signal, long long clip_stride, int n_clips,
                         long long clip_len, const float* window, int n_fft, int hop,
                         float* frames, cudaStream_t stream);
void launch_frame_window(const float* signal, long long clip_stride, int n_clips,
                         long long clip_len, const double* window, int n_fft, int hop,
                         double* frames, cudaStream_t stream);

// Periodic Hann window of n taps on the host: w[k] = 0.5 - 0.5*cos(2*pi*k/n)
// (scipy.signal.get_window("hann", n, fftbins=True), librosa's window).
void hann_window(int n, float* out_host);

// Frames per clip for center=True: 1 + clip_len / hop.
constexpr long long stft_frames(long long clip_len, int hop) { return 1 + clip_len / hop; }

// ---------------------------------------------------------------------------
// Framing + window + real FFT + power, fused, in double precision (the
// pipeline's default: a float32 FFT lands up to ~1.1e-3 dB from librosa's
// float64 result near the -80 dB floor; this one ~1e-5 dB). n_fft must be a
// power of two in [4, 4096]. For clip c, frame f, bin b in [0, n_fft/2]:
//   power[(c*n_frames + f)*(n_fft/2 + 1) + b] = |sum_k y_f[k] e^{-2 pi i k b / n_fft}|^2
// with y_f[k] = window[k] * x_c[f*hop + k - n_fft/2] (zero padded, as in
// launch_frame_window), the window in double, everything after the load in
// double.
// Algorithm: the real frame of N = n_fft samples is packed into M = N/2
// complex values z[m] = y[2m] + i y[2m+1]; a complex FFT of length M gives
// Z; then the split step
//   E[k] = (Z[k] + conj Z[M-k]) / 2,  O[k] = (Z[k] - conj Z[M-k]) / (2i),
//   X[k] = E[k] + e^{-2 pi i k / N} O[k]     (Z[M] = Z[0])
// gives the N/2 + 1 bins of the real transform (E, O: the DFTs of the even
// and odd samples). twiddles: M values e^{-2 pi i k / N}, k < M
// (fft_twiddles); every root of unity the FFT needs is one of them or its
// negative. Shared memory: M double2 (16 KB for n_fft 2048).
// Parallel strategy: one block per frame (grid.x walks the frames of all
// clips, grid-stride); the block's threads share the frame. Two versions
// (both tested; they differ only in rounding order):
//   v1_radix2: bit-reversed load into shared memory, then log2(M) radix-2
//     decimation-in-time stages, each thread doing M/(2*block) butterflies
//     per stage with a __syncthreads after each stage: 2 + log2(M) barriers
//     per frame (12 for n_fft 2048).
//   v2_four_step (the launcher's default version): the M-point FFT as
//     R1 x R2 (R1 = 2^floor(L/2), R2 = 2^ceil(L/2), L = log2 M: 16 x 32
//     for n_fft 1024, its largest: see stft_f64_v2_supports). Thread t
//     computes whole column FFTs (length R1, its samples loaded straight
//     from global memory and windowed) in a local array, multiplies by the
//     twiddles W_M^(n2 k1) and stores to shared memory; after a barrier it
//     reads row t, does the row FFT (length R2), and after another barrier
//     writes it back in natural order. Shared memory only transposes: 4
//     barriers per frame. Under simcuda a barrier costs ~30 ns per thread,
//     so this is 1.7x faster there (docs/kernels/spectral.md); on a GPU the
//     sub-FFTs run from registers (the usual "register FFT" layout: R1 and
//     R2 are template arguments, so the loops unroll; no spill at 16 x 32,
//     __launch_bounds__(256), so block <= 256).
//   v3_thread_per_frame: one thread per frame (grid-stride over frames),
//     the whole FFT in the thread's own array (radix-2 stages 1-2 without
//     multiplies, then radix-4 passes; 16 KB for n_fft 2048;
//     n_fft <= 2048), no shared memory, no barrier. On a GPU that array
//     lives in local memory (slow); under simcuda the block runs on the
//     barrier-free fast path, with no fibers: the CPU build's choice (like
//     pooling's thread-per-plane global average). block = threads = frames
//     per block.
// block: a multiple of 32 in [32, 1024], at most 256 for v2 (v2 needs
// block >= R1 <= 16: any block). v1/v2: few threads per frame (32) keep
// simcuda's barrier cost low.
enum class StftF64Version { v1_radix2, v2_four_step, v3_thread_per_frame };
void launch_stft_power_f64(ClipBatch clips, const double* window, const double2* twiddles,
                           StftFraming framing, double* power, cudaStream_t stream, int block = 32,
                           StftF64Version version = StftF64Version::v2_four_step);

// v3 fused with the banded mel projection (the sim build's default path):
// one thread per frame computes the frame's power as v3 does, keeps it in
// its own array, and writes only the band sums
//   mel[(c*n_mels + m)*n_frames + f] = sum_j weights[offset[m] + j] * P_f[start[m] + j]
// (in double; bands.n_bins must be n_fft/2 + 1). No power buffer goes
// through global memory (8 KB per frame less written and read back).
// n_fft: a power of two in [4, 2048].
struct MelBandsView;
void launch_stft_mel_f64(ClipBatch clips, const double* window, const double2* twiddles,
                         StftFraming framing, MelBandsView bands, double* mel,
                         cudaStream_t stream, int block = 64);

// e^{-2 pi i k / n} for k < n/2, on the host (double).
std::vector<double2> fft_twiddles(int n);
// Periodic Hann window in double (see hann_window).
std::vector<double> hann_window_f64(int n);
// True when n is a power of two in [4, 4096] (launch_stft_power_f64's sizes).
constexpr bool stft_f64_supports(int n) { return n >= 4 && n <= 4096 && (n & (n - 1)) == 0; }
// True for the sizes v2_four_step takes (its sub-FFTs live in registers:
// n_fft <= 1024); v1 takes every size stft_f64_supports accepts.
constexpr bool stft_f64_v2_supports(int n) { return stft_f64_supports(n) && n <= 1024; }

// ---------------------------------------------------------------------------
// Power spectrum (the reference path to the GEMM mel projection):
// power[i] = re^2 + im^2 of spec[i], squared and summed in double, for
// count complex values. One thread per value, grid-stride.
void launch_power_spectrum(const float2* spec, long long count, double* power,
                           cudaStream_t stream);
void launch_power_spectrum(const double2* spec, long long count, double* power,
                           cudaStream_t stream);

// ---------------------------------------------------------------------------
// Banded mel projection, fused with the power spectrum. A Slaney filter is a
// triangle: band m is nonzero only on bins [start[m], start[m] + length[m]),
// and its weights sit at weights[offset[m] ..]. With 128 bands over 1025
// bins that is ~1.5% of the dense matrix (each bin feeds at most two bands).
//   mel[(c*n_mels + m)*n_frames + f] = sum_j weights[offset[m] + j]
//                                        * |spec[(c*n_frames + f)*n_bins + start[m] + j]|^2
// Power and sum in double. Parallel strategy: grid.y walks the (clip, band)
// rows, threads walk frames: a thread owns one output and reads its band's
// bins of one frame (the band's weights are shared by the row's threads and
// stay in cache); writes are coalesced along frames. No barrier.
struct MelBandsView {  // device pointers
  const int* start;
  const int* length;
  const int* offset;
  const double* weights;
  int n_mels;
  int n_bins;
};
void launch_mel_banded(const float2* spec, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block = 128);

// The same on a complex spectrum in double (cuFFT D2Z's output).
void launch_mel_banded(const double2* spec, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block = 128);

// The same on a power spectrum already in double ([clip][frame][bin]).
void launch_mel_banded(const double* power, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block = 128);

// The band structure of a dense (n_mels x n_bins, row-major) filterbank, on
// the host: per band the first and last nonzero bin (zeros inside a band
// are kept; an all-zero band gets length 0).
struct MelBands {
  std::vector<int> start, length, offset;
  std::vector<double> weights;
  int n_mels = 0, n_bins = 0;
};
MelBands compact_mel_bands(const double* dense, int n_mels, int n_bins);

// ---------------------------------------------------------------------------
// Per-clip maximum: clip_max[c] = max of x[c*per_clip .. (c+1)*per_clip).
// One block per clip (grid.x walks clips): each thread scans a strided slice,
// then a shared-memory tree reduction with __syncthreads. A NaN propagates
// (it wins every comparison), so a broken input is not hidden by the floor.
// block: a power of two in [32, 1024].
void launch_clip_max(const double* x, int n_clips, long long per_clip, double* clip_max,
                     cudaStream_t stream, int block = 256);

// ---------------------------------------------------------------------------
// Decibels, librosa's power_to_db with amin 1e-10 and top_db (top_db < 0: no
// floor), per clip:
//   out[i] = max(10 log10 max(S[i], amin), 10 log10 max(Smax_c, amin) - top_db)
//            - (ref_is_max ? 10 log10 max(Smax_c, amin) : 0)
// for i in clip c = i / per_clip. Computed in double, stored as float.
// grid.y walks clips and up to 8 blocks of 256 threads stride over a clip's
// values, so each thread computes its clip's reference level once.
void launch_power_to_db(const double* mel, int n_clips, long long per_clip,
                        const double* clip_max, double top_db, bool ref_is_max, float* out,
                        cudaStream_t stream);

// ---------------------------------------------------------------------------
// DCT over the rows of each clip's (n_in x n_frames) matrix:
//   out[(c*n_out + q)*n_frames + f] = sum_m dct[q*n_in + m] * x[(c*n_in + m)*n_frames + f]
// dct is n_out x n_in (device, double), sums in double. One thread per
// output, grid.y over (clip, q) rows, threads over frames (coalesced).
void launch_dct_rows(const float* x, int n_clips, int n_in, int n_frames, const double* dct,
                     int n_out, float* out, cudaStream_t stream, int block = 128);

// ---------------------------------------------------------------------------
// Host constants (double).

// Slaney-scale mel filterbank with Slaney area normalisation, n_mels x
// (n_fft/2 + 1) row-major: librosa.filters.mel(sr=sr, n_fft=n_fft,
// n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm='slaney') in float64.
std::vector<double> mel_filterbank_slaney(double sample_rate, int n_fft, int n_mels,
                                          double fmin, double fmax);
// Slaney's mel scale (linear below 1 kHz, logarithmic above).
double hz_to_mel_slaney(double hz);
double mel_to_hz_slaney(double mel);

// Orthonormal DCT-II, n_out x n_in row-major (scipy.fft.dct(type=2,
// norm='ortho') restricted to the first n_out coefficients):
//   T[q][m] = sqrt((q == 0 ? 1 : 2) / n_in) * cos(pi q (2m + 1) / (2 n_in))
std::vector<double> dct_ortho_matrix(int n_out, int n_in);

// ---------------------------------------------------------------------------
// CPU references: plain loops in double, same layouts as the kernels.

// T: float or double (the sample is widened to T before the window product).
template <class T>
void frame_window_cpu(const float* signal, long long clip_stride, int n_clips, long long clip_len,
                      const T* window, int n_fft, int hop, T* frames);
// Direct O(n_fft^2) DFT per frame in double (no FFT): |X_f[b]|^2 of the
// frames frame_window_cpu would give with a double window (the reference of
// launch_stft_power_f64, with host pointers).
void stft_power_cpu(ClipBatch clips, const double* window, StftFraming framing, double* power);
void power_spectrum_cpu(const float2* spec, long long count, double* power);
// Dense projection: mel[(c*n_mels + m)*n_frames + f] = sum_b M[m][b] power[(c*F + f)*n_bins + b].
void mel_project_cpu(const double* power, int n_clips, int n_frames, const double* filterbank,
                     int n_mels, int n_bins, double* mel);
void clip_max_cpu(const double* x, int n_clips, long long per_clip, double* clip_max);
void power_to_db_cpu(const double* mel, int n_clips, long long per_clip, const double* clip_max,
                     double top_db, bool ref_is_max, float* out);
void dct_rows_cpu(const float* x, int n_clips, int n_in, int n_frames, const double* dct,
                  int n_out, float* out);

// ---------------------------------------------------------------------------
// Costs, for benchmarks.
inline Cost frame_window_cost(double n_clips, double n_frames, double n_fft) {
  const double n = n_clips * n_frames * n_fft;
  return Cost{n, n * 12.0};  // a multiply; read sample + window tap, write frame
}
inline Cost mel_banded_cost(double n_clips, double n_frames, double nonzeros, double n_mels) {
  // Per nonzero: |X|^2 (3 flops) and a multiply-add (2); reads 8-byte complex.
  return Cost{n_clips * n_frames * nonzeros * 5.0,
              n_clips * n_frames * (nonzeros * 8.0 + n_mels * 8.0)};
}

}  // namespace timbre::kernels
