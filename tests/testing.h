// testing.h: the one comparison helper and the random inputs every test uses.
//
//   EXPECT_TRUE(timbre::testing::all_close(got, ref, {.atol = 1e-5, .rtol = 1e-5}));
//
// passes when |got - ref| <= atol + rtol * |ref| everywhere; on failure the
// message lists the first mismatches with their indices, the worst absolute
// and relative errors, and the NMSE. NaN never compares close (except to NaN
// when `nan_equal`). Tolerances are loosened only with a comment saying why.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <cstring>
#include <functional>
#include <type_traits>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/device_buffer.h"
#if TIMBRE_BACKEND_SIM
#include "kernels/sim/control.h"
#endif

namespace timbre::testing {

#ifdef TIMBRE_FIXTURES_DIR
// The golden fixtures (tests/fixtures): $TIMBRE_FIXTURES when set, for a
// build run from another copy of the tree (scripts/gpu_check.sh runs a
// build prepared elsewhere), else the source tree's, compiled in.
inline std::string fixtures_dir() {
  const char* env = std::getenv("TIMBRE_FIXTURES");
  return env && *env ? std::string(env) : std::string(TIMBRE_FIXTURES_DIR);
}
#endif

// A fresh directory under $TMPDIR (or /tmp), deleted with its contents when
// the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/timbre-test-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("TempDir: mkdtemp failed for " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // The path of `rel` inside the directory (nothing is created).
  std::string file(const std::string& rel) const { return (path_ / rel).string(); }
  std::string operator/(const std::string& rel) const { return file(rel); }
  // Creates the file `rel` (and its folders) holding `content`; its path.
  std::string write(const std::string& rel, const std::string& content = "x") const {
    const std::filesystem::path p = path_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  // The names of the entries directly inside the directory.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : std::filesystem::directory_iterator(path_))
      v.push_back(e.path().filename().string());
    return v;
  }

 private:
  std::filesystem::path path_;
};


struct Tolerance {
  double atol = 1e-6;
  double rtol = 1e-5;
  bool nan_equal = false;
};

template <class A, class B>
::testing::AssertionResult all_close(const A& got, const B& ref, Tolerance tol = {},
                                     int show = 8) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure()
           << "size " << got.size() << " differs from reference size " << ref.size();
  size_t bad = 0;
  double worst_abs = 0, worst_rel = 0, err2 = 0, ref2 = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), r = double(ref[i]);
    const double d = std::fabs(g - r);
    bool ok;
    if (std::isnan(g) || std::isnan(r)) {
      ok = tol.nan_equal && std::isnan(g) && std::isnan(r);
    } else {
      ok = d <= tol.atol + tol.rtol * std::fabs(r);
      worst_abs = std::max(worst_abs, d);
      if (r != 0) worst_rel = std::max(worst_rel, d / std::fabs(r));
      err2 += d * d;
      ref2 += r * r;
    }
    if (!ok && bad++ < size_t(show))
      first << "\n  [" << i << "] got " << g << ", expected " << r << " (diff " << d << ")";
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " values differ beyond atol " << tol.atol
         << " + rtol " << tol.rtol << "*|ref|; worst abs " << worst_abs << ", worst rel "
         << worst_rel << ", NMSE " << (ref2 > 0 ? err2 / ref2 : err2) << first.str();
}

// The unit roundoff u of T: one rounding changes v by at most u|v|.
// Tolerances are written in units of it so one analysis serves both types.
template <class T>
constexpr double unit_roundoff = std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;

template <class V>
double max_abs(const V& v) {
  double m = 0;
  for (const auto& x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Equal bit patterns (NaN included), with the first difference on failure.
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& ref) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure()
             << "first difference at [" << i << "]: got " << got[i] << ", expected " << ref[i];
  return ::testing::AssertionSuccess();
}

// 0xFF bytes: NaN in every float and double, -1 in every int. An element a
// kernel skips, or an output it reads before writing, then fails.
template <class T>
void poison(DeviceBuffer<T>& b) {
  if (b.size()) CUDA_CHECK(cudaMemset(b.get(), 0xFF, b.bytes()));
}

// Uniform values in [lo, hi) from a fixed seed. Never all zeros: a kernel
// that ignores its input must not pass by accident.
inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Values of magnitude in [0.001, 1) with random signs: never 0, never tiny,
// so relative tolerances stay meaningful.
template <class T>
std::vector<T> random_nonzero(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<T> v(n);
  for (auto& x : v) {
    const double m = 0.001 + 0.999 * u(g);
    x = T(u(g) < 0.5 ? -m : m);
  }
  return v;
}

// sum_i y_i w_i: reduces an output to the scalar a gradient check differentiates.
inline double dot(const std::vector<double>& y, const std::vector<double>& w) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
  return s;
}

// Central differences (loss(v + h e_i) - loss(v - h e_i)) / 2h for every i.
inline std::vector<double> numeric_gradient(
    const std::vector<double>& v, const std::function<double(const std::vector<double>&)>& loss,
    double h = 1e-5) {
  std::vector<double> g(v.size()), vp = v;
  for (size_t i = 0; i < v.size(); ++i) {
    vp[i] = v[i] + h;
    const double up = loss(vp);
    vp[i] = v[i] - h;
    const double down = loss(vp);
    vp[i] = v[i];
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

inline std::vector<int> random_ints(size_t n, uint64_t seed, int lo, int hi) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  std::vector<int> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Runs `body(label)` under several simcuda thread orders (forward, reverse,
// random) with two workers, so a missing barrier cannot hide behind one
// order. On a GPU it runs once, in whatever order the hardware picks.
template <class F>
void for_each_thread_order(F&& body) {
#if TIMBRE_BACKEND_SIM
  const std::pair<simcuda::Order, uint64_t> orders[] = {
      {simcuda::Order::forward, 1}, {simcuda::Order::reverse, 1}, {simcuda::Order::random, 5}};
  for (auto [order, seed] : orders) {
    simcuda::Options o = simcuda::options();
    o.order = order;
    o.seed = seed;
    o.workers = 2;
    simcuda::ScopedOptions scope(o);
    SCOPED_TRACE("thread order " + simcuda::describe(order, seed));
    body();
  }
#else
  body();
#endif
}

}  // namespace timbre::testing
