// Attention over time (kernels/attention.cuh) against its CPU reference, in
// float and double, at (B=3, S=5, D=6, A=4), one step (S=1, alpha = 1) and
// the parallel model's (32, 64, 128, 128): forward (out, alpha), backward
// assigning over NaN and accumulating over a prefill (op-case rows, every
// thread order, both block sizes); finite differences of the device forward
// in double; determinism, argument errors, sizes and costs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/attention.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/kernels/recurrent_testing.h"

namespace {

namespace k = timbre::kernels;
using namespace timbre::testing::recurrent;
using timbre::testing::dtype_name;
using k::AttentionAccumulate;
using AttnShape = k::AttentionShape;
using timbre::testing::all_close;
using timbre::testing::GradientCase;
using timbre::testing::max_abs;
using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::split;
using timbre::testing::Tolerance;
using timbre::testing::unit_roundoff;
using timbre::testing::widen;

std::string shape_str(const AttnShape& s) {
  return "B=" + std::to_string(s.batch) + " S=" + std::to_string(s.steps) +
         " D=" + std::to_string(s.dim) + " A=" + std::to_string(s.attn);
}

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
  k::AttentionWeights<T> weights() const { return {w.data(), b.data(), v.data()}; }
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
        reserve(k::attention_reserve_size(p.s)), ws(k::attention_backward_workspace_size(p.s)),
        dhseq(p.hseq.size()), dw(p.w.size()), db(p.b.size()), dv(p.v.size()) {}
  k::AttentionWeights<T> weights() const { return {w.get(), b.get(), v.get()}; }
  void forward(cublasHandle_t h, int block) {
    k::attention_forward<T>(h, p.s, weights(), {hseq.get(), out.get(), alpha.get()},
                            reserve.get(), nullptr, block);
  }
  void backward(cublasHandle_t h, int block, AttentionAccumulate acc) {
    k::attention_backward<T>(h, p.s, weights(), {hseq.get(), dout.get()}, alpha.get(),
                             reserve.get(), {dhseq.get(), dw.get(), db.get(), dv.get(), acc},
                             ws.get(), nullptr, block);
  }
  std::vector<DeviceBuffer<T>*> grads() { return {&dhseq, &dw, &db, &dv}; }
};

AttentionAccumulate attn_flags(bool acc) { return AttentionAccumulate{acc, acc, acc, acc}; }
const char* const kGradNames[] = {"dhseq", "dW", "db", "dv"};

// ---------------------------------------------------------------------------
// The op-case rows: per problem, the forward (out, alpha), the backward
// assigning over NaN (which it must never read) and accumulating over a
// random prefill.

template <class T>
std::vector<std::vector<T>> reference_grads(const AttnProblem<T>& p,
                                            const std::vector<std::vector<T>>* prefill) {
  const AttnShape& s = p.s;
  std::vector<std::vector<T>> g =
      prefill ? *prefill
              : std::vector<std::vector<T>>{std::vector<T>(p.hseq.size()), std::vector<T>(p.w.size()),
                                            std::vector<T>(p.b.size()), std::vector<T>(p.v.size())};
  k::attention_backward_cpu<T>(s, p.weights(), {p.hseq.data(), p.dout.data()},
                               {g[0].data(), g[1].data(), g[2].data(), g[3].data(),
                                attn_flags(prefill != nullptr)});
  return g;
}

