// The GRU layer (kernels/gru.cuh) against its CPU references, in float and
// double: the fused gate kernels on strided rows; the whole layer forward
// and backward at odd shapes (B=3, S=5, I=7, H=4; S=1; with and without h0;
// both directions) and at the models' shapes (B=32, S=16, I=128, H=32 and
// B=32, S=64, I=128, H=64), as op-case rows (two block sizes, three thread
// orders, both launch-shape rows); gradients assigning and accumulating, and
// against finite differences of the device forward in double; determinism,
// argument errors and costs. The attention that follows the GRU in the
// parallel model is tests/kernels/test_attention.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/gru.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/kernels/recurrent_testing.h"

namespace {

namespace k = timbre::kernels;
using namespace timbre::testing::recurrent;
using timbre::testing::dtype_name;
using k::GruAccumulate;
using k::GruShape;
using timbre::testing::all_close;
using timbre::testing::GradientCase;
using timbre::testing::max_abs;
using timbre::testing::once;
using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::split;
using timbre::testing::Tolerance;
using timbre::testing::unit_roundoff;
using timbre::testing::widen;

std::string shape_str(const GruShape& s) {
  return "B=" + std::to_string(s.batch) + " S=" + std::to_string(s.steps) +
         " I=" + std::to_string(s.input) + " H=" + std::to_string(s.hidden);
}

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
  k::GruWeights<T> weights() const { return {w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data()}; }
  std::string str() const {
    return shape_str(s) + (has_h0 ? " h0" : " no h0") + (reverse ? " reverse" : " forward");
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
  k::gru_backward_cpu<T>(p.s, p.weights(),
                         {p.x.data(), use_dhseq ? p.dhseq.data() : nullptr,
                          use_dh_last ? p.dh_last.data() : nullptr},
                         p.reverse, p.h0_or_null(),
                         {g.dx.data(), g.dh0.data(), g.dw_ih.data(), g.dw_hh.data(),
                          g.db_ih.data(), g.db_hh.data(), all_flags(accumulate)});
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
        reserve(k::gru_reserve_size(p.s)), ws_forward(k::gru_forward_workspace_size(p.s)),
        ws_backward(k::gru_backward_workspace_size(p.s)),
        dx(p.x.size()), dh0(p.h0.size()), dw_ih(p.w_ih.size()), dw_hh(p.w_hh.size()),
        db_ih(p.b_ih.size()), db_hh(p.b_hh.size()) {}

  k::GruWeights<T> weights() const { return {w_ih.get(), w_hh.get(), b_ih.get(), b_hh.get()}; }
  k::GruGradients<T> gradients(GruAccumulate acc) const {
    return {dx.get(), dh0.get(), dw_ih.get(), dw_hh.get(), db_ih.get(), db_hh.get(), acc};
  }
  void forward(cublasHandle_t h, int block, bool save = true) {
    k::gru_forward<T>(h, p.s, weights(),
                      {x.get(), p.has_h0 ? h0.get() : nullptr, hseq.get(), h_last.get()},
                      p.reverse, save ? reserve.get() : nullptr, ws_forward.get(), nullptr,
                      block);
  }
  void backward(cublasHandle_t h, int block, GruAccumulate acc, bool use_dhseq = true,
                bool use_dh_last = true) {
    k::gru_backward<T>(h, p.s, weights(),
                       {x.get(), use_dhseq ? dhseq.get() : nullptr,
                        use_dh_last ? dh_last.get() : nullptr},
                       p.reverse, reserve.get(), gradients(acc), ws_backward.get(), nullptr,
                       block);
  }
  std::vector<DeviceBuffer<T>*> grads() { return {&dx, &dh0, &dw_ih, &dw_hh, &db_ih, &db_hh}; }
  void upload(GruGrads<T>& g) {
    auto dst = grads();
    auto src = g.all();
    for (size_t i = 0; i < dst.size(); ++i) dst[i]->copy_from_host(*src[i]);
  }
};

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h).

