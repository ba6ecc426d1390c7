#include "kernels/spectral.cuh"

#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

namespace {

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) fail(fn, what);
}

// Largest grid.y a launch uses; a grid-stride loop over rows covers the rest.
constexpr unsigned kMaxGridY = 65535u;

constexpr double kAmin = 1e-10;  // librosa power_to_db's amin

}  // namespace

// ===========================================================================
// Host constants.

void hann_window(int n, float* out_host) {
  require(n >= 1, "hann_window", "n must be >= 1, got " + std::to_string(n));
  require(out_host != nullptr, "hann_window", "out_host is null");
  // Periodic: the period is n, so the symmetric window of n + 1 taps without
  // its last tap. Computed in double, rounded once.
  const double pi = 3.14159265358979323846;
  for (int k = 0; k < n; ++k) out_host[k] = float(0.5 - 0.5 * std::cos(2.0 * pi * k / n));
}

std::vector<double> hann_window_f64(int n) {
  require(n >= 1, "hann_window_f64", "n must be >= 1, got " + std::to_string(n));
  const double pi = 3.14159265358979323846;
  std::vector<double> w(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) w[size_t(k)] = 0.5 - 0.5 * std::cos(2.0 * pi * k / n);
  return w;
}

std::vector<double2> fft_twiddles(int n) {
  require(n >= 2 && n % 2 == 0, "fft_twiddles",
          "n must be even and >= 2, got " + std::to_string(n));
  const double pi = 3.14159265358979323846;
  std::vector<double2> t(static_cast<size_t>(n / 2));
  for (int k = 0; k < n / 2; ++k) {
    const double a = -2.0 * pi * k / n;
    t[size_t(k)] = double2{std::cos(a), std::sin(a)};
  }
  return t;
}

double hz_to_mel_slaney(double hz) {
  // Linear part: 3 mels per 200 Hz up to 1 kHz (15 mels); above, equal
  // ratios: 27 mels per factor 6.4.
  const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
  const double logstep = std::log(6.4) / 27.0;
  if (hz >= min_log_hz) return min_log_mel + std::log(hz / min_log_hz) / logstep;
  return hz / f_sp;
}

double mel_to_hz_slaney(double mel) {
  const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
  const double logstep = std::log(6.4) / 27.0;
  if (mel >= min_log_mel) return min_log_hz * std::exp(logstep * (mel - min_log_mel));
  return f_sp * mel;
}

std::vector<double> mel_filterbank_slaney(double sample_rate, int n_fft, int n_mels,
                                          double fmin, double fmax) {
  const char* fn = "mel_filterbank_slaney";
  require(sample_rate > 0, fn, "sample_rate must be > 0, got " + std::to_string(sample_rate));
  require(n_fft >= 2, fn, "n_fft must be >= 2, got " + std::to_string(n_fft));
  require(n_mels >= 1, fn, "n_mels must be >= 1, got " + std::to_string(n_mels));
  require(fmin >= 0 && fmin < fmax, fn,
          "need 0 <= fmin < fmax, got fmin=" + std::to_string(fmin) +
              " fmax=" + std::to_string(fmax));
  const int n_bins = n_fft / 2 + 1;
  // n_mels + 2 edge frequencies equally spaced on the mel scale (numpy's
  // linspace: start + i*step, the last one exactly the end).
  const double m0 = hz_to_mel_slaney(fmin), m1 = hz_to_mel_slaney(fmax);
  const int n_edges = n_mels + 2;
  const double step = (m1 - m0) / (n_edges - 1);
  std::vector<double> edge(static_cast<size_t>(n_edges));
  for (int i = 0; i < n_edges; ++i)
    edge[size_t(i)] = mel_to_hz_slaney(i == n_edges - 1 ? m1 : m0 + i * step);
  std::vector<double> fb(static_cast<size_t>(n_mels) * n_bins, 0.0);
  for (int m = 0; m < n_mels; ++m) {
    const double lo = edge[size_t(m)], mid = edge[size_t(m) + 1], hi = edge[size_t(m) + 2];
    // Slaney area normalisation: each triangle gets area-ish 1 (2 / width).
    const double enorm = 2.0 / (hi - lo);
    for (int b = 0; b < n_bins; ++b) {
      const double f = b * sample_rate / n_fft;  // numpy.fft.rfftfreq
      // Rising and falling edges, as librosa writes them (ramps / fdiff).
      const double rise = (f - lo) / (mid - lo), fall = (hi - f) / (hi - mid);
      const double w = std::fmax(0.0, std::fmin(rise, fall));
      fb[size_t(m) * n_bins + b] = w * enorm;
    }
  }
  return fb;
}

std::vector<double> dct_ortho_matrix(int n_out, int n_in) {
  require(n_in >= 1, "dct_ortho_matrix", "n_in must be >= 1, got " + std::to_string(n_in));
  require(n_out >= 1 && n_out <= n_in, "dct_ortho_matrix",
          "need 1 <= n_out <= n_in, got n_out=" + std::to_string(n_out) +
              " n_in=" + std::to_string(n_in));
  const double pi = 3.14159265358979323846;
  std::vector<double> t(static_cast<size_t>(n_out) * n_in);
  for (int q = 0; q < n_out; ++q) {
    const double scale = std::sqrt((q == 0 ? 1.0 : 2.0) / n_in);
    for (int m = 0; m < n_in; ++m)
      t[size_t(q) * n_in + m] = scale * std::cos(pi * q * (2.0 * m + 1.0) / (2.0 * n_in));
  }
  return t;
}

MelBands compact_mel_bands(const double* dense, int n_mels, int n_bins) {
  require(dense != nullptr, "compact_mel_bands", "dense is null");
  require(n_mels >= 1 && n_bins >= 1, "compact_mel_bands",
          "need n_mels, n_bins >= 1, got " + std::to_string(n_mels) + ", " +
              std::to_string(n_bins));
  MelBands b;
  b.n_mels = n_mels;
  b.n_bins = n_bins;
  for (int m = 0; m < n_mels; ++m) {
    const double* row = dense + size_t(m) * n_bins;
    int first = -1, last = -2;
    for (int k = 0; k < n_bins; ++k)
      if (row[k] != 0.0) {
        if (first < 0) first = k;
        last = k;
      }
    b.start.push_back(first < 0 ? 0 : first);
    b.length.push_back(last - first + 1 > 0 && first >= 0 ? last - first + 1 : 0);
    b.offset.push_back(int(b.weights.size()));
    for (int k = first; first >= 0 && k <= last; ++k) b.weights.push_back(row[k]);
  }
  return b;
}

