// GRU layer and attention over time (kernels/gru.cuh) against their CPU
// references, in float and double: the fused gate kernels on strided rows;
// the whole layer forward and backward at odd shapes (B=3, S=5, I=7, H=4;
// S=1; with and without h0; both directions) and at the model's shapes
// (B=32, S=16, I=128, H=32 and B=32, S=64, I=128, H=64); attention at
// (B=3, S=5, D=6, A=4) and (32, 64, 128, 128). Every device run uses two
// block sizes and three thread orders; gradients are checked assigning and
// accumulating, and against finite differences of the device forward in
// double; determinism, argument errors and costs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "kernels/attention.cuh"
#include "kernels/gru.cuh"
#include "tests/testing.h"

namespace {

namespace k = timbre::kernels;
using k::AttentionAccumulate;
using k::GruAccumulate;
using timbre::DeviceBuffer;
using timbre::testing::unit_roundoff;
using timbre::testing::max_abs;
using timbre::testing::all_close;
using timbre::testing::random_floats;
using timbre::testing::Tolerance;

// ---------------------------------------------------------------------------
// Tolerances: |got - ref| <= atol + rtol*|ref|, in units of the unit
// roundoff u of T (2^-24 float, 2^-53 double), so one analysis serves both
// types; the references compute in double, so for T = float their error is
// negligible and for T = double it is of the same kind as the kernel's.
//
// Where the error comes from (float; the same counts hold for double):
//   * A GEMM entry is a dot product of K terms. Its rounding error, for any
//     summation order (OpenBLAS here, cuBLAS with or without split-K on a
//     GPU), is the sum of K roundings of partial sums, with random signs.
//     cuBLAS in its default math mode computes FP32 GEMMs in FP32 (no TF32);
//     with TF32 allowed the errors would be ~1000x larger and these tests
//     would fail, as they should.
//   * The gate arithmetic: ~10 roundings per element, plus expf/tanhf, which
//     are within 2 ulp on a GPU (CUDA Programming Guide, "Mathematical
//     Functions"); simcuda uses libm (< 1 ulp).
//   * Through time: an error in h_{t-1} reaches h_t multiplied by the step's
//     Jacobian, whose norm stays below ~1 for these weights (|W| ~ 1/sqrt(H),
//     gates in (0, 1), tanh' <= 1): the roundings of all S steps add up.
//     Backward adds up the same way in reverse, then sums B*S rows for the
//     parameter gradients.
// Model: a value fed by a chain of N roundings, each at most u times the
// scale of the values involved and of random sign, is off by a random walk
// of standard deviation <= u sqrt(N) scale; 4 standard deviations cover
// every element of the tensors here. The fixed part (the gate arithmetic,
// 2 ulp transcendentals, and cancellation: small entries, like the bias
// gradients of the 1-unit layer, whose terms are larger than the result)
// gets 256 u. So eps = u (4 sqrt(N) + 256), relative to the scale (the
// largest |ref| of the tensor compared). The errors measured on the shapes
// below (simcuda, OpenBLAS) are at most ~30 u in both types, and every check
// passes with a margin of 17x or more. A wrong formula, a wrong index or a
// missed time step gives errors of order 1e-2 relative to the scale, far
// outside every tolerance here.

// Tolerance eps relative to the scale of the reference values: atol =
// eps * max|ref| (entries near 0 carry the rounding error of the large
// terms that cancelled in them), rtol = eps.
template <class V>
Tolerance scaled(double eps, const V& ref) {
  return Tolerance{eps * std::max(max_abs(ref), 1e-30), eps};
}

struct GruShape {
  int batch, steps, input, hidden;
  std::string str() const {
    return "B=" + std::to_string(batch) + " S=" + std::to_string(steps) +
           " I=" + std::to_string(input) + " H=" + std::to_string(hidden);
  }
};

// eps for values fed by a chain of n roundings (see above).
template <class T>
double chain_eps(double n) {
  return unit_roundoff<T> * (4 * std::sqrt(n) + 256);
}
// GRU outputs: S steps of pre-activations with I + H terms each.
template <class T>
double gru_forward_eps(const GruShape& s) {
  return chain_eps<T>(double(s.steps) * (s.input + s.hidden));
}
// GRU gradients: S steps of the backward recurrence, each fed by the
// saved gates (the forward's I + H per step, bounded by 3H + I) and by
// dh_prev's 3H-term sum; then the parameter gradients sum B*S rows.
template <class T>
double gru_backward_eps(const GruShape& s) {
  return chain_eps<T>(double(s.steps) * (3 * s.hidden + s.input) + double(s.batch) * s.steps);
}

// Accumulating: old + g rounds once more (1 ulp of the result); g's own
// error is relative to |g|, which may exceed the sum, so it becomes
// absolute: atol + rtol * max|g|.
Tolerance accumulated(Tolerance t, double max_abs_g, double u) {
  return Tolerance{t.atol + t.rtol * max_abs_g, t.rtol + 2 * u};
}

// 96: three warps, not a power of two; 256: the default.
const int kBlocks[] = {96, 256};

template <class T>
std::vector<T> uniform(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  const auto u = random_floats(n, seed, float(lo), float(hi));
  return std::vector<T>(u.begin(), u.end());
}

// Owns a cuBLAS handle for one test, bound to the default stream.
struct Cublas {
  cublasHandle_t h = nullptr;
  Cublas() { CUBLAS_CHECK(cublasCreate(&h)); }
  ~Cublas() { cublasDestroy(h); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
};

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// ===========================================================================
// The gate kernels on their own, with strided rows (padding between rows,
// as in the layer, where one step's rows are every S-th row).

template <class T>
class GruGates : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GruGates, Types);

TYPED_TEST(GruGates, ForwardMatchesReference) {
  using T = TypeParam;
  const int B = 5, H = 7;
  const long long gx_stride = 3 * H + 4, hp_stride = H + 3, h_stride = H + 2,
                  saved_stride = 5 * H + 1;
  // Pre-activations up to +-6 (gx and gh in [-3, 3]): sigmoid and tanh from
  // their linear part to saturation.
  const auto gx = uniform<T>(B * gx_stride, 1, -3, 3);
  const auto gh = uniform<T>(B * 3 * H, 2, -3, 3);
  const auto b_ih = uniform<T>(3 * H, 3), b_hh = uniform<T>(3 * H, 4);
  const auto h_prev = uniform<T>(B * hp_stride, 5);
  DeviceBuffer<T> d_gx(gx), d_gh(gh), d_b_ih(b_ih), d_b_hh(b_hh), d_hp(h_prev);
  for (bool with_prev : {true, false}) {
    SCOPED_TRACE(with_prev ? "h_prev given" : "h_prev null");
    const T* hp = with_prev ? h_prev.data() : nullptr;
    const T* ghp = with_prev ? gh.data() : nullptr;
    std::vector<T> h(B * h_stride, T(7)), h_copy(B * H), saved(B * saved_stride, T(7));
    k::gru_gates_forward_cpu<T>(B, H, gx.data(), gx_stride, ghp, b_ih.data(), b_hh.data(), hp,
                                hp_stride, h.data(), h_stride, h_copy.data(), saved.data(),
                                saved_stride);
    // A handful of roundings and two transcendentals (2 ulp each on a GPU)
    // per value: 32 u relative, 32 u absolute (|values| <= ~3).
    const Tolerance tol{32 * unit_roundoff<T>, 32 * unit_roundoff<T>};
    timbre::testing::for_each_thread_order([&] {
      for (int block : kBlocks) {
        SCOPED_TRACE("block " + std::to_string(block));
        // Padding pre-filled with 7 must stay 7: the kernel writes only its rows.
        DeviceBuffer<T> d_h(std::vector<T>(B * h_stride, T(7))), d_copy(B * H),
            d_saved(std::vector<T>(B * saved_stride, T(7)));
        k::gru_gates_forward<T>(B, H, d_gx.get(), gx_stride, with_prev ? d_gh.get() : nullptr,
                                d_b_ih.get(), d_b_hh.get(), with_prev ? d_hp.get() : nullptr,
                                hp_stride, d_h.get(), h_stride, d_copy.get(), d_saved.get(),
                                saved_stride, nullptr, block);
        EXPECT_TRUE(all_close(d_h.to_host(), h, tol)) << "h";
        EXPECT_TRUE(all_close(d_copy.to_host(), h_copy, tol)) << "h_copy";
        EXPECT_TRUE(all_close(d_saved.to_host(), saved, tol)) << "saved";
        // Without the optional outputs h is the same.
        k::gru_gates_forward<T>(B, H, d_gx.get(), gx_stride, with_prev ? d_gh.get() : nullptr,
                                d_b_ih.get(), d_b_hh.get(), with_prev ? d_hp.get() : nullptr,
                                hp_stride, d_h.get(), h_stride, nullptr, nullptr, 0, nullptr,
                                block);
        EXPECT_TRUE(all_close(d_h.to_host(), h, tol)) << "h without optional outputs";
      }
    });
  }
}

TYPED_TEST(GruGates, BackwardMatchesReference) {
  using T = TypeParam;
  const int B = 5, H = 7;
  const long long saved_stride = 5 * H + 3, dh_stride = H + 1, dgx_stride = 3 * H + 2,
                  dgh_stride = 3 * H + 5;
  // A consistent saved row: r, z in (0, 1), n in (-1, 1), hn and h_prev
  // anywhere plausible.
  std::vector<T> saved = uniform<T>(B * saved_stride, 11);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < H; ++j) {
      T* row = saved.data() + b * saved_stride;
      row[j] = T(0.5) + row[j] / T(2.1);          // r
      row[H + j] = T(0.5) + row[H + j] / T(2.1);  // z
      row[3 * H + j] *= T(2);                     // hn
    }
  const auto dh_seq = uniform<T>(B * dh_stride, 12), dh_in = uniform<T>(B * H, 13);
  DeviceBuffer<T> d_saved(saved), d_dh_seq(dh_seq);
  // Elementwise products of a few factors: 16 u relative and absolute.
  const Tolerance tol{16 * unit_roundoff<T>, 16 * unit_roundoff<T>};
  for (int inputs = 0; inputs < 3; ++inputs) {
    // 0: both dh sources; 1: dh_seq only; 2: dh_in only.
    SCOPED_TRACE("inputs " + std::to_string(inputs));
    const T* hs = inputs != 2 ? dh_seq.data() : nullptr;
    const T* hi = inputs != 1 ? dh_in.data() : nullptr;
    std::vector<T> dgx(B * dgx_stride, T(7)), dgh(B * dgh_stride, T(7)), dh_out(B * H);
    k::gru_gates_backward_cpu<T>(B, H, saved.data(), saved_stride, hs, dh_stride, hi, dgx.data(),
                                 dgx_stride, dgh.data(), dgh_stride, dh_out.data());
    timbre::testing::for_each_thread_order([&] {
      for (int block : kBlocks) {
        SCOPED_TRACE("block " + std::to_string(block));
        DeviceBuffer<T> d_dgx(std::vector<T>(B * dgx_stride, T(7))),
            d_dgh(std::vector<T>(B * dgh_stride, T(7))), d_dh(dh_in);
        // dh_out aliases dh_in, as in the layer.
        k::gru_gates_backward<T>(B, H, d_saved.get(), saved_stride,
                                 hs ? d_dh_seq.get() : nullptr, dh_stride,
                                 hi ? d_dh.get() : nullptr, d_dgx.get(), dgx_stride, d_dgh.get(),
                                 dgh_stride, d_dh.get(), nullptr, block);
        EXPECT_TRUE(all_close(d_dgx.to_host(), dgx, tol)) << "dgx";
        EXPECT_TRUE(all_close(d_dgh.to_host(), dgh, tol)) << "dgh";
        EXPECT_TRUE(all_close(d_dh.to_host(), dh_out, tol)) << "dh_out";
      }
    });
  }
}

