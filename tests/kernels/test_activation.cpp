// Activations (forward, backward with and without accumulation) and the
// elementwise helpers (add, scale, fill) against their CPU references: float
// and double, odd sizes, two block sizes, three thread orders; the kinks,
// saturation at large |x|, NaN, aliasing, and argument errors.
//
// References: every kernel result, float or double, is compared with the
// double CPU reference run on the same inputs widened to double. For float
// kernels that reference is exact to far below float precision, so the
// tolerances below measure the kernel's own rounding, and they are set from
// what a GPU may do, not simcuda: CUDA's expf/expm1f/tanhf are within 2 ulp
// (simcuda uses libm's, which are closer) and nvcc contracts a*b + c into
// fma. One float ulp relative is 2^-23 = 1.19e-7; one double ulp 2.2e-16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/device_buffer.h"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::testing::random_nonzero;

using timbre::DeviceBuffer;
using timbre::testing::widen;
using timbre::testing::poison;
using timbre::kernels::Activation;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::Tolerance;
using timbre::testing::dtype_name;
using timbre::testing::once;
namespace k = timbre::kernels;

constexpr Activation kActivations[] = {Activation::relu, Activation::elu, Activation::tanh,
                                       Activation::sigmoid};
constexpr long long kSizes[] = {1, 7, 1000003};  // 1000003: every thread loops twice
constexpr int kBlocks[] = {64, 256};

template <class T>
struct Tolerances;

template <>
struct Tolerances<float> {
  // Forward of elu/tanh/sigmoid: a transcendental (<= 2 ulp on a GPU) plus,
  // for sigmoid, three roundings (add, divide, multiply): <= 3.5 ulp = 4.2e-7
  // relative; 1e-6 (8 ulp) leaves a margin. No atol: every result, down to
  // sigmoid(-30) = 9e-14, is a normal float compared relatively. relu is
  // exact.
  static constexpr Tolerance forward{0, 1e-6};
  // Backward, assigning: dy * f' is at most three roundings (1.5 ulp =
  // 1.8e-7) from f' computed on the same x and y; 4 ulp.
  static constexpr Tolerance backward{0, 5e-7};
  // Accumulating: dx + dy*f' may cancel, so the error is absolute: a few
  // ulps of the terms (|dx| <= 1, |dy f'| <= 1.3 with alpha 1.3; ulp(2) =
  // 2.4e-7).
  static constexpr Tolerance accumulate{1e-6, 5e-7};
  // add: alpha*x + beta*y, |terms| <= 1.5: three roundings (or an fma on a
  // GPU), absolute for the same reason.
  static constexpr Tolerance add{1e-6, 5e-7};
  // scale: one rounding, <= 2^-24 = 6e-8 relative.
  static constexpr Tolerance scale{0, 1.2e-7};
  // Saturated values (|x| up to 1e30): sigmoid(-100) = 4e-44 is subnormal in
  // float, so an atol at the smallest normal.
  static constexpr Tolerance saturated{1.2e-38, 1e-6};
};

template <>
struct Tolerances<double> {
  // Forward: CUDA's double exp/expm1/tanh are within 1-2 ulp and the
  // reference's sigmoid is a different formula (1/(1 + e^-x)) with its own
  // few ulps; 1e-14 = 45 ulp, still 10^7 times tighter than float, so a
  // double kernel that computed anything in float would fail.
  static constexpr Tolerance forward{0, 1e-14};
  // Backward: the reference takes tanh' as 1 - y*y, which loses up to 2^-54
  // absolute to the rounding of y*y when y is near 1 (the kernel's
  // (1-y)(1+y) does not): atol 1e-15.
  static constexpr Tolerance backward{1e-15, 1e-14};
  // Accumulating and add: cancellation, a few ulps of terms up to 2.3
  // (ulp 4.4e-16).
  static constexpr Tolerance accumulate{4e-15, 1e-14};
  static constexpr Tolerance add{4e-15, 1e-14};
  static constexpr Tolerance scale{0, 2.3e-16};  // one rounding, <= 2^-53
  // sigmoid(-1000) underflows to 0 in double: atol at the smallest normal.
  static constexpr Tolerance saturated{2.3e-308, 1e-14};
};