// ===========================================================================
// CPU references.

template <class T>
void frame_window_cpu(const float* signal, long long clip_stride, int n_clips, long long clip_len,
                      const T* window, int n_fft, int hop, T* frames) {
  const long long n_frames = stft_frames(clip_len, hop);
  for (int c = 0; c < n_clips; ++c)
    for (long long f = 0; f < n_frames; ++f)
      for (int k = 0; k < n_fft; ++k) {
        const long long i = f * hop + k - n_fft / 2;
        const T x = (i >= 0 && i < clip_len) ? T(signal[c * clip_stride + i]) : T(0);
        frames[((long long)c * n_frames + f) * n_fft + k] = window[k] * x;
      }
}
template void frame_window_cpu<float>(const float*, long long, int, long long, const float*, int,
                                      int, float*);
template void frame_window_cpu<double>(const float*, long long, int, long long, const double*,
                                       int, int, double*);

void stft_power_cpu(ClipBatch clips, const double* window, StftFraming framing, double* power) {
  const float* signal = clips.signal;
  const long long clip_stride = clips.clip_stride, clip_len = clips.clip_len;
  const int n_clips = clips.n_clips, n_fft = framing.n_fft, hop = framing.hop;
  const long long n_frames = stft_frames(clip_len, hop);
  const int bins = n_fft / 2 + 1;
  const double pi = 3.14159265358979323846;
  std::vector<double> y(static_cast<size_t>(n_fft));
  for (int c = 0; c < n_clips; ++c)
    for (long long f = 0; f < n_frames; ++f) {
      for (int k = 0; k < n_fft; ++k) {
        const long long i = f * hop + k - n_fft / 2;
        y[size_t(k)] = (i >= 0 && i < clip_len) ? window[k] * signal[c * clip_stride + i] : 0.0;
      }
      for (int b = 0; b < bins; ++b) {
        double re = 0, im = 0;
        for (int k = 0; k < n_fft; ++k) {
          // The angle from (k*b mod n_fft): exact argument reduction.
          const double a = -2.0 * pi * double((long long)k * b % n_fft) / n_fft;
          re += y[size_t(k)] * std::cos(a);
          im += y[size_t(k)] * std::sin(a);
        }
        power[((long long)c * n_frames + f) * bins + b] = re * re + im * im;
      }
    }
}

void power_spectrum_cpu(const float2* spec, long long count, double* power) {
  for (long long i = 0; i < count; ++i) {
    const double re = spec[i].x, im = spec[i].y;
    power[i] = re * re + im * im;
  }
}

void mel_project_cpu(const double* power, int n_clips, int n_frames, const double* filterbank,
                     int n_mels, int n_bins, double* mel) {
  for (int c = 0; c < n_clips; ++c)
    for (int m = 0; m < n_mels; ++m)
      for (int f = 0; f < n_frames; ++f) {
        double s = 0;
        const double* p = power + ((long long)c * n_frames + f) * n_bins;
        for (int b = 0; b < n_bins; ++b) s += filterbank[(long long)m * n_bins + b] * p[b];
        mel[((long long)c * n_mels + m) * n_frames + f] = s;
      }
}

void clip_max_cpu(const double* x, int n_clips, long long per_clip, double* clip_max) {
  for (int c = 0; c < n_clips; ++c) {
    double best = -INFINITY;
    for (long long i = 0; i < per_clip; ++i) {
      const double v = x[c * per_clip + i];
      if (v > best || std::isnan(v)) best = v;
      if (std::isnan(best)) break;
    }
    clip_max[c] = best;
  }
}

void power_to_db_cpu(const double* mel, int n_clips, long long per_clip, const double* clip_max,
                     double top_db, bool ref_is_max, float* out) {
  for (int c = 0; c < n_clips; ++c) {
    const double top = 10.0 * std::log10(std::fmax(clip_max[c], kAmin));
    const double floor_db = top_db >= 0 ? top - top_db : -INFINITY;
    const double ref_db = ref_is_max ? top : 0.0;
    for (long long i = c * per_clip; i < (c + 1) * per_clip; ++i) {
      const double db = 10.0 * std::log10(std::fmax(mel[i], kAmin));
      out[i] = float(std::fmax(db, floor_db) - ref_db);
    }
  }
}

void dct_rows_cpu(const float* x, int n_clips, int n_in, int n_frames, const double* dct,
                  int n_out, float* out) {
  for (int c = 0; c < n_clips; ++c)
    for (int q = 0; q < n_out; ++q)
      for (int f = 0; f < n_frames; ++f) {
        double s = 0;
        for (int m = 0; m < n_in; ++m)
          s += dct[(long long)q * n_in + m] * x[((long long)c * n_in + m) * n_frames + f];
        out[((long long)c * n_out + q) * n_frames + f] = float(s);
      }
}

// ===========================================================================
// Kernels.

namespace {

// grid.y walks frame rows r = c*n_frames + f; threads walk taps k. The tap's
// sample index i = f*hop + k - n_fft/2 is in the clip for a contiguous range
// of k, so the only branch is at the two padded ends of a clip.
template <class T>
__global__ void frame_window_kernel(const float* signal, long long clip_stride, int n_frames,
                                    long long clip_len, const T* window, int n_fft, int hop,
                                    unsigned rows, T* frames) {
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned c = r / unsigned(n_frames), f = r - c * unsigned(n_frames);
    const float* x = signal + (long long)c * clip_stride;
    const long long first = (long long)f * hop - n_fft / 2;
    T* out = frames + (long long)r * n_fft;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n_fft; k += blockDim.x * gridDim.x) {
      const long long i = first + k;
      out[k] = (i >= 0 && i < clip_len) ? window[k] * T(x[i]) : T(0);
    }
  }
}

template <class C>
__global__ void power_spectrum_kernel(const C* spec, unsigned count, double* power) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += blockDim.x * gridDim.x) {
    const double re = spec[i].x, im = spec[i].y;
    power[i] = re * re + im * im;
  }
}

__device__ __forceinline__ double power_of(float2 x) {
  const double re = x.x, im = x.y;
  return re * re + im * im;
}
__device__ __forceinline__ double power_of(double2 x) { return x.x * x.x + x.y * x.y; }
__device__ __forceinline__ double power_of(double p) { return p; }