// The gate kernels on their own, with strided rows (padding between rows,
// as in the layer, where one step's rows are every S-th row). Forward: h,
// the h copy and the saved rows (padding pre-filled with 7 must stay 7),
// then h again without the optional outputs; with h_prev given and null.
template <class T>
void gate_rows(OpTable& table) {
  const int B = 5, H = 7;
  for (bool with_prev : {true, false}) {
    const long long gx_stride = 3 * H + 4, hp_stride = H + 3, h_stride = H + 2,
                    saved_stride = 5 * H + 1;
    // Pre-activations up to +-6 (gx and gh in [-3, 3]): sigmoid and tanh
    // from their linear part to saturation.
    struct In {
      std::vector<T> gx, gh, b_ih, b_hh, h_prev;
    };
    const auto in = once([] {
      return In{uniform<T>(B * gx_stride, 1, -3, 3), uniform<T>(B * 3 * H, 2, -3, 3),
                uniform<T>(3 * H, 3), uniform<T>(3 * H, 4), uniform<T>(B * hp_stride, 5)};
    });
    table.add(OpCase{
        with_prev ? "gru/gru_gates_forward" : "gru/gru_gates_forward/no_h_prev", dtype_name<T>(),
        "B=5 H=7 strided", kBlocks, {32 * unit_roundoff<T>, 32 * unit_roundoff<T>},
        "a handful of roundings and two transcendentals (2 ulp each on a GPU) per value",
        [=](int block) {
          const In& i = in();
          DeviceBuffer<T> d_gx(i.gx), d_gh(i.gh), d_b_ih(i.b_ih), d_b_hh(i.b_hh), d_hp(i.h_prev);
          DeviceBuffer<T> d_h(std::vector<T>(B * h_stride, T(7))), d_copy(B * H),
              d_saved(std::vector<T>(B * saved_stride, T(7)));
          const k::GruGatesForwardIn<T> gates_in{
              d_gx.get(), gx_stride, with_prev ? d_gh.get() : nullptr, d_b_ih.get(),
              d_b_hh.get(), with_prev ? d_hp.get() : nullptr, hp_stride};
          k::gru_gates_forward<T>(B, H, gates_in,
                                  {d_h.get(), h_stride, d_copy.get(), d_saved.get(), saved_stride},
                                  nullptr, block);
          std::vector<double> out = widen(d_h.to_host());
          for (const auto& v : {d_copy.to_host(), d_saved.to_host()})
            out.insert(out.end(), v.begin(), v.end());
          // Without the optional outputs h is the same.
          k::gru_gates_forward<T>(B, H, gates_in, {d_h.get(), h_stride}, nullptr, block);
          const auto h2 = d_h.to_host();
          out.insert(out.end(), h2.begin(), h2.end());
          return out;
        },
        [=] {
          const In& i = in();
          std::vector<T> h(B * h_stride, T(7)), h_copy(B * H), saved(B * saved_stride, T(7));
          k::gru_gates_forward_cpu<T>(
              B, H,
              {i.gx.data(), gx_stride, with_prev ? i.gh.data() : nullptr, i.b_ih.data(),
               i.b_hh.data(), with_prev ? i.h_prev.data() : nullptr, hp_stride},
              {h.data(), h_stride, h_copy.data(), saved.data(), saved_stride});
          std::vector<double> out = widen(h);
          out.insert(out.end(), h_copy.begin(), h_copy.end());
          out.insert(out.end(), saved.begin(), saved.end());
          out.insert(out.end(), h.begin(), h.end());
          return out;
        }});
  }
  // Backward: dgx, dgh (padding 7 stays 7) and dh_out, which aliases dh_in
  // as in the layer; from both dh sources, dh_seq only, dh_in only.
  const long long saved_stride = 5 * H + 3, dh_stride = H + 1, dgx_stride = 3 * H + 2,
                  dgh_stride = 3 * H + 5;
  struct In {
    std::vector<T> saved, dh_seq, dh_in;
  };
  const auto in = once([] {
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
    return In{saved, uniform<T>(B * dh_stride, 12), uniform<T>(B * H, 13)};
  });
  const char* names[] = {"gru/gru_gates_backward", "gru/gru_gates_backward/dh_seq_only",
                         "gru/gru_gates_backward/dh_in_only"};
  for (int inputs = 0; inputs < 3; ++inputs)
    table.add(OpCase{
        names[inputs], dtype_name<T>(), "B=5 H=7 strided", kBlocks,
        {16 * unit_roundoff<T>, 16 * unit_roundoff<T>},
        "elementwise products of a few factors",
        [=](int block) {
          const In& i = in();
          DeviceBuffer<T> d_saved(i.saved), d_dh_seq(i.dh_seq), d_dh(i.dh_in),
              d_dgx(std::vector<T>(B * dgx_stride, T(7))),
              d_dgh(std::vector<T>(B * dgh_stride, T(7)));
          k::gru_gates_backward<T>(B, H,
                                   {d_saved.get(), saved_stride,
                                    inputs != 2 ? d_dh_seq.get() : nullptr, dh_stride,
                                    inputs != 1 ? d_dh.get() : nullptr},
                                   {d_dgx.get(), dgx_stride, d_dgh.get(), dgh_stride, d_dh.get()},
                                   nullptr, block);
          std::vector<double> out = widen(d_dgx.to_host());
          for (const auto& v : {d_dgh.to_host(), d_dh.to_host()})
            out.insert(out.end(), v.begin(), v.end());
          return out;
        },
        [=] {
          const In& i = in();
          std::vector<T> dgx(B * dgx_stride, T(7)), dgh(B * dgh_stride, T(7)), dh_out(B * H);
          k::gru_gates_backward_cpu<T>(B, H,
                                       {i.saved.data(), saved_stride,
                                        inputs != 2 ? i.dh_seq.data() : nullptr, dh_stride,
                                        inputs != 1 ? i.dh_in.data() : nullptr},
                                       {dgx.data(), dgx_stride, dgh.data(), dgh_stride,
                                        dh_out.data()});
          std::vector<double> out = widen(dgx);
          out.insert(out.end(), dgh.begin(), dgh.end());
          out.insert(out.end(), dh_out.begin(), dh_out.end());
          return out;
        }});
}

