// softmax, log-softmax and cross-entropy (kernels/softmax.cuh) against their
// CPU references, in float and double: rows 1, 3, 257 x cols 1, 8, 64, 1000,
// every row strategy (a thread, a warp slice, a block per row), two block
// sizes, three thread orders; forward and backward, assigning and
// accumulating; bad labels, argument errors, determinism, a 100k-row batch,
// and finite-difference checks of every backward in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/softmax.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using k::RowStrategy;
using timbre::DeviceBuffer;
using timbre::testing::unit_roundoff;
using timbre::testing::max_abs;
using timbre::testing::all_close;
using timbre::testing::random_floats;
using timbre::testing::random_ints;
using timbre::testing::Tolerance;
using timbre::testing::OpTable;
using timbre::testing::dtype_name;
using timbre::testing::once;
using timbre::testing::widen;

// ---------------------------------------------------------------------------
// Tolerances: |got - ref| <= atol + rtol*|ref|, derived from the rounding
// errors of kernel and reference and written in units of the unit roundoff
// u of T (2^-24 for float, 2^-53 for double), so that one analysis serves
// both types. The sources:
//   * a row sum is rounded d times along its longest path (sum_depth below):
//     for positive terms (sum of exp) its relative error is <= d*u; for
//     signed terms <= d*u*sum|terms|. The reference sums in double: its
//     error counts only when T = double, where it is of the same kind.
//   * expf/logf on a GPU are within 2 ulp (CUDA Programming Guide,
//     "Mathematical Functions"), exp/log in double within 1-2 ulp; simcuda
//     uses libm. An ulp is 2u relative at most.
//   * the exp argument x - m is rounded (unless Sterbenz makes it exact): a
//     relative error u*|x - m| in exp(x - m); since y*|x - m| <= 1/e for a
//     softmax output y, an absolute error below u/2.
//   * every other operation and the final rounding to T: 0.5 ulp.
// Each bound is then doubled (or more, as noted) for margin. A wrong formula
// (a missing term, a wrong index) gives errors of order 1e-3 or more, far
// outside every tolerance here.

template <class T>
Tolerance ulps(double a, double r) {
  return Tolerance{a * unit_roundoff<T>, r * unit_roundoff<T>};
}

struct Config {
  int cols;
  RowStrategy strategy;
  int block;
};

// Roundings along the longest path of a row reduction in the kernel: the
// per-thread terms (ceil(cols/team) of them, the first added to 0 exactly),
// the shuffle butterfly (log2 of its width), the fold of the warp results.
int kernel_sum_depth(const Config& c) {
  const RowStrategy st =
      c.strategy == RowStrategy::automatic ? k::row_strategy_for(c.cols) : c.strategy;
  if (st == RowStrategy::thread) return c.cols - 1;
  if (st == RowStrategy::block) return (c.cols + c.block - 1) / c.block - 1 + 5 + c.block / 32 - 1;
  int width = 1, levels = 0;
  while (width < c.cols && width < 32) width *= 2, ++levels;
  return (c.cols + width - 1) / width - 1 + levels;
}
// Kernel and reference together (the reference's cols - 1 double roundings
// matter only when T = double).
template <class T>
int sum_depth(const Config& c) {
  return kernel_sum_depth(c) + (std::is_same_v<T, double> ? c.cols - 1 : 0);
}