// ===========================================================================
// The whole GRU layer.

// Inputs of one problem, on the host. Weights and biases uniform in
// [-k, k] with k = weight_gain / sqrt(H): gain 1 is PyTorch's default
// initialisation (the model's regime, gates mostly near 1/2); the odd shapes
// use a larger gain so that pre-activations reach +-5 and the gates
// saturate. x, h0 and the upstream gradients are uniform in [-1, 1).
template <class T>
struct GruProblem {
  GruShape s;
  bool has_h0, reverse;
  std::vector<T> x, w_ih, w_hh, b_ih, b_hh, h0, dhseq, dh_last;

  GruProblem(GruShape shape, bool with_h0, bool rev, uint64_t seed, double weight_gain)
      : s(shape), has_h0(with_h0), reverse(rev) {
    const size_t B = s.batch, S = s.steps, I = s.input, H = s.hidden;
    const double kw = weight_gain / std::sqrt(double(H));
    x = uniform<T>(B * S * I, seed);
    w_ih = uniform<T>(3 * H * I, seed + 1, -kw, kw);
    w_hh = uniform<T>(3 * H * H, seed + 2, -kw, kw);
    b_ih = uniform<T>(3 * H, seed + 3, -kw, kw);
    b_hh = uniform<T>(3 * H, seed + 4, -kw, kw);
    h0 = uniform<T>(B * H, seed + 5);
    dhseq = uniform<T>(B * S * H, seed + 6);
    dh_last = uniform<T>(B * H, seed + 7);
  }
  const T* h0_or_null() const { return has_h0 ? h0.data() : nullptr; }
  std::string str() const {
    return s.str() + (has_h0 ? " h0" : " no h0") + (reverse ? " reverse" : " forward");
  }
};

