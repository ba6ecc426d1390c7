// Adam (PyTorch and Keras forms) and SGD with momentum against their CPU
// references over several steps, float and double, odd sizes, two block
// sizes, three thread orders; small examples computed by hand; the
// relations between the Keras and PyTorch forms; determinism; arguments.
//
// References: the double CPU reference run on the kernels' inputs widened to
// double, with the double configuration. For a float kernel that reference
// is exact to far below float precision, so the tolerances below bound the
// kernel's own rounding over the steps: per step a handful of roundings
// (2^-24 = 6e-8 relative each), plus the hyperparameters rounded once to
// float (0.9f, 0.1f, 0.999f, 0.001f are within 5e-8 relative), and nvcc may
// contract a*b + c into one fma (one rounding fewer). The double kernels
// run the reference's expressions: the same bits in the sim flavour, a few
// ulps apart on a GPU (fma contraction).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <array>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/optim.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::testing::random_nonzero;

using timbre::DeviceBuffer;
using timbre::testing::widen;
using timbre::testing::same_bits;
using timbre::testing::poison;
using timbre::kernels::AdamConfig;
using timbre::kernels::AdamForm;
using timbre::kernels::SgdConfig;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::Tolerance;
using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::dtype_name;
using timbre::testing::once;
namespace k = timbre::kernels;

constexpr long long kSizes[] = {1, 7, 1000003};  // 1000003: every thread loops twice
constexpr int kBlocks[] = {64, 256};
constexpr int kSteps = 5;

// Elements i with i % 4 == cls.
template <class V>
V of_class(const V& v, size_t cls) {
  V out;
  for (size_t i = cls; i < v.size(); i += 4) out.push_back(v[i]);
  return out;
}

// Gradients in four classes by i % 4, so that each class can be compared
// with the tolerance its arithmetic deserves:
//   0: |g| in [0.1, 1), the same sign at every step   (no cancellation in m)
//   1: |g| in [1e-4, 1e-3), the same sign              (small gradients)
//   2: |g| in [1e-9, 1e-7), the same sign              (sqrt(vhat) ~ eps: eps matters)
//   3: |g| in [0.1, 1), a random sign at every step    (m cancels)
template <class T>
std::vector<std::vector<T>> gradient_steps(size_t n, int steps, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> sign(n);
  for (auto& s : sign) s = u(g) < 0.5 ? -1 : 1;
  std::vector<std::vector<T>> out(static_cast<size_t>(steps), std::vector<T>(n));
  for (auto& step : out)
    for (size_t i = 0; i < n; ++i) {
      double m = 0, s = sign[i];
      switch (i % 4) {
        case 0: m = 0.1 + 0.9 * u(g); break;
        case 1: m = 1e-4 + 9e-4 * u(g); break;
        case 2: m = 1e-9 * std::pow(100.0, u(g)); break;
        case 3:
          m = 0.1 + 0.9 * u(g);
          s = u(g) < 0.5 ? -1 : 1;
          break;
      }
      step[i] = T(s * m);
    }
  return out;
}

// An optimiser state as if after many steps of gradients like g: m ~ g
// (the same sign, so the same-sign classes stay free of cancellation),
// v ~ g^2 > 0.
template <class T>
void resumed_state(const std::vector<T>& g, uint64_t seed, std::vector<T>* m,
                   std::vector<T>* v) {
  const size_t n = g.size();
  std::mt19937_64 r(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  m->resize(n);
  v->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*m)[i] = T(double(g[i]) * u(r));
    (*v)[i] = T(double(g[i]) * double(g[i]) * u(r));
  }
}

// ---------------------------------------------------------------------------
// Tolerances (kSteps = 5 steps; lr = 1e-2, so |update| <= ~0.03 per step).
template <class T>
struct AdamTol;

template <>
struct AdamTol<float> {
  // m, same-sign classes: no cancellation, so each step adds <= 3 roundings
  // and the rounded 0.9f/0.1f (<= 1.5 ulp + 3e-8 = 1.2e-7 relative); five
  // steps: 6e-7.
  static constexpr Tolerance m{0, 1e-6};
  // m, class 3: cancellation makes the error absolute: a few roundings of
  // terms up to 1 per step (ulp(1) = 1.2e-7), five steps: ~6e-7.
  static constexpr Tolerance m_cancel{1e-6, 1e-6};
  // v: positive terms: 4 roundings (2 ulp) + 0.001f's 4.7e-8 per step:
  // 1.8e-7; five steps: 9e-7.
  static constexpr Tolerance v{0, 2e-6};
  // p: |p| <= ~1.2, each step rounds p - update (0.5 ulp = 6e-8 relative to
  // |p|) and the update carries m's and v's relative errors (< 2e-6) times
  // |update| <= 0.03: <= 1.2e-7 per step, 6e-7 over five. Absolute, since p
  // may pass through 0.
  static constexpr Tolerance p{1e-6, 0};
};