// softmax y = exp(x - m) / s: d (sum) + 4 (exp, 2 ulp) + 1 (division) + 1
// (rounding to T) relative; absolute, the x - m rounding (< u/2) and outputs
// that underflow (|ref| < 2^-126 in float).
template <class T>
Tolerance softmax_tol(const Config& c) {
  return ulps<T>(4, 2 * (sum_depth<T>(c) + 6));
}
// log-softmax y = (x - m) - log s. Absolute: the sum's d*u relative error
// becomes d*u in log s, and 2 ulp of log s (< 16 for cols < 8e6) are <= 32u.
// Relative: the rounding of x - m, u*|x - m| <= u*|y| (x - m <= 0 <= log s,
// so |y| = |x - m| + log s), the final subtraction and the rounding to T:
// 2u, x4 -> 8u. The per-row cross-entropy loss log s - (x_l - m) =
// log s + |x_l - m| has the same error terms.
template <class T>
Tolerance log_softmax_tol(const Config& c) {
  return ulps<T>(2 * (sum_depth<T>(c) + 32), 8);
}
// softmax backward dx = y (dy - dot): dot = sum dy*y has sum|terms| <= 1
// (sum y = 1, |dy| <= 1), so an absolute error <= d*u; dy - dot and the
// product add 2 roundings, the rounding to T one more: |error| <=
// y*(d + 2)u + 1.5u*|dx| -> 2(d + 4)u absolute (y <= 1), 4u relative.
template <class T>
Tolerance softmax_backward_tol(const Config& c) {
  return ulps<T>(2 * (sum_depth<T>(c) + 4), 4);
}
// log-softmax backward dx = dy - exp(y) * S, S = sum of cols terms uniform
// in [-1, 1]. The worst-case bound d*u*sum|dy| (~ d*cols*u/2) is far from
// what happens: the partial sums of random terms are ~sqrt(cols/3), and the
// d rounding errors, each <= u/2 of a partial sum, add with random signs:
// standard deviation <= sqrt(d)*sqrt(cols/3)*u/2 ~ 0.3*sqrt(d*cols)*u.
// 4*sqrt((d + 1)*cols)*u is ~14 standard deviations. Relative 4u: exp(y)
// (2 ulp), the product and the subtraction.
template <class T>
Tolerance log_softmax_backward_tol(const Config& c) {
  return ulps<T>(4 * std::sqrt((sum_depth<T>(c) + 1.0) * c.cols), 4);
}
// cross-entropy backward (p - onehot) * dL / rows: 3 roundings in the
// kernel (p - 1, dL / rows, the product), each relative to the result (p - 1
// is exact when p >= 1/2), and the rounding to T: 3.5u -> 8u relative; 1u
// absolute only for results that are 0.
template <class T>
Tolerance cross_entropy_backward_tol() {
  return ulps<T>(1, 8);
}
// The mean loss: the row losses (all >= 0) are summed in double whatever T,
// so its error is the row losses' error averaged (bounded by
// log_softmax_tol), one rounding to T, and the double sums of kernel and
// reference: rows - 1 roundings in the reference's loop, rows/256 + 36 in
// the kernel's block, a relative error <= (2 rows + 36) 2^-53 together
// (negligible in float; in double at 100k rows it is what dominates).
template <class T>
Tolerance mean_loss_tol(const Config& c, int rows) {
  Tolerance t = log_softmax_tol<T>(c);
  t.rtol += unit_roundoff<T> + (2.0 * rows + 36) * 0x1p-53;
  return t;
}
// Accumulating: dx_old + g, rounded once more (0.5 ulp of the result; the
// reference adds in double and rounds once: 0.5 ulp). g's own error is
// relative to |g|, not to the (possibly smaller) sum: it becomes absolute,
// rtol * max|g|.
Tolerance accumulated(Tolerance t, double max_abs_g, double u) {
  return Tolerance{t.atol + t.rtol * max_abs_g, t.rtol + 2 * u};
}
// ---------------------------------------------------------------------------
// Inputs.

// Logits in four kinds of rows, by row index i % 4:
//   0: uniform in [-4, 4)                  ordinary spread;
//   1: uniform in [-80, 80)                wide: most probabilities underflow
//                                          in float, log-softmax down to -160;
//   2: 1000 + uniform in [-80, 80)         exp(x) overflows even in double: a
//                                          softmax without the max shift gives NaN;
//   3: -1000 + uniform in [-80, 80)        exp(x) underflows to 0 everywhere:
//                                          without the shift, 0/0.
template <class T>
std::vector<T> make_logits(int rows, int cols, uint64_t seed) {
  const auto u = random_floats(size_t(rows) * cols, seed);
  std::vector<T> x(u.size());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const size_t k = size_t(i) * cols + j;
      const float v = u[k];
      switch (i % 4) {
        case 0: x[k] = T(4.f * v); break;
        case 1: x[k] = T(80.f * v); break;
        case 2: x[k] = T(1000.f + 80.f * v); break;
        default: x[k] = T(-1000.f + 80.f * v); break;
      }
    }
  return x;
}

template <class T>
std::vector<T> make_uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  const auto u = random_floats(n, seed, lo, hi);
  return std::vector<T>(u.begin(), u.end());
}

template <class T>
std::vector<T> to_vector(T v) {
  return std::vector<T>{v};
}

struct Shape {
  int rows, cols;
};
std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int rows : {1, 3, 257})
    for (int cols : {1, 8, 64, 1000}) s.push_back({rows, cols});
  return s;
}

const RowStrategy kStrategies[] = {RowStrategy::thread, RowStrategy::warp, RowStrategy::block};
const char* name(RowStrategy s) {
  switch (s) {
    case RowStrategy::thread: return "thread";
    case RowStrategy::warp: return "warp";
    case RowStrategy::block: return "block";
    default: return "automatic";
  }
}
// 96: three warps, not a power of two; 256: the default.
const int kBlocks[] = {96, 256};

// Runs body(config) for every strategy and both block sizes under every
// thread order, with a trace naming the configuration.
template <class F>
void for_each_config(const Shape& sh, F&& body) {
  timbre::testing::for_each_thread_order([&] {
    for (RowStrategy st : kStrategies)
      for (int block : kBlocks) {
        SCOPED_TRACE(std::string("rows ") + std::to_string(sh.rows) + " cols " +
                     std::to_string(sh.cols) + " strategy " + name(st) + " block " +
                     std::to_string(block));
        body(Config{sh.cols, st, block});
      }
  });
}

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): softmax and log-softmax
// forward and backward (assigning and accumulating over a pre-filled dx),
// cross-entropy forward (mean loss, row losses, probabilities) and backward,
// for every shape of shapes(), every row strategy and both block sizes; the
// automatic strategy on both sides of each threshold at the extreme block
// sizes; and finite differences of every backward in double.

std::string shape_name(const Shape& sh) {
  return "rows=" + std::to_string(sh.rows) + " cols=" + std::to_string(sh.cols);
}

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

// launch(d_in, d_out) over a fresh device copy of `in`, into a poisoned
// output of out_n values.
template <class T>
std::vector<double> run_forward(const std::vector<T>& in, size_t out_n,
                                const std::function<void(const T*, T*)>& launch) {
  DeviceBuffer<T> d_in(in), d_out(out_n);
  timbre::testing::poison(d_out);
  launch(d_in.get(), d_out.get());
  return widen(d_out.to_host());
}