// The six gradients of gru_backward, on the host.
template <class T>
struct GruGrads {
  std::vector<T> dx, dh0, dw_ih, dw_hh, db_ih, db_hh;
  explicit GruGrads(const GruShape& s)
      : dx(size_t(s.batch) * s.steps * s.input), dh0(size_t(s.batch) * s.hidden),
        dw_ih(size_t(3) * s.hidden * s.input), dw_hh(size_t(3) * s.hidden * s.hidden),
        db_ih(3 * s.hidden), db_hh(3 * s.hidden) {}
  std::vector<std::vector<T>*> all() { return {&dx, &dh0, &dw_ih, &dw_hh, &db_ih, &db_hh}; }
  std::vector<const std::vector<T>*> all() const {
    return {&dx, &dh0, &dw_ih, &dw_hh, &db_ih, &db_hh};
  }
};
const char* const kGradNames[] = {"dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh"};

GruAccumulate all_flags(bool acc) { return GruAccumulate{acc, acc, acc, acc, acc, acc}; }

template <class T>
GruGrads<T> reference_grads(const GruProblem<T>& p, bool use_dhseq, bool use_dh_last,
                            const GruGrads<T>* prefill, bool accumulate) {
  GruGrads<T> g = prefill ? *prefill : GruGrads<T>(p.s);
  k::gru_backward_cpu<T>(p.s.batch, p.s.steps, p.s.input, p.s.hidden, p.x.data(), p.w_ih.data(),
                         p.w_hh.data(), p.b_ih.data(), p.b_hh.data(), p.h0_or_null(), p.reverse,
                         use_dhseq ? p.dhseq.data() : nullptr,
                         use_dh_last ? p.dh_last.data() : nullptr, g.dx.data(), g.dh0.data(),
                         g.dw_ih.data(), g.dw_hh.data(), g.db_ih.data(), g.db_hh.data(),
                         all_flags(accumulate));
  return g;
}

// The problem on the device, with every buffer the layer needs.
template <class T>
struct GruDevice {
  const GruProblem<T>& p;
  DeviceBuffer<T> x, w_ih, w_hh, b_ih, b_hh, h0, dhseq, dh_last;
  DeviceBuffer<T> hseq, h_last, reserve, ws_forward, ws_backward;
  DeviceBuffer<T> dx, dh0, dw_ih, dw_hh, db_ih, db_hh;

  explicit GruDevice(const GruProblem<T>& problem)
      : p(problem), x(p.x), w_ih(p.w_ih), w_hh(p.w_hh), b_ih(p.b_ih), b_hh(p.b_hh), h0(p.h0),
        dhseq(p.dhseq), dh_last(p.dh_last), hseq(p.dhseq.size()), h_last(p.h0.size()),
        reserve(k::gru_reserve_size(p.s.batch, p.s.steps, p.s.hidden)),
        ws_forward(k::gru_forward_workspace_size(p.s.batch, p.s.steps, p.s.input, p.s.hidden)),
        ws_backward(
            k::gru_backward_workspace_size(p.s.batch, p.s.steps, p.s.input, p.s.hidden)),
        dx(p.x.size()), dh0(p.h0.size()), dw_ih(p.w_ih.size()), dw_hh(p.w_hh.size()),
        db_ih(p.b_ih.size()), db_hh(p.b_hh.size()) {}

  void forward(cublasHandle_t h, int block, bool save = true) {
    k::gru_forward<T>(h, p.s.batch, p.s.steps, p.s.input, p.s.hidden, x.get(), w_ih.get(),
                      w_hh.get(), b_ih.get(), b_hh.get(), p.has_h0 ? h0.get() : nullptr,
                      p.reverse, hseq.get(), h_last.get(), save ? reserve.get() : nullptr,
                      ws_forward.get(), nullptr, block);
  }
  void backward(cublasHandle_t h, int block, GruAccumulate acc, bool use_dhseq = true,
                bool use_dh_last = true) {
    k::gru_backward<T>(h, p.s.batch, p.s.steps, p.s.input, p.s.hidden, x.get(), w_ih.get(),
                       w_hh.get(), reserve.get(), p.reverse, use_dhseq ? dhseq.get() : nullptr,
                       use_dh_last ? dh_last.get() : nullptr, dx.get(), dh0.get(), dw_ih.get(),
                       dw_hh.get(), db_ih.get(), db_hh.get(), acc, ws_backward.get(), nullptr,
                       block);
  }
  std::vector<DeviceBuffer<T>*> grads() { return {&dx, &dh0, &dw_ih, &dw_hh, &db_ih, &db_hh}; }
  void upload(GruGrads<T>& g) {
    auto dst = grads();
    auto src = g.all();
    for (size_t i = 0; i < dst.size(); ++i) dst[i]->copy_from_host(*src[i]);
  }
};

// Compares the device gradients with `want`. After accumulating, `assigned`
// holds the gradients alone: their scale sets the tolerance, not the sum's.
template <class T>
void expect_grads_close(GruDevice<T>& dev, const GruGrads<T>& want, double eps,
                        const GruGrads<T>* assigned = nullptr) {
  const auto got = dev.grads();
  const auto ref = want.all();
  for (size_t i = 0; i < got.size(); ++i) {
    Tolerance tol = scaled(eps, *ref[i]);
    if (assigned) {
      const std::vector<T>& g = *assigned->all()[i];
      tol = accumulated(scaled(eps, g), max_abs(g), unit_roundoff<T>);
    }
    EXPECT_TRUE(all_close(got[i]->to_host(), *ref[i], tol)) << kGradNames[i];
  }
}