template <class T>
std::vector<double> joined(const GruGrads<T>& g) {
  std::vector<double> out;
  for (const auto* v : g.all()) out.insert(out.end(), v->begin(), v->end());
  return out;
}

// The whole layer: forward (hseq, h_last); backward assigning over NaN
// (which it must never read) and accumulating into a random prefill.
template <class T>
void layer_rows(OpTable& table, GruShape shape, bool h0, bool reverse, uint64_t seed,
                double gain, bool use_dhseq = true, bool use_dh_last = true,
                bool forward_row = true) {
  const auto p = once([=] { return GruProblem<T>(shape, h0, reverse, seed, gain); });
  const std::string where = GruProblem<T>(shape, h0, reverse, seed, gain).str() +
                            (use_dhseq ? "" : ", no dhseq") + (use_dh_last ? "" : ", no dh_last");
  const GruShape s = shape;
  const size_t B = size_t(s.batch), S = size_t(s.steps), I = size_t(s.input),
               H = size_t(s.hidden);
  if (forward_row) {
    OpCase fwd{"gru/gru_forward", dtype_name<T>(), where, kBlocks, {},
               "a chain of S (I + H) roundings relative to the scale",
               [=](int block) {
                 Cublas cublas;
                 GruDevice<T> dev(p());
                 dev.forward(cublas.h, block);
                 std::vector<double> out = widen(dev.hseq.to_host());
                 const auto last = dev.h_last.to_host();
                 out.insert(out.end(), last.begin(), last.end());
                 return out;
               },
               [=] {
                 const GruProblem<T>& q = p();
                 std::vector<T> hseq(B * S * H), h_last(B * H);
                 k::gru_forward_cpu<T>(s, q.weights(),
                                       {q.x.data(), q.h0_or_null(), hseq.data(), h_last.data()},
                                       q.reverse);
                 std::vector<double> out = widen(hseq);
                 out.insert(out.end(), h_last.begin(), h_last.end());
                 return out;
               }};
    fwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      const auto g = split(got, {B * S * H, B * H}), w = split(want, {B * S * H, B * H});
      const double eps = gru_forward_eps<T>(s);
      if (auto r = all_close(g[0], w[0], scaled(eps, w[0])); !r) return r << " (hseq)";
      if (auto r = all_close(g[1], w[1], scaled(eps, w[1])); !r) return r << " (h_last)";
      return ::testing::AssertionSuccess();
    };
    table.add(std::move(fwd));
  }
  const auto prefill = once([=] {
    GruGrads<T> pre(s);
    uint64_t sd = 900;
    for (auto* v : pre.all()) *v = uniform<T>(v->size(), sd++, -2, 2);
    return pre;
  });
  const auto fresh = once([=] { return reference_grads<T>(p(), use_dhseq, use_dh_last, nullptr, false); });
  const std::vector<size_t> sizes = {B * S * I, B * H, 3 * H * I, 3 * H * H, 3 * H, 3 * H};
  for (bool acc : {false, true}) {
    OpCase bwd{
        acc ? "gru/gru_backward_accumulate" : "gru/gru_backward", dtype_name<T>(), where, kBlocks,
        {},
        "S (3H + I) + B S roundings relative to each gradient's scale (accumulating: absolute "
        "at that scale)",
        [=](int block) {
          Cublas cublas;
          GruDevice<T> dev(p());
          dev.forward(cublas.h, block);
          GruGrads<T> start = acc ? prefill() : GruGrads<T>(s);
          if (!acc)
            for (auto* v : start.all()) std::fill(v->begin(), v->end(), T(NAN));
          dev.upload(start);
          dev.backward(cublas.h, block, all_flags(acc), use_dhseq, use_dh_last);
          std::vector<double> out;
          for (auto* g : dev.grads()) {
            const auto h = g->to_host();
            out.insert(out.end(), h.begin(), h.end());
          }
          return out;
        },
        [=] {
          return joined(acc ? reference_grads<T>(p(), use_dhseq, use_dh_last, &prefill(), true)
                            : fresh());
        }};
    bwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      const auto g = split(got, sizes), w = split(want, sizes);
      const double eps = gru_backward_eps<T>(s);
      for (size_t i = 0; i < 6; ++i) {
        const std::vector<T>& f = *fresh().all()[i];
        Tolerance tol = scaled(eps, f);
        if (acc) tol = accumulated(tol, max_abs(f), unit_roundoff<T>);
        if (auto r = all_close(g[i], w[i], tol); !r) return r << " (" << kGradNames[i] << ")";
      }
      return ::testing::AssertionSuccess();
    };
    table.add(std::move(bwd));
  }
}