template <class T>
void softmax_rows(OpTable& table) {
  using timbre::testing::OpCase;
  for (const Shape& sh : shapes()) {
    const int rows = sh.rows, cols = sh.cols;
    const size_t n = size_t(rows) * cols;
    const std::string shape = shape_name(sh);
    const auto logits = once([=] { return make_logits<T>(rows, cols, 11 + n); });
    const auto dy = once([=] { return make_uniform<T>(n, 21 + n); });
    const auto prefill = once([=] { return make_uniform<T>(n, 31 + n, -2.f, 2.f); });
    for (RowStrategy st : kStrategies) {
      const std::string tag = std::string("/") + name(st);
      auto cfg = [=](int block) { return Config{cols, st, block}; };
      // Forward.
      for (bool log : {false, true}) {
        table.add(OpCase{
            std::string("softmax/") + (log ? "log_softmax_forward" : "softmax_forward") + tag,
            dtype_name<T>(), shape, kBlockList, {},
            log ? "the row sum's depth, 2 ulp of log, the rounding of x - m"
                : "the row sum's depth, 2 ulp of exp, the division",
            [=](int block) {
              return run_forward<T>(logits(), n, [&](const T* x, T* y) {
                if (log)
                  k::log_softmax_forward(x, y, rows, cols, nullptr, block, st);
                else
                  k::softmax_forward(x, y, rows, cols, nullptr, block, st);
              });
            },
            [=] {
              std::vector<T> want(n);
              if (log)
                k::log_softmax_forward_cpu(logits().data(), want.data(), rows, cols);
              else
                k::softmax_forward_cpu(logits().data(), want.data(), rows, cols);
              return widen(want);
            },
            [=](int block) {
              return log ? log_softmax_tol<T>(cfg(block)) : softmax_tol<T>(cfg(block));
            }});
      }
      // Backward, from y as the CPU forward gives it, over a pre-filled dx
      // (which assigning must overwrite).
      for (bool log : {false, true}) {
        const auto y = once([=] {
          std::vector<T> v(n);
          const auto x = make_logits<T>(rows, cols, (log ? 51 : 41) + n);
          if (log)
            k::log_softmax_forward_cpu(x.data(), v.data(), rows, cols);
          else
            k::softmax_forward_cpu(x.data(), v.data(), rows, cols);
          return v;
        });
        auto want = [=](bool acc) {
          std::vector<T> g = acc ? prefill() : std::vector<T>(n);
          if (log)
            k::log_softmax_backward_cpu(y().data(), dy().data(), g.data(), rows, cols, acc);
          else
            k::softmax_backward_cpu(y().data(), dy().data(), g.data(), rows, cols, acc);
          return g;
        };
        const auto want_assign = once([=] { return want(false); });
        for (bool acc : {false, true})
          table.add(OpCase{
              std::string("softmax/") + (log ? "log_softmax_backward" : "softmax_backward") +
                  (acc ? "_accumulate" : "") + tag,
              dtype_name<T>(), shape, kBlockList, {},
              log ? "the random-walk error of a sum of cols signed terms"
                  : "<dy, y> has sum|terms| <= 1: the sum's depth, absolute",
              [=](int block) {
                DeviceBuffer<T> d_y(y()), d_dy(dy()), d_dx(prefill());
                if (log)
                  k::log_softmax_backward(d_y.get(), d_dy.get(), d_dx.get(), rows, cols, acc,
                                          nullptr, block, st);
                else
                  k::softmax_backward(d_y.get(), d_dy.get(), d_dx.get(), rows, cols, acc,
                                      nullptr, block, st);
                return widen(d_dx.to_host());
              },
              [=] { return widen(want(acc)); },
              [=](int block) {
                const Tolerance t = log ? log_softmax_backward_tol<T>(cfg(block))
                                        : softmax_backward_tol<T>(cfg(block));
                return acc ? accumulated(t, max_abs(want_assign()), unit_roundoff<T>) : t;
              }});
      }
      // Cross-entropy forward: its three outputs, one row each.
      const auto ce_x = once([=] { return make_logits<T>(rows, cols, 61 + n); });
      const auto ce_labels = once([=] { return random_ints(size_t(rows), 71 + n, 0, cols - 1); });
      struct CeRef {
        std::vector<T> probs, row_loss;
        double loss;
      };
      const auto ce_ref = once([=] {
        CeRef r{std::vector<T>(n), std::vector<T>(size_t(rows)), 0};
        int bad = -1;
        r.loss = k::cross_entropy_forward_cpu<T>(
            {ce_x().data(), ce_labels().data(), nullptr, r.probs.data(), r.row_loss.data(), &bad},
            rows, cols);
        if (bad != 0) throw std::logic_error("cross-entropy reference: labels out of range");
        return r;
      });
      const char* outputs[] = {"loss", "row_loss", "probs"};
      for (int out = 0; out < 3; ++out)
        table.add(OpCase{
            std::string("softmax/cross_entropy_forward_") + outputs[out] + tag, dtype_name<T>(),
            shape, kBlockList, {},
            out == 0   ? "the row losses' error, averaged in double"
            : out == 1 ? "as log-softmax"
                       : "as softmax",
            [=](int block) {
              DeviceBuffer<T> d_x(ce_x()), loss(1), probs(n), row_loss(static_cast<size_t>(rows));
              DeviceBuffer<int> labels(ce_labels()), bad(1);
              k::cross_entropy_forward<T>({d_x.get(), labels.get(), loss.get(), probs.get(),
                                           row_loss.get(), bad.get()}, rows, cols, nullptr, block,
                                          st);
              // A wrong bad-label count fails the row.
              if (bad.to_host()[0] != 0) return std::vector<double>{NAN};
              return widen(out == 0   ? loss.to_host()
                           : out == 1 ? row_loss.to_host()
                                      : probs.to_host());
            },
            [=] {
              const CeRef& r = ce_ref();
              return out == 0 ? std::vector<double>{r.loss}
                              : widen(out == 1 ? r.row_loss : r.probs);
            },
            [=](int block) {
              return out == 0   ? mean_loss_tol<T>(cfg(block), rows)
                     : out == 1 ? log_softmax_tol<T>(cfg(block))
                                : softmax_tol<T>(cfg(block));
            }});
    }
    // Cross-entropy backward (elementwise: no row strategy), dL = 0.75.
    const auto probs = once([=] {
      std::vector<T> p(n);
      k::softmax_forward_cpu(make_logits<T>(rows, cols, 81 + n).data(), p.data(), rows, cols);
      return p;
    });
    const auto labels = once([=] { return random_ints(size_t(rows), 91 + n, 0, cols - 1); });
    const auto ce_prefill = once([=] { return make_uniform<T>(n, 101 + n, -2.f, 2.f); });
    const T dloss = T(0.75);  // an upstream gradient other than 1
    auto ce_want = [=](bool acc) {
      std::vector<T> g = acc ? ce_prefill() : std::vector<T>(n);
      k::cross_entropy_backward_cpu(probs().data(), labels().data(), dloss, g.data(), rows, cols,
                                    acc);
      return g;
    };
    const auto ce_want_assign = once([=] { return ce_want(false); });
    for (bool acc : {false, true})
      table.add(OpCase{
          std::string("softmax/cross_entropy_backward") + (acc ? "_accumulate" : ""),
          dtype_name<T>(), shape, kBlockList, {},
          "3 roundings relative to the result (p - 1 is exact for p >= 1/2)",
          [=](int block) {
            DeviceBuffer<T> d_probs(probs()), d_dloss(to_vector(dloss)), d_dx(ce_prefill());
            DeviceBuffer<int> d_labels(labels());
            k::cross_entropy_backward(d_probs.get(), d_labels.get(), d_dloss.get(), d_dx.get(),
                                      rows, cols, acc, nullptr, block);
            return widen(d_dx.to_host());
          },
          [=] { return widen(ce_want(acc)); },
          [=](int) {
            const Tolerance t = cross_entropy_backward_tol<T>();
            return acc ? accumulated(t, max_abs(ce_want_assign()), unit_roundoff<T>) : t;
          }});
  }
  // The automatic strategy on both sides of each threshold, at the extreme
  // block sizes.
  const int t = k::kThreadPathMaxCols, w = k::kWarpPathMaxCols;
  for (const Shape& sh : {Shape{40, 5}, Shape{40, t}, Shape{40, t + 1}, Shape{5, w},
                          Shape{5, w + 1}, Shape{3, 5000}}) {
    const int rows = sh.rows, cols = sh.cols;
    const size_t n = size_t(rows) * cols;
    const auto x = once([=] { return make_logits<T>(rows, cols, 131 + n); });
    table.add(OpCase{
        "softmax/softmax_forward/automatic", dtype_name<T>(), shape_name(sh), {32, 1024}, {},
        "the row sum's depth, 2 ulp of exp, the division",
        [=](int block) {
          return run_forward<T>(x(), n, [&](const T* in, T* out) {
            k::softmax_forward(in, out, rows, cols, nullptr, block);
          });
        },
        [=] {
          std::vector<T> want(n);
          k::softmax_forward_cpu(x().data(), want.data(), rows, cols);
          return widen(want);
        },
        [=](int block) { return softmax_tol<T>(Config{cols, RowStrategy::automatic, block}); }});
  }
}