template <>
struct AdamTol<double> {
  // The same analysis at 2^-53 = 1.1e-16 per rounding: the bounds above
  // scaled by 2^-29 (~2e-9), rounded up to 1e-14 (relative) and 2e-15
  // (absolute); in the sim flavour the error is 0.
  static constexpr Tolerance m{0, 1e-14};
  static constexpr Tolerance m_cancel{2e-15, 1e-14};
  static constexpr Tolerance v{0, 1e-14};
  static constexpr Tolerance p{2e-15, 0};
};

template <class T>
struct SgdTol;

template <>
struct SgdTol<float> {
  // Gradients of classes 0-3 mixed, signs random (class 3) or fixed: the
  // buffer reaches |b| <= 1 + 0.9 + ... + 0.9^4 = 4.1 and may cancel, so the
  // error is absolute: <= 3 roundings of terms up to 4.1 per step (half an
  // ulp of 4.1 = 2.4e-7 each), five steps: 3.6e-6.
  static constexpr Tolerance buf{4e-6, 0};
  // p: |p| <= ~4; each step rounds p (2.4e-7) and subtracts lr d with d's
  // error (<= 4e-6, nesterov adds mu b's) times lr = 0.1: <= 7e-7 per step,
  // 3.5e-6 over five.
  static constexpr Tolerance p{4e-6, 0};
};

template <>
struct SgdTol<double> {
  // Scaled by 2^-29 from float, rounded up; 0 in the sim flavour.
  static constexpr Tolerance buf{1e-14, 0};
  static constexpr Tolerance p{1e-14, 0};
};

// ---------------------------------------------------------------------------
// Adam against the reference.

template <class T>
class AdamTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AdamTest, Types);

// Three steps on p = (1, -1) with g = (0.5, -0.5), (-0.25, 0.25), (0.125,
// -0.125); lr = 0.01, betas 0.9, 0.999. By hand:
//   step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 2.5e-4;
//           mhat = 0.5, vhat = 0.25, sqrt(vhat) = 0.5.
//     pytorch (eps 1e-8): p = 1 - 0.01 * 0.5 / (0.5 + 1e-8) = 1 - 0.01 / (1 + 2e-8)
//                           = 0.9900000002 (to 1e-17)
//     keras (eps 1e-7):   lr_t = 0.01 sqrt(0.001) / 0.1 = 0.1 s, s = sqrt(0.001);
//                         p = 1 - 0.1 s * 0.05 / (0.5 s + 1e-7) = 1 - 0.01 / (1 + x),
//                         x = 2e-7 / s = 6.3245553e-6:
//                           = 0.99 + 0.01 x / (1 + x) = 0.99 + 6.3245153e-8
//                           = 0.9900000632451532
//   step 2: m = 0.045 - 0.025 = 0.02, v = 2.4975e-4 + 6.25e-5 = 3.1225e-4,
//           1 - b1^2 = 0.19, 1 - b2^2 = 0.001999;
//           mhat = 0.105263157894737, sqrt(vhat) = 0.395224...
//   step 3: m = 0.018 + 0.0125 = 0.0305, v = 3.1193775e-4 + 1.5625e-5 = 3.2756275e-4.
// Steps 2 and 3 of p evaluated from these in double (Python, the formulas of
// optim.cuh): pytorch 0.9873366298707846, 0.9839323384916654; keras
// 0.9873367079207922, 0.9839324352481928. The second element mirrors the first.
TYPED_TEST(AdamTest, HandComputedExample) {
  using T = TypeParam;
  const double m_expected[] = {0.05, 0.02, 0.0305};
  const double v_expected[] = {2.5e-4, 3.1225e-4, 3.2756275e-4};
  const double p_pytorch[] = {0.9900000002, 0.9873366298707846, 0.9839323384916654};
  const double p_keras[] = {0.9900000632451532, 0.9873367079207922, 0.9839324352481928};
  const double g[] = {0.5, -0.25, 0.125};
  // Double: the same formulas evaluated in another order (scalars rounded
  // differently): a few ulps of 1, 1e-15. Float: three roundings of p near 1
  // (6e-8 each) and of m, v (relative, a few ulps per step).
  const double p_tol = sizeof(T) == 8 ? 1e-15 : 3e-7;
  const double mv_rtol = sizeof(T) == 8 ? 1e-14 : 1e-6;
  for (AdamForm form : {AdamForm::pytorch, AdamForm::keras}) {
    const AdamConfig c = form == AdamForm::pytorch ? k::pytorch_adam(0.01) : k::keras_adam(0.01);
    const double* p_expected = form == AdamForm::pytorch ? p_pytorch : p_keras;
    DeviceBuffer<T> d_p(std::vector<T>{T(1), T(-1)}), d_m(std::vector<T>(2, T(0))),
        d_v(std::vector<T>(2, T(0))), d_g(2);
    for (int s = 0; s < 3; ++s) {
      d_g.copy_from_host(std::vector<T>{T(g[s]), T(-g[s])});
      k::adam_step<T>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), 2, c, s + 1, nullptr);
      const auto p = d_p.to_host(), m = d_m.to_host(), v = d_v.to_host();
      EXPECT_NEAR(p[0], p_expected[s], p_tol) << k::adam_form_name(form) << " step " << s + 1;
      EXPECT_NEAR(p[1], -p_expected[s], p_tol) << k::adam_form_name(form) << " step " << s + 1;
      EXPECT_NEAR(m[0], m_expected[s], mv_rtol * m_expected[s]) << "step " << s + 1;
      EXPECT_NEAR(m[1], -m_expected[s], mv_rtol * m_expected[s]) << "step " << s + 1;
      EXPECT_NEAR(v[0], v_expected[s], mv_rtol * v_expected[s]) << "step " << s + 1;
      EXPECT_NEAR(v[1], v_expected[s], mv_rtol * v_expected[s]) << "step " << s + 1;
    }
  }
}

