// conv2d (kernels/conv2d.cuh) against its CPU references, in float and
// double: v1_direct and v2_im2col, forward (with and without bias) and the
// three gradients (assigning and accumulating into pre-filled buffers), at
// odd shapes (kernels 1x1, 3x3, 2x3, 3x2, strides 1 to 3, pads 0 to 2, one
// input channel, windows entirely in the padding, pixels no window reads),
// two block sizes, two workspace sizes (one image per chunk, several), three
// thread orders. Also: skipping gradients, finite differences in double,
// determinism, model-sized shapes, argument errors, workspace sizes, costs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/conv2d.cuh"
#include "kernels/grid.h"
#include "kernels/device_buffer.h"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::testing::random_nonzero;

namespace k = timbre::kernels;
using k::Conv2dShape;
using timbre::DeviceBuffer;
using timbre::testing::unit_roundoff;
using timbre::testing::widen;
using timbre::testing::same_bits;
using timbre::testing::poison;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::Tolerance;
using timbre::testing::OpTable;
using timbre::testing::dtype_name;
using timbre::testing::once;

// ---------------------------------------------------------------------------
// Tolerances.
//
// Every output of every pass is a sum of L products (forward: C*R*S, plus
// the bias; dx: at most K*R*S; dw and db: N*P*Q terms), plus the old value
// when accumulating. The kernels sum in T in orders we do not control on a
// GPU (cuBLAS picks its own blocking, split-k, fma), so the tolerance is the
// bound that holds for every order: a sum of L rounded products computed
// in any order is within gamma_L * sum|terms| of the exact value (Higham,
// "Accuracy and Stability of Numerical Algorithms", 3.1; gamma_L = L u / (1
// - L u) ~ L u, u = 2^-24 in float, 2^-53 in double; an fma only removes
// roundings). sum|terms| is computed exactly as it is defined: the same CPU
// reference run on |x|, |w|, |dy|, ... (every pass is a sum of products, so
// the reference on absolute values is sum|terms| element by element). We
// take its maximum over the output as the atol, and double the bound: the
// double reference has the same bound, which matters when T = double. A
// wrong index or a missing term is off by a whole product (|term| >= 1e-6
// and typically 0.25 with these inputs), far outside it. These bounds are
// worst cases; the largest errors seen are 5-10 times smaller.
template <class T>
Tolerance sum_bound(long long terms, const std::vector<double>& magnitude) {
  double m = 0;
  for (double v : magnitude) m = std::max(m, v);
  return Tolerance{2.0 * double(terms) * unit_roundoff<T> * m, 0};
}

// ---------------------------------------------------------------------------
template <class T>
std::vector<double> absolute(const std::vector<T>& v) {
  std::vector<double> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(double(v[i]));
  return a;
}
std::vector<double> plus_abs(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += std::fabs(b[i]);
  return a;
}

// One cuBLAS handle for the whole test program, on the default stream.
cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    CUBLAS_CHECK(cublasCreate(&created));
    return created;
  }();
  return h;
}

// ---------------------------------------------------------------------------
// Shapes: Conv2dShape{N, C, H, W, K, R, S, stride_h, stride_w, pad_h, pad_w}.
struct Case {
  const char* name;
  Conv2dShape shape;
};
const Case kCases[] = {
    {"3x3 pad 1", {3, 5, 7, 9, 4, 3, 3, 1, 1, 1, 1}},
    {"3x3 stride 2 pad 1", {3, 5, 7, 9, 4, 3, 3, 2, 2, 1, 1}},
    {"3x3 no padding", {3, 5, 7, 9, 4, 3, 3, 1, 1, 0, 0}},
    {"1x1 pointwise (no im2col)", {3, 5, 7, 9, 4, 1, 1, 1, 1, 0, 0}},
    {"1x1 stride 2", {3, 5, 7, 9, 4, 1, 1, 2, 2, 0, 0}},
    {"2x3 stride (2, 1) pad (0, 1)", {3, 5, 7, 9, 4, 2, 3, 2, 1, 0, 1}},
    {"3x2 stride (1, 2) pad (2, 2)", {2, 3, 4, 5, 3, 3, 2, 1, 2, 2, 2}},
    {"one input channel, 3x3 pad 1", {2, 1, 9, 7, 6, 3, 3, 1, 1, 1, 1}},
    // Padding wider than the kernel: the border outputs see only padding
    // (y = b there; their dy reaches no pixel).
    {"1x1 pad 1 (windows in the padding)", {2, 3, 5, 6, 4, 1, 1, 1, 1, 1, 1}},
    // The kernel covers the whole padded input: P = Q = 1.
    {"kernel = padded input", {2, 3, 4, 5, 2, 6, 7, 1, 1, 1, 1}},
    // Stride 3 > kernel 2: rows 2, 5, 8 and columns 2, 5, 8, 9 are never read,
    // so their dx is 0 (which the kernel must still write).
    {"2x2 stride 3 (unread pixels)", {2, 2, 11, 10, 3, 2, 2, 3, 3, 0, 0}},
    {"N = 1, K = 1", {1, 4, 6, 5, 1, 3, 3, 2, 1, 1, 0}},
};

constexpr int kBlocks[] = {64, 256};

// Random inputs and pre-filled gradients for one shape.
template <class T>
struct Problem {
  Conv2dShape sh;
  std::vector<T> x, w, b, dy, dx0, dw0, db0;
  Problem(const Conv2dShape& s, uint64_t seed)
      : sh(s),
        x(random_nonzero<T>(size_t(s.x_size()), seed)),
        w(random_nonzero<T>(size_t(s.w_size()), seed + 1)),
        b(random_nonzero<T>(size_t(s.K), seed + 2)),
        dy(random_nonzero<T>(size_t(s.y_size()), seed + 3)),
        dx0(random_nonzero<T>(size_t(s.x_size()), seed + 4)),
        dw0(random_nonzero<T>(size_t(s.w_size()), seed + 5)),
        db0(random_nonzero<T>(size_t(s.K), seed + 6)) {}

  // Workspace sizes to try: one image per chunk, and N - 1 images (so that,
  // for N = 3, the batch splits into a chunk of 2 and a chunk of 1).
  std::vector<size_t> workspaces() const {
    return {k::conv2d_workspace_bytes<T>(sh, 1),
            k::conv2d_workspace_bytes<T>(sh, std::max(1, sh.N - 1))};
  }
};

