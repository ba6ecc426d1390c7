// Pooling (kernels/pooling.cuh) against its CPU reference, in float and
// double: odd shapes (3x5x7x9 and others) with the models' windows (2x2
// stride 2, 4x2 stride 4x2, 4x1 stride 4x1), an overlapping one (3x3 stride
// 2), one with gaps (3x2 stride 1x3) and 1x1; partial windows dropped;
// blocks 64 and 256 (32 and 1024 once), three thread orders; forward and
// backward, assigning and accumulating; inputs with many ties; the tie and
// NaN rules by hand; global average pooling on both paths; determinism;
// finite-difference checks in double; argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/pooling.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using k::GlobalPoolStrategy;
using k::PoolWindow;
using timbre::DeviceBuffer;
using timbre::testing::unit_roundoff;
using timbre::testing::max_abs;
using timbre::testing::all_close;
using timbre::testing::random_floats;
using timbre::testing::Tolerance;
using timbre::testing::OpTable;
using timbre::testing::dot;
using timbre::testing::dtype_name;
using timbre::testing::once;
using timbre::testing::widen;

// ---------------------------------------------------------------------------
// Tolerances, in units of the unit roundoff u of T (2^-24 float, 2^-53
// double; one rounding changes v by at most u|v|).
//   * max pooling forward selects an input: exact, values and argmax.
//   * a gather that adds d terms in T (d = the most windows containing one
//     input, ceil(kh/sh)*ceil(kw/sw)) is off by at most (d - 1) u times the
//     sum of |terms| <= d max|term|; the division by kh*kw and the
//     reference's final rounding (it sums in double) add u|result| each.
//     Hence atol 2 d^2 u max|term| and rtol 4u (doubled).
//   * average pooling forward: the same with d = kh*kw terms, divided by
//     kh*kw: (kh*kw - 1) u max|x|, so atol 2 kh kw u max|x|.
//   * global average pooling sums in double (kernel and reference): the
//     accumulation error (h*w + 32) 2^-53 max|x| (the kernel's path: h*w/32
//     per lane + 5 butterfly levels, or h*w in sequence; the reference h*w),
//     and one rounding to T each: rtol 2u.
//   * global average backward: dy / (h*w), one rounding in T against the
//     double division rounded to T: rtol 2u.
// These hold on a GPU too (an FMA only removes roundings). A wrong window,
// index or count is off by O(1).

// Accumulating: one more rounding (u of the result); the fresh gradient's
// own error, relative to |g|, becomes absolute: rtol * max|g|.
Tolerance accumulated(Tolerance t, double max_abs_g, double u) {
  return Tolerance{t.atol + t.rtol * max_abs_g, t.rtol + 2 * u};
}

int windows_per_input(const PoolWindow& p) {
  return ((p.kh + p.sh - 1) / p.sh) * ((p.kw + p.sw - 1) / p.sw);
}

template <class T>
Tolerance gather_tol(const PoolWindow& p, double max_term) {
  const int d = windows_per_input(p);
  return Tolerance{2.0 * d * d * unit_roundoff<T> * max_term, 4 * unit_roundoff<T>};
}

// ---------------------------------------------------------------------------
// Shapes, windows, inputs.

struct Shape {
  int n, c, h, w;
  size_t size() const { return size_t(n) * c * h * w; }
  size_t out_size(const PoolWindow& p) const {
    return size_t(n) * c * k::pool_out_size(h, p.kh, p.sh) * k::pool_out_size(w, p.kw, p.sw);
  }
  std::string str() const {
    return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" +
           std::to_string(w);
  }
};

std::string str(const PoolWindow& p) {
  return "window " + std::to_string(p.kh) + "x" + std::to_string(p.kw) + " stride " +
         std::to_string(p.sh) + "x" + std::to_string(p.sw);
}

const PoolWindow kWindows[] = {
    {2, 2, 2, 2},  // the models' 2x2 stride 2
    {4, 2, 4, 2},  // 4x2 stride 4x2
    {4, 1, 4, 1},  // 4x1 stride 4x1
    {3, 3, 2, 2},  // overlapping: an input is in up to 4 windows
    {3, 2, 1, 3},  // overlapping rows, gaps between columns (inputs in no window)
    {1, 1, 1, 1},  // the identity
};

// Every shape fits every window (h >= 4, w >= 3). 7 and 9 leave partial
// windows at the bottom and right, which are dropped.
const Shape kShapes[] = {{3, 5, 7, 9}, {1, 1, 4, 3}, {2, 3, 13, 6}, {2, 4, 16, 16}};

// 64: two warps; 256: the default.
const int kBlocks[] = {64, 256};