// The Keras form is the PyTorch form with eps / sqrt(1 - b2^t) in place of
// eps (optim.cuh): equal up to rounding at every step t, given the same
// state. Double; the two evaluate different expressions: ~1 ulp of |update|
// <= 0.03 on p near 1, so 1e-15.
TEST(AdamForms, KerasIsPyTorchWithEpsOverSqrtBias2) {
  const long long n = 1001;
  const auto p0 = random_nonzero<double>(size_t(n), 11);
  const auto grads = gradient_steps<double>(size_t(n), 3, 12);
  DeviceBuffer<double> d_pk(p0), d_pp(p0), d_mk(std::vector<double>(size_t(n), 0.0)),
      d_vk(std::vector<double>(size_t(n), 0.0)), d_mp(std::vector<double>(size_t(n), 0.0)),
      d_vp(std::vector<double>(size_t(n), 0.0)), d_g{size_t(n)};
  for (long long t = 1; t <= 3; ++t) {
    d_g.copy_from_host(grads[size_t(t - 1)]);
    AdamConfig keras = k::keras_adam(1e-2), pytorch = k::pytorch_adam(1e-2);
    pytorch.eps = keras.eps / std::sqrt(1 - std::pow(0.999, double(t)));
    k::adam_step<double>(d_pk.get(), d_g.get(), d_mk.get(), d_vk.get(), n, keras, t, nullptr);
    k::adam_step<double>(d_pp.get(), d_g.get(), d_mp.get(), d_vp.get(), n, pytorch, t, nullptr);
    EXPECT_TRUE(all_close(d_pk.to_host(), d_pp.to_host(), {1e-15, 0})) << "step " << t;
  }
}

// Where the forms differ visibly: a gradient near eps. One step from p = 0
// with g = 1e-6, lr = 1e-3 and each library's default eps:
//   pytorch: p = -1e-3 * 1e-6 / (1e-6 + 1e-8)               = -9.900990099009901e-4
//   keras:   p = -1e-3 * 1e-6 / (1e-6 + 1e-7 / sqrt(0.001)) = -1e-3 / (1 + sqrt(10))
//                                                            = -2.402530733520421e-4
// Keras's effective eps is 31.6 times its nominal one at t = 1.
TEST(AdamForms, DifferForGradientsNearEps) {
  DeviceBuffer<double> d_p(std::vector<double>{0.0}), d_m(std::vector<double>{0.0}),
      d_v(std::vector<double>{0.0}), d_g(std::vector<double>{1e-6});
  k::adam_step<double>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), 1, k::pytorch_adam(), 1,
                       nullptr);
  EXPECT_NEAR(d_p.to_host()[0], -1e-3 / 1.01, 1e-18);
  d_p.copy_from_host(std::vector<double>{0.0});
  d_m.copy_from_host(std::vector<double>{0.0});
  d_v.copy_from_host(std::vector<double>{0.0});
  k::adam_step<double>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), 1, k::keras_adam(), 1,
                       nullptr);
  EXPECT_NEAR(d_p.to_host()[0], -1e-3 / (1 + std::sqrt(10.0)), 1e-18);
}