// Random magnitudes of four kinds in turn, each with a random sign: moderate
// [0.01, 1), near zero [1e-6, 0.01) (log-uniform), wide [1, 30), and large
// [20, 30], where tanh and sigmoid saturate and elu approaches -alpha. Never
// zero. Values are drawn in double, so double inputs use all 53 bits.
template <class T>
std::vector<T> mixed_inputs(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) {
    double m = 0;
    switch (i % 4) {
      case 0: m = 0.01 + 0.99 * u(g); break;
      case 1: m = std::pow(10.0, -6 + 4 * u(g)); break;
      case 2: m = 1 + 29 * u(g); break;
      case 3: m = 20 + 10 * u(g); break;
    }
    v[i] = T(u(g) < 0.5 ? -m : m);
  }
  return v;
}

template <class T>
std::vector<double> forward_ref(Activation a, const std::vector<T>& x, double alpha) {
  const auto wx = widen(x);
  std::vector<double> y(x.size());
  k::activation_forward_cpu<double>(a, wx.data(), y.data(), (long long)x.size(), alpha);
  return y;
}

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): forward, backward (assigning
// and accumulating), add, scale (also in place) and fill, in float and
// double, at every size of kSizes and both block sizes. Inputs come from
// fixed seeds inside each row, so a row costs nothing until it runs.

template <class T>
void activation_rows(timbre::testing::OpTable& table) {
  using Tol = Tolerances<T>;
  using timbre::testing::OpCase;
  const T alpha = T(1.3);  // elu's alpha: not 1, so a forgotten alpha shows
  const std::vector<int> blocks(std::begin(kBlocks), std::end(kBlocks));
  for (long long n : kSizes) {
    const std::string shape = "n=" + std::to_string(n);
    const uint64_t seed = uint64_t(n);
    for (Activation a : kActivations) {
      const std::string act = k::activation_name(a);
      const auto x = once([=] { return mixed_inputs<T>(size_t(n), seed); });
      const auto fwd_ref = once([=] { return forward_ref(a, x(), double(alpha)); });
      table.add(OpCase{"activation/" + act + "_forward", dtype_name<T>(), shape, blocks,
                       Tol::forward, "a transcendental within 2 ulp plus a few roundings",
                       [=](int block) {
                         DeviceBuffer<T> d_x(x()), d_y{size_t(n)};
                         poison(d_y);
                         k::activation_forward<T>(a, d_x.get(), d_y.get(), n, alpha, nullptr,
                                                  block);
                         return widen(d_y.to_host());
                       },
                       fwd_ref});
      for (bool accumulate : {false, true}) {
        // y as a correct forward pass would give it, rounded to T.
        const auto y_of = once([=] {
          const auto& w = fwd_ref();
          return std::vector<T>(w.begin(), w.end());
        });
        const auto dy = once([=] { return random_nonzero<T>(size_t(n), seed + 1); });
        const auto dx0 = once([=] { return random_nonzero<T>(size_t(n), seed + 2); });
        table.add(OpCase{
            "activation/" + act + (accumulate ? "_backward_accumulate" : "_backward"),
            dtype_name<T>(), shape, blocks, accumulate ? Tol::accumulate : Tol::backward,
            accumulate ? "dx + dy f' may cancel: a few ulps of the terms, absolute"
                       : "dy * f' is at most three roundings from f' on the same x and y",
            [=](int block) {
              DeviceBuffer<T> d_x(x()), d_y(y_of()), d_dy(dy()),
                  d_dx{size_t(n)};
              // Assigning must not read dx: NaN there would show.
              if (accumulate)
                d_dx.copy_from_host(dx0());
              else
                poison(d_dx);
              k::activation_backward<T>(a, d_x.get(), d_y.get(), d_dy.get(), d_dx.get(), n,
                                        alpha, accumulate, nullptr, block);
              return widen(d_dx.to_host());
            },
            [=] {
              const auto wx = widen(x()), wy = widen(y_of()),
                         wdy = widen(dy());
              std::vector<double> ref = widen(dx0());
              k::activation_backward_cpu<double>(a, wx.data(), wy.data(), wdy.data(), ref.data(),
                                                 n, double(alpha), accumulate);
              return ref;
            }});
      }
    }
    const T add_alpha = T(1.5), add_beta = T(-0.75);
    const auto add_x = once([=] { return random_nonzero<T>(size_t(n), seed + 3); });
    const auto add_y = once([=] { return random_nonzero<T>(size_t(n), seed + 4); });
    table.add(OpCase{"activation/add", dtype_name<T>(), shape, blocks, Tol::add,
                     "alpha x + beta y: three roundings (or an fma), absolute",
                     [=](int block) {
                       DeviceBuffer<T> d_x(add_x()), d_y(add_y()), d_out{size_t(n)};
                       poison(d_out);
                       k::add<T>(d_x.get(), d_y.get(), d_out.get(), n, add_alpha, add_beta,
                                 nullptr, block);
                       return widen(d_out.to_host());
                     },
                     [=] {
                       const auto wx = widen(add_x()), wy = widen(add_y());
                       std::vector<double> ref(static_cast<size_t>(n));
                       k::add_cpu<double>(wx.data(), wy.data(), ref.data(), n, add_alpha,
                                          add_beta);
                       return ref;
                     }});
    const T scale_alpha = T(-2.7);
    const auto scale_x = once([=] { return random_nonzero<T>(size_t(n), seed + 5); });
    auto scale_ref = [=] {
      const auto wx = widen(scale_x());
      std::vector<double> ref(static_cast<size_t>(n));
      k::scale_cpu<double>(wx.data(), ref.data(), n, scale_alpha);
      return ref;
    };
    for (bool in_place : {false, true})
      table.add(OpCase{in_place ? "activation/scale_in_place" : "activation/scale",
                       dtype_name<T>(), shape, blocks, Tol::scale, "one rounding",
                       [=](int block) {
                         DeviceBuffer<T> d_x(scale_x()), d_y{size_t(n)};
                         T* out = in_place ? d_x.get() : d_y.get();
                         if (!in_place) poison(d_y);
                         k::scale<T>(d_x.get(), out, n, scale_alpha, nullptr, block);
                         return widen(in_place ? d_x.to_host() : d_y.to_host());
                       },
                       scale_ref});
    const T value = T(-0.1);  // not representable exactly: the same rounding both sides
    table.add(OpCase{"activation/fill", dtype_name<T>(), shape, blocks, {0, 0},
                     "a copy of one value: exact",
                     [=](int block) {
                       DeviceBuffer<T> d_x{size_t(n)};
                       poison(d_x);
                       k::fill<T>(d_x.get(), n, value, nullptr, block);
                       return widen(d_x.to_host());
                     },
                     [=] {
                       std::vector<T> ref(static_cast<size_t>(n));
                       k::fill_cpu<T>(ref.data(), n, value);
                       return widen(ref);
                     }});
  }
}

OP_CASES(activation) {
  activation_rows<float>(table);
  activation_rows<double>(table);
}

template <class T>
class ActivationTest : public ::testing::Test {
 protected:
  using Tol = Tolerances<T>;
  const T alpha = T(1.3);  // elu's alpha: not 1, so a forgotten alpha shows
};

using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ActivationTest, Types);

