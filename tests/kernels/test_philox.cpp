// Philox4x32-10 and what is built on it: known answers, the conversions, the
// fills (bits, uniform, normal) against their CPU references and as
// distributions, reproducibility (thread orders, worker counts, block
// sizes, n, offsets), dropout forward/backward, the initialisers, and
// argument errors.
//
// Exactness: bits, uniforms and dropout are integer arithmetic, exact
// conversions and correctly rounded multiplies/fmas, so the kernels must
// equal their CPU references bit for bit in both flavours. Normals go
// through logf and sincosf: bit for bit in the sim flavour (the same libm on
// both sides); in the cuda flavour CUDA's functions are within 2 ulp of
// glibc's, so the comparison there has a tolerance (normals_match).
//
// Statistical checks use n = 10^6 draws from fixed seeds and bounds of 6
// standard errors (SE) of the statistic: a correct generator fails one with
// probability ~2e-9, and since the seeds are fixed the outcome never
// changes from run to run; a wrong scale, offset or distribution misses by
// hundreds of SEs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/device_buffer.h"
#include "kernels/philox.cuh"
#include "tests/kernels/op_cases.h"
#include "tests/testing.h"

namespace {

using timbre::testing::random_nonzero;

using timbre::DeviceBuffer;
using timbre::testing::same_bits;
using timbre::testing::poison;
using timbre::testing::all_close;
using timbre::testing::for_each_thread_order;
using timbre::testing::Tolerance;
using timbre::testing::OpCase;
using timbre::testing::OpTable;
using timbre::testing::dtype_name;
using timbre::testing::once;
namespace k = timbre::kernels;

constexpr long long kSizes[] = {1, 7, 1000003};  // 1000003: a partial last group
constexpr int kBlocks[] = {64, 256};
constexpr uint64_t kSeed = 0x1234abcd5678ef01ull;
constexpr uint64_t kOffset = 987654321ull;

// ---------------------------------------------------------------------------
// Helpers.

struct Moments {
  double mean = 0, var = 0;  // var: the population form, sum (x - mean)^2 / n
};

template <class T>
Moments moments(const std::vector<T>& x) {
  Moments m;
  for (T v : x) m.mean += double(v);
  m.mean /= double(x.size());
  for (T v : x) m.var += (double(v) - m.mean) * (double(v) - m.mean);
  m.var /= double(x.size());
  return m;
}

// Pearson correlation of x[i] and x[i + lag].
template <class T>
double lag_correlation(const std::vector<T>& x, size_t lag) {
  const size_t n = x.size() - lag;
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) {
    ma += double(x[i]);
    mb += double(x[i + lag]);
  }
  ma /= double(n);
  mb /= double(n);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = double(x[i]) - ma, b = double(x[i + lag]) - mb;
    sab += a * b;
    saa += a * a;
    sbb += b * b;
  }
  return sab / std::sqrt(saa * sbb);
}

// ---------------------------------------------------------------------------
// Known answers. The vectors are from the kat_vectors file of the Random123
// distribution (D. E. Shaw Research, random123-1.x, examples/kat_vectors),
// lines "philox4x32 10 <counter: 4 words> <key: 2 words> <expected: 4
// words>", as reproduced in DEShawResearch's fs123 (core123/ut/ut_philox.cpp).

