// Phase vocoder, window sum-square and overlap-add (kernels/phase_vocoder.cuh)
// against their CPU references: random nonzero inputs at odd shapes, blocks
// 32 and 128/256, three thread orders, both phase accumulators (librosa's
// float32 one and the wrapped double one); rates below, at and above 1 (and 2.5,
// where columns are skipped); hops smaller and larger than half the frame and
// larger than the frame (gaps); offsets and output lengths short of and past
// the frames; tiny window sums left undivided. Plus checks that do not lean
// on the references: rate 1 gives the input spectrum back, rate 2 takes every
// other column's magnitude; the window sum-square of a periodic Hann at hop
// n_fft/4 is 1.5 away from the edges; determinism across launch shapes;
// argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/phase_vocoder.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::poison;
using timbre::testing::random_nonzero;
using timbre::testing::same_bits;
using timbre::testing::Tolerance;
using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::once;
using timbre::testing::widen;

constexpr double u = 0x1p-24;  // float32 unit roundoff

// Complex values with nonzero real and imaginary parts, magnitudes < 1.5.
std::vector<float2> random_spectrum(size_t n, uint64_t seed) {
  const std::vector<float> v = random_nonzero<float>(2 * n, seed);
  std::vector<float2> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = float2{v[2 * i], v[2 * i + 1]};
  return s;
}

// Flattens (re, im) pairs for all_close.
std::vector<float> flat(const std::vector<float2>& s) {
  std::vector<float> v(2 * s.size());
  for (size_t i = 0; i < s.size(); ++i) v[2 * i] = s[i].x, v[2 * i + 1] = s[i].y;
  return v;
}

std::vector<float2> download(const DeviceBuffer<float2>& d) { return d.to_host(); }

// ---------------------------------------------------------------------------
// Phase vocoder.

using k::PhaseAccumulator;

struct PvCase {
  int clips, cols, bins, hop;
  double rate;
};

const char* name(PhaseAccumulator acc) {
  return acc == PhaseAccumulator::librosa_float32 ? "librosa_float32" : "wrapped_double";
}

// Tolerance of the phase vocoder against its reference. Both follow the
// same recipe (librosa's), so the only differences come from the math
// library: atan2f, hypotf, cosf, sinf may differ by a few ulp between the
// kernel's and the host's (CUDA documents <= 2-3 ulp for each). A different
// rounding of an angle changes the float32 accumulator phi by an ulp of
// |phi| <= steps*(hop*pi + 2*pi) + pi, and such differences add up over the
// steps; the output m*exp(j phi) then moves by m*|dphi|. Under simcuda the
// kernel calls the same glibc functions as the reference, so the results
// agree to the last rounding (atol 4u*max|m|).
Tolerance pv_tolerance(const PvCase& c, int n_out) {
#if TIMBRE_BACKEND_SIM
  (void)c;
  (void)n_out;
  return Tolerance{4 * u * 1.5, 4 * u};
#else
  const double phi_max = n_out * (c.hop * M_PI + 2 * M_PI) + M_PI;
  return Tolerance{1.5 * n_out * 8 * u * phi_max, 8 * u};
#endif
}

const PvCase kPvCases[] = {{3, 23, 37, 5, 0.7}, {3, 23, 37, 5, 1.0},  {2, 19, 33, 8, 1.3},
                           {1, 11, 65, 16, 2.5}, {2, 7, 9, 3, 0.25}, {5, 1, 17, 4, 0.9},
                           {1, 13, 1025, 512, 1.1}};

// At rate 1 each output column t is input column t: the magnitude is read
// whole (alpha = 0) and the accumulated phase is arg D[0] plus the wrapped
// differences, i.e. arg D[t] modulo 2 pi. Independent of the reference.
TEST(PhaseVocoder, RateOneGivesTheInputBack) {
  const int clips = 2, cols = 17, bins = 41, hop = 7;
  const auto spec = random_spectrum(size_t(clips) * cols * bins, 99);
  // DC and Nyquist are written real (Hermitian for C2R): |D| cos(arg D) = Re D.
  auto expect = spec;
  for (int c = 0; c < clips; ++c)
    for (int t = 0; t < cols; ++t)
      for (int kk : {0, bins - 1}) expect[(size_t(c) * cols + t) * bins + kk].y = 0.f;
  DeviceBuffer<float2> d_spec(spec), d_out(spec.size());
  // Wrapped double accumulator: phi_t is arg D[t] to ~1e-15 rad, rounded
  // to float (|phi| <= pi: u*pi) before cosf/sinf (an ulp or two) and the
  // product with |D| rounds twice: |error| <= ~6u|D|, |D| < 1.5: atol 1e-6.
  k::phase_vocoder(d_spec.get(), d_out.get(), clips, cols, bins, 1.0, hop, 0, 128,
                   PhaseAccumulator::wrapped_double);
  EXPECT_TRUE(all_close(flat(download(d_out)), flat(expect), {1e-6, 0}));
  // librosa's float32 accumulator: |phi| grows to cols*(hop*pi + 2 pi) ~
  // 500 rad, rounded to float32 each step (an ulp there is 3e-5 rad), so
  // up to ~cols such roundings add up; the output moves by |D| times that:
  // atol 2e-3 (|D| < 1.5), still far below an O(|D|) error from a wrong
  // column or phase. The tight check above shows the drift is the
  // accumulator's and not an algorithm error.
  k::phase_vocoder(d_spec.get(), d_out.get(), clips, cols, bins, 1.0, hop, 0, 128,
                   PhaseAccumulator::librosa_float32);
  EXPECT_TRUE(all_close(flat(download(d_out)), flat(expect), {2e-3, 0}));
}