// Forward, then backward assigning over a NaN-filled gradient (which must
// be overwritten, never read) and accumulating into a random prefill, for
// both block sizes under every thread order.
template <class T>
void check_layer(const GruProblem<T>& p, bool use_dhseq = true, bool use_dh_last = true) {
  SCOPED_TRACE(p.str() + (use_dhseq ? "" : ", no dhseq") + (use_dh_last ? "" : ", no dh_last"));
  const GruShape& s = p.s;
  std::vector<T> hseq(p.dhseq.size()), h_last(p.h0.size());
  k::gru_forward_cpu<T>(s.batch, s.steps, s.input, s.hidden, p.x.data(), p.w_ih.data(),
                        p.w_hh.data(), p.b_ih.data(), p.b_hh.data(), p.h0_or_null(), p.reverse,
                        hseq.data(), h_last.data());
  GruGrads<T> want = reference_grads<T>(p, use_dhseq, use_dh_last, nullptr, false);
  GruGrads<T> prefill(s), nan_fill(s);
  {
    uint64_t seed = 900;
    for (auto* v : prefill.all()) *v = uniform<T>(v->size(), seed++, -2, 2);
    for (auto* v : nan_fill.all()) std::fill(v->begin(), v->end(), T(NAN));
  }
  GruGrads<T> want_acc = reference_grads<T>(p, use_dhseq, use_dh_last, &prefill, true);
  const double fwd_eps = gru_forward_eps<T>(s), bwd_eps = gru_backward_eps<T>(s);

  Cublas cublas;
  GruDevice<T> dev(p);
  timbre::testing::for_each_thread_order([&] {
    for (int block : kBlocks) {
      SCOPED_TRACE("block " + std::to_string(block));
      dev.forward(cublas.h, block);
      EXPECT_TRUE(all_close(dev.hseq.to_host(), hseq, scaled(fwd_eps, hseq))) << "hseq";
      EXPECT_TRUE(all_close(dev.h_last.to_host(), h_last, scaled(fwd_eps, h_last))) << "h_last";
      dev.upload(nan_fill);
      dev.backward(cublas.h, block, all_flags(false), use_dhseq, use_dh_last);
      expect_grads_close(dev, want, bwd_eps);
      dev.upload(prefill);
      dev.backward(cublas.h, block, all_flags(true), use_dhseq, use_dh_last);
      expect_grads_close(dev, want_acc, bwd_eps, &want);
    }
  });
}

template <class T>
class Gru : public ::testing::Test {};
TYPED_TEST_SUITE(Gru, Types);

TYPED_TEST(Gru, OddShapesMatchReference) {
  using T = TypeParam;
  for (const GruShape s : {GruShape{3, 5, 7, 4}, GruShape{3, 1, 7, 4}, GruShape{1, 2, 1, 1}})
    for (bool h0 : {true, false})
      for (bool reverse : {false, true})
        check_layer(GruProblem<T>(s, h0, reverse, 100 + s.steps, 2.0));
}

// Either upstream gradient alone (the other null).
TYPED_TEST(Gru, OneUpstreamGradient) {
  using T = TypeParam;
  const GruProblem<T> p({3, 5, 7, 4}, true, false, 200, 2.0);
  check_layer(p, true, false);
  check_layer(p, false, true);
  const GruProblem<T> r({3, 5, 7, 4}, false, true, 210, 2.0);
  check_layer(r, true, false);
  check_layer(r, false, true);
}

TYPED_TEST(Gru, ModelShapesMatchReference) {
  using T = TypeParam;
  check_layer(GruProblem<T>({32, 16, 128, 32}, false, false, 300, 1.0));
  check_layer(GruProblem<T>({32, 64, 128, 64}, true, true, 310, 1.0));
}

// reverse = true on x is forward on x reversed in time, with hseq reversed
// in time as well; h_last is the same.
TYPED_TEST(Gru, ReverseIsForwardOnReversedTime) {
  using T = TypeParam;
  const GruShape s{3, 6, 5, 4};
  GruProblem<T> rev(s, true, true, 400, 2.0);
  GruProblem<T> fwd = rev;
  fwd.reverse = false;
  const size_t I = s.input, H = s.hidden;
  for (int b = 0; b < s.batch; ++b)
    for (int t = 0; t < s.steps; ++t)
      for (size_t i = 0; i < I; ++i)
        fwd.x[(size_t(b) * s.steps + t) * I + i] =
            rev.x[(size_t(b) * s.steps + (s.steps - 1 - t)) * I + i];
  Cublas cublas;
  GruDevice<T> d_rev(rev), d_fwd(fwd);
  d_rev.forward(cublas.h, 256);
  d_fwd.forward(cublas.h, 256);
  const auto h_rev = d_rev.hseq.to_host(), h_fwd = d_fwd.hseq.to_host();
  std::vector<T> flipped(h_fwd.size());
  for (int b = 0; b < s.batch; ++b)
    for (int t = 0; t < s.steps; ++t)
      for (size_t j = 0; j < H; ++j)
        flipped[(size_t(b) * s.steps + t) * H + j] =
            h_fwd[(size_t(b) * s.steps + (s.steps - 1 - t)) * H + j];
  // The same operations in the same order: the same bits.
  EXPECT_EQ(bits(h_rev), bits(flipped));
  EXPECT_EQ(bits(d_rev.h_last.to_host()), bits(d_fwd.h_last.to_host()));
  // And h_last of the reverse direction is hseq[:, 0].
  const auto last = d_rev.h_last.to_host();
  for (int b = 0; b < s.batch; ++b)
    for (size_t j = 0; j < H; ++j)
      EXPECT_EQ(last[b * H + j], h_rev[size_t(b) * s.steps * H + j]);
}

// Without a reserve (inference) the outputs are the same bits; h_last null
// is allowed.
TYPED_TEST(Gru, InferenceWithoutReserve) {
  using T = TypeParam;
  const GruProblem<T> p({3, 5, 7, 4}, true, false, 500, 2.0);
  Cublas cublas;
  GruDevice<T> dev(p);
  dev.forward(cublas.h, 256, true);
  const auto hseq = dev.hseq.to_host(), h_last = dev.h_last.to_host();
  DeviceBuffer<T> other(hseq.size());
  k::gru_forward<T>(cublas.h, 3, 5, 7, 4, dev.x.get(), dev.w_ih.get(), dev.w_hh.get(),
                    dev.b_ih.get(), dev.b_hh.get(), dev.h0.get(), false, other.get(), nullptr,
                    nullptr, dev.ws_forward.get(), nullptr);
  EXPECT_EQ(bits(other.to_host()), bits(hseq));
}