// grid.y: rows (c, m); threads: frames f. Each thread sums its band's bins
// of frame f in double; the band's weights are read by every thread of the
// row (broadcast from cache). In: complex float (power computed here) or
// power in double.
template <class In>
__global__ void mel_banded_kernel(const In* spec, int n_frames, MelBandsView bands,
                                  unsigned rows, double* mel) {
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned c = r / unsigned(bands.n_mels), m = r - c * unsigned(bands.n_mels);
    const int start = bands.start[m], len = bands.length[m];
    const double* w = bands.weights + bands.offset[m];
    for (int f = blockIdx.x * blockDim.x + threadIdx.x; f < n_frames;
         f += blockDim.x * gridDim.x) {
      const In* x = spec + ((long long)c * n_frames + f) * bands.n_bins + start;
      double s = 0;
      for (int j = 0; j < len; ++j) s += w[j] * power_of(x[j]);
      mel[(long long)r * n_frames + f] = s;
    }
  }
}

__device__ __forceinline__ double2 cmul(double2 a, double2 b) {
  return double2{a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x};
}

// One block per frame; see launch_stft_power_f64 in the header for the
// algorithm. log_m = log2(M), M = n_fft / 2.
__global__ void stft_power_f64_v1_kernel(const float* signal, long long clip_stride,
                                         int n_frames, long long clip_len, const double* window,
                                         const double2* tw, int n_fft, int log_m, int hop,
                                         unsigned total_frames, double* power) {
  double2* z = simcuda::dynamic_shared<double2>();
  const int M = n_fft / 2, bins = M + 1;
  for (unsigned r = blockIdx.x; r < total_frames; r += gridDim.x) {
    const unsigned c = r / unsigned(n_frames), f = r - c * unsigned(n_frames);
    const float* x = signal + (long long)c * clip_stride;
    const long long first = (long long)f * hop - n_fft / 2;
    // Load two real samples per packed value, windowed in double, into the
    // bit-reversed slot (the DIT stages then run in natural order).
    for (int m = threadIdx.x; m < M; m += blockDim.x) {
      const long long i0 = first + 2 * m, i1 = i0 + 1;
      const double y0 = (i0 >= 0 && i0 < clip_len) ? window[2 * m] * double(x[i0]) : 0.0;
      const double y1 = (i1 >= 0 && i1 < clip_len) ? window[2 * m + 1] * double(x[i1]) : 0.0;
      z[__brev(unsigned(m)) >> (32 - log_m)] = double2{y0, y1};
    }
    __syncthreads();
    // Radix-2 stages: span `len`, butterfly b joins i and i + len/2 with
    // the twiddle e^{-2 pi i j / len} = tw[j * (n_fft / len)].
    for (int s = 1; s <= log_m; ++s) {
      const int half = 1 << (s - 1), step = n_fft >> s;
      for (int b = threadIdx.x; b < M / 2; b += blockDim.x) {
        const int j = b & (half - 1), i = ((b >> (s - 1)) << s) + j;
        const double2 u = z[i], v = cmul(z[i + half], tw[j * step]);
        z[i] = double2{u.x + v.x, u.y + v.y};
        z[i + half] = double2{u.x - v.x, u.y - v.y};
      }
      __syncthreads();
    }
    // Split the packed transform into the real signal's bins, then |X|^2.
    double* out = power + (long long)r * bins;
    for (int k = threadIdx.x; k < bins; k += blockDim.x) {
      const double2 a = z[k == M ? 0 : k], bc = z[k == 0 ? 0 : M - k];
      const double2 e{0.5 * (a.x + bc.x), 0.5 * (a.y - bc.y)};   // (Z[k] + conj Z[M-k]) / 2
      const double2 o{0.5 * (a.y + bc.y), -0.5 * (a.x - bc.x)};  // (Z[k] - conj Z[M-k]) / (2i)
      const double2 w = k == M ? double2{-1.0, 0.0} : tw[k];
      const double2 wo = cmul(w, o);
      const double re = e.x + wo.x, im = e.y + wo.y;
      out[k] = re * re + im * im;
    }
    __syncthreads();  // z is reloaded for the next frame
  }
}

// In-thread FFT of R = 2^LOG_R complex values in a local array: bit-reversal
// permutation, then radix-2 DIT stages. The length-len twiddle
// e^{-2 pi i j / len} is tw[j * (n_fft / len)] (tw holds e^{-2 pi i k / n_fft}).
// LOG_R is a compile-time constant (a template argument of v2) so the
// loops have fixed trip counts: the compiler unrolls and keeps the array in
// registers where it can (on a GPU; under simcuda it vectorises better).
// g++ (simcuda) ignores "#pragma unroll"; GCC's own spelling asks the same.
#if defined(__CUDACC__)
#define TIMBRE_UNROLL _Pragma("unroll")
#else
#define TIMBRE_UNROLL _Pragma("GCC unroll 32")
#endif

template <int LOG_R>
__device__ __forceinline__ void fft_in_thread_fixed(double2* a, const double2* tw, int n_fft) {
  if constexpr (LOG_R > 0) {  // LOG_R 0: a single value is its own transform
    constexpr int R = 1 << LOG_R;
    TIMBRE_UNROLL
    for (int i = 0; i < R; ++i) {
      const int j = int(__brev(unsigned(i)) >> (32 - LOG_R));
      if (j > i) {
        const double2 t = a[i];
        a[i] = a[j];
        a[j] = t;
      }
    }
    // The stage of span 2^s needs tw[j * (n_fft >> s)] = tw[(j << (LOG_R - s)) * base]:
    // written with a compile-time multiple of one runtime base, the 31
    // twiddle reads of a 32-point FFT fold to its 15 distinct nontrivial
    // ones (j = 0 is 1, no multiply). That is what fits v2's 16 x 32 split in
    // 252-255 registers without spilling; 32 x 32 still spills (see v2).
    const int base = n_fft >> LOG_R;
    TIMBRE_UNROLL
    for (int s = 1; s <= LOG_R; ++s) {
      const int half = 1 << (s - 1);
      TIMBRE_UNROLL
      for (int b = 0; b < R / 2; ++b) {
        const int j = b & (half - 1), i = ((b >> (s - 1)) << s) + j;
        const double2 u = a[i];
        const double2 v = j == 0 ? a[i + half] : cmul(a[i + half], tw[(j << (LOG_R - s)) * base]);
        a[i] = double2{u.x + v.x, u.y + v.y};
        a[i + half] = double2{u.x - v.x, u.y - v.y};
      }
    }
  }
}