// Keras 2's decay: lr / (1 + decay * iterations), iterations = t - 1.
TEST(AdamForms, KerasTimeDecay) {
  EXPECT_DOUBLE_EQ(k::keras_decayed_lr(0.01, 0.5, 0), 0.01);  // step 1: no decay yet
  EXPECT_DOUBLE_EQ(k::keras_decayed_lr(0.01, 0.5, 1), 0.01 / 1.5);
  EXPECT_DOUBLE_EQ(k::keras_decayed_lr(0.01, 0.5, 2), 0.005);
  EXPECT_DOUBLE_EQ(k::keras_decayed_lr(1e-3, 1e-4, 10000), 5e-4);
  EXPECT_DOUBLE_EQ(k::keras_decayed_lr(1e-3, 0.0, 123456), 1e-3);
  EXPECT_THROW(k::keras_decayed_lr(1e-3, -1e-4, 1), std::invalid_argument);
  EXPECT_THROW(k::keras_decayed_lr(1e-3, 1e-4, -1), std::invalid_argument);
  EXPECT_THROW(k::keras_decayed_lr(-1e-3, 1e-4, 1), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// SGD.

template <class T>
class SgdTest : public ::testing::Test {};
TYPED_TEST_SUITE(SgdTest, Types);

const SgdConfig kSgdConfigs[] = {
    {0.1, 0.0, 0.0, false},  // plain
    {0.1, 0.9, 0.0, false},  // momentum
    {0.1, 0.9, 0.3, false},  // momentum with dampening
    {0.1, 0.9, 0.0, true},   // nesterov
};

std::string describe(const SgdConfig& c) {
  return "lr " + std::to_string(c.lr) + " momentum " + std::to_string(c.momentum) +
         " dampening " + std::to_string(c.dampening) + (c.nesterov ? " nesterov" : "");
}

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): kSteps Adam steps (PyTorch and
// Keras forms, from a fresh state and from a resumed one at t = 1000) and
// kSteps SGD steps (plain, momentum, dampening, nesterov), in float and
// double, at every size, both block sizes. Each output (p; v; m by gradient
// class; the momentum buffer) is a row with its own tolerance. Elementwise
// updates: the same bits at every block size too.

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

// The arrays of a result, one after the other.
template <size_t N>
std::vector<double> concat(const std::array<std::vector<double>, N>& parts) {
  std::vector<double> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

template <class T>
void adam_rows(OpTable& table, const AdamConfig& c, bool resumed) {
  using Tol = AdamTol<T>;
  const long long first_step = resumed ? 1000 : 1;
  for (long long n : kSizes) {
    const size_t un = size_t(n);
    struct State {
      std::vector<T> p0, m0, v0;
      std::vector<std::vector<T>> grads;
    };
    const auto state = once([=] {
      State s{random_nonzero<T>(un, uint64_t(n)), std::vector<T>(un, T(0)),
              std::vector<T>(un, T(0)), gradient_steps<T>(un, kSteps, uint64_t(n) + 1)};
      if (resumed) resumed_state<T>(s.grads[0], uint64_t(n) + 2, &s.m0, &s.v0);
      return s;
    });
    // p, m, v after kSteps steps: on the device, and in double.
    auto device = [=](int block) {
      const State& s = state();
      DeviceBuffer<T> d_p(s.p0), d_m(s.m0), d_v(s.v0), d_g{un};
      for (int step = 0; step < kSteps; ++step) {
        d_g.copy_from_host(s.grads[size_t(step)]);
        k::adam_step<T>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, c, first_step + step,
                        nullptr, block);
      }
      return std::array<std::vector<double>, 3>{widen(d_p.to_host()), widen(d_m.to_host()),
                                                widen(d_v.to_host())};
    };
    const auto reference = once([=] {
      const State& s = state();
      auto p = widen(s.p0), m = widen(s.m0), v = widen(s.v0);
      for (int step = 0; step < kSteps; ++step) {
        const auto g = widen(s.grads[size_t(step)]);
        k::adam_step_cpu<double>(p.data(), g.data(), m.data(), v.data(), n, c, first_step + step);
      }
      return std::array<std::vector<double>, 3>{p, m, v};
    });
    const std::string op = std::string("optim/adam_step/") + k::adam_form_name(c.form) +
                           (resumed ? "/resumed" : "");
    const std::string shape = "n=" + std::to_string(n) + " steps=" + std::to_string(kSteps);
    // One row: p, m and v after the steps, each compared with its own
    // tolerance (m by gradient class: class 3 cancels).
    OpCase row{op, dtype_name<T>(), shape, kBlockList, {},
               "p: rounded each step, carrying m's and v's errors; v: positive terms; m: "
               "same-sign classes relative, the cancelling class absolute",
               [=](int block) { return concat(device(block)); },
               [=] { return concat(reference()); }};
    row.compare = [un](const std::vector<double>& got, const std::vector<double>& ref, int) {
      const auto part = [&](const std::vector<double>& v, int i) {
        return std::vector<double>(v.begin() + long(i * un), v.begin() + long((i + 1) * un));
      };
      if (auto r = all_close(part(got, 0), part(ref, 0), Tol::p); !r) return r << " (p)";
      if (auto r = all_close(part(got, 2), part(ref, 2), Tol::v); !r) return r << " (v)";
      for (size_t cls = 0; cls < 4; ++cls)
        if (auto r = all_close(of_class(part(got, 1), cls), of_class(part(ref, 1), cls),
                               cls == 3 ? Tol::m_cancel : Tol::m);
            !r)
          return r << " (m, class " << cls << ")";
      return ::testing::AssertionSuccess();
    };
    row.block_invariant = true;
    table.add(std::move(row));
  }
}

std::string sgd_name(const SgdConfig& c) {
  if (c.nesterov) return "nesterov";
  if (c.momentum == 0) return "plain";
  return c.dampening != 0 ? "momentum_dampening" : "momentum";
}

template <class T>
void sgd_rows(OpTable& table) {
  using Tol = SgdTol<T>;
  for (const SgdConfig& c : kSgdConfigs)
    for (long long n : kSizes) {
      const size_t un = size_t(n);
      const bool momentum = c.momentum != 0;
      const auto p0 = once([=] { return random_nonzero<T>(un, uint64_t(n) + 3); });
      const auto grads = once([=] { return gradient_steps<T>(un, kSteps, uint64_t(n) + 4); });
      auto device = [=](int block) {
        DeviceBuffer<T> d_p(p0()), d_g{un}, d_b{un};
        poison(d_b);  // step 1 must write the buffer without reading it
        for (int s = 0; s < kSteps; ++s) {
          d_g.copy_from_host(grads()[size_t(s)]);
          k::sgd_step<T>(d_p.get(), d_g.get(), momentum ? d_b.get() : nullptr, n, c, s + 1,
                         nullptr, block);
        }
        return std::array<std::vector<double>, 2>{widen(d_p.to_host()), widen(d_b.to_host())};
      };
      const auto reference = once([=] {
        auto p = widen(p0());
        std::vector<double> b(un, 0.0);
        for (int s = 0; s < kSteps; ++s) {
          const auto g = widen(grads()[size_t(s)]);
          k::sgd_step_cpu<double>(p.data(), g.data(), b.data(), n, c, s + 1);
        }
        return std::array<std::vector<double>, 2>{p, b};
      });
      const std::string shape = "n=" + std::to_string(n) + " steps=" + std::to_string(kSteps);
      // One row: p, then (with momentum) the buffer.
      auto outputs = [=](const std::array<std::vector<double>, 2>& r) {
        return momentum ? concat(r) : r[0];
      };
      OpCase row{"optim/sgd_step/" + sgd_name(c), dtype_name<T>(), shape, kBlockList, {},
                 "p: rounded each step, lr times the step's error; the buffer may cancel: 3 "
                 "roundings of terms up to 4.1 per step, absolute",
                 [=](int block) { return outputs(device(block)); },
                 [=] { return outputs(reference()); }};
      row.compare = [un](const std::vector<double>& got, const std::vector<double>& ref, int) {
        const auto part = [&](const std::vector<double>& v, int i) {
          return std::vector<double>(v.begin() + long(i * un), v.begin() + long((i + 1) * un));
        };
        if (auto r = all_close(part(got, 0), part(ref, 0), Tol::p); !r) return r << " (p)";
        if (got.size() > un)
          if (auto r = all_close(part(got, 1), part(ref, 1), Tol::buf); !r)
            return r << " (buffer)";
        return ::testing::AssertionSuccess();
      };
      row.block_invariant = true;
      table.add(std::move(row));
    }
}

OP_CASES(optim) {
  for (bool resumed : {false, true})
    for (const AdamConfig& c : {k::pytorch_adam(1e-2), k::keras_adam(1e-2)}) {
      adam_rows<float>(table, c, resumed);
      adam_rows<double>(table, c, resumed);
    }
  sgd_rows<float>(table);
  sgd_rows<double>(table);
}


// p = 1, lr = 0.1, g = 0.5, -0.25, 0.125. By hand:
//   plain:            p = 0.95, 0.975, 0.9625
//   momentum 0.9:     b = 0.5, 0.45 - 0.25 = 0.2, 0.18 + 0.125 = 0.305;
//                     p = 0.95, 0.93, 0.8995
//   + dampening 0.5:  b = 0.5 (none at step 1), 0.45 - 0.125 = 0.325,
//                     0.2925 + 0.0625 = 0.355;  p = 0.95, 0.9175, 0.882
//   nesterov:         b as momentum; d = g + 0.9 b = 0.95, -0.07, 0.3995;
//                     p = 0.905, 0.912, 0.87205
// Tolerance: double, decimal fractions rounded in a different order: 1e-15;
// float, three roundings of p near 1 and of b: 3e-7.
TYPED_TEST(SgdTest, HandComputedExample) {
  using T = TypeParam;
  struct Case {
    SgdConfig c;
    double p[3], b[3];
  };
  const Case cases[] = {
      {{0.1, 0.0, 0.0, false}, {0.95, 0.975, 0.9625}, {0, 0, 0}},
      {{0.1, 0.9, 0.0, false}, {0.95, 0.93, 0.8995}, {0.5, 0.2, 0.305}},
      {{0.1, 0.9, 0.5, false}, {0.95, 0.9175, 0.882}, {0.5, 0.325, 0.355}},
      {{0.1, 0.9, 0.0, true}, {0.905, 0.912, 0.87205}, {0.5, 0.2, 0.305}},
  };
  const double g[] = {0.5, -0.25, 0.125};
  const double tol = sizeof(T) == 8 ? 1e-15 : 3e-7;
  for (const Case& cs : cases) {
    DeviceBuffer<T> d_p(std::vector<T>{T(1)}), d_b(1), d_g(1);
    poison(d_b);
    for (int s = 0; s < 3; ++s) {
      d_g.copy_from_host(std::vector<T>{T(g[s])});
      k::sgd_step<T>(d_p.get(), d_g.get(), d_b.get(), 1, cs.c, s + 1, nullptr);
      EXPECT_NEAR(d_p.to_host()[0], cs.p[s], tol) << describe(cs.c) << " step " << s + 1;
      if (cs.c.momentum != 0) {
        EXPECT_NEAR(d_b.to_host()[0], cs.b[s], tol) << describe(cs.c) << " step " << s + 1;
      }
    }
  }
}

// Keras 2's SGD (v = mu v - lr g; p += v, or p += mu v - lr g with
// nesterov) gives PyTorch's parameters when lr is constant: v = -lr b.
// Double; different expressions, a few ulps of p: 1e-15.
TEST(SgdForms, KerasMomentumEqualsPyTorchForConstantLr) {
  const long long n = 1001;
  const auto p0 = random_nonzero<double>(size_t(n), 21);
  const auto grads = gradient_steps<double>(size_t(n), kSteps, 22);
  for (bool nesterov : {false, true}) {
    const SgdConfig c{0.05, 0.9, 0.0, nesterov};
    std::vector<double> p_keras = p0, velocity(size_t(n), 0.0);
    DeviceBuffer<double> d_p(p0), d_b{size_t(n)}, d_g{size_t(n)};
    for (int s = 0; s < kSteps; ++s) {
      const auto& g = grads[size_t(s)];
      for (long long i = 0; i < n; ++i) {
        double& v = velocity[size_t(i)];
        v = c.momentum * v - c.lr * g[size_t(i)];
        p_keras[size_t(i)] += nesterov ? c.momentum * v - c.lr * g[size_t(i)] : v;
      }
      d_g.copy_from_host(g);
      k::sgd_step<double>(d_p.get(), d_g.get(), d_b.get(), n, c, s + 1, nullptr);
    }
    EXPECT_TRUE(all_close(d_p.to_host(), p_keras, {1e-15, 0})) << "nesterov " << nesterov;
  }
}

// ---------------------------------------------------------------------------
// Arguments.

TEST(OptimArguments, RejectedWithInvalidArgument) {
  DeviceBuffer<float> d(8);
  float* p = d.get();
  const AdamConfig ok = k::pytorch_adam();
  auto adam = [&](const AdamConfig& c, long long step = 1, long long n = 8, int block = 256) {
    k::adam_step<float>(p, p, p, p, n, c, step, nullptr, block);
  };
  EXPECT_THROW(adam(ok, 1, -1), std::invalid_argument);
  EXPECT_THROW(adam(ok, 0), std::invalid_argument);  // steps count from 1
  EXPECT_THROW(adam(ok, -3), std::invalid_argument);
  for (int block : {0, 16, 48, 1056, -32})
    EXPECT_THROW(adam(ok, 1, 8, block), std::invalid_argument) << block;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {-1e-3, nan, inf}) {
    AdamConfig c = ok;
    c.lr = bad;
    EXPECT_THROW(adam(c), std::invalid_argument) << "lr " << bad;
    c = ok;
    c.eps = bad;
    EXPECT_THROW(adam(c), std::invalid_argument) << "eps " << bad;
  }
  for (double bad : {-0.1, 1.0, 1.5, nan}) {
    AdamConfig c = ok;
    c.beta1 = bad;
    EXPECT_THROW(adam(c), std::invalid_argument) << "beta1 " << bad;
    c = ok;
    c.beta2 = bad;
    EXPECT_THROW(adam(c), std::invalid_argument) << "beta2 " << bad;
  }
  AdamConfig bad_form = ok;
  bad_form.form = static_cast<AdamForm>(7);
  EXPECT_THROW(adam(bad_form), std::invalid_argument);
  EXPECT_THROW(k::adam_form_name(static_cast<AdamForm>(7)), std::invalid_argument);
  EXPECT_THROW(k::adam_step<float>(p, nullptr, p, p, 8, ok, 1, nullptr), std::invalid_argument);
  EXPECT_THROW(k::adam_step<float>(p, p, p, nullptr, 8, ok, 1, nullptr), std::invalid_argument);
  EXPECT_NO_THROW(
      k::adam_step<float>(nullptr, nullptr, nullptr, nullptr, 0, ok, 1, nullptr));  // n = 0

  auto sgd = [&](const SgdConfig& c, float* buf, long long step = 1) {
    k::sgd_step<float>(p, p, buf, 8, c, step, nullptr);
  };
  EXPECT_THROW(sgd({-0.1, 0.0, 0.0, false}, nullptr), std::invalid_argument);  // lr < 0
  EXPECT_THROW(sgd({0.1, -0.9, 0.0, false}, p), std::invalid_argument);       // momentum < 0
  EXPECT_THROW(sgd({0.1, 0.9, nan, false}, p), std::invalid_argument);
  EXPECT_THROW(sgd({0.1, 0.0, 0.0, true}, p), std::invalid_argument);  // nesterov, no momentum
  EXPECT_THROW(sgd({0.1, 0.9, 0.1, true}, p), std::invalid_argument);  // nesterov, dampening
  EXPECT_THROW(sgd({0.1, 0.9, 0.0, false}, nullptr), std::invalid_argument);  // needs a buffer
  EXPECT_THROW(sgd({0.1, 0.0, 0.0, false}, nullptr, 0), std::invalid_argument);
  EXPECT_NO_THROW(sgd({0.1, 0.0, 0.0, false}, nullptr));  // plain SGD: no buffer
  try {
    adam(ok, 0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "adam_step: step must be >= 1 (the first update is 1), not 0");
  }
}

TEST(OptimCost, Formulas) {
  EXPECT_DOUBLE_EQ(k::adam_step_cost(AdamForm::pytorch, 10).bytes, 280);  // 7 arrays
  EXPECT_DOUBLE_EQ(k::adam_step_cost(AdamForm::pytorch, 10).flops, 130);
  EXPECT_DOUBLE_EQ(k::adam_step_cost(AdamForm::keras, 10, 8).flops, 120);
  EXPECT_DOUBLE_EQ(k::sgd_step_cost(SgdConfig{}, 10).bytes, 120);  // p, g; p
  EXPECT_DOUBLE_EQ(k::sgd_step_cost(SgdConfig{0.1, 0.9, 0, false}, 10).bytes, 200);
  EXPECT_DOUBLE_EQ(k::sgd_step_cost(SgdConfig{0.1, 0.9, 0, true}, 10).flops, 70);
}

// The finite check fused into Adam (AdamCheck): the smallest tag + index of
// a NaN or infinite gradient element is recorded, across blocks and grid-
// stride trips (n spans several blocks of 64); finite gradients leave the
// flag as set and the update the same bits as without the check.
TEST(AdamCheck, RecordsTheFirstNonFiniteGradientElement) {
  const long long n = 1000;
  const auto p0 = random_nonzero<float>(size_t(n), 5), g0 = random_nonzero<float>(size_t(n), 6);
  for (bool bad : {false, true}) {
    std::vector<float> g = g0;
    if (bad) {
      g[977] = std::nanf("");
      g[403] = std::numeric_limits<float>::infinity();
      g[650] = -std::numeric_limits<float>::infinity();
    }
    DeviceBuffer<float> d_p(p0), d_g(g), d_m(std::vector<float>(size_t(n), 0.f)),
        d_v(std::vector<float>(size_t(n), 0.f));
    DeviceBuffer<float> d_p2(p0), d_m2(std::vector<float>(size_t(n), 0.f)),
        d_v2(std::vector<float>(size_t(n), 0.f));
    DeviceBuffer<unsigned long long> flag(std::vector<unsigned long long>{~0ull});
    const unsigned long long tag = 7ull << 40;
    k::adam_step<float>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, k::keras_adam(), 3, nullptr,
                        64, k::AdamCheck{flag.get(), tag});
    EXPECT_EQ(flag.to_host()[0], bad ? tag + 403 : ~0ull);
    // The step's index from a device count (a graph replay): count 8 is
    // index 7, in the high bits.
    DeviceBuffer<unsigned long long> flag2(std::vector<unsigned long long>{~0ull}),
        counted(std::vector<unsigned long long>{8});
    k::adam_step<float>(d_p2.get(), d_g.get(), d_m2.get(), d_v2.get(), n, k::keras_adam(), 3,
                        nullptr, 64, k::AdamCheck{flag2.get(), 5, counted.get(), 40});
    EXPECT_EQ(flag2.to_host()[0], bad ? tag + 5 + 403 : ~0ull);
    d_p2 = DeviceBuffer<float>(p0);  // fresh state for the comparison below
    d_m2 = DeviceBuffer<float>(std::vector<float>(size_t(n), 0.f));
    d_v2 = DeviceBuffer<float>(std::vector<float>(size_t(n), 0.f));
    if (!bad) {  // the check changes nothing else
      k::adam_step<float>(d_p2.get(), d_g.get(), d_m2.get(), d_v2.get(), n, k::keras_adam(), 3,
                          nullptr, 64);
      EXPECT_TRUE(same_bits(d_p.to_host(), d_p2.to_host()));
    }
  }
}