// Double references on the inputs widened to double.
std::vector<double> forward_ref(const Conv2dShape& sh, const std::vector<double>& x,
                                const std::vector<double>& w, const std::vector<double>* b) {
  std::vector<double> y(size_t(sh.y_size()));
  k::conv2d_forward_cpu<double>(sh, x.data(), w.data(), b ? b->data() : nullptr, y.data());
  return y;
}
std::vector<double> data_ref(const Conv2dShape& sh, const std::vector<double>& w,
                             const std::vector<double>& dy, std::vector<double> dx,
                             bool accumulate) {
  k::conv2d_backward_data_cpu<double>(sh, w.data(), dy.data(), dx.data(), accumulate);
  return dx;
}
std::vector<double> filter_ref(const Conv2dShape& sh, const std::vector<double>& x,
                               const std::vector<double>& dy, std::vector<double> dw,
                               bool accumulate) {
  k::conv2d_backward_filter_cpu<double>(sh, x.data(), dy.data(), dw.data(), accumulate);
  return dw;
}
std::vector<double> bias_ref(const Conv2dShape& sh, const std::vector<double>& dy,
                             std::vector<double> db, bool accumulate) {
  k::conv2d_backward_bias_cpu<double>(sh, dy.data(), db.data(), accumulate);
  return db;
}