// Finite differences (double): each backward against the derivative of its
// own device forward, so a formula shared by kernel and reference cannot be
// wrong in both. L(x) = sum_ij w_ij f(x)_ij for random weights w (the
// upstream gradient). Central differences have truncation error h^2 times
// the third derivative / 6 ~ 1e-10 and rounding error ~ u |L| / h ~ 1e-11
// for h = 1e-5 and |L| <= ~15; 1e-7 absolute checks the formula, not the
// rounding.
void softmax_gradient_rows(OpTable& table) {
  using timbre::testing::GradientCase;
  const int rows = 3, cols = 5;
  const size_t n = size_t(rows) * cols;
  const auto x = make_uniform<double>(n, 151, -3.f, 3.f);
  const auto w = make_uniform<double>(n, 152);
  const Tolerance tol{1e-7, 1e-6};
  const std::string why = "central differences, h = 1e-5: truncation ~1e-10, rounding ~1e-11";
  const std::string shape = shape_name({rows, cols});
  for (RowStrategy st : kStrategies) {
    const std::string tag = std::string("/") + name(st);
    for (bool log : {false, true}) {
      auto forward = [=](const double* in, double* out) {
        if (log)
          k::log_softmax_forward(in, out, rows, cols, nullptr, 256, st);
        else
          k::softmax_forward(in, out, rows, cols, nullptr, 256, st);
      };
      table.add(GradientCase{
          std::string("softmax/") + (log ? "log_softmax_backward" : "softmax_backward") + tag,
          shape, x,
          [=](const std::vector<double>& v) {
            DeviceBuffer<double> d_x(v), d_y(n);
            forward(d_x.get(), d_y.get());
            return timbre::testing::dot(d_y.to_host(), w);
          },
          [=](const std::vector<double>& v) {
            DeviceBuffer<double> d_x(v), d_y(n), d_w(w), d_dx(n);
            forward(d_x.get(), d_y.get());
            if (log)
              k::log_softmax_backward(d_y.get(), d_w.get(), d_dx.get(), rows, cols, false,
                                      nullptr, 256, st);
            else
              k::softmax_backward(d_y.get(), d_w.get(), d_dx.get(), rows, cols, false, nullptr,
                                  256, st);
            return d_dx.to_host();
          },
          tol, why});
    }
    // Cross-entropy: L = dL * loss(x) with the upstream gradient dL = 0.75.
    const std::vector<int> labels = {2, 0, 4};
    auto ce = [=](const std::vector<double>& v, bool backward) {
      DeviceBuffer<double> d_x(v), loss(1), probs(n), row_loss(static_cast<size_t>(rows)),
          dloss(std::vector<double>{0.75}), dx(n);
      DeviceBuffer<int> d_labels(labels), bad(1);
      k::cross_entropy_forward<double>({d_x.get(), d_labels.get(), loss.get(), probs.get(),
                                        row_loss.get(), bad.get()}, rows, cols, nullptr, 256, st);
      if (!backward) return std::vector<double>{0.75 * loss.to_host()[0]};
      k::cross_entropy_backward(probs.get(), d_labels.get(), dloss.get(), dx.get(), rows, cols,
                                false, nullptr);
      return dx.to_host();
    };
    table.add(GradientCase{"softmax/cross_entropy_backward" + tag, shape, x,
                           [=](const std::vector<double>& v) { return ce(v, false)[0]; },
                           [=](const std::vector<double>& v) { return ce(v, true); }, tol, why});
  }
}