// Only some gradients requested (the others null): the requested ones have
// the same bits as when all six are computed.
TYPED_TEST(Gru, OptionalGradients) {
  using T = TypeParam;
  const GruProblem<T> p({3, 5, 7, 4}, true, true, 600, 2.0);
  Cublas cublas;
  GruDevice<T> dev(p);
  dev.forward(cublas.h, 256);
  dev.backward(cublas.h, 256, all_flags(false));
  const auto dw_hh = dev.dw_hh.to_host(), db_ih = dev.db_ih.to_host();
  DeviceBuffer<T> dw(dw_hh.size()), db(db_ih.size());
  k::gru_backward<T>(cublas.h, 3, 5, 7, 4, dev.x.get(), dev.w_ih.get(), dev.w_hh.get(),
                     dev.reserve.get(), true, dev.dhseq.get(), dev.dh_last.get(), nullptr,
                     nullptr, nullptr, dw.get(), db.get(), nullptr, all_flags(false),
                     dev.ws_backward.get(), nullptr);
  EXPECT_EQ(bits(dw.to_host()), bits(dw_hh));
  EXPECT_EQ(bits(db.to_host()), bits(db_ih));
}

// ---------------------------------------------------------------------------
// Finite differences (double): the layer's backward against the derivative
// of its own device forward, so that a formula shared by the kernels and the
// reference cannot be wrong in both. L = sum w1 . hseq + sum w2 . h_last
// for random w1, w2 (so the backward gets dhseq = w1, dh_last = w2), and
// dL/dp_k ~ (L(p + h e_k) - L(p - h e_k)) / 2h with h = 1e-6. The
// truncation error h^2 |L'''| / 6 is ~1e-13; the rounding error is
// ~u |L| / h ~ 1e-16 * 10 / 1e-6 = 1e-9. 1e-7 + 1e-6 |ref| checks the
// formulas (a wrong one is off by O(0.01) or more), not the rounding.

const Tolerance kFiniteDifferenceTol{1e-7, 1e-6};
constexpr double kStep = 1e-6;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of loss() with respect to every element of *param.
std::vector<double> numeric_gradient(std::vector<double>* param, DeviceBuffer<double>* d_param,
                                     const std::function<double()>& loss) {
  std::vector<double> g(param->size());
  for (size_t i = 0; i < param->size(); ++i) {
    const double keep = (*param)[i];
    double l[2];
    for (int side = 0; side < 2; ++side) {
      (*param)[i] = keep + (side ? -kStep : kStep);
      d_param->copy_from_host(*param);
      l[side] = loss();
    }
    (*param)[i] = keep;
    d_param->copy_from_host(*param);
    g[i] = (l[0] - l[1]) / (2 * kStep);
  }
  return g;
}

TEST(GruGradients, MatchFiniteDifferences) {
  for (bool reverse : {false, true}) {
    SCOPED_TRACE(reverse ? "reverse" : "forward");
    GruProblem<double> p({2, 3, 3, 3}, true, reverse, 700, 2.0);
    Cublas cublas;
    GruDevice<double> dev(p);
    const auto loss = [&] {
      dev.forward(cublas.h, 96);
      return dot(dev.hseq.to_host(), p.dhseq) + dot(dev.h_last.to_host(), p.dh_last);
    };
    dev.forward(cublas.h, 96);
    dev.backward(cublas.h, 96, all_flags(false));
    EXPECT_TRUE(all_close(dev.dx.to_host(), numeric_gradient(&p.x, &dev.x, loss),
                          kFiniteDifferenceTol))
        << "dx";
    EXPECT_TRUE(all_close(dev.dh0.to_host(), numeric_gradient(&p.h0, &dev.h0, loss),
                          kFiniteDifferenceTol))
        << "dh0";
    EXPECT_TRUE(all_close(dev.dw_ih.to_host(), numeric_gradient(&p.w_ih, &dev.w_ih, loss),
                          kFiniteDifferenceTol))
        << "dW_ih";
    EXPECT_TRUE(all_close(dev.dw_hh.to_host(), numeric_gradient(&p.w_hh, &dev.w_hh, loss),
                          kFiniteDifferenceTol))
        << "dW_hh";
    EXPECT_TRUE(all_close(dev.db_ih.to_host(), numeric_gradient(&p.b_ih, &dev.b_ih, loss),
                          kFiniteDifferenceTol))
        << "db_ih";
    EXPECT_TRUE(all_close(dev.db_hh.to_host(), numeric_gradient(&p.b_hh, &dev.b_hh, loss),
                          kFiniteDifferenceTol))
        << "db_hh";
  }
}

// ===========================================================================
// Attention over time.

struct AttnShape {
  int batch, steps, dim, attn;
  std::string str() const {
    return "B=" + std::to_string(batch) + " S=" + std::to_string(steps) +
           " D=" + std::to_string(dim) + " A=" + std::to_string(attn);
  }
};

// hseq in (-1, 1) like GRU states; W, b uniform in +-gain/sqrt(D) (gain 1:
// PyTorch's Linear initialisation; the odd shape uses more so that tanh
// saturates); v uniform in +-gain/sqrt(A); dout in [-1, 1).
template <class T>
struct AttnProblem {
  AttnShape s;
  std::vector<T> hseq, w, b, v, dout;
  AttnProblem(AttnShape shape, uint64_t seed, double gain) : s(shape) {
    const size_t B = s.batch, S = s.steps, D = s.dim, A = s.attn;
    const double kw = gain / std::sqrt(double(D)), kv = 2 * gain / std::sqrt(double(A));
    hseq = uniform<T>(B * S * D, seed);
    w = uniform<T>(A * D, seed + 1, -kw, kw);
    b = uniform<T>(A, seed + 2, -kw, kw);
    v = uniform<T>(A, seed + 3, -kv, kv);
    dout = uniform<T>(B * D, seed + 4);
  }
};

// Attention outputs: the score e = v . tanh(W h + b) is fed by D + A
// roundings, alpha = softmax(e) by S more (the sum), out by S more.
template <class T>
double attention_eps(const AttnShape& s) {
  return chain_eps<T>(double(s.dim) + s.attn + 2.0 * s.steps);
}
// Gradients: dalpha sums D terms, the softmax backward S, dP then feeds
// GEMMs over B*S rows (dW, db, dv) or A terms (dhseq).
template <class T>
double attention_backward_eps(const AttnShape& s) {
  return chain_eps<T>(2.0 * s.dim + 2.0 * s.attn + 2.0 * s.steps + double(s.batch) * s.steps);
}