// e^{-2 pi i j / n_fft} for 0 <= j < n_fft from the half-circle table.
__device__ __forceinline__ double2 twiddle(const double2* tw, int j, int n_fft) {
  const int m = n_fft / 2;
  if (j < m) return tw[j];
  const double2 t = tw[j - m];
  return double2{-t.x, -t.y};
}

// v2: the packed length-M FFT as M = R1 x R2 (four-step), each sub-FFT done
// by one thread in a local array. With n = R2 n1 + n2, k = k1 + R1 k2:
//   A[n2][k1] = sum_n1 z[R2 n1 + n2] W_R1^{n1 k1}    (R2 column FFTs, length R1)
//   B[n2][k1] = A[n2][k1] W_M^{n2 k1}               (twiddle)
//   Z[k1 + R1 k2] = sum_n2 B[n2][k1] W_R2^{n2 k2}    (R1 row FFTs, length R2)
// Thread t does column n2 = t (loading its samples straight from global
// memory, windowed; columns t + blockDim, ... when R2 > blockDim), then row
// k1 = t; shared memory holds B, then Z. Four barriers per frame instead of
// 2 + log2(M), and on a GPU the sub-FFTs run from registers/L1.
// R1 = 2^floor(L/2) <= R2 = 2^ceil(L/2), L = log2(M), are template
// arguments: every loop over a sub-FFT has a fixed trip count, so the local
// array is unrolled into registers instead of local memory. A 16 x 32 split
// (n_fft 1024) takes 252-255 registers and no spill on sm_80/sm_90; 32 x 32
// (n_fft 2048: 64 doubles of data alone, plus twiddles and addresses) spilled
// 16-84 bytes whatever the twiddle reads were folded to, and 32 x 64 (4096)
// 560-676 bytes. So v2 takes n_fft <= 1024 (R1 <= 16, R2 <= 32: one row per
// thread of any block, blocks being >= 32 threads); larger sizes are v1's
// (and cuFFT's in the pipeline).
// __launch_bounds__(kV2MaxBlock): up to 255 registers a thread still fit
// 256 threads in an SM's 64K registers; the launcher refuses larger blocks.
constexpr int kV2MaxLogM = 9;
constexpr int kV2MaxBlock = 256;

template <int LOG_R1, int LOG_R2>
__global__ void __launch_bounds__(kV2MaxBlock)
    stft_power_f64_v2_kernel(const float* signal, long long clip_stride, int n_frames,
                             long long clip_len, const double* window, const double2* tw,
                             int n_fft, int hop, unsigned total_frames, double* power) {
  constexpr int r1 = 1 << LOG_R1, r2 = 1 << LOG_R2;
  double2* z = simcuda::dynamic_shared<double2>();
  const int M = n_fft / 2, bins = M + 1;
  double2 loc[r2];
  for (unsigned r = blockIdx.x; r < total_frames; r += gridDim.x) {
    const unsigned c = r / unsigned(n_frames), f = r - c * unsigned(n_frames);
    const float* x = signal + (long long)c * clip_stride;
    const long long first = (long long)f * hop - n_fft / 2;
    // Columns: n2 = t. Packed sample m = R2 n1 + n2 is y[2m] + i y[2m+1].
    for (int n2 = threadIdx.x; n2 < r2; n2 += blockDim.x) {
      TIMBRE_UNROLL
      for (int n1 = 0; n1 < r1; ++n1) {
        const int m = r2 * n1 + n2;
        const long long i0 = first + 2 * m, i1 = i0 + 1;
        const double y0 = (i0 >= 0 && i0 < clip_len) ? window[2 * m] * double(x[i0]) : 0.0;
        const double y1 = (i1 >= 0 && i1 < clip_len) ? window[2 * m + 1] * double(x[i1]) : 0.0;
        loc[n1] = double2{y0, y1};
      }
      fft_in_thread_fixed<LOG_R1>(loc, tw, n_fft);
      // W_M^{n2 k1} = W_N^{2 n2 k1}; B stored row-major by k1: z[k1 R2 + n2].
      TIMBRE_UNROLL
      for (int k1 = 0; k1 < r1; ++k1)
        z[k1 * r2 + n2] = cmul(loc[k1], twiddle(tw, 2 * n2 * k1, n_fft));  // 2 n2 k1 < 2M = N
    }
    __syncthreads();
    // Rows: k1 = t (blockDim >= 32 >= R1). Read the row and FFT it; after
    // every row is read (barrier), write Z[k1 + R1 k2] in natural order over
    // the same shared array.
    const int k1 = int(threadIdx.x);
    if (k1 < r1) {
      TIMBRE_UNROLL
      for (int n2 = 0; n2 < r2; ++n2) loc[n2] = z[k1 * r2 + n2];
      fft_in_thread_fixed<LOG_R2>(loc, tw, n_fft);
    }
    __syncthreads();
    if (k1 < r1) {
      TIMBRE_UNROLL
      for (int k2 = 0; k2 < r2; ++k2) z[k1 + r1 * k2] = loc[k2];
    }
    __syncthreads();
    // Split the packed transform into the real signal's bins, then |X|^2.
    double* out = power + (long long)r * bins;
    for (int k = threadIdx.x; k < bins; k += blockDim.x) {
      const double2 a = z[k == M ? 0 : k], bc = z[k == 0 ? 0 : M - k];
      const double2 e{0.5 * (a.x + bc.x), 0.5 * (a.y - bc.y)};
      const double2 o{0.5 * (a.y + bc.y), -0.5 * (a.x - bc.x)};
      const double2 w = k == M ? double2{-1.0, 0.0} : tw[k];
      const double2 wo = cmul(w, o);
      const double re = e.x + wo.x, im = e.y + wo.y;
      out[k] = re * re + im * im;
    }
    __syncthreads();  // z is rewritten by the next frame
  }
}

// v3: one thread per frame, the whole length-M FFT in the thread's own
// array (M <= kV3MaxM), no shared memory and no barrier: simcuda runs the
// block on its fast path (a plain loop, no fibers). DIT with a bit-reversed
// load (radix-2 stages, paired into radix-4 passes), then the same split
// step as v1/v2.
// Stack (ptxas): 16 KiB per thread for v3, 24 KiB for the fused STFT + mel
// kernel below (its frame's powers too). By design, not a spill: a thread
// owns a whole frame, which on a GPU lives in local memory (L1/L2-cached
// DRAM) and makes these the slow versions there; they are the sim build's
// choice (kernels/defaults.h, `stft`), and the GPU takes cuFFT.
constexpr int kV3MaxM = 1024;  // n_fft <= 2048: 16 KB of local memory per thread