OP_CASES(softmax) {
  softmax_rows<float>(table);
  softmax_rows<double>(table);
  softmax_gradient_rows(table);
}

template <class T>
class Softmax : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Softmax, Types);

// ---------------------------------------------------------------------------
// Forward.

// y may alias x.
TYPED_TEST(Softmax, ForwardInPlace) {
  using T = TypeParam;
  const Shape sh{37, 100};
  const size_t n = size_t(sh.rows) * sh.cols;
  const auto x = make_logits<T>(sh.rows, sh.cols, 5);
  std::vector<T> want(n), want_log(n);
  k::softmax_forward_cpu(x.data(), want.data(), sh.rows, sh.cols);
  k::log_softmax_forward_cpu(x.data(), want_log.data(), sh.rows, sh.cols);
  for_each_config(sh, [&](const Config& c) {
    DeviceBuffer<T> d(x);
    k::softmax_forward(d.get(), d.get(), sh.rows, sh.cols, nullptr, c.block, c.strategy);
    EXPECT_TRUE(all_close(d.to_host(), want, softmax_tol<T>(c)));
    d.copy_from_host(x);
    k::log_softmax_forward(d.get(), d.get(), sh.rows, sh.cols, nullptr, c.block, c.strategy);
    EXPECT_TRUE(all_close(d.to_host(), want_log, log_softmax_tol<T>(c)));
  });
}

// Hand-made rows whose exact results are known: constant rows at +-1000 (a
// uniform distribution; exp(1000) overflows and exp(-1000) underflows even
// in double), and one logit 160 above or below the other seven.
TYPED_TEST(Softmax, StableAtExtremeLogits) {
  using T = TypeParam;
  const int cols = 8;
  std::vector<T> x(4 * cols);
  for (int j = 0; j < cols; ++j) {
    x[0 * cols + j] = T(1000);
    x[1 * cols + j] = T(-1000);
    x[2 * cols + j] = j == 3 ? T(80) : T(-80);
    x[3 * cols + j] = j == 3 ? T(-80) : T(80);
  }
  DeviceBuffer<T> d_x(x), d_y(x.size());
  for (RowStrategy st : kStrategies) {
    SCOPED_TRACE(name(st));
    k::softmax_forward(d_x.get(), d_y.get(), 4, cols, nullptr, 256, st);
    const auto y = d_y.to_host();
    const double tiny = double(T(std::exp(-160.0)));  // 0 in float
    for (int j = 0; j < cols; ++j) {
      // exp(0) = 1 exactly, s = 8 exactly: 1/8 to the bit.
      EXPECT_EQ(y[0 * cols + j], T(1) / T(cols));
      EXPECT_EQ(y[1 * cols + j], T(1) / T(cols));
      // exp(-160) / (1 + 7 exp(-160)) = 3.26e-70: within a few ulp (1e-15
      // relative) in double, 0 in float.
      EXPECT_NEAR(double(y[2 * cols + j]), j == 3 ? 1.0 : tiny, 1e-15 * tiny);
      // Row 3: 1 / (7 + exp(-160)) = 1/7 (to 0.5 ulp) and exp(-160) / 7.
      if (j == 3) {
        EXPECT_NEAR(double(y[3 * cols + j]), tiny / 7, 1e-15 * tiny);
      } else {
        EXPECT_EQ(y[3 * cols + j], T(1) / T(7));
      }
    }
    k::log_softmax_forward(d_x.get(), d_y.get(), 4, cols, nullptr, 256, st);
    const auto ly = d_y.to_host();
    // Row 2: 0 at the peak (log s = log(1 + 7e^-160) = 0 to rounding), -160 elsewhere.
    EXPECT_EQ(ly[2 * cols + 3], T(0));
    EXPECT_EQ(ly[2 * cols + 0], T(-160));
    // Row 0: -log 8, within a few ulp of 2.08 (1e-6 covers float's).
    EXPECT_NEAR(double(ly[0]), -std::log(8.0), 1e-6);
  }
}

