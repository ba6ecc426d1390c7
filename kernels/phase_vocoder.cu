#include "kernels/phase_vocoder.cuh"

#include <cfloat>
#include <cmath>
#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

namespace {

constexpr double kTwoPi = 6.283185307179586;  // float64 2*pi, as numpy's 2.0 * np.pi

// librosa's expected phase advance per hop for bin k, computed as it does:
// hop * rfftfreq(n_fft, d = 1/(2 pi))[k] = hop * (k * (1 / (n_fft * (1/(2 pi))))).
// `bin_step` is the bracketed factor, computed once on the host.
__host__ __device__ inline double expected_advance(int hop, int k, double bin_step) {
  return double(hop) * (double(k) * bin_step);
}

double bin_step_for(int n_bins) {
  const int n_fft = 2 * (n_bins - 1);
  return 1.0 / (double(n_fft) * (1.0 / kTwoPi));
}

}  // namespace

// ===========================================================================
// CPU references.

void phase_vocoder_cpu(const float2* spec, float2* out, int n_clips, int n_cols, int n_bins,
                       double rate, int hop, PhaseAccumulator acc) {
  using cf = std::complex<float>;
  const bool wrapped = acc == PhaseAccumulator::wrapped_double;
  const int n_out = phase_vocoder_steps(n_cols, rate);
  const double bin_step = bin_step_for(n_bins);
  // The input column f of one clip, with the two zero columns of padding.
  auto column = [&](int c, int f, int k) -> cf {
    if (f >= n_cols) return cf(0.f, 0.f);
    const float2 v = spec[(size_t(c) * n_cols + f) * n_bins + k];
    return cf(v.x, v.y);
  };
  for (int c = 0; c < n_clips; ++c) {
    // The clip's accumulator, one per bin, held in double: in the librosa
    // mode every value is rounded to float32 after each step (librosa keeps
    // a float32 array), in the wrapped mode it stays double, in [-pi, pi].
    std::vector<double> phase(static_cast<size_t>(n_bins));
    for (int k = 0; k < n_bins; ++k) phase[size_t(k)] = std::arg(column(c, 0, k));
    for (int t = 0; t < n_out; ++t) {
      const double step = double(t) * rate;
      const int i = int(std::floor(step));
      const double alpha = std::fmod(step, 1.0);
      for (int k = 0; k < n_bins; ++k) {
        const cf a = column(c, i, k), b = column(c, i + 1, k);
        const double mag = (1.0 - alpha) * double(std::abs(a)) + alpha * double(std::abs(b));
        const double p = phase[size_t(k)];
        const float pf = float(p);  // exact in the librosa mode
        float re = float(double(std::cos(pf)) * mag), im = float(double(std::sin(pf)) * mag);
        if (k == 0 || k == n_bins - 1) im = 0.f;  // Hermitian input for the C2R transform
        out[(size_t(c) * n_out + t) * n_bins + k] = float2{re, im};
        const double w = expected_advance(hop, k, bin_step);
        double d = double(std::arg(b) - std::arg(a)) - w;
        d = d - kTwoPi * std::nearbyint(d / kTwoPi);
        if (wrapped) {
          const double q = p + (w + d);
          phase[size_t(k)] = q - kTwoPi * std::nearbyint(q / kTwoPi);
        } else {
          phase[size_t(k)] = double(float(p + (w + d)));
        }
      }
    }
  }
}

void window_sumsquare_cpu(const float* window, float* wss, int n_fft, int hop, int n_frames) {
  const long long len = wss_length(n_fft, hop, n_frames);
  std::vector<double> acc(static_cast<size_t>(len), 0.0);
  for (int f = 0; f < n_frames; ++f)
    for (int k = 0; k < n_fft; ++k)
      acc[size_t((long long)f * hop + k)] += double(window[k]) * double(window[k]);
  for (long long j = 0; j < len; ++j) wss[j] = float(acc[size_t(j)]);
}

