// Batch normalisation (kernels/batchnorm.cuh) against its CPU reference, in
// float and double: odd 2-D shapes (3x5x7x9), 1-D (N, C) shapes including the
// models' (32, 128), both reduction paths (a thread per channel up to 512
// values, blocks above), a shape split into several chunks per channel and
// one at the chunk cap; blocks 64 and 256 (32 and 1024 once), three thread
// orders; training forward with both running-statistics conventions
// (PyTorch, Keras), with and without running statistics, in place;
// evaluation forward; both backward passes assigning and accumulating each
// gradient; hand-computed running statistics; a constant channel, one value
// per channel, a mean far larger than the spread; determinism;
// finite-difference checks of both backward passes in double; argument
// errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/batchnorm.cuh"
#include "kernels/device_buffer.h"
#include "kernels/pooling.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using k::BatchNormAccumulate;
using k::BatchNormRunning;
using timbre::DeviceBuffer;
using timbre::testing::unit_roundoff;
using timbre::testing::max_abs;
using timbre::testing::all_close;
using timbre::testing::random_floats;
using timbre::testing::Tolerance;
using timbre::testing::OpTable;
using timbre::testing::dtype_name;
using timbre::testing::once;
using timbre::testing::split;
using timbre::testing::widen;

// ---------------------------------------------------------------------------
// Tolerances: |got - ref| <= atol + rtol*|ref|, from the rounding errors of
// kernel and reference, in units of the unit roundoff u of T (2^-24 for
// float, 2^-53 for double; one rounding changes a value v by at most u|v|).
// Two kinds of error:
//   * roundings in T (the elementwise passes, the final rounding of every
//     output): a few u of the magnitudes involved, worked out per output
//     below. These must hold on a GPU too, where nvcc may contract a multiply
//     and an add into one FMA: that removes roundings, never adds any.
//   * the double accumulations of kernel and reference (the statistics and
//     the backward sums are accumulated in double whatever T is). A sum of M
//     terms along a path of d additions is off by at most d*2^-53*sum|terms|.
//     Paths: the reference adds its M terms in sequence; the kernel adds at
//     most M per thread (a lane's share of a chunk), then <= 32 + 32 in
//     the block fold, then <= 32 chunk partials.
//     acc_err(M) = (4M + 256)*2^-53 bounds both together,
//     with a factor 2 for the shifted terms |x - K| <= 2 max|x - mean|. In
//     float it is far below u; in double it is what the tolerance is made of.
// A wrong formula (a missing term, a wrong channel) is off by 1e-2 or more.

double acc_err(long long m) { return (4.0 * m + 256) * 0x1p-53; }

// Accumulating: dx_old + g is rounded once more (u|result|; the reference
// adds in double and rounds once: u). g's own error was relative to |g|, not
// to the sum: it becomes absolute, rtol * max|g|.
Tolerance accumulated(Tolerance t, double max_abs_g, double u) {
  return Tolerance{t.atol + t.rtol * max_abs_g, t.rtol + 2 * u};
}

// t, or accumulated(t) when the kernel adds to a gradient whose fresh value
// (assigned) is g.
template <class T>
Tolerance tol_of(bool accumulate, Tolerance t, const std::vector<T>& g) {
  return accumulate ? accumulated(t, max_abs(g), unit_roundoff<T>) : t;
}

// ---------------------------------------------------------------------------
// Shapes and inputs.

// The launchers' BatchNormShape, with the sizes the tests derive from it.
struct Shape : k::BatchNormShape {
  long long hw() const { return (long long)h * w; }
  long long m() const { return n * hw(); }
  size_t size() const { return size_t(n) * c * hw(); }
  int channel_of(size_t o) const { return int((o / hw()) % c); }
  std::string str() const {
    return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" +
           std::to_string(w);
  }
};

template <class T>
std::vector<T> uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  const auto u = random_floats(n, seed, lo, hi);
  return std::vector<T>(u.begin(), u.end());
}

// Channel ch holds offset(ch) + spread(ch) * U(-1, 1): means from -2.5 to
// 2.5, spreads from 0.3 to 1.8, different in every channel (a kernel that
// mixes channels up cannot pass).
double offset_of(int ch) { return 2.5 * std::sin(1.3 * ch + 0.4); }
double spread_of(int ch) { return 0.3 + 0.75 * (1 + std::cos(2.1 * ch)); }

template <class T>
std::vector<T> make_input(const Shape& s, uint64_t seed) {
  const auto u = random_floats(s.size(), seed);
  std::vector<T> x(s.size());
  for (size_t o = 0; o < x.size(); ++o) {
    const int ch = s.channel_of(o);
    x[o] = T(offset_of(ch) + spread_of(ch) * u[o]);
  }
  return x;
}

// gamma of both signs, |gamma| in [0.5, 1.5]; beta in [-1, 1]; running mean
// in [-0.5, 0.5] and variance in [0.5, 1.5] (a layer some steps into training).
template <class T>
struct Params {
  std::vector<T> gamma, beta, running_mean, running_var;
};
template <class T>
Params<T> make_params(int c, uint64_t seed) {
  Params<T> p{uniform<T>(size_t(c), seed, 0.5f, 1.5f), uniform<T>(size_t(c), seed + 1),
              uniform<T>(size_t(c), seed + 2, -0.5f, 0.5f),
              uniform<T>(size_t(c), seed + 3, 0.5f, 1.5f)};
  for (int ch = 1; ch < c; ch += 2) p.gamma[size_t(ch)] = -p.gamma[size_t(ch)];
  return p;
}

// The two conventions, each with its framework's default eps.
struct Convention {
  const char* name;
  BatchNormRunning running;
  double eps;
};
const Convention kConventions[] = {
    {"pytorch", k::pytorch_running(), k::kPyTorchBatchNormEps},
    {"keras", k::keras_running(), k::kKerasBatchNormEps},
};

// 64: two warps; 256: the default.
const int kBlocks[] = {64, 256};

// Small channels are one chunk of one block (few threads, partly filled
// warps), large ones several chunks: the shapes cover one chunk and many.
std::vector<Shape> shapes() {
  return {
      {3, 5, 7, 9},     // odd everything; M = 189: one chunk of 32 threads
      {5, 7, 1, 1},     // 1-D, odd
      {32, 128, 1, 1},  // 1-D, the models' dense layers
      {2, 16, 4, 4},    // the models' last 2-D maps, small
      {2, 4, 16, 16},   // M = 512: one chunk, every lane busy
      {3, 5, 13, 17},   // M = 663: block path, one chunk, partly filled warps
      {4, 3, 91, 93},   // M = 33852: block path, 2 chunks at block 256, 5 at block 64
  };
}

// Per-channel statistics in double (for the tolerances): mean and inv_std of
// the batch (or the given running ones), the largest |x - mean|, and the
// backward sums' magnitudes.
struct ChannelInfo {
  std::vector<double> mean, inv_std, max_dev, var_unbiased;
};
template <class T>
ChannelInfo batch_info(const Shape& s, const std::vector<T>& x, double eps) {
  ChannelInfo ci{std::vector<double>(size_t(s.c)), std::vector<double>(size_t(s.c)),
                 std::vector<double>(size_t(s.c)), std::vector<double>(size_t(s.c))};
  std::vector<double> sum(size_t(s.c)), sq(size_t(s.c));
  for (size_t o = 0; o < x.size(); ++o) sum[size_t(s.channel_of(o))] += x[o];
  for (int ch = 0; ch < s.c; ++ch) ci.mean[size_t(ch)] = sum[size_t(ch)] / double(s.m());
  for (size_t o = 0; o < x.size(); ++o) {
    const size_t ch = size_t(s.channel_of(o));
    const double d = double(x[o]) - ci.mean[ch];
    sq[ch] += d * d;
    ci.max_dev[ch] = std::max(ci.max_dev[ch], std::fabs(d));
  }
  for (size_t ch = 0; ch < size_t(s.c); ++ch) {
    ci.inv_std[ch] = 1 / std::sqrt(sq[ch] / double(s.m()) + eps);
    ci.var_unbiased[ch] = s.m() > 1 ? sq[ch] / double(s.m() - 1) : 0;
  }
  return ci;
}
template <class T>
ChannelInfo running_info(const Shape& s, const std::vector<T>& x, const Params<T>& p, double eps) {
  ChannelInfo ci{std::vector<double>(p.running_mean.begin(), p.running_mean.end()),
                 std::vector<double>(size_t(s.c)),
                 std::vector<double>(size_t(s.c)),
                 {}};
  for (size_t ch = 0; ch < size_t(s.c); ++ch)
    ci.inv_std[ch] = 1 / std::sqrt(double(p.running_var[ch]) + eps);
  for (size_t o = 0; o < x.size(); ++o) {
    const size_t ch = size_t(s.channel_of(o));
    ci.max_dev[ch] = std::max(ci.max_dev[ch], std::fabs(double(x[o]) - ci.mean[ch]));
  }
  return ci;
}

// y = (x - mean) * scale + beta. The kernel rounds: the mean to T (u|mean|),
// scale = gamma * inv_std (the saved inv_std and the product: 2u relative),
// x - mean, the product and the sum (u each, relative to what they round);
// the reference rounds y once. Altogether at most
//   u |gamma| inv_std (|mean| + 4 max|x - mean|) + 2u|y|,
// doubled. The |mean| term is real: a mean rounded to T shifts every y of
// the channel by up to u |mean| |gamma| inv_std (as in PyTorch, which also
// keeps the mean in T). With batch statistics (acc = acc_err(M); 0 for
// running ones), kernel and reference also differ by the accumulation error
// of the mean (2 acc max|x|, see expect_train_close) and of inv_std (8 acc
// relative), times |gamma| inv_std and |gamma| inv_std |x - mean|.
template <class T>
Tolerance y_tol(const Params<T>& p, const ChannelInfo& ci, double acc = 0, double max_x = 0) {
  double worst = 0;
  for (size_t ch = 0; ch < p.gamma.size(); ++ch) {
    const double g = std::fabs(double(p.gamma[ch])) * ci.inv_std[ch];
    worst = std::max(worst, g * (2 * unit_roundoff<T> * (std::fabs(ci.mean[ch]) + 4 * ci.max_dev[ch]) +
                                 acc * (2 * max_x + 8 * ci.max_dev[ch])));
  }
  return Tolerance{worst, 4 * unit_roundoff<T>};
}

// ---------------------------------------------------------------------------
// Runs.

template <class T>
struct TrainOut {
  std::vector<T> y, mean, inv_std, running_mean, running_var;
};