template <class T>
std::vector<T> uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  const auto u = random_floats(n, seed, lo, hi);
  return std::vector<T>(u.begin(), u.end());
}

// Values from {-1, -0.5, 0, 0.5, 1}: most windows of 4 or more hold a tie
// for their maximum, so the tie rule is exercised everywhere.
template <class T>
std::vector<T> tied(size_t n, uint64_t seed) {
  const auto u = timbre::testing::random_ints(n, seed, -2, 2);
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = T(0.5 * u[i]);
  return v;
}

// Prefill of dx: NaN when the kernel assigns (it must never read dx), random
// values when it adds.
template <class T>
std::vector<T> prefill(size_t n, bool accumulate, uint64_t seed) {
  return accumulate ? uniform<T>(n, seed, -2.f, 2.f)
                    : std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

template <class T>
class Pooling : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Pooling, Types);

// ---------------------------------------------------------------------------
// Max pooling.

// Ties: the first maximum in row-major window order. Windows (2x2 stride 2)
// of the 2x4 plane
//    1  1 | 0  2
//    1  0 | 2  2
// give 1 at index 0 and 2 at index 3 (row 0, column 3 comes before row 1).
// dx then has dy at those inputs only.
TYPED_TEST(Pooling, MaxTiesTakeTheFirstInRowMajorOrder) {
  using T = TypeParam;
  const std::vector<T> x = {1, 1, 0, 2, 1, 0, 2, 2};
  DeviceBuffer<T> d_x(x), d_y(2), d_dy(std::vector<T>{0.5, -0.25}), d_dx(8);
  DeviceBuffer<int> d_at(2);
  k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), 1, 1, 2, 4, {2, 2, 2, 2}, nullptr);
  EXPECT_EQ(d_y.to_host(), (std::vector<T>{1, 2}));
  EXPECT_EQ(d_at.to_host(), (std::vector<int>{0, 3}));
  k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, 1, 1, 2, 4, {2, 2, 2, 2}, false,
                            nullptr);
  EXPECT_EQ(d_dx.to_host(), (std::vector<T>{0.5, 0, 0, -0.25, 0, 0, 0, 0}));
}

// NaN and infinities, as PyTorch: a NaN is taken over any number and over an
// earlier NaN (the window's last NaN), so y is NaN; +inf is an ordinary
// maximum; a window of -inf gives -inf at its first element. One 1x12
// plane, windows 1x2 stride 2:
//   [NaN, 5] [3, NaN] [NaN, NaN] [-inf, -inf] [1, inf] [inf, 2]
// argmax  0        3         5           6          9       10
TYPED_TEST(Pooling, MaxNaNAndInfinities) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  const std::vector<T> x = {nan, 5, 3, nan, nan, nan, -inf, -inf, 1, inf, inf, 2};
  const PoolWindow p{1, 2, 1, 2};
  std::vector<T> want_y(6);
  std::vector<int> want_at(6);
  k::max_pool2d_forward_cpu(x.data(), want_y.data(), want_at.data(), 1, 1, 1, 12, p);
  DeviceBuffer<T> d_x(x), d_y(6);
  DeviceBuffer<int> d_at(6);
  k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), 1, 1, 1, 12, p, nullptr);
  const auto y = d_y.to_host();
  const std::vector<int> at_rule = {0, 3, 5, 6, 9, 10};
  EXPECT_EQ(d_at.to_host(), at_rule);
  EXPECT_EQ(want_at, at_rule) << "the reference follows the same rule";
  EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]) && std::isnan(y[2]));
  EXPECT_EQ(y[3], -inf);
  EXPECT_EQ(y[4], inf);
  EXPECT_EQ(y[5], inf);
}

// Partial windows are dropped: h = 7, w = 9 with 2x2 stride 2 gives 3x4
// outputs; row 6 and column 8 are in no window, so their gradient is 0
// (and average pooling never reads them: NaN there changes nothing).
TYPED_TEST(Pooling, PartialWindowsAreDropped) {
  using T = TypeParam;
  const Shape s{1, 1, 7, 9};
  const PoolWindow p{2, 2, 2, 2};
  EXPECT_EQ(k::pool_out_size(7, 2, 2), 3);
  EXPECT_EQ(k::pool_out_size(9, 2, 2), 4);
  auto x = uniform<T>(s.size(), 31);
  for (int i = 0; i < 9; ++i) x[size_t(6 * 9 + i)] = std::numeric_limits<T>::quiet_NaN();
  for (int r = 0; r < 7; ++r) x[size_t(r * 9 + 8)] = std::numeric_limits<T>::quiet_NaN();
  DeviceBuffer<T> d_x(x), d_y(12), d_dy(uniform<T>(12, 32)), d_dx(s.size());
  DeviceBuffer<int> d_at(12);
  k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), s.n, s.c, s.h, s.w, p, nullptr);
  for (T v : d_y.to_host()) EXPECT_FALSE(std::isnan(v));
  k::avg_pool2d_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, p, nullptr);
  for (T v : d_y.to_host()) EXPECT_FALSE(std::isnan(v));
  for (bool max : {true, false}) {
    if (max)
      k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, s.n, s.c, s.h, s.w, p, false,
                                nullptr);
    else
      k::avg_pool2d_backward(d_dy.get(), d_dx.get(), s.n, s.c, s.h, s.w, p, false, nullptr);
    const auto dx = d_dx.to_host();
    for (int r = 0; r < 7; ++r)
      for (int c = 0; c < 9; ++c)
        if (r == 6 || c == 8) {
          EXPECT_EQ(dx[size_t(r * 9 + c)], T(0)) << r << "," << c;
        }
  }
}