// The kinks, as PyTorch: relu'(0) = 0, elu'(0) = alpha (both from the left),
// at +0 and -0; and the exact values at 0 of all four. All results exact.
TYPED_TEST(ActivationTest, ValuesAndDerivativesAtZero) {
  using T = TypeParam;
  const T alpha = this->alpha;
  const std::vector<T> x = {T(0), -T(0)}, dy = {T(1), T(1)};
  DeviceBuffer<T> d_x(x), d_y(2), d_dy(dy), d_dx(2);
  struct Expect {
    Activation a;
    T y, dydx;
  };
  const Expect expect[] = {{Activation::relu, 0, 0},
                           {Activation::elu, 0, alpha},
                           {Activation::tanh, 0, 1},
                           {Activation::sigmoid, T(0.5), T(0.25)}};
  for (const Expect& e : expect) {
    k::activation_forward<T>(e.a, d_x.get(), d_y.get(), 2, alpha, nullptr);
    k::activation_backward<T>(e.a, d_x.get(), d_y.get(), d_dy.get(), d_dx.get(), 2, alpha,
                              false, nullptr);
    const auto y = d_y.to_host(), dx = d_dx.to_host();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(y[i], e.y) << k::activation_name(e.a) << " x " << x[i];
      EXPECT_EQ(dx[i], e.dydx) << k::activation_name(e.a) << " x " << x[i];
    }
  }
}