template <class T>
TrainOut<T> device_forward_train(const Shape& s, const std::vector<T>& x, const Params<T>& p,
                                 const Convention& cv, int block, bool track = true) {
  DeviceBuffer<T> d_x(x), d_g(p.gamma), d_b(p.beta), d_y(x.size()), d_m(size_t(s.c)),
      d_i(size_t(s.c)), d_rm(p.running_mean), d_rv(p.running_var);
  DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
  k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), d_y.get(), d_m.get(), d_i.get(),
                                 track ? d_rm.get() : nullptr, track ? d_rv.get() : nullptr},
                                s, cv.eps, cv.running, d_ws.get(), nullptr, block);
  return {d_y.to_host(), d_m.to_host(), d_i.to_host(), d_rm.to_host(), d_rv.to_host()};
}

template <class T>
TrainOut<T> cpu_forward_train(const Shape& s, const std::vector<T>& x, const Params<T>& p,
                              const Convention& cv) {
  TrainOut<T> r{std::vector<T>(x.size()), std::vector<T>(size_t(s.c)), std::vector<T>(size_t(s.c)),
                p.running_mean, p.running_var};
  k::batchnorm_forward_train_cpu<T>(
      {x.data(), p.gamma.data(), p.beta.data(), r.y.data(), r.mean.data(), r.inv_std.data(),
       r.running_mean.data(), r.running_var.data()},
      s, cv.eps, cv.running);
  return r;
}

// Checks every output of a device training forward against the reference.
template <class T>
void expect_train_close(const Shape& s, const std::vector<T>& x, const Params<T>& p,
                        const Convention& cv, const TrainOut<T>& got, const TrainOut<T>& want,
                        bool track = true) {
  const ChannelInfo ci = batch_info(s, x, cv.eps);
  const double a = acc_err(s.m()), u = unit_roundoff<T>;
  EXPECT_TRUE(all_close(got.y, want.y, y_tol(p, ci, a, max_abs(x)))) << "y";
  // Both round a double mean to T (1 ulp <= 2u|mean| apart) after sums that
  // differ by the accumulation error.
  EXPECT_TRUE(all_close(got.mean, want.mean, {2 * a * max_abs(x), 2 * u})) << "mean";
  // var's relative error is the accumulation error times 1 + max(x - K)^2/var
  // <= 4 for uniform data (K is a value of the channel), for both: 8a; the
  // square root halves it; plus the roundings to T.
  EXPECT_TRUE(all_close(got.inv_std, want.inv_std, {0, 2 * u + 8 * a})) << "inv_std";
  if (!track) {
    EXPECT_EQ(got.running_mean, p.running_mean) << "running statistics must be untouched";
    EXPECT_EQ(got.running_var, p.running_var) << "running statistics must be untouched";
    return;
  }
  // running = keep*old + (1 - keep)*batch, in double, rounded to T: the
  // batch statistic's accumulation error plus the roundings to T.
  EXPECT_TRUE(all_close(got.running_mean, want.running_mean,
                        {2 * a * (max_abs(x) + max_abs(p.running_mean)), 2 * u}))
      << "running_mean";
  EXPECT_TRUE(all_close(got.running_var, want.running_var,
                        {16 * a * (max_abs(ci.var_unbiased) + max_abs(p.running_var)), 2 * u}))
      << "running_var";
}

template <class T>
class BatchNorm : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BatchNorm, Types);

// ---------------------------------------------------------------------------
// Forward.

// Null running statistics: normalisation only (PyTorch's
// track_running_stats=False); the unbiased variance is then not needed, so
// even one value per channel is allowed.
TYPED_TEST(BatchNorm, ForwardTrainWithoutRunningStatistics) {
  using T = TypeParam;
  for (const Shape& s : {Shape{3, 5, 7, 9}, Shape{1, 4, 1, 1}}) {
    const auto x = make_input<T>(s, 21);
    const auto p = make_params<T>(s.c, 22);
    const Convention& cv = kConventions[0];
    const TrainOut<T> want = cpu_forward_train(s, x, p, cv);
    for (int block : kBlocks) {
      SCOPED_TRACE(s.str() + " block " + std::to_string(block));
      expect_train_close(s, x, p, cv, device_forward_train(s, x, p, cv, block, false), want, false);
    }
  }
}

// y may alias x.
TYPED_TEST(BatchNorm, ForwardInPlace) {
  using T = TypeParam;
  const Shape s{3, 5, 7, 9};
  const auto x = make_input<T>(s, 31);
  const auto p = make_params<T>(s.c, 32);
  const Convention& cv = kConventions[1];
  const TrainOut<T> want = cpu_forward_train(s, x, p, cv);
  std::vector<T> want_eval(x.size());
  k::batchnorm_forward_eval_cpu<T>({x.data(), p.gamma.data(), p.beta.data(), p.running_mean.data(),
                                    p.running_var.data(), want_eval.data()},
                                   s, cv.eps);
  DeviceBuffer<T> d(x), d_g(p.gamma), d_b(p.beta), d_m(size_t(s.c)), d_i(size_t(s.c)),
      d_rm(p.running_mean), d_rv(p.running_var);
  DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
  k::batchnorm_forward_train<T>(
      {d.get(), d_g.get(), d_b.get(), d.get(), d_m.get(), d_i.get(), nullptr, nullptr}, s, cv.eps,
      cv.running, d_ws.get(), nullptr);
  const Tolerance tol = y_tol(p, batch_info(s, x, cv.eps), acc_err(s.m()), max_abs(x));
  EXPECT_TRUE(all_close(d.to_host(), want.y, tol));
  d.copy_from_host(x);
  k::batchnorm_forward_eval<T>({d.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(), d.get()}, s,
                               cv.eps, nullptr);
  EXPECT_TRUE(all_close(d.to_host(), want_eval, y_tol(p, running_info(s, x, p, cv.eps))));
}

// Training mode normalises with the batch statistics: the output of every
// channel has mean beta and (biased) standard deviation |gamma| sqrt(var /
// (var + eps)), whatever the input's offset and spread.
TYPED_TEST(BatchNorm, TrainOutputIsNormalised) {
  using T = TypeParam;
  const Shape s{4, 6, 5, 7};
  const auto x = make_input<T>(s, 51);
  const auto p = make_params<T>(s.c, 52);
  const Convention& cv = kConventions[0];
  const auto y = device_forward_train(s, x, p, cv, 256).y;
  const ChannelInfo ci = batch_info(s, x, cv.eps), co = batch_info(s, y, 0.0);
  // y differs from the exact value by at most y_tol (mostly a shift and a
  // scale per channel, from the rounded mean and scale): so do its mean and
  // standard deviation, plus the rounding of their own double sums.
  const double tol = y_tol(p, ci, acc_err(s.m()), max_abs(x)).atol + 8 * unit_roundoff<T> * max_abs(y);
  for (size_t ch = 0; ch < size_t(s.c); ++ch) {
    const double var = 1 / (ci.inv_std[ch] * ci.inv_std[ch]) - cv.eps;
    const double want_std = std::fabs(double(p.gamma[ch])) * std::sqrt(var / (var + cv.eps));
    EXPECT_NEAR(co.mean[ch], double(p.beta[ch]), tol) << "channel " << ch;
    EXPECT_NEAR(1 / co.inv_std[ch], want_std, tol) << "channel " << ch;
  }
}

// ---------------------------------------------------------------------------
// Running statistics.

// One channel holding 1, 2, 3, 4: mean 2.5, biased variance 1.25, unbiased
// 5/3. From running_mean 0, running_var 1:
//   PyTorch, momentum 0.1: mean 0.9*0 + 0.1*2.5 = 0.25, var 0.9*1 + 0.1*5/3
//   Keras, momentum 0.99:  mean 0.99*0 + 0.01*2.5 = 0.025, var 0.99*1 + 0.01*1.25
TYPED_TEST(BatchNorm, RunningStatisticsByHand) {
  using T = TypeParam;
  const Shape s{2, 1, 1, 2};
  const std::vector<T> x = {1, 2, 3, 4};
  const Params<T> p{{1}, {0}, {0}, {1}};
  struct Case {
    Convention cv;
    double mean, var;
  };
  const Case cases[] = {
      {kConventions[0], 0.1 * 2.5, 0.9 + 0.1 * 5.0 / 3.0},
      {kConventions[1], 0.01 * 2.5, 0.99 + 0.01 * 1.25},
      // PyTorch's momentum with Keras's biased variance, and the reverse.
      {{"custom", BatchNormRunning{0.9, false}, 1e-5}, 0.1 * 2.5, 0.9 + 0.1 * 1.25},
      {{"custom", BatchNormRunning{0.99, true}, 1e-3}, 0.01 * 2.5, 0.99 + 0.01 * 5.0 / 3.0},
      // keep = 1 freezes the statistics; keep = 0 replaces them.
      {{"frozen", BatchNormRunning{1.0, true}, 1e-5}, 0, 1},
      {{"replace", BatchNormRunning{0.0, true}, 1e-5}, 2.5, 5.0 / 3.0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.cv.name) + " keep " + std::to_string(c.cv.running.keep));
    const auto got = device_forward_train(s, x, p, c.cv, 256);
    // keep and 1 - keep are not exact in binary: a few u of double, then one
    // rounding to T.
    const Tolerance tol{0, 2 * unit_roundoff<T> + 1e-15};
    EXPECT_TRUE(all_close(got.running_mean, std::vector<double>{c.mean}, tol));
    EXPECT_TRUE(all_close(got.running_var, std::vector<double>{c.var}, tol));
    EXPECT_TRUE(all_close(got.mean, std::vector<double>{2.5}, tol));
    EXPECT_TRUE(all_close(got.inv_std, std::vector<double>{1 / std::sqrt(1.25 + c.cv.eps)}, tol));
  }
}

// Three training steps on different batches, the running statistics carried
// from step to step on the device and in the reference.
TYPED_TEST(BatchNorm, RunningStatisticsOverSteps) {
  using T = TypeParam;
  const Shape s{4, 6, 3, 5};
  for (const Convention& cv : kConventions) {
    SCOPED_TRACE(cv.name);
    Params<T> p = make_params<T>(s.c, 61);
    DeviceBuffer<T> d_x(s.size()), d_g(p.gamma), d_b(p.beta), d_y(s.size()), d_m(size_t(s.c)),
        d_i(size_t(s.c)), d_rm(p.running_mean), d_rv(p.running_var);
    DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
    // Device and reference differ after a step by keep times their
    // difference before it, plus that step's accumulation error (as in
    // expect_train_close) and one rounding to T each (2u of values <= ~4):
    // the bound grows by at most that much per step.
    double atol = 0;
    for (int step = 0; step < 3; ++step) {
      const auto x = make_input<T>(s, 62 + step);
      d_x.copy_from_host(x);
      k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), d_y.get(), d_m.get(),
                                     d_i.get(), d_rm.get(), d_rv.get()},
                                    s, cv.eps, cv.running, d_ws.get(), nullptr);
      const TrainOut<T> want = cpu_forward_train(s, x, p, cv);
      p.running_mean = want.running_mean;
      p.running_var = want.running_var;
      const double scale = max_abs(x) + max_abs(batch_info(s, x, cv.eps).var_unbiased) +
                           max_abs(want.running_mean) + max_abs(want.running_var);
      atol += 16 * acc_err(s.m()) * scale + 2 * unit_roundoff<T> * scale;
      EXPECT_TRUE(all_close(d_rm.to_host(), want.running_mean, {atol, 0})) << "step " << step;
      EXPECT_TRUE(all_close(d_rv.to_host(), want.running_var, {atol, 0})) << "step " << step;
    }
  }
}