// ---------------------------------------------------------------------------
// Average pooling.

// ---------------------------------------------------------------------------
// Global average pooling.

const GlobalPoolStrategy kStrategies[] = {GlobalPoolStrategy::thread, GlobalPoolStrategy::warp,
                                          GlobalPoolStrategy::automatic};
const char* name(GlobalPoolStrategy s) {
  switch (s) {
    case GlobalPoolStrategy::thread:
      return "thread";
    case GlobalPoolStrategy::warp:
      return "warp";
    default:
      return "automatic";
  }
}

// Planes from 1x1 to 33x35 (a plane shorter than a warp, one of exactly 32,
// longer ones); 7 planes, not a multiple of the planes per block.
const Shape kGlobalShapes[] = {
    {7, 1, 1, 1}, {3, 5, 7, 9}, {1, 7, 4, 8}, {2, 3, 33, 35}, {32, 128, 4, 4}};

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): max pooling forward (values
// and argmax, on random and on tied inputs) and backward, average pooling
// forward and backward, for every shape, window and dtype, both block sizes;
// global average pooling on every strategy; the backward passes assigning
// over NaN (which they must never read) and accumulating; and finite
// differences of every backward in double.

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

template <class T>
void pooling_rows(OpTable& table) {
  using timbre::testing::OpCase;
  const double u = unit_roundoff<T>;
  for (const Shape& s : kShapes)
    for (const PoolWindow& p : kWindows) {
      const std::string shape = s.str() + " " + str(p);
      const size_t in_n = s.size(), out_n = s.out_size(p);
      // Max forward: exact, the values then the argmax indices.
      for (bool ties : {false, true}) {
        const auto x = once([=] { return ties ? tied<T>(in_n, 11 + in_n) : uniform<T>(in_n, 12); });
        table.add(OpCase{
            ties ? "pooling/max_pool2d_forward/ties" : "pooling/max_pool2d_forward",
            dtype_name<T>(), shape, kBlockList, {0, 0}, "a selection: exact, values and argmax",
            [=](int block) {
              DeviceBuffer<T> d_x(x()), d_y(out_n);
              DeviceBuffer<int> d_at(out_n);
              k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), s.n, s.c, s.h, s.w, p,
                                    nullptr, block);
              auto out = widen(d_y.to_host());
              for (int i : d_at.to_host()) out.push_back(i);
              return out;
            },
            [=] {
              std::vector<T> y(out_n);
              std::vector<int> at(out_n);
              k::max_pool2d_forward_cpu(x().data(), y.data(), at.data(), s.n, s.c, s.h, s.w, p);
              auto out = widen(y);
              for (int i : at) out.push_back(i);
              return out;
            }});
      }
      // Backward of max (through the argmax of tied inputs) and of average.
      for (bool max : {true, false}) {
        const auto dy = once([=] { return uniform<T>(out_n, max ? 22 : 51 + in_n); });
        const auto at = once([=] {
          const auto x = tied<T>(in_n, 21 + in_n);
          std::vector<T> y(out_n);
          std::vector<int> a(out_n);
          k::max_pool2d_forward_cpu(x.data(), y.data(), a.data(), s.n, s.c, s.h, s.w, p);
          return a;
        });
        for (bool acc : {false, true}) {
          const auto pre = once([=] { return prefill<T>(in_n, acc, max ? 23 : 52); });
          auto want = [=](bool a) {
            std::vector<T> g = a ? pre() : std::vector<T>(in_n);
            if (max)
              k::max_pool2d_backward_cpu<T>({dy().data(), at().data(), g.data()}, s.n, s.c, s.h,
                                            s.w, p, a);
            else
              k::avg_pool2d_backward_cpu(dy().data(), g.data(), s.n, s.c, s.h, s.w, p, a);
            return g;
          };
          table.add(OpCase{
              std::string(max ? "pooling/max_pool2d_backward" : "pooling/avg_pool2d_backward") +
                  (acc ? "_accumulate" : ""),
              dtype_name<T>(), shape, kBlockList, {},
              "a gather of d terms: 2 d^2 u max|term| absolute, 4u relative",
              [=](int block) {
                DeviceBuffer<T> d_dy(dy()), d_dx(pre());
                if (max) {
                  DeviceBuffer<int> d_at(at());
                  k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, s.n, s.c, s.h,
                                            s.w, p, acc, nullptr, block);
                } else {
                  k::avg_pool2d_backward(d_dy.get(), d_dx.get(), s.n, s.c, s.h, s.w, p, acc,
                                         nullptr, block);
                }
                return widen(d_dx.to_host());
              },
              [=] { return widen(want(acc)); },
              [=](int) {
                // Terms dy (max), or dy summed and then divided by kh*kw (average).
                Tolerance tol = gather_tol<T>(p, max ? max_abs(dy()) : max_abs(dy()) / (p.kh * p.kw));
                return acc ? accumulated(tol, max_abs(want(false)), u) : tol;
              }});
        }
      }
      // Average forward.
      const auto ax = once([=] { return uniform<T>(in_n, 41 + in_n); });
      table.add(OpCase{
          "pooling/avg_pool2d_forward", dtype_name<T>(), shape, kBlockList, {},
          "kh*kw terms summed in T: 2 kh kw u max|x| absolute, 4u relative",
          [=](int block) {
            DeviceBuffer<T> d_x(ax()), d_y(out_n);
            timbre::testing::poison(d_y);
            k::avg_pool2d_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, p, nullptr, block);
            return widen(d_y.to_host());
          },
          [=] {
            std::vector<T> want(out_n);
            k::avg_pool2d_forward_cpu(ax().data(), want.data(), s.n, s.c, s.h, s.w, p);
            return widen(want);
          },
          [=](int) { return Tolerance{2.0 * p.kh * p.kw * u * max_abs(ax()), 4 * u}; }});
    }
  // Global average pooling.
  for (const Shape& s : kGlobalShapes) {
    const size_t in_n = s.size(), out_n = size_t(s.n) * s.c;
    const auto x = once([=] { return uniform<T>(in_n, 61 + in_n, -1.f, 3.f); });
    for (GlobalPoolStrategy st : kStrategies)
      table.add(OpCase{
          std::string("pooling/global_avg_pool_forward/") + name(st), dtype_name<T>(), s.str(),
          kBlockList, {}, "sums in double: (h w + 32) 2^-53 max|x|, one rounding to T",
          [=](int block) {
            DeviceBuffer<T> d_x(x()), d_y(out_n);
            timbre::testing::poison(d_y);
            k::global_avg_pool_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, nullptr, block,
                                       st);
            return widen(d_y.to_host());
          },
          [=] {
            std::vector<T> want(out_n);
            k::global_avg_pool_forward_cpu(x().data(), want.data(), s.n, s.c, s.h, s.w);
            return widen(want);
          },
          [=](int) { return Tolerance{(double(s.h) * s.w + 32) * 0x1p-53 * max_abs(x()), 2 * u}; }});
    const auto dy = once([=] { return uniform<T>(out_n, 71 + in_n); });
    for (bool acc : {false, true}) {
      const auto pre = once([=] { return prefill<T>(in_n, acc, 72); });
      auto want = [=](bool a) {
        std::vector<T> g = a ? pre() : std::vector<T>(in_n);
        k::global_avg_pool_backward_cpu(dy().data(), g.data(), s.n, s.c, s.h, s.w, a);
        return g;
      };
      table.add(OpCase{
          std::string("pooling/global_avg_pool_backward") + (acc ? "_accumulate" : ""),
          dtype_name<T>(), s.str(), kBlockList, {},
          "dy / (h w): one rounding in T against the double division",
          [=](int block) {
            DeviceBuffer<T> d_dy(dy()), d_dx(pre());
            k::global_avg_pool_backward(d_dy.get(), d_dx.get(), s.n, s.c, s.h, s.w, acc, nullptr,
                                        block);
            return widen(d_dx.to_host());
          },
          [=] { return widen(want(acc)); },
          [=](int) {
            const Tolerance tol{0, 2 * u};
            return acc ? accumulated(tol, max_abs(want(false)), u) : tol;
          }});
    }
  }
}