// Far past where exp overflows (float: |x| > 88, double: > 709): no inf or
// NaN, and the right limits (sigmoid 0 and 1, tanh -1 and 1, elu -alpha);
// the derivatives from those y are finite.
TYPED_TEST(ActivationTest, SaturatesWithoutOverflow) {
  using T = TypeParam;
  const std::vector<T> x = {T(-1e30), T(-1000), T(-100), T(-89), T(-40),
                            T(40),    T(89),    T(100),  T(1000), T(1e30)};
  const long long n = (long long)x.size();
  const std::vector<T> dy(x.size(), T(1));
  DeviceBuffer<T> d_x(x), d_y(x.size()), d_dy(dy), d_dx(x.size());
  for (Activation a : kActivations) {
    k::activation_forward<T>(a, d_x.get(), d_y.get(), n, this->alpha, nullptr);
    const auto y = d_y.to_host();
    EXPECT_TRUE(all_close(y, forward_ref(a, x, double(this->alpha)),
                          TestFixture::Tol::saturated))
        << k::activation_name(a);
    k::activation_backward<T>(a, d_x.get(), d_y.get(), d_dy.get(), d_dx.get(), n, this->alpha,
                              false, nullptr);
    for (T g : d_dx.to_host()) EXPECT_TRUE(std::isfinite(g)) << k::activation_name(a);
  }
}

TYPED_TEST(ActivationTest, ForwardPropagatesNaN) {
  using T = TypeParam;
  const std::vector<T> x = {std::numeric_limits<T>::quiet_NaN()};
  DeviceBuffer<T> d_x(x), d_y(1);
  for (Activation a : kActivations) {
    d_y.copy_from_host(std::vector<T>{T(7)});
    k::activation_forward<T>(a, d_x.get(), d_y.get(), 1, this->alpha, nullptr);
    EXPECT_TRUE(std::isnan(d_y.to_host()[0])) << k::activation_name(a);
  }
}

