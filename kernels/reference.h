// reference.h: helpers of the loop-based CPU references (the *_cpu
// functions beside every kernel). References compute in double and round
// once to T when they store.
#pragma once

#include <cstddef>
#include <vector>

namespace timbre::kernels {

// *dst = v, or *dst += v when accumulating, rounded once to T.
template <class T>
void store_cpu(T* dst, double v, bool accumulate) {
  *dst = accumulate ? T(double(*dst) + v) : T(v);
}

// A double array into an optional T array (nothing when dst is null).
template <class T>
void store_all_cpu(T* dst, const std::vector<double>& v, bool accumulate) {
  if (!dst) return;
  for (size_t i = 0; i < v.size(); ++i) store_cpu(dst + i, v[i], accumulate);
}

}  // namespace timbre::kernels