// ---------------------------------------------------------------------------
// Special inputs.

// A constant channel: var = 0, so inv_std = 1/sqrt(eps) and y = beta
// exactly (the shift K equals every value, so x - mean is exactly 0).
TYPED_TEST(BatchNorm, ConstantChannel) {
  using T = TypeParam;
  const Shape s{3, 2, 4, 5};
  auto x = make_input<T>(s, 71);
  for (size_t o = 0; o < x.size(); ++o)
    if (s.channel_of(o) == 1) x[o] = T(0.7);
  const auto p = make_params<T>(s.c, 72);
  for (const Convention& cv : kConventions) {
    const auto got = device_forward_train(s, x, p, cv, 64);
    EXPECT_EQ(got.mean[1], T(0.7));
    EXPECT_TRUE(all_close(std::vector<T>{got.inv_std[1]},
                          std::vector<double>{1 / std::sqrt(cv.eps)}, {0, 2 * unit_roundoff<T>}));
    for (size_t o = 0; o < x.size(); ++o)
      if (s.channel_of(o) == 1) {
        ASSERT_EQ(got.y[o], p.beta[1]) << "at " << o;
      }
  }
}

// One value per channel (n = 1, h = w = 1): var = 0, y = beta. Allowed with
// the biased running variance (Keras); the unbiased one (PyTorch) would
// divide by M - 1 = 0: an error, as in PyTorch.
TYPED_TEST(BatchNorm, OneValuePerChannel) {
  using T = TypeParam;
  const Shape s{1, 4, 1, 1};
  const auto x = make_input<T>(s, 81);
  const auto p = make_params<T>(s.c, 82);
  const auto got = device_forward_train(s, x, p, kConventions[1], 256);
  const auto want = cpu_forward_train(s, x, p, kConventions[1]);
  EXPECT_EQ(got.y, p.beta);
  EXPECT_EQ(got.mean, x);
  EXPECT_TRUE(all_close(got.running_var, want.running_var, {0, 2 * unit_roundoff<T>}));
  EXPECT_THROW(device_forward_train(s, x, p, kConventions[0], 256), std::invalid_argument);
}

// A mean 1e5 times the spread (1000 + 0.01 U(-1, 1)): sum x^2 - M mean^2
// would lose 10 digits to cancellation (a relative error ~1e-6 in double
// and everything in float); the shifted sums keep the statistics accurate to
// the accumulation error. y carries the rounding of the mean to T (see
// y_tol): 1000 * 174 * u is about 1e-2 in float.
TYPED_TEST(BatchNorm, LargeMeanSmallSpread) {
  using T = TypeParam;
  const Shape s{8, 3, 17, 19};
  const auto u = random_floats(s.size(), 91);
  std::vector<T> x(s.size());
  for (size_t o = 0; o < x.size(); ++o) x[o] = T(1000 + 0.01 * u[o]);
  const auto p = make_params<T>(s.c, 92);
  const Convention& cv = kConventions[0];
  const auto want = cpu_forward_train(s, x, p, cv);
  for (int block : kBlocks) {
    SCOPED_TRACE("block " + std::to_string(block));
    expect_train_close(s, x, p, cv, device_forward_train(s, x, p, cv, block), want);
  }
}

// ---------------------------------------------------------------------------
// Backward.

template <class T>
struct GradOut {
  std::vector<T> dx, dgamma, dbeta;
};

// The flag combinations every backward test runs: assign everything; add
// everything; add dx only; add the parameter gradients only.
const BatchNormAccumulate kAccumulateCases[] = {
    {false, false, false}, {true, true, true}, {true, false, false}, {false, true, true}};
// The flags as a name part: accumulate_dx1_dgamma0_dbeta0.
std::string describe_flags(const BatchNormAccumulate& a) {
  return std::string("accumulate_dx") + (a.dx ? "1" : "0") + "_dgamma" + (a.dgamma ? "1" : "0") +
         "_dbeta" + (a.dbeta ? "1" : "0");
}