// Terms per output of each pass.
long long forward_terms(const Conv2dShape& s) { return s.col_rows() + 1; }
long long data_terms(const Conv2dShape& s) { return (long long)s.K * s.R * s.S + 1; }
long long filter_terms(const Conv2dShape& s) { return s.N * s.col_cols() + 1; }

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): v1 (direct) and v2 (im2col +
// cuBLAS) of forward (with and without bias), dx, dw and db (assigning over
// NaN and accumulating over random values), for every case of kCases, float
// and double, both block sizes; v2 with two workspace sizes (one image per
// chunk, N - 1 images) and, besides the launch shapes of both defaults rows,
// three columns per thread for im2col and col2im; and finite differences of
// every backward in double.

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

// Runs f with im2col's and col2im's columns per thread forced to `span` (0:
// the defaults row's choice).
template <class F>
auto with_span(int span, F&& f) {
  k::set_columns_per_thread(span);
  auto r = f();
  k::set_columns_per_thread(0);
  return r;
}

enum class Pass { forward, data, filter, bias };

template <class T>
void conv_rows(OpTable& table, const Case& c, int index) {
  using timbre::testing::OpCase;
  const Conv2dShape sh = c.shape;
  const std::string shape = std::string(c.name) + ": " + sh.str();
  for (Pass pass : {Pass::forward, Pass::data, Pass::filter, Pass::bias}) {
    const uint64_t seed = uint64_t(100 * (int(pass) + 1) + 10 * (index + 1));
    const auto pr = once([=] { return Problem<T>(sh, seed); });
    const char* pass_name[] = {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter",
                               "conv2d_backward_bias"};
    // flag: bias (forward) or accumulate (backward).
    for (bool flag : {false, true}) {
      // The reference in double, and the tolerance from the same reference
      // on absolute values (sum|terms| per output).
      const auto ref = once([=] {
        const Problem<T>& p = pr();
        switch (pass) {
          case Pass::forward: {
            const auto b = widen(p.b);
            return forward_ref(sh, widen(p.x), widen(p.w), flag ? &b : nullptr);
          }
          case Pass::data: return data_ref(sh, widen(p.w), widen(p.dy), widen(p.dx0), flag);
          case Pass::filter: return filter_ref(sh, widen(p.x), widen(p.dy), widen(p.dw0), flag);
          default: return bias_ref(sh, widen(p.dy), widen(p.db0), flag);
        }
      });
      const auto tol = once([=] {
        const Problem<T>& p = pr();
        switch (pass) {
          case Pass::forward: {
            const auto ab = absolute(p.b);  // the magnitude with the bias bounds both
            return sum_bound<T>(forward_terms(sh),
                                forward_ref(sh, absolute(p.x), absolute(p.w), &ab));
          }
          case Pass::data: {
            const auto dx0 = widen(p.dx0);
            const auto mag = data_ref(sh, absolute(p.w), absolute(p.dy), dx0, false);
            return sum_bound<T>(data_terms(sh), flag ? plus_abs(mag, dx0) : mag);
          }
          case Pass::filter: {
            const auto dw0 = widen(p.dw0);
            const auto mag = filter_ref(sh, absolute(p.x), absolute(p.dy), dw0, false);
            return sum_bound<T>(filter_terms(sh), flag ? plus_abs(mag, dw0) : mag);
          }
          default: {
            const auto db0 = widen(p.db0);
            const auto mag = bias_ref(sh, absolute(p.dy), db0, false);
            return sum_bound<T>(filter_terms(sh), flag ? plus_abs(mag, db0) : mag);
          }
        }
      });
      // version 1, or 2 with `images` per workspace chunk and `span`.
      auto run = [=](bool v2, int images, int span, int block) {
        const Problem<T>& p = pr();
        const size_t ws = k::conv2d_workspace_bytes<T>(sh, images);
        DeviceBuffer<T> d_ws(ws / sizeof(T));
        return with_span(span, [&] {
          switch (pass) {
            case Pass::forward: {
              DeviceBuffer<T> d_x(p.x), d_w(p.w), d_b(p.b), d_y(size_t(sh.y_size()));
              poison(d_y);
              const T* bp = flag ? d_b.get() : nullptr;
              if (v2)
                k::conv2d_forward_v2_im2col<T>(sh, d_x.get(), d_w.get(), bp, d_y.get(),
                                               d_ws.get(), ws, handle(), nullptr, block);
              else
                k::conv2d_forward_v1_direct<T>(sh, d_x.get(), d_w.get(), bp, d_y.get(), nullptr,
                                               block);
              return widen(d_y.to_host());
            }
            case Pass::data: {
              DeviceBuffer<T> d_w(p.w), d_dy(p.dy), d_dx(p.dx0);
              if (!flag) poison(d_dx);
              if (v2)
                k::conv2d_backward_data_v2_im2col<T>(sh, d_w.get(), d_dy.get(), d_dx.get(), flag,
                                                     d_ws.get(), ws, handle(), nullptr, block);
              else
                k::conv2d_backward_data_v1_direct<T>(sh, d_w.get(), d_dy.get(), d_dx.get(), flag,
                                                     nullptr, block);
              return widen(d_dx.to_host());
            }
            case Pass::filter: {
              DeviceBuffer<T> d_x(p.x), d_dy(p.dy), d_dw(p.dw0);
              if (!flag) poison(d_dw);
              if (v2)
                k::conv2d_backward_filter_v2_im2col<T>(sh, d_x.get(), d_dy.get(), d_dw.get(),
                                                       flag, d_ws.get(), ws, handle(), nullptr,
                                                       block);
              else
                k::conv2d_backward_filter_v1_direct<T>(sh, d_x.get(), d_dy.get(), d_dw.get(),
                                                       flag, nullptr, block);
              return widen(d_dw.to_host());
            }
            default: {
              DeviceBuffer<T> d_dy(p.dy), d_db(p.db0);
              if (!flag) poison(d_db);
              if (v2)
                k::conv2d_backward_bias_v2_reduce<T>(sh, d_dy.get(), d_db.get(), flag, nullptr,
                                                     block);
              else
                k::conv2d_backward_bias_v1_direct<T>(sh, d_dy.get(), d_db.get(), flag, nullptr,
                                                     block);
              return widen(d_db.to_host());
            }
          }
        });
      };
      const std::string tag =
          pass == Pass::forward ? (flag ? "/bias" : "") : (flag ? "/accumulate" : "");
      const std::string why =
          "a sum of L products in any order: 2 L u sum|terms| (Higham 3.1), the maximum over "
          "the output";
      auto add = [&](std::string op, std::function<std::vector<double>(int)> r) {
        table.add(OpCase{std::move(op), dtype_name<T>(), shape, kBlockList, {}, why, std::move(r),
                         [=] { return ref(); }, [=](int) { return tol(); }});
      };
      const std::string base = std::string("conv2d/") + pass_name[int(pass)];
      add(base + "_v1_direct" + tag, [=](int block) { return run(false, 1, 0, block); });
      if (pass == Pass::bias) {
        add(base + "_v2_reduce" + tag, [=](int block) { return run(true, 1, 0, block); });
        continue;
      }
      // Workspaces of one image and of N - 1 images (N = 3: chunks of 2 and 1).
      for (int images : {1, std::max(1, sh.N - 1)}) {
        const std::string v2 = base + "_v2_im2col" + tag + "/images=" + std::to_string(images);
        add(v2, [=](int block) { return run(true, images, 0, block); });
        // im2col's (forward) and col2im's (dx) columns per thread: 3.
        if (pass != Pass::filter)
          add(v2 + "/span=3", [=](int block) { return run(true, images, 3, block); });
      }
    }
  }
}

// A plane of P*Q = 4096 outputs: the bias reduction's threads each sum many
// terms, and every warp and lane of a 1024-thread block takes part.
template <class T>
void large_plane_rows(OpTable& table) {
  const Conv2dShape sh{3, 1, 64, 64, 5, 1, 1, 1, 1, 0, 0};
  const auto pr = once([=] { return Problem<T>(sh, 450); });
  table.add(timbre::testing::OpCase{
      "conv2d/conv2d_backward_bias_v2_reduce/accumulate", dtype_name<T>(), "large plane " + sh.str(),
      {32, 96, 1024}, {}, "a sum of N P Q terms in any order: 2 L u sum|terms|",
      [=](int block) {
        DeviceBuffer<T> d_dy(pr().dy), d_db(pr().db0);
        k::conv2d_backward_bias_v2_reduce<T>(sh, d_dy.get(), d_db.get(), true, nullptr, block);
        return widen(d_db.to_host());
      },
      [=] { return bias_ref(sh, widen(pr().dy), widen(pr().db0), true); },
      [=](int) {
        const auto db0 = widen(pr().db0);
        return sum_bound<T>(filter_terms(sh),
                            plus_abs(bias_ref(sh, absolute(pr().dy), db0, false), db0));
      }});
}

// Finite differences, in double: L = sum_i g_i y_i(x, w, b) with fixed random
// g, so dL/dx = backward_data(dy = g), dL/dw = backward_filter, dL/db =
// backward_bias. L is linear in each of x, w, b, so the central difference
// (h = 1e-6) has no truncation error; its rounding error is about
// u*|L|/h ~ 1e-16 * 10 / 1e-6 = 1e-9. Tolerance 1e-6 + 1e-5*|ref| (the
// engine's gradcheck): a wrong rule is off by O(0.1) or more. This checks
// the backward launchers against the forward one, independently of the CPU
// references.
void conv_gradient_rows(OpTable& table) {
  using timbre::testing::GradientCase;
  const Conv2dShape shapes[] = {{2, 2, 5, 4, 3, 3, 2, 2, 1, 1, 1},
                                {2, 3, 4, 4, 2, 1, 1, 1, 1, 0, 0},
                                {1, 2, 6, 5, 2, 2, 3, 3, 2, 2, 0}};
  for (const Conv2dShape& sh : shapes) {
    const Problem<double> pr(sh, 600);
    const size_t ws = k::conv2d_workspace_bytes<double>(sh, sh.N);
    // L at (x, w, b) through the v2 forward.
    auto loss = [=](const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b) {
      DeviceBuffer<double> d_x(x), d_w(w), d_b(b), d_y(size_t(sh.y_size())),
          d_ws(ws / sizeof(double));
      k::conv2d_forward_v2_im2col<double>(sh, d_x.get(), d_w.get(), d_b.get(), d_y.get(),
                                          d_ws.get(), ws, handle(), nullptr);
      return timbre::testing::dot(d_y.to_host(), pr.dy);
    };
    // dL/d(param) from version 1 or 2 at (x, w, b) = pr's.
    auto grad = [=](int param, bool v2) {
      DeviceBuffer<double> d_x(pr.x), d_w(pr.w), d_g(pr.dy), d_ws(ws / sizeof(double)),
          d_dx(pr.x.size()), d_dw(pr.w.size()), d_db(pr.b.size());
      if (v2) {
        k::conv2d_backward_v2_im2col<double>(sh, {d_x.get(), d_w.get(), d_g.get(), d_dx.get(),
                                                  d_dw.get(), d_db.get()}, {false, false, false},
                                             d_ws.get(), ws, handle(), nullptr);
      } else {
        k::conv2d_backward_data_v1_direct<double>(sh, d_w.get(), d_g.get(), d_dx.get(), false,
                                                  nullptr);
        k::conv2d_backward_filter_v1_direct<double>(sh, d_x.get(), d_g.get(), d_dw.get(), false,
                                                    nullptr);
        k::conv2d_backward_bias_v1_direct<double>(sh, d_g.get(), d_db.get(), false, nullptr);
      }
      return (param == 0 ? d_dx : param == 1 ? d_dw : d_db).to_host();
    };
    const char* names[] = {"dx", "dw", "db"};
    for (int param = 0; param < 3; ++param)
      for (bool v2 : {false, true})
        table.add(GradientCase{
            std::string("conv2d/") + (v2 ? "conv2d_backward_v2_im2col/" : "conv2d_backward_v1_direct/") +
                names[param],
            sh.str(), param == 0 ? pr.x : param == 1 ? pr.w : pr.b,
            [=](const std::vector<double>& v) {
              return loss(param == 0 ? v : pr.x, param == 1 ? v : pr.w, param == 2 ? v : pr.b);
            },
            [=](const std::vector<double>&) { return grad(param, v2); }, Tolerance{1e-6, 1e-5},
            "L is linear in each input: no truncation error; rounding ~1e-9", 1e-6});
  }
}

OP_CASES(conv2d) {
  for (int i = 0; i < int(std::size(kCases)); ++i) {
    conv_rows<float>(table, kCases[i], i);
    conv_rows<double>(table, kCases[i], i);
  }
  large_plane_rows<float>(table);
  large_plane_rows<double>(table);
  conv_gradient_rows(table);
}

template <class T>
class Conv2dTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Conv2dTest, Types);