// Finite differences in double: each backward against its own device
// forward, L = <f(x), w>. x is a shuffled ramp (distinct values 0.01 apart,
// so no window's maximum changes under a step of h = 1e-5).
void pooling_gradient_rows(OpTable& table) {
  using timbre::testing::GradientCase;
  const Shape s{2, 2, 7, 9};
  std::vector<double> x(s.size());
  std::iota(x.begin(), x.end(), 0.0);
  std::shuffle(x.begin(), x.end(), std::mt19937_64(111));
  for (double& v : x) v = 0.01 * v - 1;
  const Tolerance tol{1e-7, 1e-6};
  const std::string why = "central differences, h = 1e-5, of piecewise-linear functions";
  for (const PoolWindow& p : kWindows) {
    const size_t outs = s.out_size(p);
    const auto w = uniform<double>(outs, 112);
    for (bool max : {true, false}) {
      // forward(v) -> (y, argmax) on the device.
      auto forward = [=](const std::vector<double>& v, DeviceBuffer<double>& y,
                         DeviceBuffer<int>& at) {
        DeviceBuffer<double> d_x(v);
        if (max)
          k::max_pool2d_forward(d_x.get(), y.get(), at.get(), s.n, s.c, s.h, s.w, p, nullptr);
        else
          k::avg_pool2d_forward(d_x.get(), y.get(), s.n, s.c, s.h, s.w, p, nullptr);
      };
      table.add(GradientCase{
          max ? "pooling/max_pool2d_backward" : "pooling/avg_pool2d_backward",
          s.str() + " " + str(p), x,
          [=](const std::vector<double>& v) {
            DeviceBuffer<double> y(outs);
            DeviceBuffer<int> at(outs);
            forward(v, y, at);
            return dot(y.to_host(), w);
          },
          [=](const std::vector<double>& v) {
            DeviceBuffer<double> y(outs), d_w(w), dx(s.size());
            DeviceBuffer<int> at(outs);
            forward(v, y, at);
            if (max)
              k::max_pool2d_backward<double>({d_w.get(), at.get(), dx.get()}, s.n, s.c, s.h, s.w, p,
                                             false, nullptr);
            else
              k::avg_pool2d_backward(d_w.get(), dx.get(), s.n, s.c, s.h, s.w, p, false, nullptr);
            return dx.to_host();
          },
          tol, why});
    }
  }
  const auto w = uniform<double>(size_t(s.n) * s.c, 113);
  table.add(GradientCase{
      "pooling/global_avg_pool_backward", s.str(), x,
      [=](const std::vector<double>& v) {
        DeviceBuffer<double> d_x(v), y(w.size());
        k::global_avg_pool_forward(d_x.get(), y.get(), s.n, s.c, s.h, s.w, nullptr);
        return dot(y.to_host(), w);
      },
      [=](const std::vector<double>&) {
        DeviceBuffer<double> d_w(w), dx(s.size());
        k::global_avg_pool_backward(d_w.get(), dx.get(), s.n, s.c, s.h, s.w, false, nullptr);
        return dx.to_host();
      },
      tol, why});
}

