// Thrust in the sim flavour runs on its OpenMP device system: a sort, a
// transform and a reduction must give what the host computes.
#include <gtest/gtest.h>
#include <thrust/device_vector.h>
#include <thrust/functional.h>
#include <thrust/reduce.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include <algorithm>
#include <vector>

#include "tests/testing.h"

TEST(Thrust, SortTransformReduce) {
  const auto h = timbre::testing::random_floats(100003, 17);
  thrust::device_vector<float> v(h.begin(), h.end());
  thrust::transform(v.begin(), v.end(), v.begin(), thrust::negate<float>());
  thrust::sort(v.begin(), v.end());
  std::vector<float> want(h.size());
  std::transform(h.begin(), h.end(), want.begin(), [](float x) { return -x; });
  std::sort(want.begin(), want.end());
  std::vector<float> got(v.size());
  thrust::copy(v.begin(), v.end(), got.begin());
  EXPECT_EQ(got, want);

  thrust::device_vector<int> s(1000);
  thrust::sequence(s.begin(), s.end());
  EXPECT_EQ(thrust::reduce(s.begin(), s.end(), 0), 999 * 1000 / 2);
}