// Frame r's windowed samples, packed and bit-reversed into z, then the
// length-M radix-2 FFT, all in the calling thread.
__device__ __forceinline__ void fft_frame_in_thread(const float* x, long long first,
                                                    long long clip_len, const double* window,
                                                    const double2* tw, int n_fft, int log_m,
                                                    double2* z) {
  const int M = n_fft / 2, shift = 32 - log_m;
  if (first >= 0 && first + n_fft <= clip_len) {  // interior frame: no padding
    const float* xf = x + first;
    for (int m = 0; m < M; ++m)
      z[__brev(unsigned(m)) >> shift] =
          double2{window[2 * m] * double(xf[2 * m]), window[2 * m + 1] * double(xf[2 * m + 1])};
  } else {
    for (int m = 0; m < M; ++m) {
      const long long i0 = first + 2 * m, i1 = i0 + 1;
      const double y0 = (i0 >= 0 && i0 < clip_len) ? window[2 * m] * double(x[i0]) : 0.0;
      const double y1 = (i1 >= 0 && i1 < clip_len) ? window[2 * m + 1] * double(x[i1]) : 0.0;
      z[__brev(unsigned(m)) >> shift] = double2{y0, y1};
    }
  }
  int first_stage = 1;
  if (log_m >= 2) {
    // Stages 1 and 2 together, without multiplies: their twiddles are 1 and
    // e^{-i pi/2} = -i (v * -i = (v.y, -v.x)). Same operations, same
    // rounding as the generic stages (a product by 1 or -i is exact).
    for (int g = 0; g < M; g += 4) {
      const double2 a0 = z[g], a1 = z[g + 1], a2 = z[g + 2], a3 = z[g + 3];
      const double2 b0{a0.x + a1.x, a0.y + a1.y}, b1{a0.x - a1.x, a0.y - a1.y};
      const double2 b2{a2.x + a3.x, a2.y + a3.y}, b3{a2.x - a3.x, a2.y - a3.y};
      const double2 v3{b3.y, -b3.x};
      z[g] = double2{b0.x + b2.x, b0.y + b2.y};
      z[g + 2] = double2{b0.x - b2.x, b0.y - b2.y};
      z[g + 1] = double2{b1.x + v3.x, b1.y + v3.y};
      z[g + 3] = double2{b1.x - v3.x, b1.y - v3.y};
    }
    first_stage = 3;
  }
  // Then stages s and s + 1 together (radix 4): with h = 2^(s-1), the four
  // values j, j+h, j+2h, j+3h of a group of 4h go through stage s (twiddle
  // w1 = W_2h^j on both pairs) and stage s + 1 (w2 = W_4h^j, and
  // W_4h^(j+h) = -i w2): 3 complex multiplies instead of 4, and one pass
  // over the array instead of two.
  int s = first_stage;
  for (; s + 1 <= log_m; s += 2) {
    const int h = 1 << (s - 1), step1 = n_fft >> s, step2 = n_fft >> (s + 1);
    for (int g = 0; g < M; g += 4 * h)
      for (int j = 0; j < h; ++j) {
        double2* q = z + g + j;
        const double2 w1 = tw[j * step1], w2 = tw[j * step2];
        const double2 a0 = q[0], a1 = cmul(q[h], w1), a2 = q[2 * h], a3 = cmul(q[3 * h], w1);
        const double2 b0{a0.x + a1.x, a0.y + a1.y}, b1{a0.x - a1.x, a0.y - a1.y};
        const double2 b2 = cmul(double2{a2.x + a3.x, a2.y + a3.y}, w2);
        const double2 t = cmul(double2{a2.x - a3.x, a2.y - a3.y}, w2);
        const double2 b3{t.y, -t.x};  // times -i
        q[0] = double2{b0.x + b2.x, b0.y + b2.y};
        q[2 * h] = double2{b0.x - b2.x, b0.y - b2.y};
        q[h] = double2{b1.x + b3.x, b1.y + b3.y};
        q[3 * h] = double2{b1.x - b3.x, b1.y - b3.y};
      }
  }
  for (; s <= log_m; ++s) {  // an odd stage left over: radix 2
    const int half = 1 << (s - 1), step = n_fft >> s;
    for (int g = 0; g < M; g += 2 * half)
      for (int j = 0; j < half; ++j) {
        const double2 u = z[g + j], v = cmul(z[g + j + half], tw[j * step]);
        z[g + j] = double2{u.x + v.x, u.y + v.y};
        z[g + j + half] = double2{u.x - v.x, u.y - v.y};
      }
  }
}

// |X[k]|^2 of the real frame from the packed transform Z (the split step).
__device__ __forceinline__ double split_power(const double2* z, int k, int M, const double2* tw) {
  const double2 a = z[k == M ? 0 : k], bc = z[k == 0 ? 0 : M - k];
  const double2 e{0.5 * (a.x + bc.x), 0.5 * (a.y - bc.y)};
  const double2 o{0.5 * (a.y + bc.y), -0.5 * (a.x - bc.x)};
  const double2 w = k == M ? double2{-1.0, 0.0} : tw[k];
  const double2 wo = cmul(w, o);
  const double re = e.x + wo.x, im = e.y + wo.y;
  return re * re + im * im;
}

__global__ void stft_power_f64_v3_kernel(const float* signal, long long clip_stride,
                                         int n_frames, long long clip_len, const double* window,
                                         const double2* tw, int n_fft, int log_m, int hop,
                                         unsigned total_frames, double* power) {
  double2 z[kV3MaxM];
  const int M = n_fft / 2, bins = M + 1;
  for (unsigned r = blockIdx.x * blockDim.x + threadIdx.x; r < total_frames;
       r += blockDim.x * gridDim.x) {
    const unsigned c = r / unsigned(n_frames), f = r - c * unsigned(n_frames);
    fft_frame_in_thread(signal + (long long)c * clip_stride, (long long)f * hop - n_fft / 2,
                        clip_len, window, tw, n_fft, log_m, z);
    double* out = power + (long long)r * bins;
    for (int k = 0; k < bins; ++k) out[k] = split_power(z, k, M, tw);
  }
}