// ---------------------------------------------------------------------------
// The combined backward: any subset of the gradients, each with its own
// accumulate flag; a skipped gradient's buffer keeps its bits, and the
// input it alone needs may be null.
template <class T>
void combined_backward(const Conv2dShape& sh) {
  SCOPED_TRACE(sh.str());
  const Problem<T> pr(sh, 500);
  const auto x = widen(pr.x), w = widen(pr.w), dy = widen(pr.dy);
  const auto dx0 = widen(pr.dx0), dw0 = widen(pr.dw0), db0 = widen(pr.db0);
  const auto ax = absolute(pr.x), aw = absolute(pr.w), ady = absolute(pr.dy);
  const Tolerance tol_dx = sum_bound<T>(data_terms(sh), plus_abs(data_ref(sh, aw, ady, dx0, false), dx0));
  const Tolerance tol_dw =
      sum_bound<T>(filter_terms(sh), plus_abs(filter_ref(sh, ax, ady, dw0, false), dw0));
  const Tolerance tol_db =
      sum_bound<T>(filter_terms(sh), plus_abs(bias_ref(sh, ady, db0, false), db0));
  const size_t ws = k::conv2d_workspace_bytes<T>(sh, 2);
  DeviceBuffer<T> d_x(pr.x), d_w(pr.w), d_dy(pr.dy), d_ws(ws / sizeof(T));
  DeviceBuffer<T> d_dx(pr.dx0), d_dw(pr.dw0), d_db(pr.db0);
  for (int mask = 0; mask < 8; ++mask) {
    const bool want_dx = mask & 1, want_dw = mask & 2, want_db = mask & 4;
    SCOPED_TRACE("dx " + std::to_string(want_dx) + " dw " + std::to_string(want_dw) + " db " +
                 std::to_string(want_db));
    // Flags differ per gradient: dx assigns, dw and db accumulate (the engine's use).
    d_dx.copy_from_host(pr.dx0);
    d_dw.copy_from_host(pr.dw0);
    d_db.copy_from_host(pr.db0);
    k::conv2d_backward_v2_im2col<T>(sh, {want_dw ? d_x.get() : nullptr,
                                         want_dx ? d_w.get() : nullptr, d_dy.get(),
                                         want_dx ? d_dx.get() : nullptr,
                                         want_dw ? d_dw.get() : nullptr,
                                         want_db ? d_db.get() : nullptr}, {false, true, true},
                                    d_ws.get(), ws, handle(), nullptr);
    if (want_dx)
      EXPECT_TRUE(all_close(d_dx.to_host(), data_ref(sh, w, dy, dx0, false), tol_dx));
    else
      EXPECT_TRUE(same_bits(d_dx.to_host(), pr.dx0));
    if (want_dw)
      EXPECT_TRUE(all_close(d_dw.to_host(), filter_ref(sh, x, dy, dw0, true), tol_dw));
    else
      EXPECT_TRUE(same_bits(d_dw.to_host(), pr.dw0));
    if (want_db)
      EXPECT_TRUE(all_close(d_db.to_host(), bias_ref(sh, dy, db0, true), tol_db));
    else
      EXPECT_TRUE(same_bits(d_db.to_host(), pr.db0));
  }
}

// A 3x3 layer (db from the column matrix's ones row in dw's GEMM) and a
// pointwise one (db's partials from a reduction into the same slots), each
// in chunks of 2 and 1 images.
TYPED_TEST(Conv2dTest, CombinedBackwardComputesTheRequestedGradients) {
  using T = TypeParam;
  for (const Conv2dShape& sh : {Conv2dShape{3, 5, 7, 9, 4, 3, 3, 2, 1, 1, 1},
                                Conv2dShape{3, 5, 7, 9, 4, 1, 1, 1, 1, 0, 0}})
    combined_backward<T>(sh);
}