// At rate 2 column t has magnitude |D[2t]| (alpha = 0): check |S|.
TEST(PhaseVocoder, RateTwoTakesEveryOtherMagnitude) {
  const int cols = 15, bins = 21, hop = 3;
  const auto spec = random_spectrum(size_t(cols) * bins, 5);
  const int n_out = k::phase_vocoder_steps(cols, 2.0);
  ASSERT_EQ(n_out, 8);
  DeviceBuffer<float2> d_spec(spec), d_out(size_t(n_out) * bins);
  k::phase_vocoder(d_spec.get(), d_out.get(), 1, cols, bins, 2.0, hop, 0);
  const auto got = download(d_out);
  std::vector<float> mag(got.size()), want(got.size());
  for (int t = 0; t < n_out; ++t)
    for (int b = 1; b < bins - 1; ++b) {  // DC/Nyquist keep only the real part
      const float2 g = got[size_t(t) * bins + b], s = spec[size_t(2 * t) * bins + b];
      mag[size_t(t) * bins + b] = std::hypot(g.x, g.y);
      want[size_t(t) * bins + b] = std::hypot(s.x, s.y);
    }
  // |m cos| and |m sin| each rounded once, then hypot: a few u of |S|.
  EXPECT_TRUE(all_close(mag, want, {1e-6, 8 * u}));
}

// ---------------------------------------------------------------------------
// Window sum-square.

struct OlaCase {
  int clips, frames, n_fft, hop;
};

const OlaCase kOlaCases[] = {
    {3, 11, 37, 5},   // hop < n_fft/2: up to 8 frames per sample
    {2, 7, 20, 7},    // n_fft not a multiple of hop
    {1, 9, 5, 8},     // hop > n_fft: gaps with no frame (wss 0)
    {2, 5, 64, 16},   // n_fft/4, like the real STFT (2048/512)
    {1, 1, 13, 3},    // a single frame
};
// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): the phase vocoder with both
// phase accumulators, the window sum-square, and overlap-add (offsets 0 and
// n_fft/2, outputs short of and past the frames, with and without the
// division), at every case, both block sizes, every thread order.

std::vector<double> widen_pairs(const std::vector<float2>& s) {
  std::vector<double> v(2 * s.size());
  for (size_t i = 0; i < s.size(); ++i) v[2 * i] = s[i].x, v[2 * i + 1] = s[i].y;
  return v;
}

std::string pv_shape(const PvCase& c) {
  return "clips=" + std::to_string(c.clips) + " cols=" + std::to_string(c.cols) + " bins=" +
         std::to_string(c.bins) + " hop=" + std::to_string(c.hop) + " rate=" +
         std::to_string(c.rate);
}

std::string ola_shape(const OlaCase& c) {
  return "clips=" + std::to_string(c.clips) + " frames=" + std::to_string(c.frames) + " n_fft=" +
         std::to_string(c.n_fft) + " hop=" + std::to_string(c.hop);
}