// Prefills: NaN where the kernel must assign (it must not read the old
// value), random values where it adds.
template <class T>
std::vector<T> prefill(size_t n, bool accumulate, uint64_t seed) {
  return accumulate ? uniform<T>(n, seed, -2.f, 2.f)
                    : std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

// Tolerances of the training backward (see the top of the file).
//   dbeta = sum dy, dgamma = inv_std sum dy (x - mean): accumulation error
//   of sums of |dy| and |dy (x - mean) inv_std|, and the roundings to T.
//   dx = a ((dy - b) - (x - mean) k), a = gamma inv_std, b = mean(dy),
//   k = inv_std^2 mean(dy (x - mean)): the kernel rounds a, b, k to T and
//   then five operations; tracing each, the error is at most
//   6u |a| (|dy| + |b| + |x - mean| |k|) = 6u S, plus u S for the
//   reference's rounding and the accumulation error of b and k; doubled.
template <class T>
struct BackwardTols {
  Tolerance dx, dgamma, dbeta;
};
template <class T>
BackwardTols<T> backward_tols(const Shape& s, const std::vector<T>& x, const std::vector<T>& dy,
                              const std::vector<T>& gamma, const std::vector<double>& mean,
                              const std::vector<double>& inv_std, bool train) {
  const size_t c = size_t(s.c);
  std::vector<double> sum_dy(c), sum_dy_xc(c), abs_dy(c), abs_dy_xhat(c), max_dev(c);
  for (size_t o = 0; o < x.size(); ++o) {
    const size_t ch = size_t(s.channel_of(o));
    const double xc = double(x[o]) - mean[ch];
    sum_dy[ch] += dy[o];
    sum_dy_xc[ch] += dy[o] * xc;
    abs_dy[ch] += std::fabs(double(dy[o]));
    abs_dy_xhat[ch] += std::fabs(dy[o] * xc * inv_std[ch]);
    max_dev[ch] = std::max(max_dev[ch], std::fabs(xc));
  }
  const double m = double(s.m()), a = acc_err(s.m()), u = unit_roundoff<T>;
  double worst = 0;
  for (size_t ch = 0; ch < c; ++ch) {
    const double aa = std::fabs(double(gamma[ch])) * inv_std[ch];
    const double b = train ? std::fabs(sum_dy[ch]) / m : 0;
    const double kk = train ? std::fabs(sum_dy_xc[ch]) * inv_std[ch] * inv_std[ch] / m : 0;
    worst = std::max(worst, aa * (max_abs(dy) + b + max_dev[ch] * kk));
  }
  return {Tolerance{2 * (7 * u + a) * worst, 4 * u}, Tolerance{a * max_abs(abs_dy_xhat), 2 * u},
          Tolerance{a * max_abs(abs_dy), 2 * u}};
}

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): training forward (y, the
// saved statistics, the running statistics), evaluation forward, training
// backward and evaluation backward (every accumulate combination; the
// evaluation backward with and without parameter gradients), for every
// shape, both conventions where they differ, float and double, both block
// sizes. A row's result holds several arrays, each compared with its own
// tolerance.

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

template <class T>
std::vector<double> concat(std::initializer_list<const std::vector<T>*> parts) {
  std::vector<double> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// Every output of a training forward against the reference (as arrays in
// the order of TrainOut).
template <class T>
::testing::AssertionResult train_close(const Shape& s, const std::vector<T>& x, const Params<T>& p,
                                       const Convention& cv, const std::vector<double>& got,
                                       const std::vector<double>& want) {
  const auto g = split(got, {s.size(), size_t(s.c), size_t(s.c), size_t(s.c), size_t(s.c)});
  const auto w = split(want, {s.size(), size_t(s.c), size_t(s.c), size_t(s.c), size_t(s.c)});
  const ChannelInfo ci = batch_info(s, x, cv.eps);
  const double a = acc_err(s.m()), u = unit_roundoff<T>;
  if (auto r = all_close(g[0], w[0], y_tol(p, ci, a, max_abs(x))); !r) return r << " (y)";
  // Both round a double mean to T (1 ulp <= 2u|mean| apart) after sums that
  // differ by the accumulation error.
  if (auto r = all_close(g[1], w[1], {2 * a * max_abs(x), 2 * u}); !r) return r << " (mean)";
  // var's relative error is the accumulation error times 1 + max(x - K)^2/var
  // <= 4 for uniform data (K is a value of the channel), for both: 8a; the
  // square root halves it; plus the roundings to T.
  if (auto r = all_close(g[2], w[2], {0, 2 * u + 8 * a}); !r) return r << " (inv_std)";
  // running = keep*old + (1 - keep)*batch, in double, rounded to T: the
  // batch statistic's accumulation error plus the roundings to T.
  if (auto r = all_close(g[3], w[3], {2 * a * (max_abs(x) + max_abs(p.running_mean)), 2 * u}); !r)
    return r << " (running_mean)";
  if (auto r = all_close(g[4], w[4],
                         {16 * a * (max_abs(ci.var_unbiased) + max_abs(p.running_var)), 2 * u});
      !r)
    return r << " (running_var)";
  return ::testing::AssertionSuccess();
}

template <class T>
void batchnorm_rows(OpTable& table) {
  using timbre::testing::OpCase;
  for (const Shape& s : shapes()) {
    const size_t c = size_t(s.c);
    for (const Convention& cv : kConventions) {
      // Training forward.
      const auto x = once([=] { return make_input<T>(s, 11 + s.size()); });
      const auto p = once([=] { return make_params<T>(s.c, 12 + s.c); });
      OpCase fwd{std::string("batchnorm/batchnorm_forward_train/") + cv.name, dtype_name<T>(),
                 s.str(), kBlockList, {},
                 "roundings in T of y; the double sums' accumulation error (acc_err)",
                 [=](int block) {
                   const TrainOut<T> o = device_forward_train(s, x(), p(), cv, block);
                   return concat<T>({&o.y, &o.mean, &o.inv_std, &o.running_mean, &o.running_var});
                 },
                 [=] {
                   const TrainOut<T> o = cpu_forward_train(s, x(), p(), cv);
                   return concat<T>({&o.y, &o.mean, &o.inv_std, &o.running_mean, &o.running_var});
                 }};
      fwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
        return train_close(s, x(), p(), cv, got, want);
      };
      table.add(std::move(fwd));
      // Evaluation forward.
      const auto ex = once([=] { return make_input<T>(s, 41 + s.size()); });
      const auto ep = once([=] { return make_params<T>(s.c, 42 + s.c); });
      table.add(OpCase{
          std::string("batchnorm/batchnorm_forward_eval/") + cv.name, dtype_name<T>(), s.str(),
          kBlockList, {}, "the mean rounded to T, scale, and 3 roundings of y",
          [=](int block) {
            const Params<T>& q = ep();
            DeviceBuffer<T> d_x(ex()), d_g(q.gamma), d_b(q.beta), d_rm(q.running_mean),
                d_rv(q.running_var), d_y(s.size());
            timbre::testing::poison(d_y);
            k::batchnorm_forward_eval<T>(
                {d_x.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(), d_y.get()}, s, cv.eps,
                nullptr, block);
            return widen(d_y.to_host());
          },
          [=] {
            const Params<T>& q = ep();
            std::vector<T> want(s.size());
            k::batchnorm_forward_eval_cpu<T>(
                {ex().data(), q.gamma.data(), q.beta.data(), q.running_mean.data(),
                 q.running_var.data(), want.data()},
                s, cv.eps);
            return widen(want);
          },
          [=](int) { return y_tol(ep(), running_info(s, ex(), ep(), cv.eps)); }});
    }
    // Training backward, from the reference forward's saved statistics.
    struct Bwd {
      std::vector<T> x, dy;
      Params<T> p;
      TrainOut<T> fwd;
      BackwardTols<T> tol;
    };
    const auto bw = once([=] {
      Bwd b{make_input<T>(s, 101 + s.size()), uniform<T>(s.size(), 102 + s.size()),
            make_params<T>(s.c, 103 + s.c), {}, {}};
      b.fwd = cpu_forward_train(s, b.x, b.p, kConventions[0]);
      b.tol = backward_tols(s, b.x, b.dy, b.p.gamma,
                            std::vector<double>(b.fwd.mean.begin(), b.fwd.mean.end()),
                            std::vector<double>(b.fwd.inv_std.begin(), b.fwd.inv_std.end()), true);
      return b;
    });
    // Evaluation backward, from the running statistics (Keras eps).
    struct EvalBwd {
      std::vector<T> x, dy;
      Params<T> p;
      BackwardTols<T> tol;
    };
    const double eps = k::kKerasBatchNormEps;
    const auto ebw = once([=] {
      EvalBwd b{make_input<T>(s, 121 + s.size()), uniform<T>(s.size(), 122 + s.size()),
                make_params<T>(s.c, 123 + s.c), {}};
      const ChannelInfo ci = running_info(s, b.x, b.p, eps);
      b.tol = backward_tols(s, b.x, b.dy, b.p.gamma, ci.mean, ci.inv_std, false);
      // dx = T(a) * dy against a*dy rounded once: three roundings relative
      // to the result.
      b.tol.dx = Tolerance{0, 4 * unit_roundoff<T>};
      return b;
    });
    for (const BatchNormAccumulate& acc : kAccumulateCases) {
      const auto pre = [=](uint64_t seed) {
        return GradOut<T>{prefill<T>(s.size(), acc.dx, seed), prefill<T>(c, acc.dgamma, seed + 1),
                          prefill<T>(c, acc.dbeta, seed + 2)};
      };
      auto grads_close = [=](const BackwardTols<T>& tol, const GradOut<T>& fresh,
                             const std::vector<double>& got, const std::vector<double>& want) {
        const auto g = split(got, {s.size(), c, c}), w = split(want, {s.size(), c, c});
        if (auto r = all_close(g[0], w[0], tol_of(acc.dx, tol.dx, fresh.dx)); !r)
          return r << " (dx)";
        if (auto r = all_close(g[1], w[1], tol_of(acc.dgamma, tol.dgamma, fresh.dgamma)); !r)
          return r << " (dgamma)";
        if (auto r = all_close(g[2], w[2], tol_of(acc.dbeta, tol.dbeta, fresh.dbeta)); !r)
          return r << " (dbeta)";
        return ::testing::AssertionSuccess();
      };
      // The reference with these flags over the prefill, and with none over zeros.
      auto train_ref = [=](bool flags) {
        const Bwd& b = bw();
        GradOut<T> g = flags ? pre(104) : GradOut<T>{std::vector<T>(s.size()), std::vector<T>(c),
                                                     std::vector<T>(c)};
        k::batchnorm_backward_train_cpu<T>(
            {b.x.data(), b.dy.data(), b.p.gamma.data(), b.fwd.mean.data(), b.fwd.inv_std.data(),
             g.dx.data(), g.dgamma.data(), g.dbeta.data()},
            s, flags ? acc : BatchNormAccumulate{});
        return g;
      };
      OpCase train{"batchnorm/batchnorm_backward_train/" + describe_flags(acc), dtype_name<T>(),
                   s.str(), kBlockList, {},
                   "dx: 7u of a (|dy| + |b| + |x - mean| |k|) plus the sums' error; the "
                   "parameter gradients: the double sums' accumulation error",
                   [=](int block) {
                     const Bwd& b = bw();
                     const GradOut<T> p0 = pre(104);
                     DeviceBuffer<T> d_x(b.x), d_dy(b.dy), d_g(b.p.gamma), d_m(b.fwd.mean),
                         d_i(b.fwd.inv_std), d_dx(p0.dx), d_dg(p0.dgamma), d_db(p0.dbeta);
                     DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
                     k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(),
                                                     d_i.get(), d_dx.get(), d_dg.get(), d_db.get()},
                                                    s, acc, d_ws.get(), nullptr, block);
                     const GradOut<T> o{d_dx.to_host(), d_dg.to_host(), d_db.to_host()};
                     return concat<T>({&o.dx, &o.dgamma, &o.dbeta});
                   },
                   [=] {
                     const GradOut<T> o = train_ref(true);
                     return concat<T>({&o.dx, &o.dgamma, &o.dbeta});
                   }};
      train.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
        return grads_close(bw().tol, train_ref(false), got, want);
      };
      table.add(std::move(train));
      for (bool param_grads : {true, false}) {
        auto eval_ref = [=](bool flags) {
          const EvalBwd& b = ebw();
          GradOut<T> g = flags ? pre(124) : GradOut<T>{std::vector<T>(s.size()), std::vector<T>(c),
                                                       std::vector<T>(c)};
          k::batchnorm_backward_eval_cpu<T>(
              {b.x.data(), b.dy.data(), b.p.gamma.data(), b.p.running_mean.data(),
               b.p.running_var.data(), g.dx.data(), g.dgamma.data(), g.dbeta.data()},
              s, eps, flags ? acc : BatchNormAccumulate{});
          return g;
        };
        OpCase eval{"batchnorm/batchnorm_backward_eval/" + describe_flags(acc) +
                        (param_grads ? "" : "/dx_only"),
                    dtype_name<T>(), s.str(), kBlockList, {},
                    "dx: three roundings of T(a) dy; the parameter gradients: the sums' error; "
                    "gradients not asked for: untouched, NaN included",
                    [=](int block) {
                      const EvalBwd& b = ebw();
                      const GradOut<T> p0 = pre(124);
                      DeviceBuffer<T> d_x(b.x), d_dy(b.dy), d_g(b.p.gamma),
                          d_rm(b.p.running_mean), d_rv(b.p.running_var), d_dx(p0.dx),
                          d_dg(p0.dgamma), d_db(p0.dbeta);
                      DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
                      k::batchnorm_backward_eval<T>(
                          {d_x.get(), d_dy.get(), d_g.get(), d_rm.get(), d_rv.get(), d_dx.get(),
                           param_grads ? d_dg.get() : nullptr, param_grads ? d_db.get() : nullptr},
                          s, eps, acc, param_grads ? d_ws.get() : nullptr, nullptr, block);
                      const GradOut<T> o{d_dx.to_host(), d_dg.to_host(), d_db.to_host()};
                      return concat<T>({&o.dx, &o.dgamma, &o.dbeta});
                    },
                    [=] {
                      GradOut<T> o = eval_ref(true);
                      if (!param_grads) {  // not requested: the prefill
                        const GradOut<T> p0 = pre(124);
                        o.dgamma = p0.dgamma;
                        o.dbeta = p0.dbeta;
                      }
                      return concat<T>({&o.dx, &o.dgamma, &o.dbeta});
                    }};
        eval.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
          if (param_grads) return grads_close(ebw().tol, eval_ref(false), got, want);
          const auto g = split(got, {s.size(), c, c}), w = split(want, {s.size(), c, c});
          if (auto r = all_close(g[0], w[0], tol_of(acc.dx, ebw().tol.dx, eval_ref(false).dx)); !r)
            return r << " (dx)";
          const Tolerance same{0, 0, true};
          if (auto r = all_close(g[1], w[1], same); !r) return r << " (dgamma untouched)";
          if (auto r = all_close(g[2], w[2], same); !r) return r << " (dbeta untouched)";
          return ::testing::AssertionSuccess();
        };
        table.add(std::move(eval));
      }
    }
  }
}