// ---------------------------------------------------------------------------
// Determinism: the same inputs give the same bits, run after run and under
// every thread order (no atomics; every sum has a fixed order). dw is also
// independent of the workspace size: whatever the chunking, it is the same
// sequence of GEMMs (one per image, in order), on a GPU as well.
TEST(Conv2dDeterminism, SameBitsEveryRun) {
  const Conv2dShape sh{4, 16, 20, 18, 8, 3, 3, 1, 1, 1, 1};
  const Problem<float> pr(sh, 700);
  const size_t ws = k::conv2d_workspace_bytes<float>(sh, 2);
  DeviceBuffer<float> d_x(pr.x), d_w(pr.w), d_b(pr.b), d_dy(pr.dy), d_ws(ws / sizeof(float));
  DeviceBuffer<float> d_y(size_t(sh.y_size())), d_dx(size_t(sh.x_size())),
      d_dw(size_t(sh.w_size())), d_db(size_t(sh.K));
  auto run_v2 = [&](size_t workspace) {
    k::conv2d_forward_v2_im2col<float>(sh, d_x.get(), d_w.get(), d_b.get(), d_y.get(), d_ws.get(),
                                       workspace, handle(), nullptr);
    k::conv2d_backward_v2_im2col<float>(sh, {d_x.get(), d_w.get(), d_dy.get(), d_dx.get(),
                                             d_dw.get(), d_db.get()}, {false, false, false},
                                        d_ws.get(), workspace, handle(), nullptr);
    return std::vector<std::vector<float>>{d_y.to_host(), d_dx.to_host(), d_dw.to_host(),
                                           d_db.to_host()};
  };
  auto run_v1 = [&] {
    k::conv2d_forward_v1_direct<float>(sh, d_x.get(), d_w.get(), d_b.get(), d_y.get(), nullptr);
    k::conv2d_backward_data_v1_direct<float>(sh, d_w.get(), d_dy.get(), d_dx.get(), false,
                                             nullptr);
    k::conv2d_backward_filter_v1_direct<float>(sh, d_x.get(), d_dy.get(), d_dw.get(), false,
                                               nullptr);
    k::conv2d_backward_bias_v1_direct<float>(sh, d_dy.get(), d_db.get(), false, nullptr);
    return std::vector<std::vector<float>>{d_y.to_host(), d_dx.to_host(), d_dw.to_host(),
                                           d_db.to_host()};
  };
  const auto first_v2 = run_v2(ws), first_v1 = run_v1();
  const char* names[] = {"y", "dx", "dw", "db"};
  for_each_thread_order([&] {
    for (int rep = 0; rep < 2; ++rep) {
      const auto again_v2 = run_v2(ws), again_v1 = run_v1();
      for (int i = 0; i < 4; ++i) {
        EXPECT_TRUE(same_bits(again_v2[i], first_v2[i])) << "v2 " << names[i];
        EXPECT_TRUE(same_bits(again_v1[i], first_v1[i])) << "v1 " << names[i];
      }
    }
  });
  // Another chunk size: y and dx have the same bits (each chunk's GEMMs
  // and kernels see the same per-image sums); dw's and db's sums over
  // images are grouped by slot (db rides in dw's slots, the column
  // matrix's ones row), so only their rounding may differ: 1e-4 relative
  // is some 800 float ulps, far above the few ulps a regrouping of 4
  // images moves a sum, far below any error in which terms are summed.
  const auto one_image = run_v2(k::conv2d_workspace_bytes<float>(sh, 1));
  for (int i : {0, 1}) EXPECT_TRUE(same_bits(one_image[i], first_v2[i])) << names[i];
  for (int i : {2, 3}) {
    const auto a = widen(one_image[size_t(i)]), b = widen(first_v2[size_t(i)]);
    for (size_t e = 0; e < a.size(); ++e)
      EXPECT_NEAR(a[e], b[e], 1e-4 * (1 + std::abs(b[e]))) << names[i] << " element " << e;
  }
  // The GPU's launch shape (one column per thread) and a span of 5 give the
  // same bits as the backend's choice: each pixel sums its taps in one order.
  for (int span : {1, 5}) {
    k::set_columns_per_thread(span);
    const auto other = run_v2(ws);
    k::set_columns_per_thread(0);
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(same_bits(other[i], first_v2[i])) << names[i] << ", span " << span;
  }
}

// ---------------------------------------------------------------------------
// The model's layer kinds (3x3 pad 1 and 1x1 on 128x128 inputs, channels
// 1 -> 16 -> 32 -> ...), at a size the CPU reference can afford: 32x32
// inputs, batch 2. Float, v2 only (the engine's path), every pass.
TEST(Conv2dModelShapes, V2MatchesReference) {
  const Conv2dShape shapes[] = {{2, 1, 32, 32, 16, 3, 3, 1, 1, 1, 1},
                                {2, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1},
                                {2, 32, 32, 32, 16, 1, 1, 1, 1, 0, 0}};
  for (const Conv2dShape& sh : shapes) {
    SCOPED_TRACE(sh.str());
    const Problem<float> pr(sh, 800);
    const auto x = widen(pr.x), w = widen(pr.w), b = widen(pr.b), dy = widen(pr.dy);
    const auto ax = absolute(pr.x), aw = absolute(pr.w), ab = absolute(pr.b),
               ady = absolute(pr.dy);
    const auto dx0 = widen(pr.dx0), dw0 = widen(pr.dw0), db0 = widen(pr.db0);
    const size_t ws = k::conv2d_workspace_bytes<float>(sh, sh.N);
    DeviceBuffer<float> d_x(pr.x), d_w(pr.w), d_b(pr.b), d_dy(pr.dy), d_ws(ws / sizeof(float));
    DeviceBuffer<float> d_y(size_t(sh.y_size())), d_dx(size_t(sh.x_size())), d_dw(pr.dw0),
        d_db(pr.db0);
    k::conv2d_forward_v2_im2col<float>(sh, d_x.get(), d_w.get(), d_b.get(), d_y.get(), d_ws.get(),
                                       ws, handle(), nullptr);
    EXPECT_TRUE(all_close(d_y.to_host(), forward_ref(sh, x, w, &b),
                          sum_bound<float>(forward_terms(sh), forward_ref(sh, ax, aw, &ab))));
    k::conv2d_backward_v2_im2col<float>(sh, {d_x.get(), d_w.get(), d_dy.get(), d_dx.get(),
                                             d_dw.get(), d_db.get()}, {false, true, true},
                                        d_ws.get(), ws, handle(), nullptr);
    EXPECT_TRUE(all_close(d_dx.to_host(), data_ref(sh, w, dy, dx0, false),
                          sum_bound<float>(data_terms(sh), data_ref(sh, aw, ady, dx0, false))));
    EXPECT_TRUE(all_close(
        d_dw.to_host(), filter_ref(sh, x, dy, dw0, true),
        sum_bound<float>(filter_terms(sh), plus_abs(filter_ref(sh, ax, ady, dw0, false), dw0))));
    EXPECT_TRUE(all_close(
        d_db.to_host(), bias_ref(sh, dy, db0, true),
        sum_bound<float>(filter_terms(sh), plus_abs(bias_ref(sh, ady, db0, false), db0))));
  }
}