void overlap_add_cpu(const OverlapAddTensors& t, const OverlapAddShape& shape, float scale) {
  const float *frames = t.frames, *window = t.window, *wss = t.wss;
  float* out = t.out;
  const int n_clips = shape.n_clips, n_frames = shape.n_frames, n_fft = shape.n_fft,
            hop = shape.hop;
  const long long offset = shape.offset, out_len = shape.out_len;
  const long long len = wss_length(n_fft, hop, n_frames);
  std::vector<double> acc(static_cast<size_t>(len));
  for (int c = 0; c < n_clips; ++c) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int f = 0; f < n_frames; ++f)
      for (int k = 0; k < n_fft; ++k)
        acc[size_t((long long)f * hop + k)] +=
            double(window[k]) * double(scale) * double(frames[(size_t(c) * n_frames + f) * n_fft + k]);
    for (long long i = 0; i < out_len; ++i) {
      const long long j = i + offset;
      double v = j < len ? acc[size_t(j)] : 0.0;
      if (wss != nullptr && j < len && wss[j] > FLT_MIN) v /= double(wss[j]);
      out[size_t(c) * size_t(out_len) + size_t(i)] = float(v);
    }
  }
}

// ===========================================================================
// Device side: grid-stride loops over 32-bit indices (the launchers keep
// every count below 2^31), no barrier, no shared memory.