// The op-case rows of the fused pooling (BatchNormEpilogue::pool, with the
// residual and ReLU): training and evaluation forward (the pooled y and its
// argmax), training and evaluation backward from the pooled dy (dx, dgamma,
// dbeta, the residual's gradient), against the references' pooling path, at
// an odd shape whose last row and columns fall outside every 2 x 2 window.
template <class T>
void batchnorm_pool_rows(OpTable& table) {
  using timbre::testing::OpCase;
  const Shape s{3, 5, 7, 9};
  const k::BatchNormPool pool{2, 2};
  const size_t n = s.size(), c = size_t(s.c);
  const size_t pn = size_t(s.n) * c * size_t(s.h / pool.h) * size_t(s.w / pool.w);
  const Convention cv = kConventions[0];
  const std::string shape = s.str() + " pool 2x2";
  struct In {
    std::vector<T> x, r, dy;
    Params<T> p;
    std::vector<T> y, mean, inv_std;  // the training forward's reference outputs
    std::vector<int> argmax;
    std::vector<T> masked;  // the full-size dy the normalisation sees (for tolerances)
  };
  const auto in = once([=] {
    In i{make_input<T>(s, 151), uniform<T>(n, 152), uniform<T>(pn, 153), make_params<T>(s.c, 154),
         std::vector<T>(pn), std::vector<T>(c), std::vector<T>(c), std::vector<int>(pn),
         std::vector<T>(n)};
    k::batchnorm_forward_train_cpu<T>({i.x.data(), i.p.gamma.data(), i.p.beta.data(), i.y.data(),
                                       i.mean.data(), i.inv_std.data(), nullptr, nullptr,
                                       {i.r.data(), true, pool, i.argmax.data()}},
                                      s, cv.eps, cv.running);
    std::vector<T> dy_masked(pn);
    for (size_t o = 0; o < pn; ++o) dy_masked[o] = i.y[o] > T(0) ? i.dy[o] : T(0);
    k::max_pool2d_backward_cpu<T>({dy_masked.data(), i.argmax.data(), i.masked.data()}, s.n, s.c,
                                  s.h, s.w, {2, 2, 2, 2}, false);
    return i;
  });
  // y within the forward's tolerance plus the residual's add (as
  // FusedEpilogueIsTheComposition); the argmax exactly (the choice of a
  // maximum: no rounding, and no near-ties among these random inputs).
  const auto forward_close = [=](const std::vector<double>& got, const std::vector<double>& want,
                                 const ChannelInfo& ci) -> ::testing::AssertionResult {
    const In& i = in();
    const auto g = split(got, {pn, pn}), w = split(want, {pn, pn});
    const Tolerance t = y_tol(i.p, ci, acc_err(s.m()), max_abs(i.x));
    if (auto r = all_close(g[0], w[0],
                           Tolerance{t.atol + 2 * max_abs(i.r) * unit_roundoff<T>, t.rtol});
        !r)
      return r << " (y)";
    if (auto r = all_close(g[1], w[1], Tolerance{0, 0, true}); !r) return r << " (argmax)";
    return ::testing::AssertionSuccess();
  };
  for (bool training : {true, false}) {
    const auto forward = [=](bool device, int block) {
      const In& i = in();
      std::vector<T> y(pn), m(c), is(c);
      std::vector<int> arg(pn);
      if (device) {
        DeviceBuffer<T> d_x(i.x), d_r(i.r), d_g(i.p.gamma), d_b(i.p.beta),
            d_rm(i.p.running_mean), d_rv(i.p.running_var), d_y(pn), d_m(c), d_i(c);
        DeviceBuffer<int> d_arg(pn);
        DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
        const k::BatchNormEpilogue<T> e{d_r.get(), true, pool, d_arg.get()};
        if (training)
          k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), d_y.get(), d_m.get(),
                                         d_i.get(), nullptr, nullptr, e},
                                        s, cv.eps, cv.running, d_ws.get(), nullptr, block);
        else
          k::batchnorm_forward_eval<T>({d_x.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(),
                                        d_y.get(), e},
                                       s, cv.eps, nullptr, block);
        y = d_y.to_host();
        arg = d_arg.to_host();
      } else {
        const k::BatchNormEpilogue<T> e{i.r.data(), true, pool, arg.data()};
        if (training)
          k::batchnorm_forward_train_cpu<T>({i.x.data(), i.p.gamma.data(), i.p.beta.data(),
                                             y.data(), m.data(), is.data(), nullptr, nullptr, e},
                                            s, cv.eps, cv.running);
        else
          k::batchnorm_forward_eval_cpu<T>({i.x.data(), i.p.gamma.data(), i.p.beta.data(),
                                            i.p.running_mean.data(), i.p.running_var.data(),
                                            y.data(), e},
                                           s, cv.eps);
      }
      std::vector<double> out(y.begin(), y.end());
      out.insert(out.end(), arg.begin(), arg.end());
      return out;
    };
    OpCase fwd{std::string("batchnorm/") +
                   (training ? "batchnorm_forward_train" : "batchnorm_forward_eval") +
                   "/add_relu_max_pool",
               dtype_name<T>(), shape, kBlockList, {},
               "y: the forward's roundings plus the residual's add (pooling picks, it does not "
               "round); argmax: exact",
               [=](int block) { return forward(true, block); }, [=] { return forward(false, 0); }};
    fwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      const In& i = in();
      return forward_close(got, want,
                           training ? batch_info(s, i.x, cv.eps) : running_info(s, i.x, i.p, cv.eps));
    };
    table.add(std::move(fwd));

    // Backward from the pooled dy, with the reference forward's y and
    // argmax (training: its saved statistics), every gradient assigned.
    const auto backward = [=](bool device, int block) {
      const In& i = in();
      std::vector<T> dx(n), dg(c), db(c), dres(n);
      if (device) {
        DeviceBuffer<T> d_x(i.x), d_dy(i.dy), d_g(i.p.gamma), d_m(i.mean), d_i(i.inv_std),
            d_rm(i.p.running_mean), d_rv(i.p.running_var), d_y(i.y), d_dx(n), d_dg(c), d_db(c),
            d_dres(n);
        DeviceBuffer<int> d_arg(i.argmax);
        DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
        const k::BatchNormEpilogueGrad<T> e{d_y.get(), d_dres.get(), pool, d_arg.get()};
        if (training)
          k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(),
                                          d_dx.get(), d_dg.get(), d_db.get(), e},
                                         s, {}, d_ws.get(), nullptr, block);
        else
          k::batchnorm_backward_eval<T>({d_x.get(), d_dy.get(), d_g.get(), d_rm.get(), d_rv.get(),
                                         d_dx.get(), d_dg.get(), d_db.get(), e},
                                        s, cv.eps, {}, d_ws.get(), nullptr, block);
        dx = d_dx.to_host();
        dg = d_dg.to_host();
        db = d_db.to_host();
        dres = d_dres.to_host();
      } else {
        const k::BatchNormEpilogueGrad<T> e{i.y.data(), dres.data(), pool, i.argmax.data()};
        if (training)
          k::batchnorm_backward_train_cpu<T>({i.x.data(), i.dy.data(), i.p.gamma.data(),
                                              i.mean.data(), i.inv_std.data(), dx.data(),
                                              dg.data(), db.data(), e},
                                             s, BatchNormAccumulate{});
        else
          k::batchnorm_backward_eval_cpu<T>({i.x.data(), i.dy.data(), i.p.gamma.data(),
                                             i.p.running_mean.data(), i.p.running_var.data(),
                                             dx.data(), dg.data(), db.data(), e},
                                            s, cv.eps, BatchNormAccumulate{});
      }
      return concat<T>({&dx, &dg, &db, &dres});
    };
    OpCase bwd{std::string("batchnorm/") +
                   (training ? "batchnorm_backward_train" : "batchnorm_backward_eval") +
                   "/add_relu_max_pool",
               dtype_name<T>(), shape, kBlockList, {},
               "dx and the parameter gradients: the unpooled backward's tolerances for the "
               "full-size dy max pooling would scatter; the residual's gradient: exact (a copy "
               "or 0)",
               [=](int block) { return backward(true, block); }, [=] { return backward(false, 0); }};
    bwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      const In& i = in();
      const ChannelInfo ci = training ? batch_info(s, i.x, cv.eps) : running_info(s, i.x, i.p, cv.eps);
      BackwardTols<T> t = backward_tols(
          s, i.x, i.masked, i.p.gamma,
          training ? std::vector<double>(i.mean.begin(), i.mean.end()) : ci.mean,
          training ? std::vector<double>(i.inv_std.begin(), i.inv_std.end()) : ci.inv_std,
          training);
      if (!training) t.dx = Tolerance{0, 4 * unit_roundoff<T>};  // as the unpooled eval rows
      const auto g = split(got, {n, c, c, n}), w = split(want, {n, c, c, n});
      if (auto r = all_close(g[0], w[0], t.dx); !r) return r << " (dx)";
      if (auto r = all_close(g[1], w[1], t.dgamma); !r) return r << " (dgamma)";
      if (auto r = all_close(g[2], w[2], t.dbeta); !r) return r << " (dbeta)";
      if (auto r = all_close(g[3], w[3], Tolerance{0, 0, true}); !r) return r << " (dresidual)";
      return ::testing::AssertionSuccess();
    };
    table.add(std::move(bwd));
  }
}

OP_CASES(batchnorm) {
  batchnorm_rows<float>(table);
  batchnorm_pool_rows<float>(table);
  batchnorm_pool_rows<double>(table);
  batchnorm_rows<double>(table);
}

// The fused epilogue (BatchNormEpilogue): y = relu(bn(x) + residual) and
// its backward give, to the bit, what the plain kernels give followed by the
// add and the ReLU (backward: preceded by ReLU's mask, and the residual's
// gradient is the masked dy), in training and in evaluation, at an odd
// shape, two block sizes and every thread order.
TYPED_TEST(BatchNorm, FusedEpilogueIsTheComposition) {
  using T = TypeParam;
  const Shape s{3, 5, 7, 9};
  const size_t n = s.size(), c = size_t(s.c);
  const auto x = make_input<T>(s, 131);
  const auto r = uniform<T>(n, 132);
  const auto dy = uniform<T>(n, 133);
  const auto p = make_params<T>(s.c, 134);
  const Convention& cv = kConventions[0];
  const auto epilogue = [&](const std::vector<T>& y) {  // on the host, in T
    std::vector<T> out(n);
    for (size_t i = 0; i < n; ++i) {
      const T v = T(y[i] + r[i]);
      out[i] = v < T(0) ? T(0) : v;
    }
    return out;
  };
  const auto mask = [&](const std::vector<T>& y) {
    std::vector<T> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = y[i] > T(0) ? dy[i] : T(0);
    return out;
  };
  timbre::testing::for_each_thread_order([&] {
    for (int block : {64, 256}) {
      SCOPED_TRACE(block);
      for (bool training : {true, false}) {
        SCOPED_TRACE(training ? "training" : "evaluation");
        DeviceBuffer<T> d_x(x), d_r(r), d_g(p.gamma), d_b(p.beta), d_rm(p.running_mean),
            d_rv(p.running_var), d_y(n), d_y2(n), d_m(c), d_i(c);
        DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
        if (training) {
          k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), d_y.get(), d_m.get(),
                                         d_i.get(), nullptr, nullptr, {d_r.get(), true}},
                                        s, cv.eps, cv.running, d_ws.get(), nullptr, block);
          k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), d_y2.get(), d_m.get(),
                                         d_i.get()},
                                        s, cv.eps, cv.running, d_ws.get(), nullptr, block);
        } else {
          k::batchnorm_forward_eval<T>({d_x.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(),
                                        d_y.get(), {d_r.get(), true}},
                                       s, cv.eps, nullptr, block);
          k::batchnorm_forward_eval<T>({d_x.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(),
                                        d_y2.get()},
                                       s, cv.eps, nullptr, block);
        }
        const std::vector<T> y = d_y.to_host();
        EXPECT_TRUE(timbre::testing::same_bits(y, epilogue(d_y2.to_host()))) << "forward";
        // Backward: fused (mask from y, the residual's gradient written) and
        // plain on the masked dy; all gradients assigned.
        const std::vector<T> masked = mask(y);
        DeviceBuffer<T> d_dy(dy), d_dy2(masked), d_dx(n), d_dx2(n), d_dg(c), d_dg2(c), d_db(c),
            d_db2(c), d_dres(n);
        if (training) {
          k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(),
                                          d_dx.get(), d_dg.get(), d_db.get(),
                                          {d_y.get(), d_dres.get()}},
                                         s, {}, d_ws.get(), nullptr, block);
          k::batchnorm_backward_train<T>({d_x.get(), d_dy2.get(), d_g.get(), d_m.get(), d_i.get(),
                                          d_dx2.get(), d_dg2.get(), d_db2.get()},
                                         s, {}, d_ws.get(), nullptr, block);
        } else {
          k::batchnorm_backward_eval<T>({d_x.get(), d_dy.get(), d_g.get(), d_rm.get(), d_rv.get(),
                                         d_dx.get(), d_dg.get(), d_db.get(),
                                         {d_y.get(), d_dres.get()}},
                                        s, cv.eps, {}, d_ws.get(), nullptr, block);
          k::batchnorm_backward_eval<T>({d_x.get(), d_dy2.get(), d_g.get(), d_rm.get(),
                                         d_rv.get(), d_dx2.get(), d_dg2.get(), d_db2.get()},
                                        s, cv.eps, {}, d_ws.get(), nullptr, block);
        }
        EXPECT_TRUE(timbre::testing::same_bits(d_dx.to_host(), d_dx2.to_host())) << "dx";
        EXPECT_TRUE(timbre::testing::same_bits(d_dg.to_host(), d_dg2.to_host())) << "dgamma";
        EXPECT_TRUE(timbre::testing::same_bits(d_db.to_host(), d_db2.to_host())) << "dbeta";
        EXPECT_TRUE(timbre::testing::same_bits(d_dres.to_host(), masked)) << "dresidual";
        // And the CPU reference's epilogue agrees with the device's within
        // the forward's usual tolerance (the reference adds in double).
        if (training) {
          std::vector<T> want(n), m(c), is(c);
          k::batchnorm_forward_train_cpu<T>({x.data(), p.gamma.data(), p.beta.data(), want.data(),
                                             m.data(), is.data(), nullptr, nullptr,
                                             {r.data(), true}},
                                            s, cv.eps, cv.running);
          // y's usual tolerance plus the residual's add: one more rounding
          // of a value up to |y| + |r| (ReLU only moves values to 0 on
          // both sides).
          const Tolerance tol = y_tol(p, batch_info(s, x, cv.eps), acc_err(s.m()), max_abs(x));
          EXPECT_TRUE(all_close(widen(y), widen(want),
                                Tolerance{tol.atol + 2 * max_abs(r) * unit_roundoff<T>, tol.rtol}));
        }
      }
    }
  });
}