template <class T>
std::vector<double> joined(const std::vector<std::vector<T>>& parts) {
  std::vector<double> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

template <class T>
void attention_rows(OpTable& table, AttnShape shape, uint64_t seed, double gain) {
  using timbre::testing::once;
  const auto p = once([=] { return AttnProblem<T>(shape, seed, gain); });
  const std::string where = shape_str(shape);
  const size_t B = size_t(shape.batch), S = size_t(shape.steps), D = size_t(shape.dim),
               A = size_t(shape.attn);
  const std::vector<size_t> grad_sizes = {B * S * D, A * D, A, A};
  // Forward: out and alpha.
  OpCase fwd{
      "attention/attention_forward", dtype_name<T>(), where, kBlocks, {},
      "a chain of D + A + 2S roundings relative to each output's scale",
      [=](int block) {
        Cublas cublas;
        AttnDevice<T> dev(p());
        dev.forward(cublas.h, block);
        return joined<T>({dev.out.to_host(), dev.alpha.to_host()});
      },
      [=] {
        std::vector<T> out(B * D), alpha(B * S);
        k::attention_forward_cpu<T>(shape, p().weights(),
                                    {p().hseq.data(), out.data(), alpha.data()});
        return joined<T>({out, alpha});
      }};
  fwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
    const auto g = split(got, {B * D, B * S}), w = split(want, {B * D, B * S});
    const double eps = attention_eps<T>(shape);
    if (auto r = all_close(g[0], w[0], scaled(eps, w[0])); !r) return r << " (out)";
    if (auto r = all_close(g[1], w[1], scaled(eps, w[1])); !r) return r << " (alpha)";
    return ::testing::AssertionSuccess();
  };
  table.add(std::move(fwd));
  // Backward.
  const auto prefill = once([=] {
    std::vector<std::vector<T>> pre;
    const size_t sizes[] = {B * S * D, A * D, A, A};
    for (size_t i = 0; i < 4; ++i) pre.push_back(uniform<T>(sizes[i], 950 + i, -2, 2));
    return pre;
  });
  const auto fresh = once([=] { return reference_grads<T>(p(), nullptr); });
  for (bool acc : {false, true}) {
    OpCase bwd{
        acc ? "attention/attention_backward_accumulate" : "attention/attention_backward",
        dtype_name<T>(), where, kBlocks, {},
        "2D + 2A + 2S roundings, then GEMM sums over B*S rows, relative to each gradient's "
        "scale (accumulating: absolute at that scale)",
        [=](int block) {
          Cublas cublas;
          AttnDevice<T> dev(p());
          dev.forward(cublas.h, block);
          const auto g = dev.grads();
          for (size_t i = 0; i < g.size(); ++i)
            g[i]->copy_from_host(acc ? prefill()[i] : std::vector<T>(g[i]->size(), T(NAN)));
          dev.backward(cublas.h, block, attn_flags(acc));
          return joined<T>({dev.dhseq.to_host(), dev.dw.to_host(), dev.db.to_host(),
                            dev.dv.to_host()});
        },
        [=] { return joined<T>(acc ? reference_grads<T>(p(), &prefill()) : fresh()); }};
    bwd.compare = [=](const std::vector<double>& got, const std::vector<double>& want, int) {
      const auto g = split(got, grad_sizes), w = split(want, grad_sizes);
      const double eps = attention_backward_eps<T>(shape);
      for (size_t i = 0; i < 4; ++i) {
        Tolerance tol = scaled(eps, fresh()[i]);
        if (acc) tol = accumulated(tol, max_abs(fresh()[i]), unit_roundoff<T>);
        if (auto r = all_close(g[i], w[i], tol); !r) return r << " (" << kGradNames[i] << ")";
      }
      return ::testing::AssertionSuccess();
    };
    table.add(std::move(bwd));
  }
}

// Finite differences (double): L = dout . out, for each parameter.
void attention_gradient_rows(OpTable& table) {
  const AttnProblem<double> base({2, 3, 4, 3}, 830, 3.0);
  for (int param = 0; param < 4; ++param) {
    const auto field = [param](AttnProblem<double>& p) -> std::vector<double>& {
      return param == 0 ? p.hseq : param == 1 ? p.w : param == 2 ? p.b : p.v;
    };
    // The device at (base with the parameter set to x), after the forward:
    // L = dout . out, or (backward) the parameter's gradient.
    const auto at = [=](const std::vector<double>& x, bool backward) {
      AttnProblem<double> p = base;
      field(p) = x;
      Cublas cublas;
      AttnDevice<double> dev(p);
      dev.forward(cublas.h, 96);
      if (!backward) return std::vector<double>{timbre::testing::dot(dev.out.to_host(), p.dout)};
      dev.backward(cublas.h, 96, attn_flags(false));
      return dev.grads()[size_t(param)]->to_host();
    };
    AttnProblem<double> copy = base;
    table.add(GradientCase{
        std::string("attention/attention_backward/") + kGradNames[param], shape_str(base.s),
        field(copy), [=](const std::vector<double>& x) { return at(x, false)[0]; },
        [=](const std::vector<double>& x) { return at(x, true); },
        kFiniteDifferenceTol, kFiniteDifferenceWhy, kStep});
  }
}

OP_CASES(attention) {
  attention_rows<float>(table, {3, 5, 6, 4}, 800, 3.0);
  attention_rows<float>(table, {2, 1, 3, 5}, 810, 3.0);  // one step: alpha = 1
  attention_rows<float>(table, {32, 64, 128, 128}, 820, 1.0);
  attention_rows<double>(table, {3, 5, 6, 4}, 800, 3.0);
  attention_rows<double>(table, {2, 1, 3, 5}, 810, 3.0);
  attention_rows<double>(table, {32, 64, 128, 128}, 820, 1.0);
  attention_gradient_rows(table);
}