OP_CASES(pooling) {
  pooling_rows<float>(table);
  pooling_rows<double>(table);
  pooling_gradient_rows(table);
}

TEST(PoolingStrategy, AutomaticThreshold) {
  // The automatic choice is visible only in speed; both sides of the
  // threshold must give the reference's values (checked by the op-case rows
  // pooling/global_avg_pool_forward/automatic: 1x1 to 7x9 planes are below,
  // 33x35 above). The threshold itself:
  EXPECT_EQ(k::kGlobalPoolThreadMaxHW, 256);
}

// ---------------------------------------------------------------------------
// The models' shapes, once per kernel at the default block (N = 4 of the
// models' 32, to keep the test short): 16 channels of 128x128 with 2x2
// windows, 32 of 64x64 with 4x2, 64 of 16x32 with 4x1.
TYPED_TEST(Pooling, ModelShapes) {
  using T = TypeParam;
  struct Case {
    Shape s;
    PoolWindow p;
  };
  for (const Case& cs : {Case{{4, 16, 128, 128}, {2, 2, 2, 2}}, Case{{4, 32, 64, 64}, {4, 2, 4, 2}},
                         Case{{4, 64, 16, 32}, {4, 1, 4, 1}}}) {
    const Shape& s = cs.s;
    const PoolWindow& p = cs.p;
    SCOPED_TRACE(s.str() + " " + str(p));
    const auto x = uniform<T>(s.size(), 81);
    const auto dy = uniform<T>(s.out_size(p), 82);
    std::vector<T> y(s.out_size(p)), dx(s.size());
    std::vector<int> at(y.size());
    k::max_pool2d_forward_cpu(x.data(), y.data(), at.data(), s.n, s.c, s.h, s.w, p);
    k::max_pool2d_backward_cpu<T>({dy.data(), at.data(), dx.data()}, s.n, s.c, s.h, s.w, p, false);
    DeviceBuffer<T> d_x(x), d_y(y.size()), d_dy(dy), d_dx(s.size());
    DeviceBuffer<int> d_at(y.size());
    k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), s.n, s.c, s.h, s.w, p, nullptr);
    EXPECT_EQ(d_y.to_host(), y);
    EXPECT_EQ(d_at.to_host(), at);
    k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, s.n, s.c, s.h, s.w, p, false,
                              nullptr);
    EXPECT_EQ(d_dx.to_host(), dx);  // non-overlapping windows: each dx is one dy or 0
    k::avg_pool2d_forward_cpu(x.data(), y.data(), s.n, s.c, s.h, s.w, p);
    k::avg_pool2d_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, p, nullptr);
    EXPECT_TRUE(all_close(d_y.to_host(), y, {2.0 * p.kh * p.kw * unit_roundoff<T>, 4 * unit_roundoff<T>}));
  }
}