// y = f(y) in place, and dx = dy * f' written over dy.
TYPED_TEST(ActivationTest, InPlace) {
  using T = TypeParam;
  const long long n = 1001;
  const auto x = mixed_inputs<T>(size_t(n), 11);
  const auto dy = random_nonzero<T>(size_t(n), 12);
  for (Activation a : kActivations) {
    const auto y_wide = forward_ref(a, x, double(this->alpha));
    const std::vector<T> y(y_wide.begin(), y_wide.end());
    DeviceBuffer<T> d_v(x);
    k::activation_forward<T>(a, d_v.get(), d_v.get(), n, this->alpha, nullptr);
    EXPECT_TRUE(all_close(d_v.to_host(), y_wide, TestFixture::Tol::forward))
        << k::activation_name(a);

    const auto wx = widen(x), wy = widen(y), wdy = widen(dy);
    std::vector<double> ref(x.size());
    k::activation_backward_cpu<double>(a, wx.data(), wy.data(), wdy.data(), ref.data(), n,
                                       double(this->alpha), false);
    DeviceBuffer<T> d_x(x), d_y(y), d_g(dy);
    k::activation_backward<T>(a, d_x.get(), d_y.get(), d_g.get(), d_g.get(), n, this->alpha,
                              false, nullptr);
    EXPECT_TRUE(all_close(d_g.to_host(), ref, TestFixture::Tol::backward))
        << k::activation_name(a);
  }
}

// The array an activation's derivative does not use may be null: relu needs
// no y, tanh and sigmoid no x.
TYPED_TEST(ActivationTest, BackwardWithoutUnusedInput) {
  using T = TypeParam;
  const long long n = 37;
  const auto x = mixed_inputs<T>(size_t(n), 21);
  const auto dy = random_nonzero<T>(size_t(n), 22);
  const auto wx = widen(x), wdy = widen(dy);
  for (Activation a : {Activation::relu, Activation::tanh, Activation::sigmoid}) {
    const auto y_wide = forward_ref(a, x, double(this->alpha));
    const std::vector<T> y(y_wide.begin(), y_wide.end());
    const auto wy = widen(y);
    std::vector<double> ref(x.size());
    k::activation_backward_cpu<double>(a, wx.data(), wy.data(), wdy.data(), ref.data(), n,
                                       double(this->alpha), false);
    DeviceBuffer<T> d_x(x), d_y(y), d_dy(dy), d_dx(x.size());
    const bool uses_x = a == Activation::relu;
    k::activation_backward<T>(a, uses_x ? d_x.get() : nullptr, uses_x ? nullptr : d_y.get(),
                              d_dy.get(), d_dx.get(), n, this->alpha, false, nullptr);
    EXPECT_TRUE(all_close(d_dx.to_host(), ref, TestFixture::Tol::backward))
        << k::activation_name(a);
  }
}

// After an in-place forward x is gone; relu and elu (alpha > 0) branch on
// x > 0, which y shares, so y can be passed for x.
TYPED_TEST(ActivationTest, BackwardAfterInPlaceForward) {
  using T = TypeParam;
  const long long n = 37;
  const auto x = mixed_inputs<T>(size_t(n), 23);
  const auto dy = random_nonzero<T>(size_t(n), 24);
  const auto wx = widen(x), wdy = widen(dy);
  for (Activation a : {Activation::relu, Activation::elu}) {
    DeviceBuffer<T> d_v(x), d_dy(dy), d_dx(x.size());
    k::activation_forward<T>(a, d_v.get(), d_v.get(), n, this->alpha, nullptr);
    const auto wy = widen(d_v.to_host());  // the reference uses the true x and this y
    std::vector<double> ref(x.size());
    k::activation_backward_cpu<double>(a, wx.data(), wy.data(), wdy.data(), ref.data(), n,
                                       double(this->alpha), false);
    k::activation_backward<T>(a, d_v.get(), d_v.get(), d_dy.get(), d_dx.get(), n, this->alpha,
                              false, nullptr);
    EXPECT_TRUE(all_close(d_dx.to_host(), ref, TestFixture::Tol::backward))
        << k::activation_name(a);
  }
}