// v3 fused with the banded mel projection: the frame's power stays in the
// thread (p), and only the n_mels band sums go to global memory, at
// mel[(c*n_mels + m)*n_frames + f] (consecutive threads: consecutive frames).
__global__ void stft_mel_f64_kernel(const float* signal, long long clip_stride, int n_frames,
                                    long long clip_len, const double* window, const double2* tw,
                                    int n_fft, int log_m, int hop, MelBandsView bands,
                                    unsigned total_frames, double* mel) {
  double2 z[kV3MaxM];
  double p[kV3MaxM + 1];
  const int M = n_fft / 2, bins = M + 1;
  for (unsigned r = blockIdx.x * blockDim.x + threadIdx.x; r < total_frames;
       r += blockDim.x * gridDim.x) {
    const unsigned c = r / unsigned(n_frames), f = r - c * unsigned(n_frames);
    fft_frame_in_thread(signal + (long long)c * clip_stride, (long long)f * hop - n_fft / 2,
                        clip_len, window, tw, n_fft, log_m, z);
    for (int k = 0; k < bins; ++k) p[k] = split_power(z, k, M, tw);
    double* out = mel + (long long)c * bands.n_mels * n_frames + f;
    for (int m = 0; m < bands.n_mels; ++m) {
      const double* w = bands.weights + bands.offset[m];
      const double* pm = p + bands.start[m];
      const int len = bands.length[m];
      double sum = 0;
      for (int j = 0; j < len; ++j) sum += w[j] * pm[j];
      out[(long long)m * n_frames] = sum;
    }
  }
}

// One block per clip: strided scan, then a shared-memory tree. NaN wins.
__global__ void clip_max_kernel(const double* x, int n_clips, long long per_clip,
                                double* clip_max) {
  double* partial = simcuda::dynamic_shared<double>();
  for (int c = blockIdx.x; c < n_clips; c += gridDim.x) {
    const double* xc = x + (long long)c * per_clip;
    double best = -INFINITY;
    for (long long i = threadIdx.x; i < per_clip; i += blockDim.x) {
      const double v = xc[i];
      if (v > best || v != v) best = v;
    }
    partial[threadIdx.x] = best;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) {
        const double o = partial[threadIdx.x + half];
        if (o > partial[threadIdx.x] || o != o) partial[threadIdx.x] = o;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) clip_max[c] = partial[0];
    __syncthreads();  // partial[0] is read before the next clip overwrites it
  }
}

// grid.y walks clips, a block-stride loop walks the clip's values: the
// clip's reference level is computed once per thread, not per value.
__global__ void power_to_db_kernel(const double* mel, unsigned per_clip, int n_clips,
                                   const double* clip_max, double top_db, bool ref_is_max,
                                   float* out) {
  for (int c = blockIdx.y; c < n_clips; c += gridDim.y) {
    const double top = 10.0 * log10(fmax(clip_max[c], kAmin));
    const double floor_db = top_db >= 0 ? top - top_db : -INFINITY;
    const double ref_db = ref_is_max ? top : 0.0;
    const double* s = mel + (long long)c * per_clip;
    float* o = out + (long long)c * per_clip;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < per_clip;
         i += blockDim.x * gridDim.x) {
      const double db = 10.0 * log10(fmax(s[i], kAmin));
      o[i] = float(fmax(db, floor_db) - ref_db);
    }
  }
}

__global__ void dct_rows_kernel(const float* x, int n_in, int n_frames, const double* dct,
                                int n_out, unsigned rows, float* out) {
  for (unsigned r = blockIdx.y; r < rows; r += gridDim.y) {
    const unsigned c = r / unsigned(n_out), q = r - c * unsigned(n_out);
    const double* t = dct + (long long)q * n_in;
    const float* xc = x + (long long)c * n_in * n_frames;
    for (int f = blockIdx.x * blockDim.x + threadIdx.x; f < n_frames;
         f += blockDim.x * gridDim.x) {
      double s = 0;
      for (int m = 0; m < n_in; ++m) s += t[m] * xc[(long long)m * n_frames + f];
      out[(long long)r * n_frames + f] = float(s);
    }
  }
}

unsigned rows_grid(long long rows) {
  return unsigned(rows < (long long)kMaxGridY ? rows : kMaxGridY);
}

}  // namespace

namespace {

template <class T>
void frame_window(const float* signal, long long clip_stride, int n_clips, long long clip_len,
                  const T* window, int n_fft, int hop, T* frames, cudaStream_t stream) {
  const char* fn = "launch_frame_window";
  require(n_clips >= 0, fn, "n_clips must be >= 0, got " + std::to_string(n_clips));
  require(n_fft >= 1, fn, "n_fft must be >= 1, got " + std::to_string(n_fft));
  require(hop >= 1, fn, "hop must be >= 1, got " + std::to_string(hop));
  require(clip_len >= 1, fn, "clip_len must be >= 1, got " + std::to_string(clip_len));
  require(clip_stride >= clip_len || n_clips <= 1, fn,
          "clip_stride (" + std::to_string(clip_stride) + ") must be >= clip_len (" +
              std::to_string(clip_len) + ")");
  if (n_clips == 0) return;
  const long long n_frames = stft_frames(clip_len, hop);
  const long long rows = n_clips * n_frames;
  require(rows * n_fft < (1LL << 31) && n_frames < INT_MAX, fn,
          "n_clips*n_frames*n_fft = " + std::to_string(rows * n_fft) +
              " must be < 2^31: split the batch");
  require(signal && window && frames, fn, "a device pointer is null");
  const int block = 256;
  const dim3 grid(unsigned(ceil_div(n_fft, block)), rows_grid(rows));
  LAUNCH(frame_window_kernel<T>, grid, dim3(block), 0, stream, signal, clip_stride, int(n_frames),
         clip_len, window, n_fft, hop, unsigned(rows), frames);
}

}  // namespace

void launch_frame_window(const float* signal, long long clip_stride, int n_clips,
                         long long clip_len, const float* window, int n_fft, int hop,
                         float* frames, cudaStream_t stream) {
  frame_window(signal, clip_stride, n_clips, clip_len, window, n_fft, hop, frames, stream);
}

void launch_frame_window(const float* signal, long long clip_stride, int n_clips,
                         long long clip_len, const double* window, int n_fft, int hop,
                         double* frames, cudaStream_t stream) {
  frame_window(signal, clip_stride, n_clips, clip_len, window, n_fft, hop, frames, stream);
}