// The fused pooling (BatchNormEpilogue::pool): y = max_pool(relu(bn(x) +
// residual)) and its argmax are, to the bit, the fused epilogue's full
// output pooled by max_pool2d_forward; the backward from the pooled dy is,
// to the bit, the fused backward from the dy that max_pool2d_backward
// scatters (masked by the full output's ReLU), residual gradient included;
// in training and in evaluation, at an odd shape whose last rows and
// columns fall outside every window, two windows, two block sizes and every
// thread order. The CPU reference's pooling path agrees within the usual
// tolerances.
TYPED_TEST(BatchNorm, FusedPoolIsBatchNormThenMaxPool) {
  using T = TypeParam;
  const Shape s{3, 5, 7, 9};
  const size_t n = s.size(), c = size_t(s.c);
  const auto x = make_input<T>(s, 141);
  const auto r = uniform<T>(n, 142);
  const auto p = make_params<T>(s.c, 144);
  const Convention& cv = kConventions[0];
  for (const k::BatchNormPool pool : {k::BatchNormPool{2, 2}, k::BatchNormPool{3, 4}}) {
    SCOPED_TRACE(std::to_string(pool.h) + "x" + std::to_string(pool.w));
    const k::PoolWindow window{pool.h, pool.w, pool.h, pool.w};
    const size_t pn = size_t(s.n) * c * size_t(s.h / pool.h) * size_t(s.w / pool.w);
    const auto dy = uniform<T>(pn, 143);
    timbre::testing::for_each_thread_order([&] {
      for (int block : {64, 256}) {
        SCOPED_TRACE(block);
        for (bool training : {true, false}) {
          SCOPED_TRACE(training ? "training" : "evaluation");
          DeviceBuffer<T> d_x(x), d_r(r), d_g(p.gamma), d_b(p.beta), d_rm(p.running_mean),
              d_rv(p.running_var), d_y(pn), d_full(n), d_y2(pn), d_m(c), d_i(c);
          DeviceBuffer<int> d_arg(pn), d_arg2(pn);
          DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
          const k::BatchNormEpilogue<T> fused{d_r.get(), true, pool, d_arg.get()},
              plain{d_r.get(), true};
          for (const auto& [e, y] : {std::pair{fused, d_y.get()}, std::pair{plain, d_full.get()}}) {
            if (training)
              k::batchnorm_forward_train<T>({d_x.get(), d_g.get(), d_b.get(), y, d_m.get(),
                                             d_i.get(), nullptr, nullptr, e},
                                            s, cv.eps, cv.running, d_ws.get(), nullptr, block);
            else
              k::batchnorm_forward_eval<T>({d_x.get(), d_g.get(), d_b.get(), d_rm.get(),
                                            d_rv.get(), y, e},
                                           s, cv.eps, nullptr, block);
          }
          k::max_pool2d_forward<T>(d_full.get(), d_y2.get(), d_arg2.get(), s.n, s.c, s.h, s.w,
                                   window, nullptr, block);
          const std::vector<T> y = d_y.to_host();
          const std::vector<int> arg = d_arg.to_host();
          EXPECT_TRUE(timbre::testing::same_bits(y, d_y2.to_host())) << "y";
          EXPECT_EQ(arg, d_arg2.to_host()) << "argmax";
          // Backward: fused from the pooled dy; plain from max pooling's
          // scatter of it, with the full output as the ReLU mask.
          DeviceBuffer<T> d_dy(dy), d_dyfull(n), d_dx(n), d_dx2(n), d_dg(c), d_dg2(c), d_db(c),
              d_db2(c), d_dres(n), d_dres2(n);
          k::max_pool2d_backward<T>({d_dy.get(), d_arg2.get(), d_dyfull.get()}, s.n, s.c, s.h,
                                    s.w, window, false, nullptr, block);
          const k::BatchNormEpilogueGrad<T> gfused{d_y.get(), d_dres.get(), pool, d_arg.get()},
              gplain{d_full.get(), d_dres2.get()};
          if (training) {
            k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(),
                                            d_dx.get(), d_dg.get(), d_db.get(), gfused},
                                           s, {}, d_ws.get(), nullptr, block);
            k::batchnorm_backward_train<T>({d_x.get(), d_dyfull.get(), d_g.get(), d_m.get(),
                                            d_i.get(), d_dx2.get(), d_dg2.get(), d_db2.get(),
                                            gplain},
                                           s, {}, d_ws.get(), nullptr, block);
          } else {
            k::batchnorm_backward_eval<T>({d_x.get(), d_dy.get(), d_g.get(), d_rm.get(),
                                           d_rv.get(), d_dx.get(), d_dg.get(), d_db.get(), gfused},
                                          s, cv.eps, {}, d_ws.get(), nullptr, block);
            k::batchnorm_backward_eval<T>({d_x.get(), d_dyfull.get(), d_g.get(), d_rm.get(),
                                           d_rv.get(), d_dx2.get(), d_dg2.get(), d_db2.get(),
                                           gplain},
                                          s, cv.eps, {}, d_ws.get(), nullptr, block);
          }
          const std::vector<T> dx = d_dx.to_host(), masked = d_dres2.to_host();
          EXPECT_TRUE(timbre::testing::same_bits(dx, d_dx2.to_host())) << "dx";
          EXPECT_TRUE(timbre::testing::same_bits(d_dg.to_host(), d_dg2.to_host())) << "dgamma";
          EXPECT_TRUE(timbre::testing::same_bits(d_db.to_host(), d_db2.to_host())) << "dbeta";
          EXPECT_TRUE(timbre::testing::same_bits(d_dres.to_host(), masked)) << "dresidual";
          if (!training) continue;
          // The reference's pooling path: the forward within y's tolerance
          // (as in FusedEpilogueIsTheComposition; pooling picks, it does
          // not round), the backward from the device's y and argmax within
          // dx's tolerance for the masked full-size dy.
          std::vector<T> want(pn), m(c), is(c), dx_ref(n), dres_ref(n);
          std::vector<int> arg_ref(pn);
          k::batchnorm_forward_train_cpu<T>({x.data(), p.gamma.data(), p.beta.data(), want.data(),
                                             m.data(), is.data(), nullptr, nullptr,
                                             {r.data(), true, pool, arg_ref.data()}},
                                            s, cv.eps, cv.running);
          const Tolerance tol = y_tol(p, batch_info(s, x, cv.eps), acc_err(s.m()), max_abs(x));
          EXPECT_TRUE(all_close(widen(y), widen(want),
                                Tolerance{tol.atol + 2 * max_abs(r) * unit_roundoff<T>, tol.rtol}));
          const std::vector<T> dm = d_m.to_host(), di = d_i.to_host();
          k::batchnorm_backward_train_cpu<T>({x.data(), dy.data(), p.gamma.data(), dm.data(),
                                              di.data(), dx_ref.data(), nullptr, nullptr,
                                              {y.data(), dres_ref.data(), pool, arg.data()}},
                                             s, BatchNormAccumulate{});
          EXPECT_TRUE(timbre::testing::same_bits(dres_ref, masked)) << "reference dresidual";
          EXPECT_TRUE(all_close(dx, dx_ref,
                                backward_tols(s, x, masked, p.gamma,
                                              std::vector<double>(dm.begin(), dm.end()),
                                              std::vector<double>(di.begin(), di.end()), true)
                                    .dx));
        }
      }
    });
  }
}