// ---------------------------------------------------------------------------
// Determinism: the same bits on every run and under every thread order. The
// gathers have no atomics even where windows overlap.

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TYPED_TEST(Pooling, Deterministic) {
  using T = TypeParam;
  const Shape s{3, 5, 17, 19};
  const PoolWindow p{3, 3, 2, 2};
  const auto x = uniform<T>(s.size(), 91);
  const auto dy = uniform<T>(s.out_size(p), 92);
  const auto gy = uniform<T>(size_t(s.n) * s.c, 93);
  DeviceBuffer<T> d_x(x), d_y(dy.size()), d_dy(dy), d_dx(s.size()), d_g(size_t(s.n) * s.c),
      d_gy(gy);
  DeviceBuffer<int> d_at(dy.size());
  for (int block : kBlocks) {
    SCOPED_TRACE("block " + std::to_string(block));
    auto run = [&] {
      std::vector<std::vector<unsigned char>> out;
      k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), s.n, s.c, s.h, s.w, p, nullptr,
                            block);
      out.push_back(bits(d_y.to_host()));
      out.push_back(bits(d_at.to_host()));
      k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, s.n, s.c, s.h, s.w, p, false,
                                nullptr, block);
      out.push_back(bits(d_dx.to_host()));
      k::avg_pool2d_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, p, nullptr, block);
      out.push_back(bits(d_y.to_host()));
      k::avg_pool2d_backward(d_dy.get(), d_dx.get(), s.n, s.c, s.h, s.w, p, false, nullptr, block);
      out.push_back(bits(d_dx.to_host()));
      for (GlobalPoolStrategy st : kStrategies) {
        k::global_avg_pool_forward(d_x.get(), d_g.get(), s.n, s.c, s.h, s.w, nullptr, block, st);
        out.push_back(bits(d_g.to_host()));
      }
      k::global_avg_pool_backward(d_gy.get(), d_dx.get(), s.n, s.c, s.h, s.w, false, nullptr,
                                  block);
      out.push_back(bits(d_dx.to_host()));
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

