// Device math helpers (kernels/device_math.cuh) that kernels use for index
// arithmetic: FastDiv against the divide instruction.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "kernels/device_math.cuh"

namespace {

using timbre::kernels::FastDiv;

// Every divisor up to 2^12, then powers of two and their neighbours and
// large odd ones; for each, the numerators where the quotient steps (q d - 1,
// q d), the edges 0 and 2^31 - 1, and random ones below 2^31.
TEST(FastDiv, EqualsIntegerDivisionBelow2To31) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any(0, 0x7fffffffu);
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (int b = 13; b <= 31; ++b)
    for (int64_t delta : {-1, 0, 1}) divisors.push_back(uint32_t((int64_t(1) << b) + delta));
  for (int i = 0; i < 200; ++i) divisors.push_back(any(rng) | 1u);
  for (const uint32_t d : divisors) {
    if (d == 0 || d > 0x7fffffffu) continue;
    const FastDiv f(d);
    auto check = [&](uint32_t n) {
      if (n > 0x7fffffffu) return;
      ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
    };
    for (uint32_t n = 0; n < 300; ++n) check(n);
    check(0x7fffffffu);
    check(0x7ffffffeu);
    for (uint64_t q = 1; q * d <= 0x7fffffffu && q < 300; ++q) {
      check(uint32_t(q * d - 1));
      check(uint32_t(q * d));
    }
    for (int i = 0; i < 300; ++i) check(any(rng));
  }
}

}  // namespace