// out = x, out = y, and x = y = out (out = (alpha + beta) x).
TYPED_TEST(ActivationTest, AddAliased) {
  using T = TypeParam;
  const T alpha = T(1.5), beta = T(-0.75);
  const long long n = 1001;
  const auto x = random_nonzero<T>(size_t(n), 31);
  const auto y = random_nonzero<T>(size_t(n), 32);
  const auto wx = widen(x), wy = widen(y);
  std::vector<double> ref(x.size()), ref_same(x.size());
  k::add_cpu<double>(wx.data(), wy.data(), ref.data(), n, alpha, beta);
  k::add_cpu<double>(wx.data(), wx.data(), ref_same.data(), n, alpha, beta);
  const Tolerance tol = TestFixture::Tol::add;
  {
    DeviceBuffer<T> d_x(x), d_y(y);
    k::add<T>(d_x.get(), d_y.get(), d_x.get(), n, alpha, beta, nullptr);
    EXPECT_TRUE(all_close(d_x.to_host(), ref, tol)) << "out = x";
  }
  {
    DeviceBuffer<T> d_x(x), d_y(y);
    k::add<T>(d_x.get(), d_y.get(), d_y.get(), n, alpha, beta, nullptr);
    EXPECT_TRUE(all_close(d_y.to_host(), ref, tol)) << "out = y";
  }
  {
    DeviceBuffer<T> d_x(x);
    k::add<T>(d_x.get(), d_x.get(), d_x.get(), n, alpha, beta, nullptr);
    EXPECT_TRUE(all_close(d_x.to_host(), ref_same, tol)) << "x = y = out";
  }
}

// The float CPU references (the engine may use them) agree with the double
// ones to float precision. libm's float functions are within 1-2 ulp; the
// float sigmoid reference rounds four times.
TEST(ActivationCpu, FloatReferencesMatchDouble) {
  const long long n = 1001;
  const auto x = mixed_inputs<float>(size_t(n), 41);
  const auto dy = random_nonzero<float>(size_t(n), 42);
  const auto wx = widen(x), wdy = widen(dy);
  for (Activation a : kActivations) {
    std::vector<float> y(x.size()), dx(x.size());
    k::activation_forward_cpu<float>(a, x.data(), y.data(), n, 1.3f);
    const auto y_wide = forward_ref(a, x, double(1.3f));
    EXPECT_TRUE(all_close(y, y_wide, {0, 1e-6})) << k::activation_name(a);

    const auto wy = widen(y);
    std::vector<double> ref(x.size());
    k::activation_backward_cpu<double>(a, wx.data(), wy.data(), wdy.data(), ref.data(), n,
                                       double(1.3f), false);
    k::activation_backward_cpu<float>(a, x.data(), y.data(), dy.data(), dx.data(), n, 1.3f,
                                      false);
    // The float reference's 1 - y*y loses up to 2^-25 absolute to the
    // rounding of y*y (see the double backward tolerance): atol 1e-7.
    EXPECT_TRUE(all_close(dx, ref, {1e-7, 5e-7})) << k::activation_name(a);
  }
}