template <class T>
void gru_rows(OpTable& table) {
  gate_rows<T>(table);
  // Odd shapes: S = 1, a 1-unit layer; with and without h0; both directions.
  for (const GruShape s : {GruShape{3, 5, 7, 4}, GruShape{3, 1, 7, 4}, GruShape{1, 2, 1, 1}})
    for (bool h0 : {true, false})
      for (bool reverse : {false, true}) layer_rows<T>(table, s, h0, reverse, 100 + s.steps, 2.0);
  // Either upstream gradient alone (the other null).
  for (const auto& [h0, reverse, seed] : {std::tuple{true, false, 200}, {false, true, 210}}) {
    layer_rows<T>(table, {3, 5, 7, 4}, h0, reverse, uint64_t(seed), 2.0, true, false);
    layer_rows<T>(table, {3, 5, 7, 4}, h0, reverse, uint64_t(seed), 2.0, false, true, false);
  }
  // The models' layers: the C-RNN's, and one direction of the parallel model's.
  layer_rows<T>(table, {32, 16, 128, 32}, false, false, 300, 1.0);
  layer_rows<T>(table, {32, 64, 128, 64}, true, true, 310, 1.0);
}

// Finite differences (double) of each parameter: L = sum w1 . hseq +
// sum w2 . h_last with w1 = dhseq, w2 = dh_last.
void gru_gradient_rows(OpTable& table) {
  for (bool reverse : {false, true}) {
    const GruProblem<double> base({2, 3, 3, 3}, true, reverse, 700, 2.0);
    for (int param = 0; param < 6; ++param) {
      const auto field = [param](GruProblem<double>& p) -> std::vector<double>& {
        std::vector<double>* f[] = {&p.x, &p.h0, &p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh};
        return *f[param];
      };
      // The device at (base with the parameter set to x), after the forward:
      // L = dhseq . hseq + dh_last . h_last, or (backward) the parameter's gradient.
      const auto at = [=](const std::vector<double>& x, bool backward) {
        GruProblem<double> p = base;
        field(p) = x;
        Cublas cublas;
        GruDevice<double> dev(p);
        dev.forward(cublas.h, 96);
        if (!backward)
          return std::vector<double>{timbre::testing::dot(dev.hseq.to_host(), p.dhseq) +
                                     timbre::testing::dot(dev.h_last.to_host(), p.dh_last)};
        dev.backward(cublas.h, 96, all_flags(false));
        return dev.grads()[size_t(param)]->to_host();
      };
      GruProblem<double> copy = base;
      table.add(GradientCase{
          std::string("gru/gru_backward/") + kGradNames[param] + (reverse ? "/reverse" : ""),
          shape_str(base.s), field(copy),
          [=](const std::vector<double>& x) { return at(x, false)[0]; },
          [=](const std::vector<double>& x) { return at(x, true); },
          kFiniteDifferenceTol, kFiniteDifferenceWhy, kStep});
    }
  }
}

