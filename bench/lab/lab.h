// lab.h: the lab benchmark of the kernels (bench/lab/), in the spirit of
// llm.c's dev/cuda: every version of every kernel family at the three
// models' shapes, over a sweep of block sizes, each case checked against its
// CPU reference before it is timed.
//
// A family file (bench/lab/<family>.cpp, named after kernels/<family>.cu)
// registers its cases:
//
//   LAB_FAMILY(softmax) {
//     for (const lab::Shape2& s : ...)
//       lab::add({"softmax", "forward", "parallel.attention", cost, {64, 128, 256},
//                 [=](int batch) { return std::make_unique<SoftmaxRun>(s, batch); }});
//   }
//
// A case's `make(batch)` allocates inputs (random, never zeros) for one
// batch size and returns a Run: run(block) launches the op once on the
// default stream; check() compares what the last run wrote with the CPU
// reference and returns "" or what differs. The driver makes one Run per
// case at the check batch and checks it after a run at each block size, so a
// Run may compute its reference once and keep it. lab_main.cpp checks every case
// at a small batch, then times it at the benchmark's batch with CUDA events
// and reports time, GB/s and GFLOP/s (from the kernels' *_cost formulas)
// and the share of the device's ceilings.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cost.h"
#include "kernels/device_buffer.h"

namespace timbre::lab {

struct Run {
  virtual ~Run() = default;
  virtual void run(int block) = 0;
  virtual std::string check() = 0;
};

struct Case {
  std::string family;   // the kernel file's stem: "conv2d"
  std::string version;  // the launcher: "forward_v2_im2col"
  std::string shape;    // where the models use it: "rescnn.block1.conv2"
  // The cost of one run at batch b.
  std::function<kernels::Cost(int b)> cost;
  std::vector<int> blocks;  // the sweep; {0} for launchers without a block
  std::function<std::unique_ptr<Run>(int batch)> make;
};

void add(Case c);

// Families register themselves before main: LAB_FAMILY(name) { add(...); }.
// The body runs once main has read the flags.
void add_family(const char* name, void (*body)());
#define LAB_FAMILY(name)                                                                 \
  static void lab_family_##name();                                                       \
  [[maybe_unused]] static const bool lab_registered_##name =                             \
      (::timbre::lab::add_family(#name, &lab_family_##name), true);                      \
  static void lab_family_##name()

// The block sweep of elementwise and row kernels.
inline std::vector<int> block_sweep() { return {64, 128, 256, 512, 1024}; }

// Uniform values in [lo, hi), never all zero.
template <class T>
std::vector<T> random_values(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = T(u(rng));
  return v;
}

// "" when |got - ref| <= tol * max|ref| everywhere (tol relative to the
// scale of the reference), else the worst element.
template <class T>
std::string compare(const std::vector<T>& got, const std::vector<double>& ref, double tol) {
  if (got.size() != ref.size())
    return "size " + std::to_string(got.size()) + " against " + std::to_string(ref.size());
  double scale = 0;
  for (double r : ref) scale = std::fmax(scale, std::fabs(r));
  size_t worst = 0;
  double worst_err = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - ref[i]);
    if (!(e <= worst_err)) worst_err = e, worst = i;  // NaN is the worst
  }
  if (worst_err <= tol * scale) return "";
  return "element " + std::to_string(worst) + ": " + std::to_string(double(got[worst])) +
         " against " + std::to_string(ref[worst]) + " (tolerance " + std::to_string(tol) +
         " x " + std::to_string(scale) + ")";
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace timbre::lab