struct Kat {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

constexpr Kat kKats[] = {
    // counter and key all zeros
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    // counter and key all ones
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    // the hexadecimal digits of pi
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

TEST(PhiloxKnownAnswers, Random123Vectors) {
  for (const Kat& kat : kKats) {
    const k::PhiloxWords c{{kat.counter[0], kat.counter[1], kat.counter[2], kat.counter[3]}};
    const k::PhiloxWords r = k::philox4x32_10(c, kat.key[0], kat.key[1]);
    for (int j = 0; j < 4; ++j)
      EXPECT_EQ(r.w[j], kat.expected[j]) << "vector with counter word 0 = " << std::hex
                                         << kat.counter[0] << ", word " << j;
  }
}

// The (seed, 128-bit counter) form puts the low halves first: the pi vector
// as seed 0x299f31d0'a4093822 and counter 0x03707344'13198a2e'85a308d3'243f6a88.
TEST(PhiloxKnownAnswers, SeedAndCounterWordOrder) {
  const k::PhiloxWords r =
      k::philox(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(r.w[j], kKats[2].expected[j]) << "word " << j;
  const k::PhiloxWords ones = k::philox(~0ull, ~0ull, ~0ull);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(ones.w[j], kKats[1].expected[j]) << "word " << j;
}

// The device computes the same: element i of fill_bits(seed 0, offset 0) is
// word i of counter 0 for i < 4 (the all-zeros vector). Counters past 2^64
// carry into the high half: offset 2^64 - 2, group 2 is counter 2^64.
TEST(PhiloxKnownAnswers, OnTheDeviceAndAcrossTheCarry) {
  DeviceBuffer<uint32_t> d(4);
  k::fill_bits(d.get(), 4, 0, 0, nullptr);
  const auto got = d.to_host();
  for (int j = 0; j < 4; ++j) EXPECT_EQ(got[j], kKats[0].expected[j]) << "word " << j;

  const uint64_t offset = ~0ull - 1;  // 2^64 - 2
  const k::PhiloxWords carried = k::philox_group(kSeed, offset, 2);
  const k::PhiloxWords direct = k::philox(kSeed, 0, 1);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(carried.w[j], direct.w[j]);
  DeviceBuffer<uint32_t> d_c(12);
  k::fill_bits(d_c.get(), 12, kSeed, offset, nullptr);
  const auto c = d_c.to_host();
  for (int j = 0; j < 4; ++j) EXPECT_EQ(c[8 + j], direct.w[j]) << "word " << j;
}

// ---------------------------------------------------------------------------
// Conversions at their ends. All exact, so compared with ==.
TEST(PhiloxConversions, UniformEnds) {
  EXPECT_EQ(k::uniform_float(0u), std::ldexp(1.0f, -24));  // smallest: never 0
  EXPECT_EQ(k::uniform_float(0xffu), std::ldexp(1.0f, -24));  // low 8 bits unused
  EXPECT_EQ(k::uniform_float(0x100u), std::ldexp(2.0f, -24));
  EXPECT_EQ(k::uniform_float(0xffffffffu), 1.0f);  // largest: exactly 1
  EXPECT_EQ(k::uniform_float(0x7fffffffu), 0.5f);
  EXPECT_EQ(k::uniform_double(0u), std::ldexp(1.0, -32));
  EXPECT_EQ(k::uniform_double(1u), std::ldexp(2.0, -32));  // every bit used
  EXPECT_EQ(k::uniform_double(0xffffffffu), 1.0);
  EXPECT_EQ(k::uniform_double(0x7fffffffu), 0.5);
}

TEST(PhiloxConversions, BoxMullerEnds) {
  float z0, z1;
  k::box_muller(0xffffffffu, 0x12345678u, &z0, &z1);  // u_a = 1: radius 0
  EXPECT_EQ(z0, 0.0f);
  EXPECT_EQ(std::fabs(z1), 0.0f);
  // u_a = 2^-24: the largest radius a float normal can have, sqrt(48 ln 2).
  // Angle u_b = 1/4 (word 0x3fffffff): z = (r cos(pi/2), r sin(pi/2)) = (~0, r).
  k::box_muller(0u, 0x3fffffffu, &z0, &z1);
  EXPECT_NEAR(z1, std::sqrt(48 * std::log(2.0)), 2e-6);  // cuda sqrtf/logf: a few ulps
  EXPECT_NEAR(z0, 0.0, 2e-6);  // cos of 2pi/4 rounded to float: |cos| < 1e-7, times 5.77
  double d0, d1;
  k::box_muller(0u, 0x7fffffffu, &d0, &d1);  // u_b = 1/2: angle pi
  EXPECT_NEAR(d0, -std::sqrt(64 * std::log(2.0)), 1e-14);  // radius sqrt(64 ln 2) = 6.66
  EXPECT_NEAR(d1, 0.0, 1e-14);
}

TEST(PhiloxConversions, DropoutThreshold) {
  EXPECT_EQ(k::dropout_threshold(0.0), 0u);  // everything kept
  EXPECT_EQ(k::dropout_threshold(0.5), 0x80000000u);
  EXPECT_EQ(k::dropout_threshold(0.25), 0x40000000u);
  EXPECT_EQ(k::dropout_threshold(std::nextafter(1.0, 0.0)), 0xffffffffu);  // no overflow
  EXPECT_EQ(k::philox_counters(0), 0);
  EXPECT_EQ(k::philox_counters(1), 1);
  EXPECT_EQ(k::philox_counters(4), 1);
  EXPECT_EQ(k::philox_counters(5), 2);
}

// ---------------------------------------------------------------------------
// The fills against their CPU references.

#if TIMBRE_BACKEND_SIM
// The same libm on both sides: the same bits.
template <class T>
::testing::AssertionResult normals_match(const std::vector<T>& got, const std::vector<T>& ref) {
  return same_bits(got, ref);
}
#else
// CUDA's logf and sincosf (<= 1-2 ulp) against glibc's: z differs by a few
// ulps relative; mean + std z (|mean| 1.5, std 2, |z| <= 6.7) by a few ulps
// of values up to ~15 (float ulp(16) = 1.9e-6; double 3.6e-15).
template <class T>
::testing::AssertionResult normals_match(const std::vector<T>& got, const std::vector<T>& ref) {
  const Tolerance tol = sizeof(T) == 4 ? Tolerance{4e-6, 1e-6} : Tolerance{1e-14, 1e-14};
  return all_close(got, ref, tol);
}
#endif

// ---------------------------------------------------------------------------
// The op-case rows (tests/kernels/op_cases.h): the raw words, uniform and
// normal fills, dropout forward and backward (assigning and accumulating),
// in float and double, at every size and both block sizes. A value depends
// only on (seed, offset, i): the same bits at every block size, and (except
// normals on a GPU, whose logf/sincosf are not glibc's) the reference's bits.

const std::vector<int> kBlockList(std::begin(kBlocks), std::end(kBlocks));

// The widened values carry every bit of a float or double (and of a word).
::testing::AssertionResult exact(const std::vector<double>& got, const std::vector<double>& ref,
                                 int) {
  return same_bits(got, ref);
}

std::string size_name(long long n) { return "n=" + std::to_string(n); }

// One exact row.
OpCase exact_row(std::string op, std::string dtype, long long n,
                 std::function<std::vector<double>(int)> run,
                 std::function<std::vector<double>()> reference) {
  OpCase row{std::move(op), std::move(dtype), size_name(n), kBlockList, {0, 0},
             "counter-based: the reference's bits", std::move(run), std::move(reference)};
  row.compare = exact;
  row.block_invariant = true;
  return row;
}

template <class T>
void philox_rows(OpTable& table) {
  using timbre::testing::widen;
  for (long long n : kSizes) {
    const size_t un = size_t(n);
    const T lo = T(-2), hi = T(3);
    table.add(exact_row(
        "philox/fill_uniform", dtype_name<T>(), n,
        [=](int block) {
          DeviceBuffer<T> d{un};
          poison(d);
          k::fill_uniform<T>(d.get(), n, lo, hi, kSeed, kOffset, nullptr, block);
          return widen(d.to_host());
        },
        [=] {
          std::vector<T> ref(un);
          k::fill_uniform_cpu<T>(ref.data(), n, lo, hi, kSeed, kOffset);
          for (T v : ref)
            if (!(v >= lo && v <= hi)) throw std::logic_error("fill_uniform_cpu out of range");
          return widen(ref);
        }));
    const T mean = T(1.5), std = T(2);
    OpCase normal{
        "philox/fill_normal", dtype_name<T>(), size_name(n), kBlockList, {},
        "sim: glibc's logf/sincosf on both sides, the same bits; GPU: CUDA's within 1-2 ulp, "
        "a few ulps of values up to ~15",
        [=](int block) {
          DeviceBuffer<T> d{un};
          poison(d);
          k::fill_normal<T>(d.get(), n, mean, std, kSeed, kOffset, nullptr, block);
          return widen(d.to_host());
        },
        [=] {
          std::vector<T> ref(un);
          k::fill_normal_cpu<T>(ref.data(), n, mean, std, kSeed, kOffset);
          return widen(ref);
        }};
    normal.compare = [](const std::vector<double>& got, const std::vector<double>& ref, int) {
      return normals_match(std::vector<T>(got.begin(), got.end()),
                           std::vector<T>(ref.begin(), ref.end()));
    };
    normal.block_invariant = true;
    table.add(std::move(normal));
    // Dropout.
    const double p = 0.3;
    const auto x = once([=] { return random_nonzero<T>(un, uint64_t(n)); });
    const auto dy = once([=] { return random_nonzero<T>(un, uint64_t(n) + 1); });
    const auto dx0 = once([=] { return random_nonzero<T>(un, uint64_t(n) + 2); });
    table.add(exact_row(
        "philox/dropout_forward", dtype_name<T>(), n,
        [=](int block) {
          DeviceBuffer<T> d_x(x()), d_y{un};
          poison(d_y);
          k::dropout_forward<T>(d_x.get(), d_y.get(), n, p, kSeed, kOffset, nullptr, block);
          return widen(d_y.to_host());
        },
        [=] {
          std::vector<T> y(un);
          k::dropout_forward_cpu<T>(x().data(), y.data(), n, p, kSeed, kOffset);
          return widen(y);
        }));
    for (bool acc : {false, true})
      table.add(exact_row(
          acc ? "philox/dropout_backward_accumulate" : "philox/dropout_backward",
          dtype_name<T>(), n,
          [=](int block) {
            DeviceBuffer<T> d_dy(dy()), d_dx(dx0());
            if (!acc) poison(d_dx);  // assigning must not read dx
            k::dropout_backward<T>(d_dy.get(), d_dx.get(), n, p, kSeed, kOffset, acc, nullptr,
                                   block);
            return widen(d_dx.to_host());
          },
          [=] {
            std::vector<T> dx = acc ? dx0() : std::vector<T>(un);
            k::dropout_backward_cpu<T>(dy().data(), dx.data(), n, p, kSeed, kOffset, acc);
            return widen(dx);
          }));
  }
}

OP_CASES(philox) {
  for (long long n : kSizes)
    table.add(exact_row(
        "philox/fill_bits", "uint32", n,
        [n](int block) {
          DeviceBuffer<uint32_t> d{size_t(n)};
          poison(d);
          k::fill_bits(d.get(), n, kSeed, kOffset, nullptr, block);
          const auto w = d.to_host();
          return std::vector<double>(w.begin(), w.end());
        },
        [n] {
          std::vector<uint32_t> ref(static_cast<size_t>(n));
          k::fill_bits_cpu(ref.data(), n, kSeed, kOffset);
          return std::vector<double>(ref.begin(), ref.end());
        }));
  philox_rows<float>(table);
  philox_rows<double>(table);
}

template <class T>
class PhiloxFill : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(PhiloxFill, Types);

// ---------------------------------------------------------------------------
// Reproducibility: a value depends only on (seed, offset, i).

// Same bits under every thread order, both block sizes, and (sim) 1, 2 and
// 3 workers, as the first launch.
TYPED_TEST(PhiloxFill, SameBitsForEveryLaunchConfiguration) {
  using T = TypeParam;
  const long long n = 1000003;
  DeviceBuffer<T> d_u{size_t(n)}, d_n{size_t(n)};
  k::fill_uniform<T>(d_u.get(), n, T(-1), T(1), kSeed, kOffset, nullptr);
  k::fill_normal<T>(d_n.get(), n, T(0), T(1), kSeed, kOffset, nullptr);
  const auto first_u = d_u.to_host(), first_n = d_n.to_host();
  auto check = [&](const char* what) {
    for (int block : {64, 256, 1024}) {
      poison(d_u);
      poison(d_n);
      k::fill_uniform<T>(d_u.get(), n, T(-1), T(1), kSeed, kOffset, nullptr, block);
      k::fill_normal<T>(d_n.get(), n, T(0), T(1), kSeed, kOffset, nullptr, block);
      EXPECT_TRUE(same_bits(d_u.to_host(), first_u)) << what << " uniform, block " << block;
      EXPECT_TRUE(same_bits(d_n.to_host(), first_n)) << what << " normal, block " << block;
    }
  };
  for_each_thread_order([&] { check("thread orders (2 workers)"); });
#if TIMBRE_BACKEND_SIM
  for (int workers : {1, 3}) {
    simcuda::Options o = simcuda::options();
    o.workers = workers;
    simcuda::ScopedOptions scope(o);
    check(workers == 1 ? "1 worker" : "3 workers");
  }
#endif
}

// The first m values of a call on n > m elements are the call on m
// elements; and element i at offset o is element i + 4j at offset o - j.
TYPED_TEST(PhiloxFill, ValuesDependOnlyOnSeedOffsetAndIndex) {
  using T = TypeParam;
  const long long n = 1001, m = 37, j = 5;
  DeviceBuffer<T> d_long{size_t(n)}, d_short{size_t(m)}, d_earlier{size_t(m + 4 * j)};
  k::fill_normal<T>(d_long.get(), n, T(0), T(1), kSeed, kOffset, nullptr);
  k::fill_normal<T>(d_short.get(), m, T(0), T(1), kSeed, kOffset, nullptr);
  k::fill_normal<T>(d_earlier.get(), m + 4 * j, T(0), T(1), kSeed, kOffset - j, nullptr);
  const auto longer = d_long.to_host(), shorter = d_short.to_host(),
             earlier = d_earlier.to_host();
  EXPECT_TRUE(same_bits(std::vector<T>(longer.begin(), longer.begin() + m), shorter));
  EXPECT_TRUE(same_bits(std::vector<T>(earlier.begin() + 4 * j, earlier.end()), shorter));
}

// Different seeds, or adjacent offsets, give unrelated words: among 10^5
// pairs, equal words would occur with probability 10^5 / 2^32 = 2e-5.
TEST(PhiloxBits, DifferentSeedsAndOffsetsDiffer) {
  const size_t n = 100000;
  std::vector<uint32_t> a(n), b(n), c(n);
  k::fill_bits_cpu(a.data(), n, kSeed, kOffset);
  k::fill_bits_cpu(b.data(), n, kSeed + 1, kOffset);      // neighbouring seed
  k::fill_bits_cpu(c.data(), n, kSeed, kOffset + n / 4);  // the next call's counters
  long long same_ab = 0, same_ac = 0;
  for (size_t i = 0; i < n; ++i) {
    same_ab += a[i] == b[i];
    same_ac += a[i] == c[i];
  }
  EXPECT_EQ(same_ab, 0);
  EXPECT_EQ(same_ac, 0);
  DeviceBuffer<float> d1(1000), d2(1000);
  k::fill_uniform<float>(d1.get(), 1000, 0.f, 1.f, 1, 0, nullptr);
  k::fill_uniform<float>(d2.get(), 1000, 0.f, 1.f, 2, 0, nullptr);
  EXPECT_NE(d1.to_host(), d2.to_host());
}

// ---------------------------------------------------------------------------
// Distributions (n = 10^6; bounds of 6 SE, derived per statistic).

TYPED_TEST(PhiloxFill, UniformStatistics) {
  using T = TypeParam;
  const long long n = 1000000;
  const double lo = -2, hi = 3, w = hi - lo;
  DeviceBuffer<T> d{size_t(n)};
  k::fill_uniform<T>(d.get(), n, T(lo), T(hi), kSeed, 0, nullptr);
  const auto x = d.to_host();
  const Moments m = moments(x);
  // U(lo, hi): mean (lo+hi)/2, variance w^2/12. SE(mean) = sqrt(w^2/12/n) =
  // 1.44e-3; SE(variance) = sqrt((mu4 - sigma^4)/n) with mu4 = w^4/80,
  // sigma^4 = w^4/144: w^2/sqrt(180 n) = 1.86e-3. The discreteness of the
  // float conversion (2^24 values) biases the mean by w 2^-25 = 1.5e-7.
  EXPECT_NEAR(m.mean, (lo + hi) / 2, 6 * std::sqrt(w * w / 12 / n));
  EXPECT_NEAR(m.var, w * w / 12, 6 * w * w / std::sqrt(180.0 * n));
  // Ten equal bins: each holds a fraction 0.1, SE sqrt(0.1 * 0.9 / n) = 3e-4.
  std::vector<long long> bins(10, 0);
  for (T v : x) {
    ASSERT_TRUE(v >= T(lo) && v <= T(hi)) << v;
    bins[std::min(9, int((double(v) - lo) / w * 10))]++;
  }
  for (int b = 0; b < 10; ++b)
    EXPECT_NEAR(double(bins[b]) / n, 0.1, 6 * std::sqrt(0.09 / n)) << "bin " << b;
  // Independence of neighbours: consecutive words of one counter (lag 1) and
  // the same word of consecutive counters (lag 4). For independent values
  // the sample correlation has SE 1/sqrt(n) = 1e-3.
  EXPECT_NEAR(lag_correlation(x, 1), 0.0, 6 / std::sqrt(double(n)));
  EXPECT_NEAR(lag_correlation(x, 4), 0.0, 6 / std::sqrt(double(n)));
}

TYPED_TEST(PhiloxFill, NormalStatistics) {
  using T = TypeParam;
  const long long n = 1000000;
  const double mean = 1.5, sd = 2;
  DeviceBuffer<T> d{size_t(n)};
  k::fill_normal<T>(d.get(), n, T(mean), T(sd), kSeed, 0, nullptr);
  const auto x = d.to_host();
  const Moments m = moments(x);
  // SE(mean) = sd/sqrt(n) = 2e-3; SE(variance) = sd^2 sqrt(2/n) = 5.7e-3.
  // Box-Muller's truncation at |z| = 5.77 (float) lowers the variance by
  // ~6e-7 sd^2: far below the SE.
  EXPECT_NEAR(m.mean, mean, 6 * sd / std::sqrt(double(n)));
  EXPECT_NEAR(m.var, sd * sd, 6 * sd * sd * std::sqrt(2.0 / n));
  // The shape, on z = (x - mean)/sd: P(|z| < 1) = 0.6826895 (SE
  // sqrt(p(1-p)/n) = 4.7e-4), E z^4 = 3 (SE sqrt((E z^8 - 9)/n) =
  // sqrt(96/n) = 9.8e-3), E z^3 = 0 (SE sqrt(15/n) = 3.9e-3).
  long long within = 0;
  double m3 = 0, m4 = 0;
  for (T v : x) {
    const double z = (double(v) - mean) / sd;
    within += std::fabs(z) < 1;
    m3 += z * z * z;
    m4 += z * z * z * z;
  }
  const double p1 = std::erf(1 / std::sqrt(2.0));
  EXPECT_NEAR(double(within) / n, p1, 6 * std::sqrt(p1 * (1 - p1) / n));
  EXPECT_NEAR(m3 / n, 0.0, 6 * std::sqrt(15.0 / n));
  EXPECT_NEAR(m4 / n, 3.0, 6 * std::sqrt(96.0 / n));
  EXPECT_NEAR(lag_correlation(x, 1), 0.0, 6 / std::sqrt(double(n)));  // the two of a pair
  EXPECT_NEAR(lag_correlation(x, 2), 0.0, 6 / std::sqrt(double(n)));  // across pairs
}

// ---------------------------------------------------------------------------
// Dropout.

template <class T>
class Dropout : public ::testing::Test {};
TYPED_TEST_SUITE(Dropout, Types);

// The reference itself, element by element: y = x / (1 - p) where the word
// is >= floor(p 2^32), else 0; backward drops the same elements.
TYPED_TEST(Dropout, MaskIsTheThresholdedPhiloxWord) {
  using T = TypeParam;
  const double p = 0.3;
  const long long n = 4001;
  const auto x = random_nonzero<T>(size_t(n), 3);
  std::vector<uint32_t> words(static_cast<size_t>(n));
  k::fill_bits_cpu(words.data(), n, kSeed, kOffset);
  DeviceBuffer<T> d_x(x), d_y{size_t(n)}, d_ones(std::vector<T>(size_t(n), T(1))),
      d_dx{size_t(n)};
  k::dropout_forward<T>(d_x.get(), d_y.get(), n, p, kSeed, kOffset, nullptr);
  k::dropout_backward<T>(d_ones.get(), d_dx.get(), n, p, kSeed, kOffset, false, nullptr);
  const auto y = d_y.to_host(), mask = d_dx.to_host();
  const T scale = T(1 / (1 - p));
  const uint32_t t = uint32_t(std::floor(p * 4294967296.0));
  for (long long i = 0; i < n; ++i) {
    const bool keep = words[size_t(i)] >= t;
    ASSERT_EQ(y[size_t(i)], keep ? x[size_t(i)] * scale : T(0)) << i;
    ASSERT_EQ(mask[size_t(i)], keep ? scale : T(0)) << i;
  }
}

// Kept fraction over 10^6 elements: Binomial(n, 1 - p), SE sqrt(p(1-p)/n)
// <= 5e-4 in fraction.
TYPED_TEST(Dropout, KeepsAFractionOneMinusP) {
  using T = TypeParam;
  const long long n = 1000000;
  DeviceBuffer<T> d_x(std::vector<T>(size_t(n), T(1))), d_y{size_t(n)};
  for (double p : {0.1, 0.5, 0.9}) {
    k::dropout_forward<T>(d_x.get(), d_y.get(), n, p, kSeed, kOffset, nullptr);
    long long kept = 0;
    for (T v : d_y.to_host()) kept += v != T(0);
    EXPECT_NEAR(double(kept) / n, 1 - p, 6 * std::sqrt(p * (1 - p) / n)) << "p " << p;
  }
}

// p = 0 keeps everything and scales by exactly 1: y is x, bit for bit.
TYPED_TEST(Dropout, ZeroProbabilityIsIdentity) {
  using T = TypeParam;
  const long long n = 1001;
  const auto x = random_nonzero<T>(size_t(n), 4);
  DeviceBuffer<T> d_x(x), d_y{size_t(n)}, d_dx{size_t(n)};
  k::dropout_forward<T>(d_x.get(), d_y.get(), n, 0.0, kSeed, kOffset, nullptr);
  EXPECT_TRUE(same_bits(d_y.to_host(), x));
  k::dropout_backward<T>(d_x.get(), d_dx.get(), n, 0.0, kSeed, kOffset, false, nullptr);
  EXPECT_TRUE(same_bits(d_dx.to_host(), x));
}

// y written over x and dx over dy; a NaN input stays NaN even where dropped
// (x * 0), as PyTorch's x * mask * scale.
TYPED_TEST(Dropout, InPlaceAndNaN) {
  using T = TypeParam;
  const double p = 0.5;
  const long long n = 1001;
  auto x = random_nonzero<T>(size_t(n), 5);
  for (long long i = 0; i < 40; ++i) x[size_t(i)] = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> ref(static_cast<size_t>(n));
  k::dropout_forward_cpu<T>(x.data(), ref.data(), n, p, kSeed, kOffset);
  DeviceBuffer<T> d(x);
  k::dropout_forward<T>(d.get(), d.get(), n, p, kSeed, kOffset, nullptr);
  const auto y = d.to_host();
  EXPECT_TRUE(all_close(y, ref, {0, 0, true}));
  for (long long i = 0; i < 40; ++i) EXPECT_TRUE(std::isnan(y[size_t(i)])) << i;
  d.copy_from_host(x);
  k::dropout_backward<T>(d.get(), d.get(), n, p, kSeed, kOffset, false, nullptr);
  EXPECT_TRUE(all_close(d.to_host(), ref, {0, 0, true}));
}

// ---------------------------------------------------------------------------
// Initialisers.

TEST(Initialisers, Scales) {
  EXPECT_DOUBLE_EQ(k::glorot_uniform_limit(3, 5), std::sqrt(0.75));
  EXPECT_DOUBLE_EQ(k::glorot_uniform_limit(128, 256), std::sqrt(6.0 / 384));
  EXPECT_DOUBLE_EQ(k::he_uniform_limit(6), 1.0);
  EXPECT_DOUBLE_EQ(k::he_normal_std(8), 0.5);
  EXPECT_THROW(k::glorot_uniform_limit(0, 5), std::invalid_argument);
  EXPECT_THROW(k::he_uniform_limit(-1), std::invalid_argument);
  EXPECT_THROW(k::he_normal_std(0), std::invalid_argument);
}

// Each initialiser is its fill with the right range (exact), and the sample
// variance over 300 x 500 = 1.5e5 weights is the distribution's, within 6
// SE: U(-l, l) has variance l^2/3 and SE(var) = (2l)^2 / sqrt(180 n) (see
// UniformStatistics); N(0, s^2) has SE(var) = s^2 sqrt(2/n).
TYPED_TEST(PhiloxFill, InitialisersHaveTheirRangeAndVariance) {
  using T = TypeParam;
  const long long fan_in = 300, fan_out = 500, n = fan_in * fan_out;
  DeviceBuffer<T> d{size_t(n)};
  std::vector<T> ref(static_cast<size_t>(n));

  const double lg = k::glorot_uniform_limit(fan_in, fan_out);
  k::glorot_uniform<T>(d.get(), n, fan_in, fan_out, kSeed, kOffset, nullptr);
  auto w = d.to_host();
  k::fill_uniform_cpu<T>(ref.data(), n, T(-lg), T(lg), kSeed, kOffset);
  EXPECT_TRUE(same_bits(w, ref));
  for (T v : w) ASSERT_TRUE(std::fabs(v) <= T(lg)) << v;
  EXPECT_NEAR(moments(w).var, lg * lg / 3, 6 * 4 * lg * lg / std::sqrt(180.0 * n));

  const double lh = k::he_uniform_limit(fan_in);
  k::he_uniform<T>(d.get(), n, fan_in, kSeed, kOffset, nullptr);
  w = d.to_host();
  k::fill_uniform_cpu<T>(ref.data(), n, T(-lh), T(lh), kSeed, kOffset);
  EXPECT_TRUE(same_bits(w, ref));
  for (T v : w) ASSERT_TRUE(std::fabs(v) <= T(lh)) << v;
  EXPECT_NEAR(moments(w).var, 2.0 / fan_in, 6 * 4 * lh * lh / std::sqrt(180.0 * n));

  const double sh = k::he_normal_std(fan_in);
  k::he_normal<T>(d.get(), n, fan_in, kSeed, kOffset, nullptr);
  w = d.to_host();
  k::fill_normal_cpu<T>(ref.data(), n, T(0), T(sh), kSeed, kOffset);
  EXPECT_TRUE(normals_match(w, ref));
  const Moments m = moments(w);
  EXPECT_NEAR(m.mean, 0.0, 6 * sh / std::sqrt(double(n)));
  EXPECT_NEAR(m.var, 2.0 / fan_in, 6 * sh * sh * std::sqrt(2.0 / n));
}

// W^T W (rows >= cols) or W W^T (rows < cols), divided by gain^2, minus I.
template <class T>
double orthonormality_error(const std::vector<T>& w, long long rows, long long cols,
                            double gain) {
  const bool tall = rows >= cols;
  const long long k = tall ? cols : rows, len = tall ? rows : cols;
  auto at = [&](long long vec, long long i) {  // element i of column/row `vec`
    return double(tall ? w[size_t(i * cols + vec)] : w[size_t(vec * cols + i)]) / gain;
  };
  double worst = 0;
  for (long long a = 0; a < k; ++a)
    for (long long b = 0; b < k; ++b) {
      double dot = 0;
      for (long long i = 0; i < len; ++i) dot += at(a, i) * at(b, i);
      worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
    }
  return worst;
}

struct Shape {
  long long rows, cols;
};
// Square, tall, wide (Keras's GRU recurrent kernel is (units, 3 units):
// orthonormal rows; PyTorch's weight_hh is (3 units, units)), vectors.
constexpr Shape kOrthoShapes[] = {{64, 64}, {96, 32}, {32, 96}, {7, 3}, {1, 5}, {5, 1}};

// Orthonormal to: float, the double Q rounded to float perturbs each entry
// by <= 2^-24 relative, so each dot product of unit vectors by <= 2 * 2^-24
// = 1.2e-7 (Cauchy-Schwarz): 5e-7 (the brief's requirement is 1e-5).
// Double: Householder QR is backward stable: ~ len * 2^-53 = 1e-14 for
// len <= 96; 1e-13.
TYPED_TEST(PhiloxFill, OrthogonalIsOrthonormal) {
  using T = TypeParam;
  const double tol = sizeof(T) == 4 ? 5e-7 : 1e-13;
  for (const Shape& s : kOrthoShapes) {
    for (double gain : {1.0, 1.7}) {
      const long long n = s.rows * s.cols;
      DeviceBuffer<T> d{size_t(n)};
      poison(d);
      k::orthogonal<T>(d.get(), s.rows, s.cols, gain, kSeed, kOffset, nullptr);
      const auto w = d.to_host();
      std::vector<T> ref(static_cast<size_t>(n));
      k::orthogonal_cpu<T>(ref.data(), s.rows, s.cols, gain, kSeed, kOffset);
      EXPECT_TRUE(same_bits(w, ref));
      EXPECT_LE(orthonormality_error(w, s.rows, s.cols, gain), tol)
          << s.rows << " x " << s.cols << " gain " << gain;
    }
  }
}

// Q is the QR factor of the Philox normal matrix A (max x min) with
// diag(R) > 0: R = Q^T A is upper triangular with a positive diagonal. In
// double: below the diagonal |R_ij| is rounding, ~ len * 2^-53 * |A| ~ 1e-13.
TEST(Initialisers, OrthogonalIsTheSignedQFactorOfANormalMatrix) {
  for (const Shape& s : kOrthoShapes) {
    const long long m = std::max(s.rows, s.cols), kk = std::min(s.rows, s.cols);
    std::vector<double> a(static_cast<size_t>(m * kk)), w(static_cast<size_t>(m * kk));
    k::fill_normal_cpu<double>(a.data(), m * kk, 0.0, 1.0, kSeed, kOffset);
    k::orthogonal_cpu<double>(w.data(), s.rows, s.cols, 1.0, kSeed, kOffset);
    auto q = [&](long long i, long long j) {  // Q is m x kk: W, or W^T when wide
      return s.rows >= s.cols ? w[size_t(i * kk + j)] : w[size_t(j * m + i)];
    };
    for (long long i = 0; i < kk; ++i)
      for (long long j = 0; j < kk; ++j) {
        double r = 0;
        for (long long l = 0; l < m; ++l) r += q(l, i) * a[size_t(l * kk + j)];
        if (i > j) {
          EXPECT_NEAR(r, 0.0, 1e-12) << s.rows << " x " << s.cols << " R" << i << j;
        } else if (i == j) {
          EXPECT_GT(r, 0.0) << s.rows << " x " << s.cols << " R" << i << i;
        }
      }
  }
}

// The float initialiser is the double one rounded; other seeds give
// other matrices.
TEST(Initialisers, OrthogonalFloatIsDoubleRoundedAndSeedsDiffer) {
  const long long rows = 48, cols = 16, n = rows * cols;
  std::vector<double> wd(static_cast<size_t>(n)), other(static_cast<size_t>(n));
  std::vector<float> wf(static_cast<size_t>(n));
  k::orthogonal_cpu<double>(wd.data(), rows, cols, 1.0, kSeed, kOffset);
  k::orthogonal_cpu<float>(wf.data(), rows, cols, 1.0, kSeed, kOffset);
  k::orthogonal_cpu<double>(other.data(), rows, cols, 1.0, kSeed + 1, kOffset);
  for (long long i = 0; i < n; ++i) ASSERT_EQ(wf[size_t(i)], float(wd[size_t(i)])) << i;
  EXPECT_NE(wd, other);
}

// ---------------------------------------------------------------------------
// Arguments.

TEST(PhiloxArguments, RejectedWithInvalidArgument) {
  DeviceBuffer<float> d(8);
  DeviceBuffer<uint32_t> b(8);
  float* p = d.get();
  EXPECT_THROW(k::fill_bits(b.get(), -1, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_uniform<float>(p, -1, 0.f, 1.f, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_normal<float>(p, -1, 0.f, 1.f, 0, 0, nullptr), std::invalid_argument);
  for (int block : {0, 16, 48, 1056, -32}) {
    EXPECT_THROW(k::fill_bits(b.get(), 8, 0, 0, nullptr, block), std::invalid_argument);
    EXPECT_THROW(k::fill_uniform<float>(p, 8, 0.f, 1.f, 0, 0, nullptr, block),
                 std::invalid_argument);
    EXPECT_THROW(k::dropout_forward<float>(p, p, 8, 0.5, 0, 0, nullptr, block),
                 std::invalid_argument);
  }
  // Ranges and parameters.
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(k::fill_uniform<float>(p, 8, 1.f, 0.f, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_uniform<float>(p, 8, -3e38f, 3e38f, 0, 0, nullptr),
               std::invalid_argument);  // hi - lo overflows
  EXPECT_THROW(k::fill_uniform<float>(p, 8, nan, 1.f, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_normal<float>(p, 8, 0.f, -1.f, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_normal<float>(p, 8, inf, 1.f, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_normal<float>(p, 8, 0.f, nan, 0, 0, nullptr), std::invalid_argument);
  EXPECT_NO_THROW(k::fill_uniform<float>(p, 8, 2.f, 2.f, 0, 0, nullptr));  // a constant
  EXPECT_NO_THROW(k::fill_normal<float>(p, 8, 2.f, 0.f, 0, 0, nullptr));
  // Dropout: p in [0, 1).
  for (double bad : {1.0, 1.5, -0.1, double(nan), double(inf)}) {
    EXPECT_THROW(k::dropout_forward<float>(p, p, 8, bad, 0, 0, nullptr), std::invalid_argument)
        << bad;
    EXPECT_THROW(k::dropout_backward<float>(p, p, 8, bad, 0, 0, false, nullptr),
                 std::invalid_argument)
        << bad;
    std::vector<float> h(8, 1.f);
    EXPECT_THROW(k::dropout_forward_cpu<float>(h.data(), h.data(), 8, bad, 0, 0),
                 std::invalid_argument);
  }
  // Null pointers.
  EXPECT_THROW(k::fill_bits(nullptr, 8, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::fill_uniform<double>(nullptr, 8, 0.0, 1.0, 0, 0, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::dropout_forward<float>(nullptr, p, 8, 0.5, 0, 0, nullptr),
               std::invalid_argument);
  EXPECT_THROW(k::dropout_backward<float>(p, nullptr, 8, 0.5, 0, 0, true, nullptr),
               std::invalid_argument);
  // Initialisers.
  EXPECT_THROW(k::glorot_uniform<float>(p, 8, 0, 4, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::he_normal<float>(p, 8, 0, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::orthogonal<float>(p, 0, 8, 1.0, 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::orthogonal<float>(p, 2, 4, double(nan), 0, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(k::orthogonal<float>(nullptr, 2, 4, 1.0, 0, 0, nullptr), std::invalid_argument);
  // The message names the operation and the value.
  try {
    k::dropout_forward<float>(p, p, 8, 1.0, 0, 0, nullptr);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "dropout_forward: p must be in [0, 1), not 1.000000");
  }
  // n = 0: nothing launched, null pointers accepted.
  EXPECT_NO_THROW(k::fill_bits(nullptr, 0, 0, 0, nullptr));
  EXPECT_NO_THROW(k::fill_normal<float>(nullptr, 0, 0.f, 1.f, 0, 0, nullptr));
  EXPECT_NO_THROW(k::dropout_backward<double>(nullptr, nullptr, 0, 0.5, 0, 0, true, nullptr));
}

TEST(PhiloxCost, Formulas) {
  EXPECT_DOUBLE_EQ(k::fill_bits_cost(10).bytes, 40);
  EXPECT_DOUBLE_EQ(k::fill_uniform_cost(10).bytes, 40);
  EXPECT_DOUBLE_EQ(k::fill_uniform_cost(10, 8).bytes, 80);
  EXPECT_DOUBLE_EQ(k::fill_normal_cost(10).flops, 80);
  EXPECT_DOUBLE_EQ(k::dropout_forward_cost(10).bytes, 80);
  EXPECT_DOUBLE_EQ(k::dropout_backward_cost(10, true).bytes, 120);
  EXPECT_DOUBLE_EQ(k::dropout_backward_cost(10, true).flops, 20);
}

}  // namespace