template <class T>
struct AttnDevice {
  const AttnProblem<T>& p;
  DeviceBuffer<T> hseq, w, b, v, dout, out, alpha, reserve, ws;
  DeviceBuffer<T> dhseq, dw, db, dv;
  explicit AttnDevice(const AttnProblem<T>& problem)
      : p(problem), hseq(p.hseq), w(p.w), b(p.b), v(p.v), dout(p.dout), out(p.dout.size()),
        alpha(size_t(p.s.batch) * p.s.steps),
        reserve(k::attention_reserve_size(p.s.batch, p.s.steps, p.s.attn)),
        ws(k::attention_backward_workspace_size(p.s.batch, p.s.steps, p.s.attn)),
        dhseq(p.hseq.size()), dw(p.w.size()), db(p.b.size()), dv(p.v.size()) {}
  void forward(cublasHandle_t h, int block) {
    k::attention_forward<T>(h, p.s.batch, p.s.steps, p.s.dim, p.s.attn, hseq.get(), w.get(),
                            b.get(), v.get(), out.get(), alpha.get(), reserve.get(), nullptr,
                            block);
  }
  void backward(cublasHandle_t h, int block, AttentionAccumulate acc) {
    k::attention_backward<T>(h, p.s.batch, p.s.steps, p.s.dim, p.s.attn, hseq.get(), w.get(),
                             v.get(), alpha.get(), reserve.get(), dout.get(), dhseq.get(),
                             dw.get(), db.get(), dv.get(), acc, ws.get(), nullptr, block);
  }
};

AttentionAccumulate attn_flags(bool acc) { return AttentionAccumulate{acc, acc, acc, acc}; }

template <class T>
void check_attention(const AttnProblem<T>& p) {
  SCOPED_TRACE(p.s.str());
  const AttnShape& s = p.s;
  std::vector<T> out(p.dout.size()), alpha(size_t(s.batch) * s.steps);
  k::attention_forward_cpu<T>(s.batch, s.steps, s.dim, s.attn, p.hseq.data(), p.w.data(),
                              p.b.data(), p.v.data(), out.data(), alpha.data());
  std::vector<std::vector<T>> want = {std::vector<T>(p.hseq.size()), std::vector<T>(p.w.size()),
                                      std::vector<T>(p.b.size()), std::vector<T>(p.v.size())};
  std::vector<std::vector<T>> prefill, want_acc;
  for (size_t i = 0; i < want.size(); ++i)
    prefill.push_back(uniform<T>(want[i].size(), 950 + i, -2, 2));
  want_acc = prefill;
  const auto reference = [&](std::vector<std::vector<T>>& g, bool acc) {
    k::attention_backward_cpu<T>(s.batch, s.steps, s.dim, s.attn, p.hseq.data(), p.w.data(),
                                 p.b.data(), p.v.data(), p.dout.data(), g[0].data(), g[1].data(),
                                 g[2].data(), g[3].data(), attn_flags(acc));
  };
  reference(want, false);
  reference(want_acc, true);
  const char* names[] = {"dhseq", "dW", "db", "dv"};
  const double eps = attention_eps<T>(s), bwd_eps = attention_backward_eps<T>(s);

  Cublas cublas;
  AttnDevice<T> dev(p);
  std::vector<DeviceBuffer<T>*> grads = {&dev.dhseq, &dev.dw, &dev.db, &dev.dv};
  timbre::testing::for_each_thread_order([&] {
    for (int block : kBlocks) {
      SCOPED_TRACE("block " + std::to_string(block));
      dev.forward(cublas.h, block);
      EXPECT_TRUE(all_close(dev.out.to_host(), out, scaled(eps, out))) << "out";
      EXPECT_TRUE(all_close(dev.alpha.to_host(), alpha, scaled(eps, alpha))) << "alpha";
      for (size_t i = 0; i < grads.size(); ++i)
        grads[i]->copy_from_host(std::vector<T>(want[i].size(), T(NAN)));
      dev.backward(cublas.h, block, attn_flags(false));
      for (size_t i = 0; i < grads.size(); ++i)
        EXPECT_TRUE(all_close(grads[i]->to_host(), want[i], scaled(bwd_eps, want[i])))
            << names[i];
      for (size_t i = 0; i < grads.size(); ++i) grads[i]->copy_from_host(prefill[i]);
      dev.backward(cublas.h, block, attn_flags(true));
      for (size_t i = 0; i < grads.size(); ++i)
        EXPECT_TRUE(all_close(grads[i]->to_host(), want_acc[i],
                              accumulated(scaled(bwd_eps, want[i]), max_abs(want[i]), unit_roundoff<T>)))
            << names[i] << " accumulated";
    }
  });
}

template <class T>
class Attention : public ::testing::Test {};
TYPED_TEST_SUITE(Attention, Types);

TYPED_TEST(Attention, OddShapeMatchesReference) {
  using T = TypeParam;
  check_attention(AttnProblem<T>({3, 5, 6, 4}, 800, 3.0));
  check_attention(AttnProblem<T>({2, 1, 3, 5}, 810, 3.0));  // one step: alpha = 1
}

TYPED_TEST(Attention, ModelShapeMatchesReference) {
  using T = TypeParam;
  check_attention(AttnProblem<T>({32, 64, 128, 128}, 820, 1.0));
}

TEST(AttentionGradients, MatchFiniteDifferences) {
  AttnProblem<double> p({2, 3, 4, 3}, 830, 3.0);
  Cublas cublas;
  AttnDevice<double> dev(p);
  const auto loss = [&] {
    dev.forward(cublas.h, 96);
    return dot(dev.out.to_host(), p.dout);
  };
  dev.forward(cublas.h, 96);
  dev.backward(cublas.h, 96, attn_flags(false));
  EXPECT_TRUE(all_close(dev.dhseq.to_host(), numeric_gradient(&p.hseq, &dev.hseq, loss),
                        kFiniteDifferenceTol))
      << "dhseq";
  EXPECT_TRUE(all_close(dev.dw.to_host(), numeric_gradient(&p.w, &dev.w, loss),
                        kFiniteDifferenceTol))
      << "dW";
  EXPECT_TRUE(all_close(dev.db.to_host(), numeric_gradient(&p.b, &dev.b, loss),
                        kFiniteDifferenceTol))
      << "db";
  EXPECT_TRUE(all_close(dev.dv.to_host(), numeric_gradient(&p.v, &dev.v, loss),
                        kFiniteDifferenceTol))
      << "dv";
}

// ===========================================================================
// Determinism: every output has the same bits on a second run, under every
// thread order and for both block sizes (no atomics; each element's
// arithmetic does not depend on the launch shape; the GEMMs are the same
// calls; the softmax over S <= 64 is on its thread or warp path, whose bits
// do not depend on the block size).