// ---------------------------------------------------------------------------
// The float CPU references (the engine may use them) agree with the double
// ones: they accumulate in double and round once, so to 0.5 ulp of float
// (rtol 2^-24 = 6e-8); atol for results near 0, where 0.5 ulp is tiny.
TEST(Conv2dCpu, FloatReferencesMatchDouble) {
  const Conv2dShape sh{2, 3, 6, 5, 4, 3, 2, 2, 1, 1, 0};
  const Problem<float> pr(sh, 900);
  const auto x = widen(pr.x), w = widen(pr.w), b = widen(pr.b), dy = widen(pr.dy);
  const Tolerance tol{1e-12, 6e-8};
  std::vector<float> y(size_t(sh.y_size())), dx(pr.dx0), dw(pr.dw0), db(pr.db0);
  k::conv2d_forward_cpu<float>(sh, pr.x.data(), pr.w.data(), pr.b.data(), y.data());
  EXPECT_TRUE(all_close(y, forward_ref(sh, x, w, &b), tol));
  k::conv2d_backward_data_cpu<float>(sh, pr.w.data(), pr.dy.data(), dx.data(), true);
  EXPECT_TRUE(all_close(dx, data_ref(sh, w, dy, widen(pr.dx0), true), tol));
  k::conv2d_backward_filter_cpu<float>(sh, pr.x.data(), pr.dy.data(), dw.data(), true);
  EXPECT_TRUE(all_close(dw, filter_ref(sh, x, dy, widen(pr.dw0), true), tol));
  k::conv2d_backward_bias_cpu<float>(sh, pr.dy.data(), db.data(), true);
  EXPECT_TRUE(all_close(db, bias_ref(sh, dy, widen(pr.db0), true), tol));
}

// ---------------------------------------------------------------------------
// Shapes, workspace sizes and costs.
TEST(Conv2dShapeTest, OutputSizesAndDescription) {
  const Conv2dShape a{3, 5, 7, 9, 4, 3, 3, 1, 1, 1, 1};
  EXPECT_EQ(a.P(), 7);
  EXPECT_EQ(a.Q(), 9);
  EXPECT_EQ(a.str(), "x (3, 5, 7, 9), w (4, 5, 3, 3), stride (1, 1), pad (1, 1) -> y (3, 4, 7, 9)");
  const Conv2dShape b{1, 1, 7, 9, 1, 2, 3, 2, 3, 0, 1};  // (7-2)/2+1 = 3, (9+2-3)/3+1 = 3
  EXPECT_EQ(b.P(), 3);
  EXPECT_EQ(b.Q(), 3);
  const Conv2dShape model{32, 128, 128, 128, 128, 3, 3, 1, 1, 1, 1};
  EXPECT_EQ(model.P(), 128);
  EXPECT_EQ(model.y_size(), 32LL * 128 * 128 * 128);
  EXPECT_NO_THROW(model.validate("test"));
  // A kernel larger than the padded input has no output.
  EXPECT_EQ((Conv2dShape{1, 1, 2, 2, 1, 5, 1}.P()), 0);
}

TEST(Conv2dShapeTest, WorkspaceBytes) {
  const Conv2dShape sh{3, 5, 7, 9, 4, 3, 3, 2, 2, 1, 1};  // P = 4, Q = 5
  // Per image: the column matrix ((C*R*S + 1) x P*Q, with the ones row of
  // the bias gradient) and a slot of filter- and bias-gradient partials
  // (K x (C*R*S + 1)).
  EXPECT_EQ(k::conv2d_col_elements(sh), (5LL * 9 + 1) * 4 * 5);
  EXPECT_EQ(k::conv2d_workspace_elements(sh), (5LL * 9 + 1) * 4 * 5 + 4 * (5 * 9 + 1));
  EXPECT_EQ(k::conv2d_workspace_bytes<float>(sh), size_t(((5 * 9 + 1) * 4 * 5 + 4 * (5 * 9 + 1)) * 4));
  EXPECT_EQ(k::conv2d_workspace_bytes<double>(sh, 2),
            size_t(2 * ((5 * 9 + 1) * 4 * 5 + 4 * (5 * 9 + 1)) * 8));
  EXPECT_EQ(k::conv2d_workspace_bytes<float>(sh, 10), k::conv2d_workspace_bytes<float>(sh, 3));
  // Pointwise: no column matrix, only the partials (which the forward and
  // backward-data launchers do not need: they accept a null workspace).
  const Conv2dShape pw{3, 5, 7, 9, 4, 1, 1};
  EXPECT_TRUE(pw.pointwise());
  EXPECT_EQ(k::conv2d_col_elements(pw), 0);
  EXPECT_EQ(k::conv2d_workspace_bytes<float>(pw, 3), size_t(3 * 4 * (5 + 1) * 4));
  EXPECT_FALSE((Conv2dShape{3, 5, 7, 9, 4, 1, 1, 1, 1, 1, 0}.pointwise()));
  EXPECT_FALSE((Conv2dShape{3, 5, 7, 9, 4, 1, 1, 2, 1, 0, 0}.pointwise()));
  // The model's largest layer: 128 channels 3x3 on 128x128, one image = 72 MiB
  // of columns and 576 KiB of partials.
  const Conv2dShape model{32, 128, 128, 128, 128, 3, 3, 1, 1, 1, 1};
  EXPECT_EQ(k::conv2d_workspace_bytes<float>(model), (size_t(1153) * 16384 + 128 * 1153) * 4);
}

TEST(Conv2dCost, CountsFlopsAndBytes) {
  const Conv2dShape sh{2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1};  // P = Q = 8
  const double macs = 2.0 * 4 * 64 * 27, x = 2 * 3 * 64, w = 4 * 27, y = 2 * 4 * 64;
  EXPECT_EQ(k::conv2d_forward_cost(sh, false).flops, 2 * macs);
  EXPECT_EQ(k::conv2d_forward_cost(sh, true).flops, 2 * macs + y);
  EXPECT_EQ(k::conv2d_forward_cost(sh, true).bytes, 4 * (x + w + y + 4));
  EXPECT_EQ(k::conv2d_backward_data_cost(sh, false, 8).bytes, 8 * (y + w + x));
  EXPECT_EQ(k::conv2d_backward_data_cost(sh, true).flops, 2 * macs + x);
  EXPECT_EQ(k::conv2d_backward_filter_cost(sh, true).bytes, 4 * (x + y + 2 * w));
  EXPECT_EQ(k::conv2d_backward_bias_cost(sh, false).flops, y);
  EXPECT_EQ(k::conv2d_backward_bias_cost(sh, true).bytes, 4 * (y + 8));
  EXPECT_EQ(k::conv2d_im2col_cost(sh).bytes, 2.0 * 4 * 2 * 27 * 64);
  EXPECT_EQ(k::conv2d_im2col_cost(Conv2dShape{2, 3, 8, 8, 4, 1, 1}).bytes, 0);
  // The model: 3x3 128 -> 128 on 128x128, batch 32: 2*32*128*16384*1152 = 154.6 GFLOP.
  const Conv2dShape model{32, 128, 128, 128, 128, 3, 3, 1, 1, 1, 1};
  EXPECT_DOUBLE_EQ(k::conv2d_forward_cost(model, false).flops, 2.0 * 32 * 128 * 16384 * 1152);
}