namespace {

template <class C>
void power_spectrum(const C* spec, long long count, double* power, cudaStream_t stream) {
  const char* fn = "launch_power_spectrum";
  require(count >= 0 && count < (1LL << 31), fn,
          "count must be in [0, 2^31), got " + std::to_string(count));
  if (count == 0) return;
  require(spec && power, fn, "a device pointer is null");
  const unsigned block = 256;
  LAUNCH(power_spectrum_kernel<C>, grid_1d(count, block), block, 0, stream, spec,
         unsigned(count), power);
}

}  // namespace

void launch_power_spectrum(const float2* spec, long long count, double* power,
                           cudaStream_t stream) {
  power_spectrum(spec, count, power, stream);
}

void launch_power_spectrum(const double2* spec, long long count, double* power,
                           cudaStream_t stream) {
  power_spectrum(spec, count, power, stream);
}

namespace {

template <class In>
void mel_banded(const In* spec, int n_clips, int n_frames, MelBandsView bands, double* mel,
                cudaStream_t stream, int block) {
  const char* fn = "launch_mel_banded";
  check_block(fn, block);
  require(n_clips >= 0 && n_frames >= 1, fn,
          "need n_clips >= 0 and n_frames >= 1, got " + std::to_string(n_clips) + ", " +
              std::to_string(n_frames));
  require(bands.n_mels >= 1 && bands.n_bins >= 1, fn, "bands has no rows or no bins");
  if (n_clips == 0) return;
  const long long rows = (long long)n_clips * bands.n_mels;
  require((long long)n_clips * n_frames * bands.n_bins < (1LL << 31) &&
              rows * n_frames < (1LL << 31),
          fn, "batch too large for 32-bit indexing: split it");
  require(spec && mel && bands.start && bands.length && bands.offset && bands.weights, fn,
          "a device pointer is null");
  const dim3 grid(unsigned(ceil_div(n_frames, block)), rows_grid(rows));
  LAUNCH(mel_banded_kernel<In>, grid, dim3(unsigned(block)), 0, stream, spec, n_frames, bands,
         unsigned(rows), mel);
}

}  // namespace

void launch_mel_banded(const float2* spec, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block) {
  mel_banded(spec, n_clips, n_frames, bands, mel, stream, block);
}

void launch_mel_banded(const double2* spec, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block) {
  mel_banded(spec, n_clips, n_frames, bands, mel, stream, block);
}

void launch_mel_banded(const double* power, int n_clips, int n_frames, MelBandsView bands,
                       double* mel, cudaStream_t stream, int block) {
  mel_banded(power, n_clips, n_frames, bands, mel, stream, block);
}

namespace {

// v2's arguments, and its launch for M = 2^LOG_M (R1 x R2 = 2^(LOG_M/2) x
// 2^(LOG_M - LOG_M/2)).
struct V2Args {
  const float* signal;
  long long clip_stride;
  int n_frames;
  long long clip_len;
  const double* window;
  const double2* twiddles;
  int n_fft, hop;
  unsigned rows;
  double* power;
};

template <int LOG_M>
void launch_v2(const V2Args& a, dim3 grid, dim3 block, size_t smem, cudaStream_t stream) {
  LAUNCH((stft_power_f64_v2_kernel<LOG_M / 2, LOG_M - LOG_M / 2>), grid, block, smem, stream,
         a.signal, a.clip_stride, a.n_frames, a.clip_len, a.window, a.twiddles, a.n_fft, a.hop,
         a.rows, a.power);
}

}  // namespace

void launch_stft_power_f64(ClipBatch clips, const double* window, const double2* twiddles,
                           StftFraming framing, double* power, cudaStream_t stream, int block,
                           StftF64Version version) {
  const char* fn = "launch_stft_power_f64";
  const float* signal = clips.signal;
  const long long clip_stride = clips.clip_stride, clip_len = clips.clip_len;
  const int n_clips = clips.n_clips, n_fft = framing.n_fft, hop = framing.hop;
  check_block(fn, block);
  require(stft_f64_supports(n_fft), fn,
          "n_fft must be a power of two in [4, 4096], got " + std::to_string(n_fft));
  require(n_clips >= 0, fn, "n_clips must be >= 0, got " + std::to_string(n_clips));
  require(hop >= 1, fn, "hop must be >= 1, got " + std::to_string(hop));
  require(clip_len >= 1, fn, "clip_len must be >= 1, got " + std::to_string(clip_len));
  require(clip_stride >= clip_len || n_clips <= 1, fn,
          "clip_stride (" + std::to_string(clip_stride) + ") must be >= clip_len (" +
              std::to_string(clip_len) + ")");
  if (n_clips == 0) return;
  const long long n_frames = stft_frames(clip_len, hop);
  const long long rows = n_clips * n_frames;
  require(rows * (n_fft / 2 + 1) < (1LL << 31) && n_frames < INT_MAX, fn,
          "n_clips*n_frames*bins must be < 2^31: split the batch");
  require(signal && window && twiddles && power, fn, "a device pointer is null");
  int log_m = 0;
  while ((1 << log_m) < n_fft / 2) ++log_m;
  const unsigned grid = unsigned(rows < 65535 * 16 ? rows : 65535 * 16);
  if (version == StftF64Version::v3_thread_per_frame) {
    require(n_fft / 2 <= kV3MaxM, fn,
            "v3_thread_per_frame needs n_fft <= " + std::to_string(2 * kV3MaxM) + ", got " +
                std::to_string(n_fft));
    LAUNCH(stft_power_f64_v3_kernel, grid_1d(rows, unsigned(block)), unsigned(block), 0, stream,
           signal, clip_stride, int(n_frames), clip_len, window, twiddles, n_fft, log_m, hop,
           unsigned(rows), power);
  } else if (version == StftF64Version::v1_radix2) {
    LAUNCH(stft_power_f64_v1_kernel, grid, unsigned(block), size_t(n_fft / 2) * sizeof(double2),
           stream, signal, clip_stride, int(n_frames), clip_len, window, twiddles, n_fft, log_m,
           hop, unsigned(rows), power);
  } else {
    static_assert(2 << kV2MaxLogM == 1024, "stft_f64_v2_supports and v2 agree");
    require(stft_f64_v2_supports(n_fft), fn,
            "v2_four_step needs n_fft <= " + std::to_string(2 << kV2MaxLogM) + ", got " +
                std::to_string(n_fft) + " (use v1_radix2)");
    require(block <= kV2MaxBlock, fn,
            "v2_four_step launches at most " + std::to_string(kV2MaxBlock) +
                " threads a block (its registers), got " + std::to_string(block));
    const V2Args a{signal, clip_stride, int(n_frames), clip_len, window, twiddles,
                   n_fft,  hop,         unsigned(rows), power};
    const dim3 g{grid}, b{unsigned(block)};
    const size_t smem = size_t(n_fft / 2) * sizeof(double2);
    switch (log_m) {
      case 1: launch_v2<1>(a, g, b, smem, stream); break;
      case 2: launch_v2<2>(a, g, b, smem, stream); break;
      case 3: launch_v2<3>(a, g, b, smem, stream); break;
      case 4: launch_v2<4>(a, g, b, smem, stream); break;
      case 5: launch_v2<5>(a, g, b, smem, stream); break;
      case 6: launch_v2<6>(a, g, b, smem, stream); break;
      case 7: launch_v2<7>(a, g, b, smem, stream); break;
      case 8: launch_v2<8>(a, g, b, smem, stream); break;
      default: launch_v2<9>(a, g, b, smem, stream); break;
    }
  }
}