// A NaN logit is never dropped: its row is all NaN (fmax skips it, but
// exp(NaN - m) reaches the sum), and the other rows are unaffected.
TYPED_TEST(Softmax, NanLogitPoisonsItsRowOnly) {
  using T = TypeParam;
  const Shape sh{3, 40};
  auto x = make_logits<T>(sh.rows, sh.cols, 7);
  x[size_t(sh.cols) + 17] = T(NAN);
  for (RowStrategy st : kStrategies) {
    SCOPED_TRACE(name(st));
    DeviceBuffer<T> d_x(x), d_y(x.size());
    for (bool log : {false, true}) {
      if (log)
        k::log_softmax_forward(d_x.get(), d_y.get(), sh.rows, sh.cols, nullptr, 96, st);
      else
        k::softmax_forward(d_x.get(), d_y.get(), sh.rows, sh.cols, nullptr, 96, st);
      const auto y = d_y.to_host();
      for (int i = 0; i < sh.rows; ++i)
        for (int j = 0; j < sh.cols; ++j)
          EXPECT_EQ(std::isnan(double(y[size_t(i) * sh.cols + j])), i == 1)
              << (log ? "log-softmax" : "softmax") << " row " << i << " col " << j;
    }
  }
}

// ---------------------------------------------------------------------------
// Backward.

// ---------------------------------------------------------------------------
// Cross-entropy.

// The device results of one cross_entropy_forward call.
template <class T>
struct CrossEntropyRun {
  std::vector<T> loss, probs, row_loss;
  int bad_labels;
};

template <class T>
struct CrossEntropyBuffers {
  DeviceBuffer<T> logits, loss, probs, row_loss;
  DeviceBuffer<int> labels, bad;
  int rows, cols;
  CrossEntropyBuffers(const std::vector<T>& x, const std::vector<int>& l, int rows_, int cols_)
      : logits(x), loss(1), probs(x.size()), row_loss(l.size()), labels(l), bad(1),
        rows(rows_), cols(cols_) {}
  CrossEntropyRun<T> forward(int block, RowStrategy st) {
    k::cross_entropy_forward<T>({logits.get(), labels.get(), loss.get(), probs.get(),
                                 row_loss.get(), bad.get()}, rows, cols, nullptr, block, st);
    return {loss.to_host(), probs.to_host(), row_loss.to_host(), bad.to_host()[0]};
  }
};

// Labels outside [0, cols): counted, their rows' losses NaN, so the mean is
// NaN; every other row and every probability is still right; backward gives
// NaN rows for them and the right gradient elsewhere. The counter is reset
// by the launcher (pre-filled with 7 here).
TYPED_TEST(Softmax, CrossEntropyBadLabels) {
  using T = TypeParam;
  const Shape sh{9, 8};
  const size_t n = size_t(sh.rows) * sh.cols;
  const auto x = make_logits<T>(sh.rows, sh.cols, 111);
  std::vector<int> labels = random_ints(size_t(sh.rows), 112, 0, sh.cols - 1);
  labels[1] = -1;
  labels[4] = sh.cols;
  labels[6] = INT_MAX;
  labels[7] = INT_MIN;
  const std::vector<bool> bad_row = {false, true, false, false, true, false, true, true, false};
  std::vector<T> probs(n), row_loss(size_t(sh.rows));
  int bad = 0;
  EXPECT_TRUE(std::isnan(k::cross_entropy_forward_cpu<T>({x.data(), labels.data(), nullptr,
                                                          probs.data(), row_loss.data(), &bad},
                                                         sh.rows, sh.cols)));
  ASSERT_EQ(bad, 4);
  const T dloss = T(1);
  std::vector<T> grad(n);
  k::cross_entropy_backward_cpu(probs.data(), labels.data(), dloss, grad.data(), sh.rows, sh.cols,
                                false);
  CrossEntropyBuffers<T> b(x, labels, sh.rows, sh.cols);
  DeviceBuffer<T> d_dloss(to_vector(dloss)), d_dx(n);
  for_each_config(sh, [&](const Config& c) {
    b.bad.copy_from_host(std::vector<int>{7});
    const auto got = b.forward(c.block, c.strategy);
    EXPECT_EQ(got.bad_labels, 4);
    EXPECT_TRUE(std::isnan(double(got.loss[0])));
    for (int i = 0; i < sh.rows; ++i)
      EXPECT_EQ(std::isnan(double(got.row_loss[size_t(i)])), bad_row[size_t(i)]) << "row " << i;
    Tolerance nan_equal = log_softmax_tol<T>(c);
    nan_equal.nan_equal = true;
    EXPECT_TRUE(all_close(got.row_loss, row_loss, nan_equal));
    EXPECT_TRUE(all_close(got.probs, probs, softmax_tol<T>(c)));

    k::cross_entropy_backward(b.probs.get(), b.labels.get(), d_dloss.get(), d_dx.get(), sh.rows,
                              sh.cols, false, nullptr, c.block);
    nan_equal = cross_entropy_backward_tol<T>();
    nan_equal.nan_equal = true;
    EXPECT_TRUE(all_close(d_dx.to_host(), grad, nan_equal));
  });
}