// The step count on the device (a step replayed from a CUDA graph): after
// adam_advance from a checkpoint's count, the update is the host's step with
// the same t and Keras's decayed lr, to the bit, in both forms and types.
template <class T>
void expect_device_step_matches_host() {
  const long long n = 333;
  const auto p0 = random_nonzero<T>(size_t(n), 11);
  const double decay = 0.01;
  for (k::AdamConfig c : {k::pytorch_adam(3e-3), k::keras_adam(2e-4)}) {
    DeviceBuffer<T> d_p(p0), d_m(std::vector<T>(size_t(n), T(0))), d_v(std::vector<T>(size_t(n), T(0)));
    DeviceBuffer<T> h_p(p0), h_m(std::vector<T>(size_t(n), T(0))), h_v(std::vector<T>(size_t(n), T(0)));
    k::AdamDeviceStep start;
    start.t = 4;  // resumed after 4 steps
    DeviceBuffer<k::AdamDeviceStep> st(std::vector<k::AdamDeviceStep>{start});
    for (long long t = 5; t <= 8; ++t) {
      DeviceBuffer<T> d_g(random_nonzero<T>(size_t(n), uint64_t(20 + t)));
      k::adam_advance(st.get(), c, decay, nullptr);
      k::adam_step<T>(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, c, st.get(), nullptr, 64);
      k::AdamConfig ch = c;
      ch.lr = k::keras_decayed_lr(c.lr, decay, t - 1);
      k::adam_step<T>(h_p.get(), d_g.get(), h_m.get(), h_v.get(), n, ch, t, nullptr, 64);
    }
    EXPECT_EQ(st.to_host()[0].t, 8);
    EXPECT_TRUE(same_bits(d_p.to_host(), h_p.to_host())) << k::adam_form_name(c.form);
    EXPECT_TRUE(same_bits(d_v.to_host(), h_v.to_host())) << k::adam_form_name(c.form);
  }
}

TEST(AdamDeviceStep, MatchesTheHostStepBitForBit) {
  expect_device_step_matches_host<float>();
  expect_device_step_matches_host<double>();
}

}  // namespace