// A fused pooling's arguments: a window that does not fit, a missing
// argmax, a pooled y written over x.
TEST(BatchNormPool, BadArgumentsThrowNamingThem) {
  const Shape s{2, 3, 4, 5};
  DeviceBuffer<float> x(s.size()), g(3), b(3), y(s.size()), m(3), is(3);
  DeviceBuffer<int> arg(s.size());
  DeviceBuffer<double> ws(size_t(k::batchnorm_workspace_size(3)));
  const auto run = [&](k::BatchNormPool pool, int* a, float* out) {
    k::batchnorm_forward_train<float>({x.get(), g.get(), b.get(), out, m.get(), is.get(), nullptr,
                                       nullptr, {nullptr, true, pool, a}},
                                      s, 1e-3, k::keras_running(), ws.get(), nullptr);
  };
  const auto message = [&](k::BatchNormPool pool, int* a, float* out) -> std::string {
    try {
      run(pool, a, out);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  const std::pair<std::string, std::string> cases[] = {
      {message({5, 2}, arg.get(), y.get()),
       "batchnorm_forward_train: the fused pool window 5x2 must fit the 4x5 planes"},
      {message({2, 0}, arg.get(), y.get()), "the fused pool window 2x0 must fit"},
      {message({2, 2}, nullptr, y.get()), "the fused pool 2x2 needs its argmax"},
      {message({0, 0}, arg.get(), y.get()), "the fused pool window 0x0 must fit"},
      {message({2, 2}, arg.get(), x.get()), "with a fused pool, y must not alias x"}};
  for (const auto& [got, want] : cases) EXPECT_NE(got.find(want), std::string::npos) << got;
  run({2, 2}, arg.get(), y.get());  // and a good one runs
}

// Null parameter gradients: dx alone (a frozen layer), the same values. dx
// may alias dy when assigning.
TYPED_TEST(BatchNorm, BackwardTrainDxOnlyAndInPlace) {
  using T = TypeParam;
  const Shape s{3, 5, 7, 9};
  const auto x = make_input<T>(s, 111);
  const auto dy = uniform<T>(s.size(), 112);
  const auto p = make_params<T>(s.c, 113);
  const TrainOut<T> fwd = cpu_forward_train(s, x, p, kConventions[0]);
  std::vector<T> want(s.size()), dg(size_t(s.c)), db(size_t(s.c));
  k::batchnorm_backward_train_cpu<T>({x.data(), dy.data(), p.gamma.data(), fwd.mean.data(),
                                      fwd.inv_std.data(), want.data(), dg.data(), db.data()},
                                     s, BatchNormAccumulate{});
  const Tolerance tol =
      backward_tols(s, x, dy, p.gamma, std::vector<double>(fwd.mean.begin(), fwd.mean.end()),
                    std::vector<double>(fwd.inv_std.begin(), fwd.inv_std.end()), true)
          .dx;
  DeviceBuffer<T> d_x(x), d_dy(dy), d_g(p.gamma), d_m(fwd.mean), d_i(fwd.inv_std), d_dx(s.size());
  DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
  k::batchnorm_backward_train<T>(
      {d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(), d_dx.get(), nullptr, nullptr}, s,
      BatchNormAccumulate{}, d_ws.get(), nullptr);
  EXPECT_TRUE(all_close(d_dx.to_host(), want, tol));
  k::batchnorm_backward_train<T>(
      {d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(), d_dy.get(), nullptr, nullptr}, s,
      BatchNormAccumulate{}, d_ws.get(), nullptr);
  EXPECT_TRUE(all_close(d_dy.to_host(), want, tol)) << "in place";
}

// ---------------------------------------------------------------------------
// Launch shapes beyond the main sweep: the extreme block sizes on a
// multi-chunk shape, and a channel of 320000 values at block 32, where the
// chunk count reaches its cap (kBatchNormMaxChunks) and threads take more
// than kBatchNormElemsPerThread values each.
TYPED_TEST(BatchNorm, ExtremeBlocksAndChunkCap) {
  using T = TypeParam;
  struct Case {
    Shape s;
    int block;
  };
  for (const Case& cs :
       {Case{{4, 3, 91, 93}, 32}, Case{{4, 3, 91, 93}, 1024}, Case{{2, 1, 400, 400}, 32}}) {
    const Shape& s = cs.s;
    SCOPED_TRACE(s.str() + " block " + std::to_string(cs.block));
    const auto x = make_input<T>(s, 131);
    const auto dy = uniform<T>(s.size(), 132);
    const auto p = make_params<T>(s.c, 133);
    const Convention& cv = kConventions[0];
    const TrainOut<T> want = cpu_forward_train(s, x, p, cv);
    expect_train_close(s, x, p, cv, device_forward_train(s, x, p, cv, cs.block), want);
    std::vector<T> dx(s.size()), dg(size_t(s.c)), db(size_t(s.c));
    k::batchnorm_backward_train_cpu<T>({x.data(), dy.data(), p.gamma.data(), want.mean.data(),
                                        want.inv_std.data(), dx.data(), dg.data(), db.data()},
                                       s, BatchNormAccumulate{});
    const auto tol =
        backward_tols(s, x, dy, p.gamma, std::vector<double>(want.mean.begin(), want.mean.end()),
                      std::vector<double>(want.inv_std.begin(), want.inv_std.end()), true);
    DeviceBuffer<T> d_x(x), d_dy(dy), d_g(p.gamma), d_m(want.mean), d_i(want.inv_std),
        d_dx(s.size()), d_dg(size_t(s.c)), d_db(size_t(s.c));
    DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
    k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(),
                                    d_dx.get(), d_dg.get(), d_db.get()},
                                   s, BatchNormAccumulate{}, d_ws.get(), nullptr, cs.block);
    EXPECT_TRUE(all_close(d_dx.to_host(), dx, tol.dx)) << "dx";
    EXPECT_TRUE(all_close(d_dg.to_host(), dg, tol.dgamma)) << "dgamma";
    EXPECT_TRUE(all_close(d_db.to_host(), db, tol.dbeta)) << "dbeta";
  }
}

