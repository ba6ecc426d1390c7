// op_cases.h: the op-case table of the kernel tests (in the spirit of
// ggml's test-backend-ops). Each kernel family lists its cases as rows; one
// driver (test_op_cases.cpp) runs every row
//   * in correctness mode: the device result against the CPU reference,
//     within the row's tolerance, under each simcuda thread order (forward,
//     reverse, random) and under both backends' launch shapes (the defaults
//     table's "gpu" and "sim" rows, kernels/defaults.h); the thread orders
//     must also give the same bits (no kernel may depend on the schedule);
//   * in gradient mode (rows that have one): the backward kernel against
//     central finite differences of the forward, in double;
//   * in performance mode (TIMBRE_OP_CASES_PERF=1, one test that times
//     every row): the time of one run, at each block size.
// The inputs are made inside run() and reference() from fixed seeds (shared
// through once()), so a row costs nothing until it runs. A family's rows run
// as one CTest test, <executable>.op_cases (cmake/Timbre.cmake, OP_CASES).
// Adding an op's tests means adding rows:
//
//   OP_CASES(activation) {
//     table.add(OpCase{"activation/relu_forward", "float", "n=7", {64, 256},
//                      {0, 0}, "one comparison: exact", run, reference});
//   }
//
// Behaviours that are not "this output for these inputs" (argument errors,
// aliasing, NaN propagation, determinism) stay ordinary tests beside the
// family's rows, in tests/kernels/test_<family>.cpp.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "tests/testing.h"

namespace timbre::testing {

struct OpCase {
  std::string op;           // "<family>/<launcher>[/variant]", e.g. "softmax/softmax_forward/warp"
  std::string dtype;        // "float", "double" (or the inputs' type where that says more)
  std::string shape;        // e.g. "rows=257 cols=1000"
  std::vector<int> blocks;  // threads per block: the row runs at each ({0}: the launcher's own)
  Tolerance tol;            // |got - ref| <= atol + rtol |ref|
  std::string why;          // where the tolerance comes from
  // Runs the kernel on the case's inputs (poisoning its outputs first) and
  // returns what it wrote, widened to double.
  std::function<std::vector<double>(int block)> run;
  // The CPU reference of the same outputs, in double.
  std::function<std::vector<double>()> reference;
  // When the error bound depends on the launch (a reduction's depth grows
  // with the block), the tolerance at each block size; else `tol`.
  std::function<Tolerance(int block)> tol_at = nullptr;
  // When the output holds several arrays with their own tolerances: compares
  // got with ref (instead of tol / tol_at).
  std::function<::testing::AssertionResult(const std::vector<double>& got,
                                           const std::vector<double>& ref, int block)>
      compare = nullptr;
  // The output does not depend on the launch shape (elementwise updates):
  // every block size must give the same bits as the first.
  bool block_invariant = false;
};

// A gradient check: d loss / d x from the backward kernel (`analytic`)
// against central differences of `loss` (the forward kernel, reduced to a
// scalar, e.g. <y, w> for fixed random w), all in double.
struct GradientCase {
  std::string op;     // "<family>/<backward launcher>"
  std::string shape;
  std::vector<double> x;
  std::function<double(const std::vector<double>& x)> loss;
  std::function<std::vector<double>(const std::vector<double>& x)> analytic;
  Tolerance tol;
  std::string why;
  double h = 1e-5;  // the difference step
};

// The dtype column of a row: "float" or "double".
template <class T>
const char* dtype_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}

// once(make): a function that returns make()'s value, computed on first use
// and kept, so that a row's runs (block sizes, thread orders, launch shapes)
// and its reference share one set of inputs.
template <class F>
auto once(F make) {
  using V = decltype(make());
  auto cache = std::make_shared<std::optional<V>>();
  return [cache, make]() -> const V& {
    if (!*cache) cache->emplace(make());
    return **cache;
  };
}

// The arrays of a result that holds several, one after the other:
// split(v, {n0, n1, ...}) gives v[0, n0), v[n0, n0 + n1), ...
inline std::vector<std::vector<double>> split(const std::vector<double>& v,
                                              const std::vector<size_t>& sizes) {
  std::vector<std::vector<double>> out;
  size_t at = 0;
  for (size_t n : sizes) {
    const size_t end = std::min(v.size(), at + n);
    out.emplace_back(v.begin() + long(at), v.begin() + long(end));
    at = end;
  }
  return out;
}

class OpTable {
 public:
  void add(OpCase c) { cases_.push_back(std::move(c)); }
  void add(GradientCase g) { gradients_.push_back(std::move(g)); }
  const std::vector<OpCase>& cases() const { return cases_; }
  const std::vector<GradientCase>& gradients() const { return gradients_; }

 private:
  std::vector<OpCase> cases_;
  std::vector<GradientCase> gradients_;
};

// Every family's rows (built on first use, in family order).
const OpTable& op_table();
void register_op_family(const char* family, void (*rows)(OpTable&));

#define OP_CASES(family)                                                               \
  static void op_cases_##family(::timbre::testing::OpTable& table);                   \
  [[maybe_unused]] static const bool op_cases_registered_##family =                    \
      (::timbre::testing::register_op_family(#family, &op_cases_##family), true);      \
  static void op_cases_##family(::timbre::testing::OpTable& table)

}  // namespace timbre::testing