// ---------------------------------------------------------------------------
// Argument errors.

// Runs f, expects std::invalid_argument whose message contains `part`.
template <class F>
void expect_invalid(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning \"" << part << "\"";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message \"" << e.what() << "\" does not mention \"" << part << "\"";
  }
}

TEST(Conv2dArguments, BadShapesAreRejected) {
  const Conv2dShape good{3, 5, 7, 9, 4, 3, 3, 1, 1, 1, 1};
  struct Bad {
    Conv2dShape shape;
    const char* message;
  };
  auto with = [&](auto field, int value) {
    Conv2dShape s = good;
    s.*field = value;
    return s;
  };
  const Bad bad[] = {
      {with(&Conv2dShape::N, 0), "x (N, C, H, W) = (0, 5, 7, 9): every size must be >= 1"},
      {with(&Conv2dShape::C, -1), "x (N, C, H, W) = (3, -1, 7, 9)"},
      {with(&Conv2dShape::H, 0), "x (N, C, H, W) = (3, 5, 0, 9)"},
      {with(&Conv2dShape::W, 0), "x (N, C, H, W) = (3, 5, 7, 0)"},
      {with(&Conv2dShape::K, 0), "w (K, C, R, S) = (0, 5, 3, 3): every size must be >= 1"},
      {with(&Conv2dShape::R, 0), "w (K, C, R, S) = (4, 5, 0, 3)"},
      {with(&Conv2dShape::S, -3), "w (K, C, R, S) = (4, 5, 3, -3)"},
      {with(&Conv2dShape::stride_h, 0), "stride (stride_h, stride_w) = (0, 1) must be >= 1"},
      {with(&Conv2dShape::stride_w, -2), "stride (stride_h, stride_w) = (1, -2)"},
      {with(&Conv2dShape::pad_h, -1), "pad (pad_h, pad_w) = (-1, 1) must be >= 0"},
      {with(&Conv2dShape::R, 10),
       "kernel (R, S) = (10, 3) is larger than the padded input (H + 2*pad_h, W + 2*pad_w) = (9, 11)"},
      {with(&Conv2dShape::S, 12), "kernel (R, S) = (3, 12)"},
      {with(&Conv2dShape::pad_w, 0x40000000),
       "padded input (H + 2*pad_h, W + 2*pad_w) = (9, 2147483657) exceeds 2^31 - 1"},
      {Conv2dShape{1, 1 << 20, 8, 8, 1, 64, 64, 1, 1, 32, 32}, "C*R*S = 4294967296 exceeds"},
      {Conv2dShape{1, 1, 1 << 16, 1 << 16, 1, 1, 1}, "P*Q = 4294967296 exceeds"},
  };
  DeviceBuffer<float> d(16);
  float* p = d.get();
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.message);
    expect_invalid([&] { b.shape.validate("op"); }, std::string("op: ") + b.message);
    // Every launcher and reference validates first, whatever the pointers.
    expect_invalid([&] { k::conv2d_forward_v1_direct<float>(b.shape, p, p, p, p, nullptr); },
                   std::string("conv2d_forward_v1_direct: ") + b.message);
    expect_invalid([&] {
      k::conv2d_forward_v2_im2col<float>(b.shape, p, p, p, p, p, 64, handle(), nullptr);
    }, "conv2d_forward_v2_im2col: ");
    expect_invalid([&] {
      k::conv2d_backward_v2_im2col<float>(b.shape, {p, p, p, p, p, p}, {false, true, true}, p, 64,
                                          handle(), nullptr);
    }, "conv2d_backward_v2_im2col: ");
    expect_invalid([&] { k::conv2d_backward_bias_v2_reduce<float>(b.shape, p, p, true, nullptr); },
                   "conv2d_backward_bias_v2_reduce: ");
    expect_invalid([&] { k::conv2d_forward_cpu<float>(b.shape, p, p, p, p); },
                   "conv2d_forward_cpu: ");
  }
  // The message ends with the whole shape.
  expect_invalid([&] { with(&Conv2dShape::K, 0).validate("op"); },
                 "(x (3, 5, 7, 9), w (0, 5, 3, 3), stride (1, 1), pad (1, 1) -> y (3, 0, 7, 9))");
}