// ---------------------------------------------------------------------------
// Determinism: the same bits on every run and under every thread order and
// worker count (fixed reduction order, no atomics).

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TYPED_TEST(BatchNorm, Deterministic) {
  using T = TypeParam;
  for (const Shape& s : {Shape{4, 3, 91, 93}, Shape{3, 5, 7, 9}}) {
    const auto x = make_input<T>(s, 141);
    const auto dy = uniform<T>(s.size(), 142);
    const auto p = make_params<T>(s.c, 143);
    for (int block : kBlocks) {
      SCOPED_TRACE(s.str() + " block " + std::to_string(block));
      auto run = [&] {
        std::vector<std::vector<unsigned char>> out;
        const auto f = device_forward_train(s, x, p, kConventions[0], block);
        for (const auto* v : {&f.y, &f.mean, &f.inv_std, &f.running_mean, &f.running_var})
          out.push_back(bits(*v));
        DeviceBuffer<T> d_x(x), d_dy(dy), d_g(p.gamma), d_m(f.mean), d_i(f.inv_std), d_dx(s.size()),
            d_dg(size_t(s.c)), d_db(size_t(s.c));
        DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
        k::batchnorm_backward_train<T>({d_x.get(), d_dy.get(), d_g.get(), d_m.get(), d_i.get(),
                                        d_dx.get(), d_dg.get(), d_db.get()},
                                       s, BatchNormAccumulate{}, d_ws.get(), nullptr, block);
        out.push_back(bits(d_dx.to_host()));
        out.push_back(bits(d_dg.to_host()));
        out.push_back(bits(d_db.to_host()));
        return out;
      };
      const auto first = run();
      timbre::testing::for_each_thread_order([&] {
        for (int again = 0; again < 2; ++again) {
          const auto now = run();
          for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(now[i], first[i]) << "output " << i;
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------
// Finite differences (double): each backward against the derivative of the
// device forward of the same mode, so a formula shared by kernel and
// reference cannot be wrong in both. L = sum_m w_m y_m with random weights w
// (the upstream gradient dy); dL/dv ~ (L(v + h) - L(v - h)) / 2h for every
// input x, gamma and beta. Central differences: truncation h^2 |L'''| / 6
// ~ 1e-9 at h = 1e-5 (the training forward's third derivatives are O(100)
// through inv_std on these tiny channels), rounding ~ u |L| / h ~ 1e-10;
// 1e-7 absolute plus 1e-6 relative checks the formula, not the rounding.

using timbre::testing::dot;
using timbre::testing::numeric_gradient;

const Tolerance kFiniteDifferenceTol{1e-7, 1e-6};

TEST(BatchNormGradients, MatchFiniteDifferences) {
  for (const Shape& s : {Shape{3, 2, 2, 3}, Shape{5, 3, 1, 1}}) {
    for (bool train : {true, false}) {
      SCOPED_TRACE(s.str() + (train ? " train" : " eval"));
      const auto x = make_input<double>(s, 151);
      const auto w = uniform<double>(s.size(), 152);
      const auto p = make_params<double>(s.c, 153);
      const double eps = k::kPyTorchBatchNormEps;
      DeviceBuffer<double> d_x(s.size()), d_g(size_t(s.c)), d_b(size_t(s.c)), d_y(s.size()),
          d_m(size_t(s.c)), d_i(size_t(s.c)), d_rm(p.running_mean), d_rv(p.running_var), d_w(w),
          d_dx(s.size()), d_dg(size_t(s.c)), d_db(size_t(s.c));
      DeviceBuffer<double> d_ws(size_t(k::batchnorm_workspace_size(s.c)));
      // The loss as a function of (x, gamma, beta), run on the device.
      const auto loss = [&](const std::vector<double>& xv, const std::vector<double>& gv,
                            const std::vector<double>& bv) {
        d_x.copy_from_host(xv);
        d_g.copy_from_host(gv);
        d_b.copy_from_host(bv);
        if (train)
          k::batchnorm_forward_train<double>(
              {d_x.get(), d_g.get(), d_b.get(), d_y.get(), d_m.get(), d_i.get(), nullptr, nullptr},
              s, eps, k::pytorch_running(), d_ws.get(), nullptr);
        else
          k::batchnorm_forward_eval<double>(
              {d_x.get(), d_g.get(), d_b.get(), d_rm.get(), d_rv.get(), d_y.get()}, s, eps,
              nullptr);
        return dot(d_y.to_host(), w);
      };
      loss(x, p.gamma, p.beta);  // leaves the saved statistics of (x, gamma, beta)
      if (train)
        k::batchnorm_backward_train<double>({d_x.get(), d_w.get(), d_g.get(), d_m.get(), d_i.get(),
                                        d_dx.get(), d_dg.get(), d_db.get()},
                                       s, BatchNormAccumulate{}, d_ws.get(), nullptr);
      else
        k::batchnorm_backward_eval<double>({d_x.get(), d_w.get(), d_g.get(), d_rm.get(), d_rv.get(),
                                       d_dx.get(), d_dg.get(), d_db.get()},
                                      s, eps, BatchNormAccumulate{}, d_ws.get(), nullptr);
      const auto dx = d_dx.to_host(), dg = d_dg.to_host(), db = d_db.to_host();
      using V = std::vector<double>;
      const V num_dx = numeric_gradient(x, [&](const V& v) { return loss(v, p.gamma, p.beta); });
      const V num_dg = numeric_gradient(p.gamma, [&](const V& v) { return loss(x, v, p.beta); });
      const V num_db = numeric_gradient(p.beta, [&](const V& v) { return loss(x, p.gamma, v); });
      EXPECT_TRUE(all_close(dx, num_dx, kFiniteDifferenceTol)) << "dx";
      EXPECT_TRUE(all_close(dg, num_dg, kFiniteDifferenceTol)) << "dgamma";
      EXPECT_TRUE(all_close(db, num_db, kFiniteDifferenceTol)) << "dbeta";
    }
  }
}

// The check can fail: the backward of the other mode is far off.
TEST(BatchNormGradients, FiniteDifferencesCatchTheWrongMode) {
  const Shape s{3, 2, 2, 3};
  const auto x = make_input<double>(s, 161);
  const auto w = uniform<double>(s.size(), 162);
  const auto p = make_params<double>(s.c, 163);
  const TrainOut<double> fwd = cpu_forward_train(s, x, p, kConventions[0]);
  std::vector<double> dx_train(s.size()), dx_eval(s.size());
  // Eval backward with the batch statistics as "running" ones: the same
  // forward values, but it ignores that mean and var depend on x.
  std::vector<double> var(fwd.inv_std.size());
  for (size_t ch = 0; ch < var.size(); ++ch)
    var[ch] = 1 / (fwd.inv_std[ch] * fwd.inv_std[ch]) - k::kPyTorchBatchNormEps;
  k::batchnorm_backward_train_cpu<double>({x.data(), w.data(), p.gamma.data(), fwd.mean.data(),
                                           fwd.inv_std.data(), dx_train.data(), nullptr, nullptr},
                                          s, BatchNormAccumulate{});
  k::batchnorm_backward_eval_cpu<double>({x.data(), w.data(), p.gamma.data(), fwd.mean.data(),
                                          var.data(), dx_eval.data(), nullptr, nullptr},
                                         s, k::kPyTorchBatchNormEps, BatchNormAccumulate{});
  EXPECT_FALSE(all_close(dx_eval, dx_train, kFiniteDifferenceTol));
}

// ---------------------------------------------------------------------------
// Arguments.

template <class F>
void expect_message(F&& f, const std::string& want) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected: " << want;
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), want);
  }
}

TEST(BatchNormArgs, RejectsBadArguments) {
  DeviceBuffer<float> x(64), y(64), g(4), b(4), m(4), i(4), rm(4), rv(4), dx(64), dg(4), db(4);
  DeviceBuffer<double> ws(size_t(k::batchnorm_workspace_size(4)));
  const auto train = [&](int n, int c, int h, int w, double eps, BatchNormRunning r, int block,
                         float* run_mean, float* run_var, double* work) {
    k::batchnorm_forward_train<float>(
        {x.get(), g.get(), b.get(), y.get(), m.get(), i.get(), run_mean, run_var}, {n, c, h, w},
        eps, r, work, nullptr, block);
  };
  const auto ok = k::pytorch_running();
  EXPECT_NO_THROW(train(2, 4, 2, 2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()));
  expect_message([&] { train(-1, 4, 2, 2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: n must be >= 0, not -1 (shape n=-1, c=4, h=2, w=2)");
  expect_message([&] { train(2, 0, 2, 2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: c must be >= 1, not 0 (shape n=2, c=0, h=2, w=2)");
  EXPECT_THROW(train(2, 4, 0, 2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()),
               std::invalid_argument);
  EXPECT_THROW(train(2, 4, 2, -2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()),
               std::invalid_argument);
  for (int block : {0, 16, 48, 100, 1056, -32})
    EXPECT_THROW(train(2, 4, 2, 2, 1e-5, ok, block, rm.get(), rv.get(), ws.get()),
                 std::invalid_argument)
        << "block " << block;
  expect_message([&] { train(2, 4, 2, 2, 1e-5, ok, 48, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: block must be a multiple of 32 in [32, 1024], not 48");
  expect_message([&] { train(2, 4, 2, 2, -1e-5, ok, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: eps must be finite and >= 0, not -1e-05");
  EXPECT_THROW(train(2, 4, 2, 2, NAN, ok, 256, rm.get(), rv.get(), ws.get()),
               std::invalid_argument);
  EXPECT_THROW(train(2, 4, 2, 2, INFINITY, ok, 256, rm.get(), rv.get(), ws.get()),
               std::invalid_argument);
  const BatchNormRunning too_big{1.5, true};
  expect_message([&] { train(2, 4, 2, 2, 1e-5, too_big, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: running.keep must be in [0, 1], not 1.5");
  const BatchNormRunning negative = k::pytorch_running(1.1);  // keep = -0.1
  EXPECT_THROW(train(2, 4, 2, 2, 1e-5, negative, 256, rm.get(), rv.get(), ws.get()),
               std::invalid_argument);
  expect_message([&] { train(0, 4, 2, 2, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: training needs at least one value per channel, but "
                 "n*h*w = 0 (n=0)");
  expect_message([&] { train(1, 4, 1, 1, 1e-5, ok, 256, rm.get(), rv.get(), ws.get()); },
                 "batchnorm_forward_train: the unbiased running variance needs n*h*w >= 2 "
                 "values per channel, not 1");
  expect_message([&] { train(2, 4, 2, 2, 1e-5, ok, 256, rm.get(), nullptr, ws.get()); },
                 "batchnorm_forward_train: running_mean and running_var must be both null "
                 "(no running statistics) or both set");
  expect_message([&] { train(2, 4, 2, 2, 1e-5, ok, 256, rm.get(), rv.get(), nullptr); },
                 "batchnorm_forward_train: d_workspace is null");
  expect_message(
      [&] {
        k::batchnorm_forward_train<float>(
            {x.get(), nullptr, b.get(), y.get(), m.get(), i.get(), nullptr, nullptr}, {2, 4, 2, 2},
            1e-5, ok, ws.get(), nullptr);
      },
      "batchnorm_forward_train: gamma is null");

  // Evaluation: n = 0 is an empty batch (null pointers allowed); other
  // checks as above.
  EXPECT_NO_THROW(k::batchnorm_forward_eval<float>(
      {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}, {0, 4, 2, 2}, 1e-5, nullptr));
  expect_message(
      [&] {
        k::batchnorm_forward_eval<float>({x.get(), g.get(), b.get(), rm.get(), nullptr, y.get()},
                                         {2, 4, 2, 2}, 1e-5, nullptr);
      },
      "batchnorm_forward_eval: running_var is null");
  EXPECT_THROW(
      k::batchnorm_forward_eval<float>({x.get(), g.get(), b.get(), rm.get(), rv.get(), y.get()},
                                   {2, 4, 2, 2}, 1e-5, nullptr, 33),
      std::invalid_argument);

  // Backward.
  const BatchNormAccumulate acc{};
  EXPECT_THROW(k::batchnorm_backward_train<float>(
                   {x.get(), y.get(), g.get(), m.get(), i.get(), dx.get(), dg.get(), db.get()},
                   {0, 4, 2, 2}, acc, ws.get(), nullptr),
               std::invalid_argument);
  expect_message(
      [&] {
        k::batchnorm_backward_train<float>(
            {x.get(), y.get(), g.get(), m.get(), i.get(), dx.get(), dg.get(), db.get()},
            {2, 4, 2, 2}, acc, nullptr, nullptr);
      },
      "batchnorm_backward_train: d_workspace is null");
  expect_message(
      [&] {
        k::batchnorm_backward_train<float>(
            {x.get(), y.get(), g.get(), m.get(), i.get(), nullptr, dg.get(), db.get()},
            {2, 4, 2, 2}, acc, ws.get(), nullptr);
      },
      "batchnorm_backward_train: dx is null");
  // Eval backward: the workspace is needed only for parameter gradients.
  EXPECT_NO_THROW(k::batchnorm_backward_eval<float>(
      {x.get(), y.get(), g.get(), rm.get(), rv.get(), dx.get(), nullptr, nullptr}, {2, 4, 2, 2},
      1e-5, acc, nullptr, nullptr));
  expect_message(
      [&] {
        k::batchnorm_backward_eval<float>(
            {x.get(), y.get(), g.get(), rm.get(), rv.get(), dx.get(), dg.get(), nullptr},
            {2, 4, 2, 2}, 1e-5, acc, nullptr, nullptr);
      },
      "batchnorm_backward_eval: d_workspace is null");
  EXPECT_THROW(k::batchnorm_backward_eval<float>(
                   {x.get(), y.get(), g.get(), rm.get(), rv.get(), dx.get(), nullptr, nullptr},
                   {2, 4, 2, 2}, -1.0, acc, nullptr, nullptr),
               std::invalid_argument);
}

// Evaluation backward over an empty batch: no dx to write, and parameter
// gradients that are sums over nothing: 0 when assigning, unchanged when
// adding.
TEST(BatchNormArgs, EmptyBatchInEvaluation) {
  DeviceBuffer<float> g(std::vector<float>{1, 2}), rm(std::vector<float>{0, 0}),
      rv(std::vector<float>{1, 1}), dg(std::vector<float>{5, 6}), db(std::vector<float>{7, 8});
  DeviceBuffer<double> ws(size_t(k::batchnorm_workspace_size(2)));
  DeviceBuffer<float> x(1), dy(1), dx(1);
  const BatchNormAccumulate add{true, true, true};
  k::batchnorm_backward_eval<float>(
      {x.get(), dy.get(), g.get(), rm.get(), rv.get(), dx.get(), dg.get(), db.get()}, {0, 2, 3, 3},
      1e-5, add, ws.get(), nullptr);
  EXPECT_EQ(dg.to_host(), (std::vector<float>{5, 6}));
  EXPECT_EQ(db.to_host(), (std::vector<float>{7, 8}));
  k::batchnorm_backward_eval<float>(
      {x.get(), dy.get(), g.get(), rm.get(), rv.get(), dx.get(), dg.get(), db.get()}, {0, 2, 3, 3},
      1e-5, BatchNormAccumulate{}, ws.get(), nullptr);
  EXPECT_EQ(dg.to_host(), (std::vector<float>{0, 0}));
  EXPECT_EQ(db.to_host(), (std::vector<float>{0, 0}));
}

TEST(BatchNormCost, ScalesWithSize) {
  const auto c = k::batchnorm_forward_train_cost(2, 3, 4, 5);
  EXPECT_EQ(c.bytes, 2 * 3 * 4 * 5 * 4 * 3);
  EXPECT_EQ(k::batchnorm_forward_train_cost(4, 3, 4, 5, 8).bytes, 4 * c.bytes);
  EXPECT_GT(k::batchnorm_backward_train_cost(2, 3, 4, 5, true).bytes,
            k::batchnorm_backward_train_cost(2, 3, 4, 5, false).bytes);
  EXPECT_GT(k::batchnorm_backward_eval_cost(2, 3, 4, 5, false, true).flops,
            k::batchnorm_backward_eval_cost(2, 3, 4, 5, false, false).flops);
  EXPECT_GT(c.flops, k::batchnorm_forward_eval_cost(2, 3, 4, 5).flops);
  // Per channel: kBatchNormMaxChunks pairs of partial sums and one shift.
  EXPECT_EQ(k::batchnorm_workspace_size(10), 10 * (2 * k::kBatchNormMaxChunks + 1));
}

// The conventions' factors.
TEST(BatchNormConventions, Factors) {
  EXPECT_DOUBLE_EQ(k::pytorch_running().keep, 0.9);
  EXPECT_TRUE(k::pytorch_running().unbiased_var);
  EXPECT_DOUBLE_EQ(k::pytorch_running(0.01).keep, 0.99);
  EXPECT_DOUBLE_EQ(k::keras_running().keep, 0.99);
  EXPECT_FALSE(k::keras_running().unbiased_var);
  EXPECT_DOUBLE_EQ(k::keras_running(0.9).keep, 0.9);
  EXPECT_EQ(k::kPyTorchBatchNormEps, 1e-5);
  EXPECT_EQ(k::kKerasBatchNormEps, 1e-3);
}

}  // namespace