namespace {

__device__ __forceinline__ unsigned first_index() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned grid_stride() { return blockDim.x * gridDim.x; }

// One thread per (clip, bin) pair; idx = clip*n_bins + bin, so the threads of
// a warp hold consecutive bins of one clip and every column access below is
// a coalesced row. The loop over t is the scan in time (see the header).
// Phase: the accumulator's type (float for librosa's recipe, double wrapped
// to [-pi, pi] for the accurate one).
template <class Phase>
__global__ void phase_vocoder_kernel(const float2* spec, float2* out, int n_clips, int n_cols,
                                     int n_bins, int n_out, double rate, int hop,
                                     double bin_step) {
  constexpr bool wrapped = sizeof(Phase) == sizeof(double);
  const unsigned total = unsigned(n_clips) * unsigned(n_bins), stride = grid_stride();
  for (unsigned idx = first_index(); idx < total; idx += stride) {
    const unsigned c = idx / unsigned(n_bins);
    const int k = int(idx - c * unsigned(n_bins));
    const float2* col = spec + size_t(c) * n_cols * n_bins + k;
    float2* dst = out + size_t(c) * n_out * n_bins + k;
    const double w = expected_advance(hop, k, bin_step);
    const bool real_bin = k == 0 || k == n_bins - 1;  // DC and Nyquist
    const float2 first = col[0];
    Phase phase = atan2f(first.y, first.x);
    // |.| and arg of columns i and i + 1 (of the input padded with two zero
    // columns), kept from the previous step: when i advances by one (rates
    // <= 1, and most steps of rates < 2) column i + 1 becomes column i and
    // only one new column is read, halving the atan2f/hypotf work. The
    // values are the same as recomputing them.
    int cached = -2;  // the i the four values below belong to
    float mag_a = 0.f, mag_b = 0.f, arg_a = 0.f, arg_b = 0.f;
    auto load = [&](int f, float& mag, float& arg) {
      const float2 v = f < n_cols ? col[size_t(f) * n_bins] : make_float2(0.f, 0.f);
      mag = hypotf(v.x, v.y);
      arg = atan2f(v.y, v.x);
    };
    for (int t = 0; t < n_out; ++t) {
      const double step = double(t) * rate;
      const int i = int(step);  // floor: step >= 0
      const double alpha = step - double(i);
      if (i == cached + 1) {
        mag_a = mag_b;
        arg_a = arg_b;
        load(i + 1, mag_b, arg_b);
      } else if (i != cached) {
        load(i, mag_a, arg_a);
        load(i + 1, mag_b, arg_b);
      }
      cached = i;
      const double mag = (1.0 - alpha) * double(mag_a) + alpha * double(mag_b);
      const float cs = cosf(float(phase)), sn = sinf(float(phase));
      dst[size_t(t) * n_bins] =
          make_float2(float(double(cs) * mag), real_bin ? 0.f : float(double(sn) * mag));
      // Deviation of the measured phase advance from the expected one,
      // wrapped to [-pi, pi]; the float32 difference first, as librosa.
      double d = double(arg_b - arg_a) - w;
      d = d - kTwoPi * rint(d / kTwoPi);
      if (wrapped) {
        const double q = double(phase) + (w + d);
        phase = Phase(q - kTwoPi * rint(q / kTwoPi));
      } else {
        phase = Phase(double(phase) + (w + d));  // rounded to float32 every step
      }
    }
  }
}

// One thread per sample j of the envelope: the squares of the window taps
// that land on j, frames in ascending order.
__global__ void window_sumsquare_kernel(const float* window, float* wss, int n_fft, int hop,
                                        int n_frames, unsigned len) {
  const unsigned stride = grid_stride();
  for (unsigned j = first_index(); j < len; j += stride) {
    const int f_hi = min(n_frames - 1, int(j / unsigned(hop)));
    const int f_lo = int(j) >= n_fft ? (int(j) - n_fft) / hop + 1 : 0;
    float sum = 0.f;
    for (int f = f_lo; f <= f_hi; ++f) {
      const float v = window[int(j) - f * hop];
      sum += v * v;
    }
    wss[j] = sum;
  }
}

// One thread per output sample (clip c, sample i): the gather of every
// frame tap that lands on j = i + offset, in ascending frame order, then the
// division by the window sum-square where it is not tiny.
__global__ void overlap_add_kernel(const float* frames, const float* window, const float* wss,
                                   float* out, int n_frames, int n_fft, int hop, float scale,
                                   unsigned offset, unsigned out_len, unsigned total,
                                   unsigned wss_len) {
  const unsigned stride = grid_stride();
  for (unsigned idx = first_index(); idx < total; idx += stride) {
    const unsigned c = idx / out_len;
    const unsigned j = idx - c * out_len + offset;
    const float* fr = frames + size_t(c) * n_frames * n_fft;
    const int f_hi = min(n_frames - 1, int(j / unsigned(hop)));
    const int f_lo = int(j) >= n_fft ? (int(j) - n_fft) / hop + 1 : 0;
    float sum = 0.f;
    for (int f = f_lo; f <= f_hi; ++f) {
      const int k = int(j) - f * hop;
      sum += window[k] * (scale * fr[size_t(f) * n_fft + k]);
    }
    if (wss != nullptr && j < wss_len) {
      const float norm = wss[j];
      if (norm > FLT_MIN) sum /= norm;
    }
    out[idx] = sum;
  }
}

// ---------------------------------------------------------------------------
// Argument checks (the common ones: kernels/launcher.h).

void check_index_range(const char* op, const char* what, long long v) {
  if (v >= (1LL << 31))
    fail(op, std::string(what) + " = " + std::to_string(v) +
                 " does not fit 32-bit indexing (< 2^31)");
}

}  // namespace

// ===========================================================================
// Launchers.

int phase_vocoder_steps(int n_cols, double rate) {
  const char* op = "phase_vocoder_steps";
  check_at_least(op, "n_cols", n_cols, 1);
  if (!(rate > 0) || !std::isfinite(rate))
    fail(op, "rate must be a finite number > 0, not " + std::to_string(rate));
  const double steps = std::ceil(double(n_cols) / rate);
  if (steps >= 2147483648.0)
    fail(op, "rate " + std::to_string(rate) + " gives " + std::to_string(steps) +
                " output columns (must be < 2^31)");
  return int(steps);
}