TEST(GruDeterminism, SameBitsEveryRun) {
  using T = float;
  const GruProblem<T> p({32, 16, 128, 32}, true, true, 1000, 1.0);
  const AttnProblem<T> a({32, 64, 64, 48}, 1010, 1.0);  // softmax over 64: warp path
  Cublas cublas;
  GruDevice<T> gru(p);
  AttnDevice<T> attn(a);
  const auto run = [&](int block) {
    std::vector<std::vector<unsigned char>> out;
    gru.forward(cublas.h, block);
    gru.backward(cublas.h, block, all_flags(false));
    out.push_back(bits(gru.hseq.to_host()));
    out.push_back(bits(gru.h_last.to_host()));
    for (auto* g : gru.grads()) out.push_back(bits(g->to_host()));
    attn.forward(cublas.h, block);
    attn.backward(cublas.h, block, attn_flags(false));
    for (auto* b : {&attn.out, &attn.alpha, &attn.dhseq, &attn.dw, &attn.db, &attn.dv})
      out.push_back(bits(b->to_host()));
    return out;
  };
  const auto first = run(256);
  timbre::testing::for_each_thread_order([&] {
    for (int block : kBlocks)
      for (int again = 0; again < 2; ++again) {
        const auto now = run(block);
        for (size_t i = 0; i < first.size(); ++i)
          EXPECT_EQ(now[i], first[i]) << "output " << i << " block " << block;
      }
  });
}

// ===========================================================================
// Arguments.

// Runs f and checks it throws std::invalid_argument with exactly `message`.
template <class F>
void expect_invalid(F&& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected: " << message;
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(GruArgs, RejectsBadSizesBlocksAndPointers) {
  Cublas cublas;
  const GruProblem<float> p({3, 5, 7, 4}, true, false, 1100, 1.0);
  GruDevice<float> d(p);
  const auto fwd = [&](int B, int S, int I, int H, int block) {
    k::gru_forward<float>(cublas.h, B, S, I, H, d.x.get(), d.w_ih.get(), d.w_hh.get(),
                          d.b_ih.get(), d.b_hh.get(), nullptr, false, d.hseq.get(), nullptr,
                          d.reserve.get(), d.ws_forward.get(), nullptr, block);
  };
  expect_invalid([&] { fwd(-1, 5, 7, 4, 256); }, "gru_forward: batch must be >= 0, not -1");
  expect_invalid([&] { fwd(3, 0, 7, 4, 256); }, "gru_forward: steps must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 0, 4, 256); }, "gru_forward: input must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 7, 0, 256); }, "gru_forward: hidden must be >= 1, not 0");
  for (int block : {0, 16, 48, 100, 1056, -32})
    EXPECT_THROW(fwd(3, 5, 7, 4, block), std::invalid_argument) << "block " << block;
  expect_invalid([&] { fwd(3, 5, 7, 4, 48); },
                 "gru_forward: block must be a multiple of 32 in [32, 1024], not 48");
  expect_invalid([&] { fwd(1 << 16, 1 << 16, 7, 4, 256); },
                 "gru_forward: batch*steps = 4294967296 does not fit in int");
  EXPECT_NO_THROW(fwd(3, 5, 7, 4, 32));
  EXPECT_NO_THROW(fwd(3, 5, 7, 4, 1024));
  expect_invalid(
      [&] {
        k::gru_forward<float>(cublas.h, 3, 5, 7, 4, nullptr, d.w_ih.get(), d.w_hh.get(),
                              d.b_ih.get(), d.b_hh.get(), nullptr, false, d.hseq.get(), nullptr,
                              nullptr, d.ws_forward.get(), nullptr);
      },
      "gru_forward: d_x is null");
  expect_invalid(
      [&] {
        k::gru_forward<float>(cublas.h, 3, 5, 7, 4, d.x.get(), d.w_ih.get(), d.w_hh.get(),
                              d.b_ih.get(), d.b_hh.get(), nullptr, false, d.hseq.get(), nullptr,
                              nullptr, nullptr, nullptr);
      },
      "gru_forward: d_workspace is null");
  expect_invalid(
      [&] {
        k::gru_forward<float>(nullptr, 3, 5, 7, 4, d.x.get(), d.w_ih.get(), d.w_hh.get(),
                              d.b_ih.get(), d.b_hh.get(), nullptr, false, d.hseq.get(), nullptr,
                              nullptr, d.ws_forward.get(), nullptr);
      },
      "gru_forward: the cuBLAS handle is null");
  const auto bwd = [&](const float* reserve, int block) {
    k::gru_backward<float>(cublas.h, 3, 5, 7, 4, d.x.get(), d.w_ih.get(), d.w_hh.get(), reserve,
                           false, d.dhseq.get(), nullptr, d.dx.get(), nullptr, d.dw_ih.get(),
                           d.dw_hh.get(), d.db_ih.get(), d.db_hh.get(), GruAccumulate{},
                           d.ws_backward.get(), nullptr, block);
  };
  expect_invalid([&] { bwd(nullptr, 256); }, "gru_backward: d_reserve is null");
  expect_invalid([&] { bwd(d.reserve.get(), 64 + 1); },
                 "gru_backward: block must be a multiple of 32 in [32, 1024], not 65");
}

TEST(GruArgs, GateLaunchersCheckStridesAndPointers) {
  DeviceBuffer<float> a(256), b(256), c(256), e(256);
  const auto fwd = [&](long long gx_stride, const float* gh, const float* hp) {
    k::gru_gates_forward<float>(2, 4, a.get(), gx_stride, gh, b.get(), b.get(), hp, 4, c.get(), 4,
                                nullptr, nullptr, 0, nullptr);
  };
  EXPECT_NO_THROW(fwd(12, nullptr, nullptr));
  expect_invalid([&] { fwd(11, nullptr, nullptr); },
                 "gru_gates_forward: gx_stride must be >= 12, not 11");
  expect_invalid([&] { fwd(12, nullptr, e.get()); },
                 "gru_gates_forward: d_gh is null but d_h_prev is not");
  expect_invalid(
      [&] {
        k::gru_gates_forward<float>(2, 4, a.get(), 12, nullptr, b.get(), b.get(), nullptr, 4,
                                    c.get(), 4, nullptr, e.get(), 19, nullptr);
      },
      "gru_gates_forward: saved_stride must be >= 20, not 19");
  expect_invalid(
      [&] {
        k::gru_gates_forward<float>(2, 0, a.get(), 12, nullptr, b.get(), b.get(), nullptr, 4,
                                    c.get(), 4, nullptr, nullptr, 0, nullptr);
      },
      "gru_gates_forward: hidden must be >= 1, not 0");
  const auto bwd = [&](const float* saved, long long dgh_stride) {
    k::gru_gates_backward<float>(2, 4, saved, 20, nullptr, 0, nullptr, b.get(), 12, c.get(),
                                 dgh_stride, nullptr, nullptr);
  };
  EXPECT_NO_THROW(bwd(a.get(), 12));
  expect_invalid([&] { bwd(nullptr, 12); }, "gru_gates_backward: d_saved is null");
  expect_invalid([&] { bwd(a.get(), 3); }, "gru_gates_backward: dgh_stride must be >= 12, not 3");
}