// ---------------------------------------------------------------------------
// Determinism: every output has the same bits on a second run and under
// every thread order (no floating-point atomics; fixed reduction trees). On
// the thread and warp paths a row's team depends on cols only, so the bits
// do not depend on the block size either.

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TYPED_TEST(Softmax, Deterministic) {
  using T = TypeParam;
  const Shape sh{257, 1000};
  const size_t n = size_t(sh.rows) * sh.cols;
  const auto x = make_logits<T>(sh.rows, sh.cols, 121);
  const auto dy = make_uniform<T>(n, 122);
  const auto labels = random_ints(size_t(sh.rows), 123, 0, sh.cols - 1);
  CrossEntropyBuffers<T> b(x, labels, sh.rows, sh.cols);
  DeviceBuffer<T> d_y(n), d_dx(n), d_dy(dy), d_one(to_vector(T(1)));
  for (RowStrategy st : kStrategies) {
    std::vector<std::vector<unsigned char>> first_block;
    for (int block : kBlocks) {
      SCOPED_TRACE(std::string(name(st)) + " block " + std::to_string(block));
      // Everything one configuration computes, as bytes.
      auto run = [&] {
        std::vector<std::vector<unsigned char>> out;
        k::softmax_forward(b.logits.get(), d_y.get(), sh.rows, sh.cols, nullptr, block, st);
        out.push_back(bits(d_y.to_host()));
        k::softmax_backward(d_y.get(), d_dy.get(), d_dx.get(), sh.rows, sh.cols, false, nullptr,
                            block, st);
        out.push_back(bits(d_dx.to_host()));
        k::log_softmax_forward(b.logits.get(), d_y.get(), sh.rows, sh.cols, nullptr, block, st);
        out.push_back(bits(d_y.to_host()));
        k::log_softmax_backward(d_y.get(), d_dy.get(), d_dx.get(), sh.rows, sh.cols, false,
                                nullptr, block, st);
        out.push_back(bits(d_dx.to_host()));
        const auto ce = b.forward(block, st);
        out.push_back(bits(ce.loss));
        out.push_back(bits(ce.probs));
        out.push_back(bits(ce.row_loss));
        k::cross_entropy_backward(b.probs.get(), b.labels.get(), d_one.get(), d_dx.get(), sh.rows,
                                  sh.cols, false, nullptr, block);
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
      if (first_block.empty()) {
        first_block = first;
      } else if (st != RowStrategy::block) {
        for (size_t i = 0; i < first.size(); ++i)
          EXPECT_EQ(first[i], first_block[i]) << "output " << i << " differs between block sizes";
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Launch shapes beyond the main sweep.

// 100k rows (a large evaluation batch of frames) at cols = 8 (classes) and
// 64 (softmax over time), with the automatic strategy.
TYPED_TEST(Softmax, LargeBatch) {
  using T = TypeParam;
  for (int cols : {8, 64}) {
    const Shape sh{100003, cols};
    const Config c{cols, RowStrategy::automatic, 256};
    const size_t n = size_t(sh.rows) * sh.cols;
    const auto x = make_logits<T>(sh.rows, sh.cols, 141 + cols);
    const auto labels = random_ints(size_t(sh.rows), 142, 0, sh.cols - 1);
    std::vector<T> probs(n), row_loss(size_t(sh.rows)), grad(n);
    int bad = -1;
    const double loss = k::cross_entropy_forward_cpu<T>({x.data(), labels.data(), nullptr,
                                                         probs.data(), row_loss.data(), &bad},
                                                        sh.rows, sh.cols);
    k::cross_entropy_backward_cpu(probs.data(), labels.data(), T(1), grad.data(), sh.rows,
                                  sh.cols, false);
    CrossEntropyBuffers<T> b(x, labels, sh.rows, sh.cols);
    const auto got = b.forward(c.block, c.strategy);
    EXPECT_EQ(got.bad_labels, 0);
    EXPECT_TRUE(all_close(got.loss, std::vector<double>{loss}, mean_loss_tol<T>(c, sh.rows)));
    EXPECT_TRUE(all_close(got.probs, probs, softmax_tol<T>(c)));
    DeviceBuffer<T> d_one(to_vector(T(1))), d_dx(n);
    k::cross_entropy_backward(b.probs.get(), b.labels.get(), d_one.get(), d_dx.get(), sh.rows,
                              sh.cols, false, nullptr);
    EXPECT_TRUE(all_close(d_dx.to_host(), grad, cross_entropy_backward_tol<T>()));
  }
}

// ---------------------------------------------------------------------------
// Arguments.

TEST(SoftmaxArgs, RejectsBadShapesAndBlocks) {
  DeviceBuffer<float> a(64), b(64), c(64), l1(1), pr(64), rl(8);
  DeviceBuffer<int> lab(8), bad(1);
  const auto fwd = [&](int rows, int cols, int block) {
    k::softmax_forward(a.get(), b.get(), rows, cols, nullptr, block);
  };
  EXPECT_THROW(fwd(-1, 8, 256), std::invalid_argument);
  EXPECT_THROW(fwd(2, 0, 256), std::invalid_argument);
  EXPECT_THROW(fwd(2, -3, 256), std::invalid_argument);
  EXPECT_THROW(fwd(0, 0, 256), std::invalid_argument);  // checked even with no rows
  for (int block : {0, 16, 48, 100, 1056, 2048, -32})
    EXPECT_THROW(fwd(2, 8, block), std::invalid_argument) << "block " << block;
  EXPECT_NO_THROW(fwd(2, 8, 32));
  EXPECT_NO_THROW(fwd(2, 8, 1024));
  EXPECT_THROW(k::log_softmax_forward(a.get(), b.get(), 2, 8, nullptr, 48), std::invalid_argument);
  EXPECT_THROW(k::softmax_backward(a.get(), b.get(), c.get(), 2, 0, false, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::log_softmax_backward(a.get(), b.get(), c.get(), -2, 8, true, nullptr),
               std::invalid_argument);
  // Cross-entropy needs at least one row: the mean over none is undefined.
  EXPECT_THROW(k::cross_entropy_forward<float>({a.get(), lab.get(), l1.get(), pr.get(), rl.get(),
                                                bad.get()}, 0, 8, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::cross_entropy_forward<float>({a.get(), lab.get(), l1.get(), pr.get(), rl.get(),
                                                bad.get()}, 8, 8, nullptr, 33),
               std::invalid_argument);
  EXPECT_THROW(k::cross_entropy_backward(pr.get(), lab.get(), l1.get(), c.get(), 0, 8, false,
                                         nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::cross_entropy_backward(pr.get(), lab.get(), l1.get(), c.get(), 8, 8, false,
                                         nullptr, 1000),
               std::invalid_argument);
  // The message names the launcher, the argument and the value.
  try {
    fwd(2, 8, 48);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "softmax_forward: block must be a multiple of 32 in [32, 1024], not 48");
  }
  try {
    fwd(2, 0, 256);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "softmax_forward: cols must be >= 1, not 0");
  }
}

TEST(SoftmaxArgs, RejectsNullPointers) {
  DeviceBuffer<float> a(64), b(64), l1(1), pr(64), rl(8);
  DeviceBuffer<int> lab(8), bad(1);
  EXPECT_THROW(k::softmax_forward<float>(nullptr, b.get(), 2, 8, nullptr), std::invalid_argument);
  EXPECT_THROW(k::log_softmax_forward<float>(a.get(), nullptr, 2, 8, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::softmax_backward<float>(a.get(), nullptr, b.get(), 2, 8, false, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::log_softmax_backward<float>(a.get(), b.get(), nullptr, 2, 8, false, nullptr),
               std::invalid_argument);
  try {
    k::cross_entropy_forward<float>({a.get(), lab.get(), l1.get(), pr.get(), rl.get(), nullptr}, 8,
                                    8, nullptr);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "cross_entropy_forward: d_bad_labels is null");
  }
  EXPECT_THROW(k::cross_entropy_backward<float>(pr.get(), nullptr, l1.get(), b.get(), 8, 8, false,
                                                nullptr),
               std::invalid_argument);
}

// rows = 0 is an empty batch: nothing to do, nothing touched (null pointers
// are fine).
TEST(SoftmaxArgs, ZeroRowsIsANoOp) {
  EXPECT_NO_THROW(k::softmax_forward<double>(nullptr, nullptr, 0, 8, nullptr));
  EXPECT_NO_THROW(k::log_softmax_forward<float>(nullptr, nullptr, 0, 8, nullptr));
  EXPECT_NO_THROW(k::softmax_backward<float>(nullptr, nullptr, nullptr, 0, 8, true, nullptr));
  EXPECT_NO_THROW(k::log_softmax_backward<double>(nullptr, nullptr, nullptr, 0, 8, false, nullptr));
}

// The cost formulas: a sanity check of their scaling, for benchmarks.
TEST(SoftmaxCost, ScalesWithSize) {
  const auto c = k::softmax_forward_cost(10, 8);
  EXPECT_EQ(c.bytes, 10 * 8 * 4 * 2);
  EXPECT_EQ(k::softmax_forward_cost(20, 8, 8).bytes, 4 * c.bytes);
  EXPECT_GT(k::softmax_backward_cost(10, 8, true).bytes,
            k::softmax_backward_cost(10, 8, false).bytes);
  EXPECT_GT(k::cross_entropy_forward_cost(10, 8).flops, c.flops);
}

}  // namespace