void launch_stft_mel_f64(ClipBatch clips, const double* window, const double2* twiddles,
                         StftFraming framing, MelBandsView bands, double* mel,
                         cudaStream_t stream, int block) {
  const char* fn = "launch_stft_mel_f64";
  const float* signal = clips.signal;
  const long long clip_stride = clips.clip_stride, clip_len = clips.clip_len;
  const int n_clips = clips.n_clips, n_fft = framing.n_fft, hop = framing.hop;
  check_block(fn, block);
  require(stft_f64_supports(n_fft) && n_fft / 2 <= kV3MaxM, fn,
          "n_fft must be a power of two in [4, " + std::to_string(2 * kV3MaxM) + "], got " +
              std::to_string(n_fft));
  require(n_clips >= 0, fn, "n_clips must be >= 0, got " + std::to_string(n_clips));
  require(hop >= 1, fn, "hop must be >= 1, got " + std::to_string(hop));
  require(clip_len >= 1, fn, "clip_len must be >= 1, got " + std::to_string(clip_len));
  require(clip_stride >= clip_len || n_clips <= 1, fn,
          "clip_stride (" + std::to_string(clip_stride) + ") must be >= clip_len (" +
              std::to_string(clip_len) + ")");
  require(bands.n_mels >= 1 && bands.n_bins == n_fft / 2 + 1, fn,
          "bands must have n_mels >= 1 and n_bins = n_fft/2 + 1 = " +
              std::to_string(n_fft / 2 + 1) + ", got " + std::to_string(bands.n_mels) + ", " +
              std::to_string(bands.n_bins));
  if (n_clips == 0) return;
  const long long n_frames = stft_frames(clip_len, hop);
  const long long rows = n_clips * n_frames;
  require(rows * bands.n_mels < (1LL << 31) && n_frames < INT_MAX, fn,
          "n_clips*n_frames*n_mels must be < 2^31: split the batch");
  require(signal && window && twiddles && mel && bands.start && bands.length && bands.offset &&
              bands.weights,
          fn, "a device pointer is null");
  int log_m = 0;
  while ((1 << log_m) < n_fft / 2) ++log_m;
  LAUNCH(stft_mel_f64_kernel, grid_1d(rows, unsigned(block)), unsigned(block), 0, stream, signal,
         clip_stride, int(n_frames), clip_len, window, twiddles, n_fft, log_m, hop, bands,
         unsigned(rows), mel);
}

void launch_clip_max(const double* x, int n_clips, long long per_clip, double* clip_max,
                     cudaStream_t stream, int block) {
  const char* fn = "launch_clip_max";
  check_block(fn, block);
  require((block & (block - 1)) == 0, fn,
          "block must be a power of two (tree reduction), got " + std::to_string(block));
  require(n_clips >= 0 && per_clip >= 1, fn,
          "need n_clips >= 0 and per_clip >= 1, got " + std::to_string(n_clips) + ", " +
              std::to_string(per_clip));
  if (n_clips == 0) return;
  require(x && clip_max, fn, "a device pointer is null");
  const unsigned grid = unsigned(n_clips < 65535 ? n_clips : 65535);
  LAUNCH(clip_max_kernel, grid, unsigned(block), size_t(block) * sizeof(double), stream, x,
         n_clips, per_clip, clip_max);
}

void launch_power_to_db(const double* mel, int n_clips, long long per_clip,
                        const double* clip_max, double top_db, bool ref_is_max, float* out,
                        cudaStream_t stream) {
  const char* fn = "launch_power_to_db";
  require(n_clips >= 0 && per_clip >= 1, fn,
          "need n_clips >= 0 and per_clip >= 1, got " + std::to_string(n_clips) + ", " +
              std::to_string(per_clip));
  require(!std::isnan(top_db), fn, "top_db is NaN");
  if (n_clips == 0) return;
  const long long total = n_clips * per_clip;
  require(total < (1LL << 31), fn, "n_clips*per_clip must be < 2^31: split the batch");
  require(mel && clip_max && out, fn, "a device pointer is null");
  const unsigned block = 256;
  // A few blocks per clip (each thread then does per_clip / (8*256) values).
  const dim3 grid(grid_1d(per_clip, block, 8), rows_grid(n_clips));
  LAUNCH(power_to_db_kernel, grid, dim3(block), 0, stream, mel, unsigned(per_clip), n_clips,
         clip_max, top_db, ref_is_max, out);
}

void launch_dct_rows(const float* x, int n_clips, int n_in, int n_frames, const double* dct,
                     int n_out, float* out, cudaStream_t stream, int block) {
  const char* fn = "launch_dct_rows";
  check_block(fn, block);
  require(n_clips >= 0 && n_in >= 1 && n_frames >= 1 && n_out >= 1, fn,
          "need n_clips >= 0 and n_in, n_frames, n_out >= 1, got " + std::to_string(n_clips) +
              ", " + std::to_string(n_in) + ", " + std::to_string(n_frames) + ", " +
              std::to_string(n_out));
  if (n_clips == 0) return;
  const long long rows = (long long)n_clips * n_out;
  require((long long)n_clips * n_in * n_frames < (1LL << 31) && rows * n_frames < (1LL << 31),
          fn, "batch too large for 32-bit indexing: split it");
  require(x && dct && out, fn, "a device pointer is null");
  const dim3 grid(unsigned(ceil_div(n_frames, block)), rows_grid(rows));
  LAUNCH(dct_rows_kernel, grid, dim3(unsigned(block)), 0, stream, x, n_in, n_frames, dct, n_out,
         unsigned(rows), out);
}

}  // namespace timbre::kernels