// The extreme block sizes on an odd shape with an overlapping window.
TYPED_TEST(Pooling, ExtremeBlocks) {
  using T = TypeParam;
  const Shape s{3, 5, 7, 9};
  const PoolWindow p{3, 3, 2, 2};
  const auto x = uniform<T>(s.size(), 101);
  const auto dy = uniform<T>(s.out_size(p), 102);
  std::vector<T> y(dy.size()), dx(s.size()), ya(dy.size()), dxa(s.size()), g(size_t(s.n) * s.c);
  std::vector<int> at(dy.size());
  k::max_pool2d_forward_cpu(x.data(), y.data(), at.data(), s.n, s.c, s.h, s.w, p);
  k::max_pool2d_backward_cpu<T>({dy.data(), at.data(), dx.data()}, s.n, s.c, s.h, s.w, p, false);
  k::avg_pool2d_forward_cpu(x.data(), ya.data(), s.n, s.c, s.h, s.w, p);
  k::avg_pool2d_backward_cpu(dy.data(), dxa.data(), s.n, s.c, s.h, s.w, p, false);
  k::global_avg_pool_forward_cpu(x.data(), g.data(), s.n, s.c, s.h, s.w);
  DeviceBuffer<T> d_x(x), d_y(dy.size()), d_dy(dy), d_dx(s.size()), d_g(g.size());
  DeviceBuffer<int> d_at(dy.size());
  timbre::testing::for_each_thread_order([&] {
    for (int block : {32, 1024}) {
      SCOPED_TRACE("block " + std::to_string(block));
      k::max_pool2d_forward(d_x.get(), d_y.get(), d_at.get(), s.n, s.c, s.h, s.w, p, nullptr,
                            block);
      EXPECT_EQ(d_y.to_host(), y);
      EXPECT_EQ(d_at.to_host(), at);
      k::max_pool2d_backward<T>({d_dy.get(), d_at.get(), d_dx.get()}, s.n, s.c, s.h, s.w, p, false,
                                nullptr, block);
      EXPECT_TRUE(all_close(d_dx.to_host(), dx, gather_tol<T>(p, max_abs(dy))));
      k::avg_pool2d_forward(d_x.get(), d_y.get(), s.n, s.c, s.h, s.w, p, nullptr, block);
      EXPECT_TRUE(all_close(d_y.to_host(), ya, {2.0 * 9 * unit_roundoff<T> * max_abs(x), 4 * unit_roundoff<T>}));
      k::avg_pool2d_backward(d_dy.get(), d_dx.get(), s.n, s.c, s.h, s.w, p, false, nullptr, block);
      EXPECT_TRUE(all_close(d_dx.to_host(), dxa, gather_tol<T>(p, max_abs(dy) / 9)));
      for (GlobalPoolStrategy st : kStrategies) {
        k::global_avg_pool_forward(d_x.get(), d_g.get(), s.n, s.c, s.h, s.w, nullptr, block, st);
        EXPECT_TRUE(all_close(d_g.to_host(), g, {(63 + 32) * 0x1p-53 * max_abs(x), 2 * unit_roundoff<T>}))
            << name(st);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Finite differences (double): each backward against the derivative of its
// device forward. L = sum w y for random weights w (the upstream dy). Max
// pooling is piecewise linear: the inputs are distinct values 0.01 apart
// (a shuffled ramp), so a step h = 1e-5 never changes which input is the
// maximum, and the central difference is exact up to rounding, u |L| / h
// ~ 1e-11. Average pooling is linear. 1e-7 absolute checks the formula.

using timbre::testing::dot;
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

TEST(PoolingArgs, RejectsBadArguments) {
  DeviceBuffer<float> x(64), y(64), dx(64);
  DeviceBuffer<int> at(64);
  const auto fwd = [&](int n, int c, int h, int w, PoolWindow p, int block) {
    k::max_pool2d_forward(x.get(), y.get(), at.get(), n, c, h, w, p, nullptr, block);
  };
  const PoolWindow ok{2, 2, 2, 2};
  EXPECT_NO_THROW(fwd(1, 2, 4, 8, ok, 256));
  expect_message([&] { fwd(-1, 2, 4, 8, ok, 256); },
                 "max_pool2d_forward: n must be >= 0, not -1 (shape n=-1, c=2, h=4, w=8)");
  EXPECT_THROW(fwd(1, 0, 4, 8, ok, 256), std::invalid_argument);
  EXPECT_THROW(fwd(1, 2, 0, 8, ok, 256), std::invalid_argument);
  EXPECT_THROW(fwd(1, 2, 4, -8, ok, 256), std::invalid_argument);
  for (int block : {0, 16, 48, 100, 1056, -32})
    EXPECT_THROW(fwd(1, 2, 4, 8, ok, block), std::invalid_argument) << "block " << block;
  expect_message([&] { fwd(1, 2, 4, 8, ok, 48); },
                 "max_pool2d_forward: block must be a multiple of 32 in [32, 1024], not 48");
  expect_message(
      [&] {
        fwd(1, 2, 4, 8, {0, 2, 2, 2}, 256);
      },
      "max_pool2d_forward: window kh must be >= 1, not 0");
  expect_message(
      [&] {
        fwd(1, 2, 4, 8, {2, 2, 2, 0}, 256);
      },
      "max_pool2d_forward: stride sw must be >= 1, not 0");
  expect_message(
      [&] {
        fwd(1, 2, 3, 8, {4, 2, 4, 2}, 256);
      },
      "max_pool2d_forward: window 4x2 does not fit in the 3x8 input plane (needs kh "
      "<= h and kw <= w)");
  EXPECT_THROW(fwd(1, 2, 4, 1, ok, 256), std::invalid_argument);
  expect_message(
      [&] {
        fwd(2, 64, 4096, 4096, {1, 1, 1, 1}, 256);
      },
      "max_pool2d_forward: 2147483648 input values are too many: n*c*h*w must be "
      "below 2^31 (32-bit indexing) (shape n=2, c=64, h=4096, w=4096)");
  EXPECT_THROW(fwd(0, 1, 65536, 32768, ok, 256), std::invalid_argument);  // even one plane
  EXPECT_THROW(k::global_avg_pool_forward(x.get(), y.get(), 1 << 16, 1 << 15, 1, 1, nullptr),
               std::invalid_argument);
  expect_message(
      [&] { k::max_pool2d_forward<float>(x.get(), y.get(), nullptr, 1, 2, 4, 8, ok, nullptr); },
      "max_pool2d_forward: d_argmax is null");
  // The other launchers run the same checks under their own names.
  expect_message(
      [&] {
        k::max_pool2d_backward<float>({y.get(), at.get(), dx.get()}, 1, 2, 4, 8, {5, 2, 1, 1},
                                      false, nullptr);
      },
      "max_pool2d_backward: window 5x2 does not fit in the 4x8 input plane (needs kh <= h and "
      "kw <= w)");
  expect_message(
      [&] {
        k::avg_pool2d_forward(x.get(), y.get(), 1, 2, 4, 8, {2, -1, 2, 2}, nullptr);
      },
      "avg_pool2d_forward: window kw must be >= 1, not -1");
  expect_message(
      [&] { k::avg_pool2d_backward<float>(y.get(), nullptr, 1, 2, 4, 8, ok, true, nullptr); },
      "avg_pool2d_backward: d_dx is null");
  expect_message([&] { k::global_avg_pool_forward(x.get(), y.get(), 1, 2, 4, 8, nullptr, 1000); },
                 "global_avg_pool_forward: block must be a multiple of 32 in [32, 1024], not 1000");
  EXPECT_THROW(k::global_avg_pool_forward(x.get(), y.get(), 1, 2, 4, 8, nullptr, 256,
                                          static_cast<GlobalPoolStrategy>(7)),
               std::invalid_argument);
  expect_message(
      [&] { k::global_avg_pool_backward(y.get(), dx.get(), 1, -2, 4, 8, false, nullptr); },
      "global_avg_pool_backward: c must be >= 1, not -2 (shape n=1, c=-2, h=4, w=8)");
}

// n = 0 is an empty batch: nothing to do, null pointers allowed; the shape
// and window are still checked.
TEST(PoolingArgs, EmptyBatchIsANoOp) {
  const PoolWindow p{2, 2, 2, 2};
  EXPECT_NO_THROW(k::max_pool2d_forward<float>(nullptr, nullptr, nullptr, 0, 3, 4, 4, p, nullptr));
  EXPECT_NO_THROW(
      k::max_pool2d_backward<double>({nullptr, nullptr, nullptr}, 0, 3, 4, 4, p, true, nullptr));
  EXPECT_NO_THROW(k::avg_pool2d_forward<float>(nullptr, nullptr, 0, 3, 4, 4, p, nullptr));
  EXPECT_NO_THROW(k::avg_pool2d_backward<float>(nullptr, nullptr, 0, 3, 4, 4, p, false, nullptr));
  EXPECT_NO_THROW(k::global_avg_pool_forward<float>(nullptr, nullptr, 0, 3, 4, 4, nullptr));
  EXPECT_NO_THROW(
      k::global_avg_pool_backward<double>(nullptr, nullptr, 0, 3, 4, 4, false, nullptr));
  EXPECT_THROW(k::max_pool2d_forward<float>(nullptr, nullptr, nullptr, 0, 3, 1, 4, p, nullptr),
               std::invalid_argument);
}

TEST(PoolingCost, ScalesWithSize) {
  const PoolWindow p{2, 2, 2, 2};
  const auto c = k::max_pool2d_forward_cost(2, 3, 8, 8, p);
  EXPECT_EQ(c.flops, 2 * 3 * 4 * 4 * 4);
  EXPECT_EQ(c.bytes, 2 * 3 * 8 * 8 * 4 + 2 * 3 * 4 * 4 * 8);
  EXPECT_EQ(k::max_pool2d_forward_cost(4, 3, 8, 8, p).bytes, 2 * c.bytes);
  EXPECT_GT(k::max_pool2d_backward_cost(2, 3, 8, 8, p, true).bytes,
            k::max_pool2d_backward_cost(2, 3, 8, 8, p, false).bytes);
  EXPECT_GT(k::avg_pool2d_forward_cost(2, 3, 8, 8, p, 8).bytes,
            k::avg_pool2d_forward_cost(2, 3, 8, 8, p, 4).bytes);
  EXPECT_GT(k::avg_pool2d_backward_cost(2, 3, 8, 8, p, true).flops,
            k::avg_pool2d_backward_cost(2, 3, 8, 8, p, false).flops);
  EXPECT_EQ(k::global_avg_pool_forward_cost(2, 3, 8, 8).flops, 2 * 3 * 65);
  EXPECT_GT(k::global_avg_pool_backward_cost(2, 3, 8, 8, true).bytes,
            k::global_avg_pool_backward_cost(2, 3, 8, 8, false).bytes);
}

}  // namespace