// ---------------------------------------------------------------------------
// Determinism: every output has the same bits on a second run, under every
// thread order and for both block sizes (no atomics; the GEMMs are the same
// calls; the softmax over S <= 64 is on its thread or warp path, whose bits
// do not depend on the block size).
TEST(AttentionDeterminism, SameBitsEveryRun) {
  using T = float;
  const AttnProblem<T> a({32, 64, 64, 48}, 1010, 1.0);  // softmax over 64: warp path
  Cublas cublas;
  AttnDevice<T> attn(a);
  const auto run = [&](int block) {
    std::vector<std::vector<unsigned char>> out;
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

// ---------------------------------------------------------------------------
// Arguments, sizes, costs.

TEST(AttentionArgs, RejectsBadSizesBlocksAndPointers) {
  Cublas cublas;
  const AttnProblem<float> p({3, 5, 6, 4}, 1300, 1.0);
  AttnDevice<float> d(p);
  const auto fwd = [&](int B, int S, int D, int A, int block) {
    k::attention_forward<float>(cublas.h, {B, S, D, A}, d.weights(),
                                {d.hseq.get(), d.out.get(), d.alpha.get()}, d.reserve.get(),
                                nullptr, block);
  };
  expect_invalid([&] { fwd(-2, 5, 6, 4, 256); }, "attention_forward: batch must be >= 0, not -2");
  expect_invalid([&] { fwd(3, 0, 6, 4, 256); }, "attention_forward: steps must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 0, 4, 256); }, "attention_forward: dim must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 6, 0, 256); }, "attention_forward: attn must be >= 1, not 0");
  expect_invalid([&] { fwd(3, 5, 6, 4, 2048); },
                 "attention_forward: block must be a multiple of 32 in [32, 1024], not 2048");
  EXPECT_NO_THROW(fwd(3, 5, 6, 4, 32));
  // Each required pointer null in turn: the message names the field.
  using Weights = k::AttentionWeights<float>;
  using Data = k::AttentionForwardData<float>;
  const Weights w = d.weights();
  const Data data{d.hseq.get(), d.out.get(), d.alpha.get()};
  const auto fwd_null = [&](const std::string& name, const Weights& ww, const Data& dd,
                            float* reserve) {
    expect_invalid(
        [&] { k::attention_forward<float>(cublas.h, {3, 5, 6, 4}, ww, dd, reserve, nullptr); },
        "attention_forward: " + name + " is null");
  };
  fwd_null("hseq", w, {nullptr, data.out, data.alpha}, d.reserve.get());
  fwd_null("w", {nullptr, w.b, w.v}, data, d.reserve.get());
  fwd_null("b", {w.w, nullptr, w.v}, data, d.reserve.get());
  fwd_null("v", {w.w, w.b, nullptr}, data, d.reserve.get());
  fwd_null("out", w, {data.hseq, nullptr, data.alpha}, d.reserve.get());
  fwd_null("alpha", w, {data.hseq, data.out, nullptr}, d.reserve.get());
  fwd_null("d_reserve", w, data, nullptr);
  const auto bwd = [&](const Weights& ww, const float* dout, const float* alpha) {
    k::attention_backward<float>(cublas.h, {3, 5, 6, 4}, ww, {d.hseq.get(), dout}, alpha,
                                 d.reserve.get(), {d.dhseq.get()}, d.ws.get(), nullptr);
  };
  expect_invalid([&] { bwd(w, nullptr, d.alpha.get()); }, "attention_backward: dout is null");
  expect_invalid([&] { bwd(w, d.dout.get(), nullptr); }, "attention_backward: d_alpha is null");
  expect_invalid([&] { bwd({w.w, w.b, nullptr}, d.dout.get(), d.alpha.get()); },
                 "attention_backward: v is null");
  // Backward does not read b.
  EXPECT_NO_THROW(bwd({w.w, nullptr, w.v}, d.dout.get(), d.alpha.get()));
}

// batch = 0 is an empty batch: nothing to do, nothing touched (null pointers
// are fine, the handle is not even looked at).
TEST(AttentionArgs, ZeroBatchIsANoOp) {
  EXPECT_NO_THROW(k::attention_forward<float>(nullptr, {0, 5, 6, 4}, {}, {}, nullptr, nullptr));
  EXPECT_NO_THROW(k::attention_backward<double>(nullptr, {0, 5, 6, 4}, {}, {}, nullptr, nullptr,
                                                {}, nullptr, nullptr));
}

TEST(AttentionSizes, ReserveAndWorkspace) {
  EXPECT_EQ(k::attention_reserve_size({3, 5, 6, 4}), size_t(60));
  EXPECT_EQ(k::attention_backward_workspace_size({3, 5, 6, 4}), size_t(60 + 45));
}

TEST(AttentionCost, BackwardCostsMore) {
  EXPECT_GT(k::attention_backward_cost({32, 64, 128, 128}).flops,
            k::attention_forward_cost({32, 64, 128, 128}).flops);
}

}  // namespace