void phase_vocoder_rows(OpTable& table) {
  for (const PvCase& c : kPvCases) {
    const int n_out = k::phase_vocoder_steps(c.cols, c.rate);
    const auto spec = once([=] {
      return random_spectrum(size_t(c.clips) * c.cols * c.bins, 7 + c.cols + c.bins);
    });
    for (PhaseAccumulator acc :
         {PhaseAccumulator::librosa_float32, PhaseAccumulator::wrapped_double})
      table.add(OpCase{
          std::string("phase_vocoder/phase_vocoder/") + name(acc), "float", pv_shape(c), {32, 128},
          pv_tolerance(c, n_out),
          "the same recipe as the reference; only the maths library's ulps differ (none under "
          "simcuda)",
          [=](int block) {
            DeviceBuffer<float2> d_spec(spec()), d_out(size_t(c.clips) * n_out * c.bins);
            poison(d_out);
            k::phase_vocoder(d_spec.get(), d_out.get(), c.clips, c.cols, c.bins, c.rate, c.hop, 0,
                             block, acc);
            return widen_pairs(d_out.to_host());
          },
          [=] {
            if (n_out != int(std::ceil(c.cols / c.rate)))
              throw std::logic_error("phase_vocoder_steps is not ceil(cols / rate)");
            std::vector<float2> ref(size_t(c.clips) * n_out * c.bins);
            k::phase_vocoder_cpu(spec().data(), ref.data(), c.clips, c.cols, c.bins, c.rate,
                                 c.hop, acc);
            return widen_pairs(ref);
          }});
  }
  for (const OlaCase& c : kOlaCases) {
    const long long len = k::wss_length(c.n_fft, c.hop, c.frames);
    const double d = std::ceil(double(c.n_fft) / c.hop);
    // Window sum-square: each value a float sum of d = ceil(n_fft/hop)
    // positive squares (each rounded once): relative error <= (d + 1)u, plus
    // the reference's rounding of its double sum: rtol (d + 2)u, doubled.
    const auto wss_window = once([=] { return random_nonzero<float>(size_t(c.n_fft), 31 + c.n_fft); });
    table.add(OpCase{
        "phase_vocoder/window_sumsquare", "float", ola_shape(c), {32, 256},
        {0, 2 * (d + 2) * u}, "a float sum of ceil(n_fft/hop) positive squares",
        [=](int block) {
          DeviceBuffer<float> d_window(wss_window()), d_wss(static_cast<size_t>(len));
          poison(d_wss);
          k::window_sumsquare(d_window.get(), d_wss.get(), c.n_fft, c.hop, c.frames, 0, block);
          return widen(d_wss.to_host());
        },
        [=] {
          std::vector<float> ref(static_cast<size_t>(len));
          k::window_sumsquare_cpu(wss_window().data(), ref.data(), c.n_fft, c.hop, c.frames);
          return widen(ref);
        }});
    // Overlap-add.
    struct In {
      std::vector<float> window, frames, wss;
      Tolerance tol;
    };
    const float scale = 1.f / float(c.n_fft);
    const auto in = once([=] {
      In i{random_nonzero<float>(size_t(c.n_fft), 41 + c.hop),
           random_nonzero<float>(size_t(c.clips) * c.frames * c.n_fft, 43 + c.frames),
           std::vector<float>(static_cast<size_t>(len)),
           {}};
      k::window_sumsquare_cpu(i.window.data(), i.wss.data(), c.n_fft, c.hop, c.frames);
      // A few zero and subnormal entries: those samples must stay undivided.
      for (long long j = 3; j < len; j += 11) i.wss[size_t(j)] = (j % 2) ? 0.f : FLT_MIN / 4;
      // A float sum of <= d terms w*(scale*x) (two roundings each) is off by
      // <= (d + 2)u * sum|terms|; the division and the reference's final
      // rounding add u each, relative. sum|terms| / wss is at most
      // max|w| * scale * max|x| * d / min(divided wss).
      double bound = 0;
      for (long long j = 0; j < len; ++j) {
        double s = 0;
        for (int f = 0; f < c.frames; ++f) {
          const long long kk = j - (long long)f * c.hop;
          if (kk >= 0 && kk < c.n_fft) s += std::fabs(i.window[size_t(kk)]) * scale;  // |x| < 1
        }
        if (i.wss[size_t(j)] > FLT_MIN) s /= i.wss[size_t(j)];
        bound = std::max(bound, s);
      }
      i.tol = Tolerance{2 * (d + 2) * u * bound, 4 * u};
      return i;
    });
    for (long long offset : {0LL, (long long)c.n_fft / 2})
      for (long long out_len : {len - offset - 3, len - offset + 4})  // short of / past the end
        for (bool normalise : {true, false}) {
          OpCase row{
              std::string("phase_vocoder/overlap_add") + (normalise ? "" : "/undivided"), "float",
              ola_shape(c) + " offset=" + std::to_string(offset) + " out_len=" +
                  std::to_string(out_len),
              {32, 256}, {}, "a float sum of <= ceil(n_fft/hop) products, then the division",
              [=](int block) {
                const In& i = in();
                DeviceBuffer<float> d_window(i.window), d_frames(i.frames), d_wss(i.wss),
                    d_out(size_t(c.clips) * size_t(out_len));
                poison(d_out);
                k::overlap_add({d_frames.get(), d_window.get(), normalise ? d_wss.get() : nullptr,
                                d_out.get()},
                               {c.clips, c.frames, c.n_fft, c.hop, offset, out_len}, scale, 0,
                               block);
                return widen(d_out.to_host());
              },
              [=] {
                const In& i = in();
                std::vector<float> ref(size_t(c.clips) * size_t(out_len));
                k::overlap_add_cpu({i.frames.data(), i.window.data(),
                                    normalise ? i.wss.data() : nullptr, ref.data()},
                                   {c.clips, c.frames, c.n_fft, c.hop, offset, out_len}, scale);
                return widen(ref);
              },
              [=](int) { return in().tol; }};
          // A gather: bit-identical whatever the block size or thread order.
          row.block_invariant = true;
          table.add(std::move(row));
        }
  }
}