TEST(Conv2dArguments, BadPointersBlocksWorkspacesAndHandles) {
  const Conv2dShape sh{3, 5, 7, 9, 4, 3, 3, 1, 1, 1, 1};
  const size_t ws = k::conv2d_workspace_bytes<float>(sh);
  DeviceBuffer<float> d(size_t(sh.x_size() + sh.y_size() + sh.w_size())), d_ws(ws / 4);
  float* p = d.get();
  float* w = d_ws.get();
  cublasHandle_t h = handle();
  // Null pointers that a launcher needs (the bias may be null).
  expect_invalid([&] { k::conv2d_forward_v1_direct<float>(sh, nullptr, p, p, p, nullptr); },
                 "conv2d_forward_v1_direct: d_x is null");
  expect_invalid([&] { k::conv2d_forward_v2_im2col<float>(sh, p, nullptr, p, p, w, ws, h, nullptr); },
                 "conv2d_forward_v2_im2col: d_w is null");
  expect_invalid([&] { k::conv2d_forward_v2_im2col<float>(sh, p, p, p, nullptr, w, ws, h, nullptr); },
                 "d_y is null");
  expect_invalid([&] {
    k::conv2d_backward_data_v1_direct<float>(sh, p, nullptr, p, false, nullptr);
  }, "conv2d_backward_data_v1_direct: d_dy is null");
  expect_invalid([&] {
    k::conv2d_backward_filter_v2_im2col<float>(sh, p, p, nullptr, true, w, ws, h, nullptr);
  }, "conv2d_backward_filter_v2_im2col: d_dw is null");
  expect_invalid([&] { k::conv2d_backward_bias_v1_direct<float>(sh, p, nullptr, true, nullptr); },
                 "d_db is null");
  expect_invalid([&] {
    k::conv2d_backward_v2_im2col<float>(sh, {p, nullptr, p, p, nullptr, nullptr},
                                        {false, true, true}, w, ws, h, nullptr);
  }, "conv2d_backward_v2_im2col: d_w (needed for d_dx) is null");
  expect_invalid([&] {
    k::conv2d_backward_v2_im2col<float>(sh, {nullptr, p, p, nullptr, p, nullptr},
                                        {false, true, true}, w, ws, h, nullptr);
  }, "d_x (needed for d_dw) is null");
  expect_invalid([&] {
    k::conv2d_backward_v2_im2col<float>(sh, {p, p, nullptr, p, p, p}, {false, true, true}, w, ws, h,
                                        nullptr);
  }, "d_dy is null");
  // Blocks.
  for (int block : {0, 16, 48, 1056, -32}) {
    SCOPED_TRACE(block);
    expect_invalid([&] { k::conv2d_forward_v1_direct<float>(sh, p, p, p, p, nullptr, block); },
                   "block must be a multiple of 32 in [32, 1024], not " + std::to_string(block));
    expect_invalid([&] {
      k::conv2d_forward_v2_im2col<float>(sh, p, p, p, p, w, ws, h, nullptr, block);
    }, "block must be");
    expect_invalid([&] {
      k::conv2d_backward_bias_v2_reduce<float>(sh, p, p, false, nullptr, block);
    }, "block must be");
  }
  // col2im's __launch_bounds__(512): larger blocks could not launch on a GPU.
  expect_invalid([&] {
    k::conv2d_backward_data_v2_im2col<float>(sh, p, p, p, false, p, ws, h, nullptr, 1024);
  }, "conv2d_backward_data_v2_im2col: block must be at most 512 (col2im's registers), not 1024");
  // Workspace: too small, or null.
  expect_invalid([&] {
    k::conv2d_forward_v2_im2col<float>(sh, p, p, p, p, w, ws - 1, h, nullptr);
  }, "conv2d_forward_v2_im2col: workspace of 12327 bytes is smaller than one image's share "
     "(column matrix (C*R*S + 1) x P*Q = 46 x 63 plus a gradient slot K x (C*R*S + 1) = 184: "
     "12328 bytes); see conv2d_workspace_bytes");
  expect_invalid([&] {
    k::conv2d_backward_data_v2_im2col<float>(sh, p, p, p, false, nullptr, ws, h, nullptr);
  }, "d_workspace is null");
  expect_invalid([&] {
    k::conv2d_backward_v2_im2col<float>(sh, {p, p, p, nullptr, p, nullptr}, {false, true, true}, w,
                                        0, h, nullptr);
  }, "workspace of 0 bytes");
  // The combined backward checks everything before running anything: with a
  // bad workspace, db (which needs none) is not touched either.
  {
    std::vector<float> db0(4, 0.5f);
    DeviceBuffer<float> d_db(db0);
    expect_invalid([&] {
      k::conv2d_backward_v2_im2col<float>(sh, {p, p, p, p, nullptr, d_db.get()},
                                          {false, true, true}, w, 8, h, nullptr);
    }, "workspace of 8 bytes");
    EXPECT_TRUE(same_bits(d_db.to_host(), db0));
  }
  // Handles: null, on another stream, in device pointer mode.
  expect_invalid([&] {
    k::conv2d_forward_v2_im2col<float>(sh, p, p, p, p, w, ws, nullptr, nullptr);
  }, "conv2d_forward_v2_im2col: the cuBLAS handle is null");
  cudaStream_t other = nullptr;
  CUDA_CHECK(cudaStreamCreate(&other));
  expect_invalid([&] {
    k::conv2d_backward_filter_v2_im2col<float>(sh, p, p, p, false, w, ws, h, other);
  }, "the cuBLAS handle is set to another stream than the launch's; call "
     "cublasSetStream(handle, stream) first");
  cublasHandle_t device_mode = nullptr;
  CUBLAS_CHECK(cublasCreate(&device_mode));
  CUBLAS_CHECK(cublasSetPointerMode(device_mode, CUBLAS_POINTER_MODE_DEVICE));
  expect_invalid([&] {
    k::conv2d_forward_v2_im2col<float>(sh, p, p, p, p, w, ws, device_mode, nullptr);
  }, "CUBLAS_POINTER_MODE_HOST");
  // On a stream that matches the handle's, the launch runs.
  CUBLAS_CHECK(cublasSetStream(device_mode, other));
  CUBLAS_CHECK(cublasSetPointerMode(device_mode, CUBLAS_POINTER_MODE_HOST));
  EXPECT_NO_THROW(k::conv2d_forward_v2_im2col<float>(sh, p, p, p, p + sh.x_size(), w, ws,
                                                     device_mode, other));
  CUDA_CHECK(cudaStreamSynchronize(other));
  CUBLAS_CHECK(cublasDestroy(device_mode));
  CUDA_CHECK(cudaStreamDestroy(other));
  // Pointwise convolutions need no workspace forward and for dx; for dw,
  // they need the partials' slots.
  const Conv2dShape pw{3, 5, 7, 9, 4, 1, 1};
  EXPECT_NO_THROW(k::conv2d_forward_v2_im2col<float>(pw, p, p + pw.x_size(), nullptr,
                                                     p + pw.x_size() + pw.w_size(), nullptr, 0, h,
                                                     nullptr));
  EXPECT_NO_THROW(k::conv2d_backward_data_v2_im2col<float>(pw, p, p + pw.w_size(),
                                                           p + pw.w_size() + pw.y_size(), false,
                                                           nullptr, 0, h, nullptr));
  expect_invalid([&] {
    k::conv2d_backward_filter_v2_im2col<float>(pw, p, p, p, false, nullptr, 0, h, nullptr);
  }, "conv2d_backward_filter_v2_im2col: workspace of 0 bytes is smaller than one image's share "
     "(column matrix (C*R*S + 1) x P*Q = 0 x 0 plus a gradient slot K x (C*R*S + 1) = 24: 96 "
     "bytes)");
}

}  // namespace