// The handle must issue its GEMMs on the kernels' stream.
TEST(GruArgs, RejectsAHandleOnAnotherStream) {
  Cublas cublas;
  cudaStream_t other = nullptr;
  CUDA_CHECK(cudaStreamCreate(&other));
  CUBLAS_CHECK(cublasSetStream(cublas.h, other));
  const GruProblem<float> p({3, 5, 7, 4}, true, false, 1200, 1.0);
  GruDevice<float> d(p);
  expect_invalid([&] { d.forward(cublas.h, 256); },
                 "gru_forward: the cuBLAS handle is set to another stream than the launch's; "
                 "call cublasSetStream(handle, stream) first");
  // On the handle's own stream it runs.
  EXPECT_NO_THROW(k::gru_forward<float>(cublas.h, 3, 5, 7, 4, d.x.get(), d.w_ih.get(),
                                        d.w_hh.get(), d.b_ih.get(), d.b_hh.get(), nullptr, false,
                                        d.hseq.get(), nullptr, nullptr, d.ws_forward.get(),
                                        other));
  CUDA_CHECK(cudaStreamSynchronize(other));
  CUBLAS_CHECK(cublasSetStream(cublas.h, nullptr));
  CUDA_CHECK(cudaStreamDestroy(other));
}

TEST(AttentionArgs, RejectsBadSizesBlocksAndPointers) {
  Cublas cublas;
  const AttnProblem<float> p({3, 5, 6, 4}, 1300, 1.0);
  AttnDevice<float> d(p);
  const auto fwd = [&](int B, int S, int D, int A, int block) {
    k::attention_forward<float>(cublas.h, B, S, D, A, d.hseq.get(), d.w.get(), d.b.get(),
                                d.v.get(), d.out.get(), d.alpha.get(), d.reserve.get(), nullptr,
                                block);
  };
  expect_invalid([&] { fwd(-2, 5, 6, 4, 256); }, "attention_forward: batch must be >= 0, not -2");
  expect_invalid([&] { fwd(3, 0, 6, 4, 256); }, "attention_forward: steps must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 0, 4, 256); }, "attention_forward: dim must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 6, 0, 256); }, "attention_forward: attn must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 6, 4, 2048); },
                 "attention_forward: block must be a multiple of 32 in [32, 1024], not 2048");
  EXPECT_NO_THROW(fwd(3, 5, 6, 4, 32));
  expect_invalid(
      [&] {
        k::attention_forward<float>(cublas.h, 3, 5, 6, 4, d.hseq.get(), d.w.get(), d.b.get(),
                                    d.v.get(), d.out.get(), nullptr, d.reserve.get(), nullptr);
      },
      "attention_forward: d_alpha is null");
  expect_invalid(
      [&] {
        k::attention_backward<float>(cublas.h, 3, 5, 6, 4, d.hseq.get(), d.w.get(), d.v.get(),
                                     d.alpha.get(), d.reserve.get(), nullptr, d.dhseq.get(),
                                     nullptr, nullptr, nullptr, AttentionAccumulate{},
                                     d.ws.get(), nullptr);
      },
      "attention_backward: d_dout is null");
}

// batch = 0 is an empty batch: nothing to do, nothing touched (null pointers
// are fine, the handle is not even looked at).
TEST(GruArgs, ZeroBatchIsANoOp) {
  EXPECT_NO_THROW(k::gru_forward<float>(nullptr, 0, 5, 7, 4, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, nullptr, false, nullptr, nullptr, nullptr,
                                        nullptr, nullptr));
  EXPECT_NO_THROW(k::gru_backward<double>(nullptr, 0, 5, 7, 4, nullptr, nullptr, nullptr, nullptr,
                                          true, nullptr, nullptr, nullptr, nullptr, nullptr,
                                          nullptr, nullptr, nullptr, GruAccumulate{}, nullptr,
                                          nullptr));
  EXPECT_NO_THROW(k::gru_gates_forward<float>(0, 4, nullptr, 0, nullptr, nullptr, nullptr,
                                              nullptr, 0, nullptr, 0, nullptr, nullptr, 0,
                                              nullptr));
  EXPECT_NO_THROW(k::attention_forward<float>(nullptr, 0, 5, 6, 4, nullptr, nullptr, nullptr,
                                              nullptr, nullptr, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(k::attention_backward<double>(nullptr, 0, 5, 6, 4, nullptr, nullptr, nullptr,
                                                nullptr, nullptr, nullptr, nullptr, nullptr,
                                                nullptr, nullptr, AttentionAccumulate{},
                                                nullptr, nullptr));
}

TEST(GruSizes, WorkspaceAndReserve) {
  EXPECT_EQ(k::gru_forward_workspace_size(3, 5, 7, 4), size_t(3 * 5 * 12 + 3 * 12));
  EXPECT_EQ(k::gru_reserve_size(3, 5, 4), size_t(3 * 5 * 20));
  EXPECT_EQ(k::gru_backward_workspace_size(3, 5, 7, 4), size_t(2 * 3 * 5 * 12 + 3 * 4 + 15));
  EXPECT_EQ(k::attention_reserve_size(3, 5, 4), size_t(60));
  EXPECT_EQ(k::attention_backward_workspace_size(3, 5, 4), size_t(60 + 45));
}

// The cost formulas: a sanity check of their scaling, for benchmarks.
TEST(GruCost, ScalesWithSize) {
  const auto f = k::gru_forward_cost(32, 16, 128, 32);
  // The GEMMs dominate: 2*B*S*3H*(I + H) operations.
  EXPECT_GT(f.flops, 2.0 * 32 * 16 * 96 * (128 + 32));
  EXPECT_LT(f.flops, 1.2 * 2.0 * 32 * 16 * 96 * (128 + 32));
  EXPECT_NEAR(k::gru_forward_cost(32, 32, 128, 32).flops, 2 * f.flops, 1e-9 * f.flops);
  EXPECT_EQ(k::gru_forward_cost(32, 16, 128, 32, 8).bytes, 2 * f.bytes);
  EXPECT_GT(k::gru_backward_cost(32, 16, 128, 32).flops, 1.5 * f.flops);
  EXPECT_EQ(k::gru_gates_forward_cost(10, 8).flops, 22 * 80);
  EXPECT_GT(k::attention_backward_cost(32, 64, 128, 128).flops,
            k::attention_forward_cost(32, 64, 128, 128).flops);
}

}  // namespace