OP_CASES(phase_vocoder) { phase_vocoder_rows(table); }


// Periodic Hann at hop n_fft/4: sum of squares is exactly 3/2 wherever four
// frames overlap (the COLA property the ISTFT divides out).
TEST(WindowSumSquare, HannAtQuarterHopIsThreeHalves) {
  const int n_fft = 64, hop = 16, frames = 9;
  std::vector<float> w(n_fft);
  for (int i = 0; i < n_fft; ++i) w[size_t(i)] = float(0.5 - 0.5 * std::cos(2 * M_PI * i / n_fft));
  DeviceBuffer<float> d_w(w), d_wss(size_t(k::wss_length(n_fft, hop, frames)));
  k::window_sumsquare(d_w.get(), d_wss.get(), n_fft, hop, frames, 0);
  const auto wss = d_wss.to_host();
  for (int j = n_fft - hop; j < hop * frames; ++j) EXPECT_NEAR(wss[size_t(j)], 1.5, 1e-6) << j;
  EXPECT_EQ(wss[0], 0.f);  // w[0] = 0 and no other frame reaches sample 0
}

// ---------------------------------------------------------------------------
// Argument errors name the launcher and the argument.

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(PhaseVocoder, BadArguments) {
  DeviceBuffer<float2> d_a(64), d_b(256);
  DeviceBuffer<float> d_f(256), d_g(256);
  expect_error([] { k::phase_vocoder_steps(10, 0.0); }, "rate");
  expect_error([] { k::phase_vocoder_steps(10, -1.0); }, "rate");
  expect_error([] { k::phase_vocoder_steps(10, NAN); }, "rate");
  expect_error([] { k::phase_vocoder_steps(0, 1.0); }, "n_cols");
  expect_error([] { k::phase_vocoder_steps(1000, 1e-9); }, "2^31");
  expect_error([&] { k::phase_vocoder(d_a.get(), d_b.get(), 1, 4, 1, 1.0, 2, 0); }, "n_bins");
  expect_error([&] { k::phase_vocoder(d_a.get(), d_b.get(), 1, 4, 9, 1.0, 0, 0); }, "hop");
  expect_error([&] { k::phase_vocoder(d_a.get(), d_b.get(), 1, 4, 9, 1.0, 2, 0, 48); }, "block");
  expect_error([&] { k::phase_vocoder(nullptr, d_b.get(), 1, 4, 9, 1.0, 2, 0); }, "d_spec");
  expect_error([&] { k::phase_vocoder(d_a.get(), d_b.get(), 1, 4, 9, 1.0, 2, 0, 128,
                                      PhaseAccumulator(7)); }, "PhaseAccumulator");
  expect_error([&] { k::window_sumsquare(d_f.get(), d_g.get(), 16, 4, 0, 0); }, "n_frames");
  expect_error([&] { k::window_sumsquare(nullptr, d_g.get(), 16, 4, 2, 0); }, "d_window");
  expect_error([&] { k::overlap_add({d_f.get(), d_f.get(), nullptr, d_g.get()},
                                    {1, 2, 16, 4, -1, 10}, 1.f, 0); }, "offset");
  expect_error([&] { k::overlap_add({d_f.get(), d_f.get(), nullptr, nullptr}, {1, 2, 16, 4, 0, 10},
                                    1.f, 0); }, "d_out");
  expect_error([&] { k::overlap_add({d_f.get(), d_f.get(), nullptr, d_g.get()},
                                    {1, 2, 16, 4, 0, 10}, INFINITY, 0); }, "scale");
  // Zero clips: nothing to do, null pointers allowed.
  EXPECT_NO_THROW(k::phase_vocoder(nullptr, nullptr, 0, 4, 9, 1.0, 2, 0));
}

}  // namespace