void phase_vocoder(const float2* d_spec, float2* d_out, int n_clips, int n_cols, int n_bins,
                   double rate, int hop, cudaStream_t s, int block, PhaseAccumulator acc) {
  const char* op = "phase_vocoder";
  if (acc != PhaseAccumulator::librosa_float32 && acc != PhaseAccumulator::wrapped_double)
    fail(op, "unknown PhaseAccumulator " + std::to_string(int(acc)));
  check_block(op, block);
  check_at_least(op, "n_clips", n_clips, 0);
  check_at_least(op, "n_bins", n_bins, 2);
  check_at_least(op, "hop", hop, 1);
  const int n_out = phase_vocoder_steps(n_cols, rate);  // checks n_cols and rate
  check_index_range(op, "n_clips*n_cols*n_bins", (long long)n_clips * n_cols * n_bins);
  check_index_range(op, "n_clips*n_out*n_bins", (long long)n_clips * n_out * n_bins);
  if (n_clips == 0) return;
  check_pointer(op, d_spec, "d_spec");
  check_pointer(op, d_out, "d_out");
  const long long threads = (long long)n_clips * n_bins;
  const unsigned grid = blocks_for(threads, block);
  if (acc == PhaseAccumulator::librosa_float32)
    LAUNCH(phase_vocoder_kernel<float>, grid, block, 0, s, d_spec, d_out, n_clips, n_cols, n_bins,
           n_out, rate, hop, bin_step_for(n_bins));
  else
    LAUNCH(phase_vocoder_kernel<double>, grid, block, 0, s, d_spec, d_out, n_clips, n_cols, n_bins,
           n_out, rate, hop, bin_step_for(n_bins));
}

void window_sumsquare(const float* d_window, float* d_wss, int n_fft, int hop, int n_frames,
                      cudaStream_t s, int block) {
  const char* op = "window_sumsquare";
  check_block(op, block);
  check_at_least(op, "n_fft", n_fft, 1);
  check_at_least(op, "hop", hop, 1);
  check_at_least(op, "n_frames", n_frames, 1);
  const long long len = wss_length(n_fft, hop, n_frames);
  check_index_range(op, "n_fft + hop*(n_frames - 1)", len);
  check_pointer(op, d_window, "d_window");
  check_pointer(op, d_wss, "d_wss");
  LAUNCH(window_sumsquare_kernel, blocks_for(len, block), block, 0, s, d_window, d_wss, n_fft,
         hop, n_frames, unsigned(len));
}

void overlap_add(const OverlapAddTensors& t, const OverlapAddShape& shape, float scale,
                 cudaStream_t s, int block) {
  const char* op = "overlap_add";
  const float *d_frames = t.frames, *d_window = t.window, *d_wss = t.wss;
  float* d_out = t.out;
  const int n_clips = shape.n_clips, n_frames = shape.n_frames, n_fft = shape.n_fft,
            hop = shape.hop;
  const long long offset = shape.offset, out_len = shape.out_len;
  check_block(op, block);
  check_at_least(op, "n_clips", n_clips, 0);
  check_at_least(op, "n_frames", n_frames, 1);
  check_at_least(op, "n_fft", n_fft, 1);
  check_at_least(op, "hop", hop, 1);
  check_at_least(op, "offset", offset, 0);
  check_at_least(op, "out_len", out_len, 0);
  if (!std::isfinite(scale)) fail(op, "scale must be finite, not " + std::to_string(scale));
  const long long len = wss_length(n_fft, hop, n_frames);
  check_index_range(op, "n_fft + hop*(n_frames - 1)", len);
  check_index_range(op, "n_clips*n_frames*n_fft", (long long)n_clips * n_frames * n_fft);
  check_index_range(op, "offset + out_len", offset + out_len);
  check_index_range(op, "n_clips*out_len", (long long)n_clips * out_len);
  const long long total = (long long)n_clips * out_len;
  if (total == 0) return;
  check_pointer(op, d_frames, "d_frames");
  check_pointer(op, d_window, "d_window");
  check_pointer(op, d_out, "d_out");
  LAUNCH(overlap_add_kernel, blocks_for(total, block), block, 0, s, d_frames, d_window, d_wss,
         d_out, n_frames, n_fft, hop, scale, unsigned(offset), unsigned(out_len), unsigned(total),
         unsigned(len));
}

}  // namespace timbre::kernels