TEST(ActivationArguments, RejectedWithInvalidArgument) {
  DeviceBuffer<float> d(8);
  float* p = d.get();
  const auto relu = Activation::relu;
  const auto bad = static_cast<Activation>(42);
  // n < 0.
  EXPECT_THROW(k::activation_forward<float>(relu, p, p, -1, 1.f, nullptr), std::invalid_argument);
  EXPECT_THROW(k::activation_backward<float>(relu, p, p, p, p, -1, 1.f, false, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::add<float>(p, p, p, -1, 1.f, 1.f, nullptr), std::invalid_argument);
  EXPECT_THROW(k::scale<float>(p, p, -1, 1.f, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill<float>(p, -1, 1.f, nullptr), std::invalid_argument);
  // Blocks: not a multiple of 32, too small, too large.
  for (int block : {0, 16, 48, 1056, 2048, -32}) {
    EXPECT_THROW(k::activation_forward<float>(relu, p, p, 8, 1.f, nullptr, block),
                 std::invalid_argument)
        << block;
    EXPECT_THROW(k::activation_backward<float>(relu, p, p, p, p, 8, 1.f, true, nullptr, block),
                 std::invalid_argument)
        << block;
    EXPECT_THROW(k::add<float>(p, p, p, 8, 1.f, 1.f, nullptr, block), std::invalid_argument)
        << block;
    EXPECT_THROW(k::scale<float>(p, p, 8, 1.f, nullptr, block), std::invalid_argument) << block;
    EXPECT_THROW(k::fill<float>(p, 8, 1.f, nullptr, block), std::invalid_argument) << block;
  }
  // Unknown activation, even for n == 0.
  EXPECT_THROW(k::activation_forward<double>(bad, nullptr, nullptr, 0, 1.0, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::activation_backward<float>(bad, p, p, p, p, 8, 1.f, false, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::activation_name(bad), std::invalid_argument);
  // Null pointers an operation needs.
  EXPECT_THROW(k::activation_forward<float>(relu, nullptr, p, 8, 1.f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::activation_backward<float>(relu, nullptr, p, p, p, 8, 1.f, false, nullptr),
               std::invalid_argument);
  EXPECT_THROW(
      k::activation_backward<float>(Activation::sigmoid, p, nullptr, p, p, 8, 1.f, false, nullptr),
      std::invalid_argument);
  EXPECT_THROW(k::activation_backward<float>(Activation::elu, p, nullptr, p, p, 8, 1.f, false,
                                             nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::add<float>(p, nullptr, p, 8, 1.f, 1.f, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill<float>(nullptr, 8, 1.f, nullptr), std::invalid_argument);
  // The message names the operation and the value.
  try {
    k::scale<float>(p, p, 8, 1.f, nullptr, 48);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "scale: block must be a multiple of 32 in [32, 1024], not 48");
  }
}

// n == 0 launches nothing and accepts null pointers.
TEST(ActivationArguments, EmptyIsANoOp) {
  for (Activation a : kActivations) {
    EXPECT_NO_THROW(k::activation_forward<float>(a, nullptr, nullptr, 0, 1.f, nullptr));
    EXPECT_NO_THROW(k::activation_backward<double>(a, nullptr, nullptr, nullptr, nullptr, 0, 1.0,
                                                   true, nullptr));
  }
  EXPECT_NO_THROW(k::add<float>(nullptr, nullptr, nullptr, 0, 1.f, 1.f, nullptr));
  EXPECT_NO_THROW(k::scale<double>(nullptr, nullptr, 0, 1.0, nullptr));
  EXPECT_NO_THROW(k::fill<float>(nullptr, 0, 1.f, nullptr));
}

TEST(ActivationCost, CountsArraysAndOperations) {
  const long long n = 1000;
  // Forward: read x, write y.
  EXPECT_EQ(k::activation_forward_cost(Activation::sigmoid, n).bytes, 8.0 * n);
  EXPECT_EQ(k::activation_forward_cost(Activation::sigmoid, n).flops, 4.0 * n);
  EXPECT_EQ(k::activation_forward_cost(Activation::relu, n, 8).bytes, 16.0 * n);
  // Backward: relu reads x and dy; elu x, y, dy; tanh y, dy; +dx when accumulating.
  EXPECT_EQ(k::activation_backward_cost(Activation::relu, n, false).bytes, 12.0 * n);
  EXPECT_EQ(k::activation_backward_cost(Activation::elu, n, false).bytes, 16.0 * n);
  EXPECT_EQ(k::activation_backward_cost(Activation::tanh, n, true).bytes, 16.0 * n);
  EXPECT_EQ(k::activation_backward_cost(Activation::tanh, n, true).flops, 5.0 * n);
  EXPECT_EQ(k::add_cost(n).bytes, 12.0 * n);
  EXPECT_EQ(k::scale_cost(n, 8).bytes, 16.0 * n);
  EXPECT_EQ(k::fill_cost(n).bytes, 4.0 * n);
  EXPECT_THROW(k::activation_forward_cost(static_cast<Activation>(42), n), std::invalid_argument);
}

}  // namespace