OP_CASES(gru) {
  gru_rows<float>(table);
  gru_rows<double>(table);
  gru_gradient_rows(table);
}

template <class T>
class Gru : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Gru, Types);

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
  k::gru_forward<T>(cublas.h, {3, 5, 7, 4}, dev.weights(),
                    {dev.x.get(), dev.h0.get(), other.get(), nullptr}, false, nullptr,
                    dev.ws_forward.get(), nullptr);
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
  k::gru_backward<T>(cublas.h, {3, 5, 7, 4}, dev.weights(),
                     {dev.x.get(), dev.dhseq.get(), dev.dh_last.get()}, true, dev.reserve.get(),
                     {nullptr, nullptr, nullptr, dw.get(), db.get(), nullptr, all_flags(false)},
                     dev.ws_backward.get(), nullptr);
  EXPECT_EQ(bits(dw.to_host()), bits(dw_hh));
  EXPECT_EQ(bits(db.to_host()), bits(db_ih));
}

// ===========================================================================
// Determinism: every output has the same bits on a second run, under every
// thread order and for both block sizes (no atomics; each element's
// arithmetic does not depend on the launch shape; the GEMMs are the same
// calls).

// H = 45: with 32 threads per block a thread owns two units (j, j + 32) of
// the whole-sequence kernels; every block size gives the same bits, since a
// unit's arithmetic does not depend on which thread runs it.
TEST(GruDeterminism, SameBitsEveryRun) {
  using T = float;
  const GruProblem<T> p({32, 16, 128, 45}, true, true, 1000, 1.0);
  Cublas cublas;
  GruDevice<T> gru(p);
  const auto run = [&](int block) {
    std::vector<std::vector<unsigned char>> out;
    gru.forward(cublas.h, block);
    gru.backward(cublas.h, block, all_flags(false));
    out.push_back(bits(gru.hseq.to_host()));
    out.push_back(bits(gru.h_last.to_host()));
    for (auto* g : gru.grads()) out.push_back(bits(g->to_host()));
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

TEST(GruArgs, RejectsBadSizesBlocksAndPointers) {
  Cublas cublas;
  const GruProblem<float> p({3, 5, 7, 4}, true, false, 1100, 1.0);
  GruDevice<float> d(p);
  const auto fwd = [&](int B, int S, int I, int H, int block) {
    k::gru_forward<float>(cublas.h, {B, S, I, H}, d.weights(), {d.x.get(), nullptr, d.hseq.get()},
                          false, d.reserve.get(), d.ws_forward.get(), nullptr, block);
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
  // Each required pointer null in turn: the message names the field.
  using Weights = k::GruWeights<float>;
  using Data = k::GruForwardData<float>;
  const Weights w = d.weights();
  const Data data{d.x.get(), nullptr, d.hseq.get(), nullptr};
  const auto fwd_null = [&](const std::string& name, const Weights& ww, const Data& dd) {
    expect_invalid(
        [&] {
          k::gru_forward<float>(cublas.h, {3, 5, 7, 4}, ww, dd, false, nullptr,
                                d.ws_forward.get(), nullptr);
        },
        "gru_forward: " + name + " is null");
  };
  fwd_null("x", w, {nullptr, nullptr, d.hseq.get(), nullptr});
  fwd_null("w_ih", {nullptr, w.w_hh, w.b_ih, w.b_hh}, data);
  fwd_null("w_hh", {w.w_ih, nullptr, w.b_ih, w.b_hh}, data);
  fwd_null("b_ih", {w.w_ih, w.w_hh, nullptr, w.b_hh}, data);
  fwd_null("b_hh", {w.w_ih, w.w_hh, w.b_ih, nullptr}, data);
  fwd_null("hseq", w, {d.x.get(), nullptr, nullptr, nullptr});
  expect_invalid(
      [&] {
        k::gru_forward<float>(cublas.h, {3, 5, 7, 4}, w, data, false, nullptr, nullptr, nullptr);
      },
      "gru_forward: d_workspace is null");
  expect_invalid(
      [&] {
        k::gru_forward<float>(nullptr, {3, 5, 7, 4}, w, data, false, nullptr, d.ws_forward.get(),
                              nullptr);
      },
      "gru_forward: the cuBLAS handle is null");
  const auto bwd = [&](const Weights& ww, const float* x, const float* reserve, int block) {
    k::gru_backward<float>(cublas.h, {3, 5, 7, 4}, ww, {x, d.dhseq.get(), nullptr}, false, reserve,
                           {d.dx.get(), nullptr, d.dw_ih.get(), d.dw_hh.get(), d.db_ih.get(),
                            d.db_hh.get(), GruAccumulate{}},
                           d.ws_backward.get(), nullptr, block);
  };
  expect_invalid([&] { bwd(w, d.x.get(), nullptr, 256); }, "gru_backward: d_reserve is null");
  expect_invalid([&] { bwd(w, nullptr, d.reserve.get(), 256); }, "gru_backward: x is null");
  expect_invalid([&] { bwd({w.w_ih, nullptr}, d.x.get(), d.reserve.get(), 256); },
                 "gru_backward: w_hh is null");
  // Backward does not read the biases.
  EXPECT_NO_THROW(bwd({w.w_ih, w.w_hh, nullptr, nullptr}, d.x.get(), d.reserve.get(), 256));
  expect_invalid([&] { bwd(w, d.x.get(), d.reserve.get(), 64 + 1); },
                 "gru_backward: block must be a multiple of 32 in [32, 1024], not 65");
  // The whole-sequence kernels keep their state in shared memory: backward
  // 4H values per block, which must fit in 48 KiB (H <= 3072 in float).
  // The launcher says so before it reads anything.
  const GruShape wide{1, 1, 1, 3073};
  expect_invalid([&] {
    k::gru_backward<float>(cublas.h, wide, w, {d.x.get(), nullptr, nullptr}, false,
                           d.reserve.get(), {}, d.ws_backward.get(), nullptr);
  }, "gru_backward: hidden = 3073 needs 49168 bytes of shared memory per block, more than the "
     "49152 a block may use");
}
TEST(GruArgs, GateLaunchersCheckStridesAndPointers) {
  DeviceBuffer<float> a(256), b(256), c(256), e(256);
  const auto fwd = [&](long long gx_stride, const float* gh, const float* hp) {
    k::gru_gates_forward<float>(2, 4, {a.get(), gx_stride, gh, b.get(), b.get(), hp, 4},
                                {c.get(), 4}, nullptr);
  };
  EXPECT_NO_THROW(fwd(12, nullptr, nullptr));
  expect_invalid([&] { fwd(11, nullptr, nullptr); },
                 "gru_gates_forward: gx_stride must be >= 12, not 11");
  expect_invalid([&] { fwd(12, nullptr, e.get()); },
                 "gru_gates_forward: gh is null but h_prev is not");
  expect_invalid(
      [&] {
        k::gru_gates_forward<float>(2, 4, {a.get(), 12, nullptr, b.get(), nullptr},
                                    {c.get(), 4}, nullptr);
      },
      "gru_gates_forward: b_hh is null");
  expect_invalid(
      [&] {
        k::gru_gates_forward<float>(2, 4, {a.get(), 12, nullptr, b.get(), b.get()},
                                    {c.get(), 4, nullptr, e.get(), 19}, nullptr);
      },
      "gru_gates_forward: saved_stride must be >= 20, not 19");
  expect_invalid(
      [&] {
        k::gru_gates_forward<float>(2, 0, {a.get(), 12, nullptr, b.get(), b.get()},
                                    {c.get(), 4}, nullptr);
      },
      "gru_gates_forward: hidden must be >= 1, not 0");
  const auto bwd = [&](const float* saved, long long dgh_stride) {
    k::gru_gates_backward<float>(2, 4, {saved, 20}, {b.get(), 12, c.get(), dgh_stride}, nullptr);
  };
  EXPECT_NO_THROW(bwd(a.get(), 12));
  expect_invalid([&] { bwd(nullptr, 12); }, "gru_gates_backward: saved is null");
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
  EXPECT_NO_THROW(k::gru_forward<float>(cublas.h, {3, 5, 7, 4}, d.weights(),
                                        {d.x.get(), nullptr, d.hseq.get(), nullptr}, false,
                                        nullptr, d.ws_forward.get(), other));
  CUDA_CHECK(cudaStreamSynchronize(other));
  CUBLAS_CHECK(cublasSetStream(cublas.h, nullptr));
  CUDA_CHECK(cudaStreamDestroy(other));
}

// batch = 0 is an empty batch: nothing to do, nothing touched (null pointers
// are fine, the handle is not even looked at).
TEST(GruArgs, ZeroBatchIsANoOp) {
  EXPECT_NO_THROW(
      k::gru_forward<float>(nullptr, {0, 5, 7, 4}, {}, {}, false, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(k::gru_backward<double>(nullptr, {0, 5, 7, 4}, {}, {}, true, nullptr, {},
                                          nullptr, nullptr));
  EXPECT_NO_THROW(k::gru_gates_forward<float>(0, 4, {}, {}, nullptr));
  EXPECT_NO_THROW(k::gru_gates_backward<float>(0, 4, {}, {}, nullptr));
}

TEST(GruSizes, WorkspaceAndReserve) {
  const GruShape s{3, 5, 7, 4};
  // Forward: Gx (B*S*3H) and W_hh transposed (3H*H); backward: dGx, dGh
  // (B*S*3H each) and a ones vector (B*S).
  EXPECT_EQ(k::gru_forward_workspace_size(s), size_t(3 * 5 * 12 + 12 * 4));
  EXPECT_EQ(k::gru_reserve_size(s), size_t(3 * 5 * 20));
  EXPECT_EQ(k::gru_backward_workspace_size(s), size_t(2 * 3 * 5 * 12 + 15));
}

// The cost formulas: a sanity check of their scaling, for benchmarks.
TEST(GruCost, ScalesWithSize) {
  const auto f = k::gru_forward_cost({32, 16, 128, 32});
  // The GEMMs dominate: 2*B*S*3H*(I + H) operations.
  EXPECT_GT(f.flops, 2.0 * 32 * 16 * 96 * (128 + 32));
  EXPECT_LT(f.flops, 1.2 * 2.0 * 32 * 16 * 96 * (128 + 32));
  EXPECT_NEAR(k::gru_forward_cost({32, 32, 128, 32}).flops, 2 * f.flops, 1e-9 * f.flops);
  EXPECT_EQ(k::gru_forward_cost({32, 16, 128, 32}, 8).bytes, 2 * f.bytes);
  EXPECT_GT(k::gru_backward_cost({32, 16, 128, 32}).flops, 1.5 * f.flops);
  EXPECT_EQ(k::gru_gates_forward_cost(10, 8).flops, 22 * 80);
}

}  // namespace
