// test_cufft.cpp: cuFFT R2C, C2R and C2C plans against a naive DFT computed
// in double here,
//   X[k] = sum_j x[j] exp(sign * 2*pi*i * j*k / n),  sign = -1 forward, +1 inverse,
// unnormalised, applied along every dimension for rank 2. Covers the basic
// layout (batched, out of place and in place with padded real rows), the
// rule that a NULL inembed/onembed makes cuFFT ignore all strides and dists,
// the advanced layout
//   element (x, y) of batch b at  b*dist + (x*embed[1] + y)*stride,
// unaligned pointers, and the error codes of bad calls.

#include <cufft.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <complex>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "tests/testing.h"

namespace {

using cd = std::complex<double>;
using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::random_floats;

constexpr float kSentinel = 4242.f;  // output gaps: must stay untouched
const float kNaN = std::numeric_limits<float>::quiet_NaN();

size_t product(const std::vector<int>& v) {
  size_t p = 1;
  for (int x : v) p *= size_t(x);
  return p;
}

// ---------------------------------------------------------------- reference

// Unnormalised DFT of a row-major array of the given shape, along every
// dimension. Twiddles use (j*k mod n) so they stay exact to double rounding.
std::vector<cd> dft(std::vector<cd> x, const std::vector<int>& shape, int sign) {
  const double pi = std::acos(-1.0);
  size_t inner = 1;  // distance between consecutive elements along dimension d
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    const size_t n = size_t(shape[d]), outer = x.size() / (n * inner);
    std::vector<cd> line(n);
    for (size_t o = 0; o < outer; ++o)
      for (size_t i = 0; i < inner; ++i) {
        const size_t base = o * n * inner + i;
        for (size_t k = 0; k < n; ++k) {
          cd acc = 0;
          for (size_t j = 0; j < n; ++j)
            acc += x[base + j * inner] * std::polar(1.0, sign * 2 * pi * double(j * k % n) / n);
          line[k] = acc;
        }
        for (size_t k = 0; k < n; ++k) x[base + k * inner] = line[k];
      }
    inner *= n;
  }
  return x;
}

// The shapes of one transform's input and output arrays: the complex side
// of a real transform keeps n/2+1 points of the last dimension.
std::vector<int> half_shape(std::vector<int> n) {
  n.back() = n.back() / 2 + 1;
  return n;
}
std::vector<int> in_shape(cufftType t, const std::vector<int>& n) {
  return t == CUFFT_C2R ? half_shape(n) : n;
}
std::vector<int> out_shape(cufftType t, const std::vector<int>& n) {
  return t == CUFFT_R2C ? half_shape(n) : n;
}

// Row-major multi-index of a flat index.
std::vector<int> unflatten(size_t flat, const std::vector<int>& shape) {
  std::vector<int> idx(shape.size());
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    idx[d] = int(flat % size_t(shape[d]));
    flat /= size_t(shape[d]);
  }
  return idx;
}

// The full spectrum of a real signal from its n/2+1 half along the last
// dimension: X[k] = conj(X[-k mod n]) (Hermitian symmetry).
std::vector<cd> hermitian_extend(const std::vector<cd>& half, const std::vector<int>& n) {
  const std::vector<int> h = half_shape(n);
  std::vector<cd> full(product(n));
  for (size_t f = 0; f < full.size(); ++f) {
    std::vector<int> k = unflatten(f, n);
    bool conj = false;
    if (k.back() >= h.back()) {  // mirror every index
      conj = true;
      for (size_t d = 0; d < k.size(); ++d) k[d] = (n[d] - k[d]) % n[d];
    }
    size_t hf = 0;
    for (size_t d = 0; d < k.size(); ++d) hf = hf * size_t(h[d]) + size_t(k[d]);
    full[f] = conj ? std::conj(half[hf]) : half[hf];
  }
  return full;
}

// One transform of the reference: input and output as flat logical arrays
// (real values have imaginary part 0).
std::vector<cd> reference(cufftType t, const std::vector<int>& n, const std::vector<cd>& x,
                          int direction) {
  switch (t) {
    case CUFFT_R2C: {
      const std::vector<cd> full = dft(x, n, CUFFT_FORWARD);
      const std::vector<int> h = half_shape(n);
      std::vector<cd> half(product(h));
      for (size_t f = 0; f < half.size(); ++f) {
        const std::vector<int> k = unflatten(f, h);
        size_t ff = 0;
        for (size_t d = 0; d < k.size(); ++d) ff = ff * size_t(n[d]) + size_t(k[d]);
        half[f] = full[ff];
      }
      return half;
    }
    case CUFFT_C2R: {
      std::vector<cd> y = dft(hermitian_extend(x, n), n, CUFFT_INVERSE);
      for (cd& v : y) v = v.real();
      return y;
    }
    default:
      return dft(x, n, direction);
  }
}

// ------------------------------------------------------------------- layout

// Where a transform's array lives: element idx (a row-major multi-index of
// the logical shape) of batch b is at
//   b*dist + ((idx0*embed[1] + idx1)*embed[2] + idx2)*stride
// elements (float or float2) from the array's start. embed[0] is not used.
// This is cuFFT's advanced layout; the basic layout is contiguous().
struct Storage {
  std::vector<int> embed;
  int stride = 1;
  int dist = 0;

  size_t offset(int b, const std::vector<int>& idx) const {
    size_t lin = size_t(idx[0]);
    for (size_t d = 1; d < idx.size(); ++d) lin = lin * size_t(embed[d]) + size_t(idx[d]);
    return size_t(b) * size_t(dist) + lin * size_t(stride);
  }
};

// Contiguous arrays, batches one after the other.
Storage contiguous(const std::vector<int>& embed) { return {embed, 1, int(product(embed))}; }

// The basic layout in place: the real side's rows are padded to 2*(n/2+1).
std::vector<int> padded_real(std::vector<int> n) {
  n.back() = 2 * (n.back() / 2 + 1);
  return n;
}

// --------------------------------------------------------------- the check

struct Transform {
  cufftType type;
  std::vector<int> n;  // logical size, rank = n.size()
  int batch = 1;
  int direction = CUFFT_FORWARD;  // C2C only; R2C is forward, C2R inverse
};

std::string describe(const Transform& t, bool in_place) {
  std::string s = t.type == CUFFT_R2C ? "R2C" : t.type == CUFFT_C2R ? "C2R" : "C2C";
  s += " n=";
  for (size_t d = 0; d < t.n.size(); ++d) s += (d ? "x" : "") + std::to_string(t.n[d]);
  s += " batch=" + std::to_string(t.batch);
  if (t.type == CUFFT_C2C) s += t.direction == CUFFT_FORWARD ? " forward" : " inverse";
  return s + (in_place ? " in place" : " out of place");
}

// Runs `plan` (made by the caller for t) on arrays laid out as `in` and
// `out` describe and compares every batch with the reference. Input
// positions outside the layout hold NaN, which must not reach the output;
// out of place, output positions outside the layout must keep kSentinel.
// lead_floats shifts both arrays from their 256-byte aligned allocation.
void check_transform(cufftHandle plan, const Transform& t, const Storage& in, const Storage& out,
                     bool in_place, uint64_t seed, size_t lead_floats = 0) {
  SCOPED_TRACE(describe(t, in_place));
  const std::vector<int> ishape = in_shape(t.type, t.n), oshape = out_shape(t.type, t.n);
  const size_t icount = product(ishape), ocount = product(oshape);
  // Floats per element of the input and the output.
  const size_t iw = t.type == CUFFT_R2C ? 1 : 2, ow = t.type == CUFFT_C2R ? 1 : 2;

  // Array extents in floats (the last element of the last batch, plus one).
  size_t ifloats = 0, ofloats = 0;
  for (int b = 0; b < t.batch; ++b)
    for (size_t f = 0; f < std::max(icount, ocount); ++f) {
      if (f < icount) ifloats = std::max(ifloats, (in.offset(b, unflatten(f, ishape)) + 1) * iw);
      if (f < ocount) ofloats = std::max(ofloats, (out.offset(b, unflatten(f, oshape)) + 1) * ow);
    }
  const size_t buffer = lead_floats + (in_place ? std::max(ifloats, ofloats) : ifloats);
  std::vector<float> host_in(buffer, kNaN);

  // Inputs. R2C/C2C: random values at every position the layout maps (the
  // batches may share positions), then read back per batch. C2R: the half
  // spectrum of a random real signal, so it is Hermitian where C2R assumes it.
  std::vector<std::vector<cd>> x(size_t(t.batch), std::vector<cd>(icount));
  const std::vector<float> r = random_floats(buffer, seed);
  for (int b = 0; b < t.batch; ++b) {
    if (t.type == CUFFT_C2R) {
      const std::vector<float> s = random_floats(product(t.n), seed + 1 + b);
      x[b] = reference(CUFFT_R2C, t.n, std::vector<cd>(s.begin(), s.end()), CUFFT_FORWARD);
    }
    for (size_t f = 0; f < icount; ++f) {
      const size_t at = lead_floats + in.offset(b, unflatten(f, ishape)) * iw;
      if (t.type == CUFFT_C2R) {
        host_in[at] = float(x[b][f].real());
        host_in[at + 1] = float(x[b][f].imag());
      } else {
        for (size_t c = 0; c < iw; ++c) host_in[at + c] = r[at + c];
      }
    }
  }
  for (int b = 0; b < t.batch; ++b)
    for (size_t f = 0; f < icount; ++f) {  // what the device will read, exactly
      const size_t at = lead_floats + in.offset(b, unflatten(f, ishape)) * iw;
      x[b][f] = cd(host_in[at], iw == 2 ? host_in[at + 1] : 0.f);
    }

  DeviceBuffer<float> d_in(host_in);
  DeviceBuffer<float> d_out(std::vector<float>(in_place ? 1 : lead_floats + ofloats, kSentinel));
  float* const ip = d_in.get() + lead_floats;
  float* const op = in_place ? ip : d_out.get() + lead_floats;
  switch (t.type) {
    case CUFFT_R2C:
      CUFFT_CHECK(cufftExecR2C(plan, ip, reinterpret_cast<cufftComplex*>(op)));
      break;
    case CUFFT_C2R:
      CUFFT_CHECK(cufftExecC2R(plan, reinterpret_cast<cufftComplex*>(ip), op));
      break;
    default:
      CUFFT_CHECK(cufftExecC2C(plan, reinterpret_cast<cufftComplex*>(ip),
                               reinterpret_cast<cufftComplex*>(op), t.direction));
  }
  const std::vector<float> host_out = (in_place ? d_in : d_out).to_host();

  // Gather the outputs and the reference, and mark the written positions.
  std::vector<double> got, want;
  std::vector<bool> written(host_out.size(), false);
  double input_norm = 0;  // largest L2 norm of one transform's (full) input
  for (int b = 0; b < t.batch; ++b) {
    const std::vector<cd> y = reference(t.type, t.n, x[b], t.direction);
    for (size_t f = 0; f < ocount; ++f) {
      const size_t at = lead_floats + out.offset(b, unflatten(f, oshape)) * ow;
      for (size_t c = 0; c < ow; ++c) {
        got.push_back(host_out[at + c]);
        want.push_back(c == 0 ? y[f].real() : y[f].imag());
        written[at + c] = true;
      }
    }
    const std::vector<cd> full = t.type == CUFFT_C2R ? hermitian_extend(x[b], t.n) : x[b];
    double sq = 0;
    for (const cd& v : full) sq += std::norm(v);
    input_norm = std::max(input_norm, std::sqrt(sq));
  }
  // Tolerance: a float FFT of N points has a per-output error of about
  // eps * log2(N) * ||x||_2 (the error norm is ~ eps*log2(N)*||X||_2 and
  // ||X||_2 = sqrt(N)*||x||_2 spreads over N outputs); 8x margin, with
  // eps = FLT_EPSILON. Outputs themselves are O(sqrt(N)) up to O(N), and a
  // wrong layout, sign or size errs by O(1) or more.
  const double n_total = double(product(t.n));
  const double atol = 8 * double(FLT_EPSILON) * std::max(1.0, std::log2(n_total)) * input_norm;
  EXPECT_TRUE(all_close(got, want, {.atol = atol, .rtol = 0}));

  if (!in_place) {
    size_t touched = 0;
    for (size_t i = 0; i < host_out.size(); ++i)
      touched += !written[i] && !(host_out[i] == kSentinel);
    EXPECT_EQ(touched, 0u) << "positions outside the output layout were written";
  }
}

// Plans with cufftPlanMany; nullptr embeds mean the basic layout.
cufftHandle plan_many(const Transform& t, std::vector<int>* inembed, int istride, int idist,
                      std::vector<int>* onembed, int ostride, int odist) {
  std::vector<int> n = t.n;
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlanMany(&plan, int(n.size()), n.data(), inembed ? inembed->data() : nullptr,
                            istride, idist, onembed ? onembed->data() : nullptr, ostride, odist,
                            t.type, t.batch));
  return plan;
}

// ------------------------------------------------------------------- tests

class Cufft1D : public ::testing::TestWithParam<int> {};

TEST_P(Cufft1D, R2COutOfPlace) {
  const Transform t{CUFFT_R2C, {GetParam()}, 1};
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, t.n[0], t.type, t.batch));
  check_transform(plan, t, contiguous(t.n), contiguous(half_shape(t.n)), false, 10);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST_P(Cufft1D, C2ROutOfPlace) {
  const Transform t{CUFFT_C2R, {GetParam()}, 1};
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, t.n[0], t.type, t.batch));
  check_transform(plan, t, contiguous(half_shape(t.n)), contiguous(t.n), false, 20);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST_P(Cufft1D, C2CForwardAndInverseOnOnePlan) {
  Transform t{CUFFT_C2C, {GetParam()}, 1};
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, t.n[0], t.type, t.batch));
  for (int direction : {CUFFT_FORWARD, CUFFT_INVERSE, CUFFT_FORWARD}) {
    t.direction = direction;
    check_transform(plan, t, contiguous(t.n), contiguous(t.n), false, 30 + direction);
  }
  CUFFT_CHECK(cufftDestroy(plan));
}

// Odd, power of two, and long.
INSTANTIATE_TEST_SUITE_P(Sizes, Cufft1D, ::testing::Values(9, 16, 2048));

TEST(Cufft, BatchedBasicLayoutOutOfPlace) {
  const Transform ts[] = {{CUFFT_R2C, {10}, 3}, {CUFFT_C2R, {7}, 4}, {CUFFT_C2C, {12}, 3},
                          {CUFFT_C2C, {15}, 5, CUFFT_INVERSE}};
  uint64_t seed = 100;
  for (const Transform& t : ts) {
    cufftHandle plan = 0;
    CUFFT_CHECK(cufftPlan1d(&plan, t.n[0], t.type, t.batch));
    check_transform(plan, t, contiguous(in_shape(t.type, t.n)), contiguous(out_shape(t.type, t.n)),
                    false, seed += 10);
    CUFFT_CHECK(cufftDestroy(plan));
  }
}

TEST(Cufft, InPlaceBasicLayoutPadsRealRows) {
  // In place, the real rows of R2C input / C2R output are 2*(n/2+1) floats
  // long; the padding of the R2C input holds NaN and must not be read. The
  // same plan runs out of place first: the placement is only known at exec.
  uint64_t seed = 200;
  for (int n : {9, 16}) {
    const Transform r2c{CUFFT_R2C, {n}, 3};
    cufftHandle plan = 0;
    CUFFT_CHECK(cufftPlan1d(&plan, n, r2c.type, r2c.batch));
    check_transform(plan, r2c, contiguous(r2c.n), contiguous(half_shape(r2c.n)), false, seed += 10);
    check_transform(plan, r2c, contiguous(padded_real(r2c.n)), contiguous(half_shape(r2c.n)), true,
                    seed += 10);
    CUFFT_CHECK(cufftDestroy(plan));

    const Transform c2r{CUFFT_C2R, {n}, 3};
    CUFFT_CHECK(cufftPlan1d(&plan, n, c2r.type, c2r.batch));
    check_transform(plan, c2r, contiguous(half_shape(c2r.n)), contiguous(padded_real(c2r.n)), true,
                    seed += 10);
    check_transform(plan, c2r, contiguous(half_shape(c2r.n)), contiguous(c2r.n), false, seed += 10);
    CUFFT_CHECK(cufftDestroy(plan));
  }
  Transform c2c{CUFFT_C2C, {12}, 3};
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, 12, c2c.type, c2c.batch));
  check_transform(plan, c2c, contiguous(c2c.n), contiguous(c2c.n), true, seed += 10);
  c2c.direction = CUFFT_INVERSE;
  check_transform(plan, c2c, contiguous(c2c.n), contiguous(c2c.n), true, seed += 10);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST(Cufft, NullEmbedIgnoresStridesAndDists) {
  // cuFFT: with inembed or onembed NULL, istride/idist/ostride/odist are
  // ignored and the basic layout is used (FFTW would apply them).
  const Transform t{CUFFT_R2C, {16}, 3};
  cufftHandle plan = plan_many(t, nullptr, 3, 5, nullptr, 7, 2);
  check_transform(plan, t, contiguous(t.n), contiguous(half_shape(t.n)), false, 300);
  check_transform(plan, t, contiguous(padded_real(t.n)), contiguous(half_shape(t.n)), true, 301);
  CUFFT_CHECK(cufftDestroy(plan));

  // Only inembed NULL: still the basic layout, on both sides.
  std::vector<int> onembed{40};
  const Transform c{CUFFT_C2C, {12}, 4, CUFFT_INVERSE};
  plan = plan_many(c, nullptr, 2, 3, &onembed, 3, 50);
  check_transform(plan, c, contiguous(c.n), contiguous(c.n), false, 302);
  CUFFT_CHECK(cufftDestroy(plan));

  // Only onembed NULL, 2-D, C2R.
  std::vector<int> inembed{9, 9};
  const Transform c2r{CUFFT_C2R, {6, 8}, 2};
  plan = plan_many(c2r, &inembed, 4, 1, nullptr, 2, 3);
  check_transform(plan, c2r, contiguous(half_shape(c2r.n)), contiguous(c2r.n), false, 303);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST(Cufft, AdvancedLayoutInterleavedChannelsAndFramesWithGaps) {
  // Audio-like input: 2 interleaved channels (istride = 2), frames of n = 8
  // samples every 11 samples (idist = 22 floats: 3-sample gaps between
  // frames). Output: the 4 frames' spectra interleaved bin by bin with one
  // spare slot (ostride = 5 complex, odist = 1).
  const Transform t{CUFFT_R2C, {8}, 4};
  std::vector<int> inembed{8}, onembed{5};
  cufftHandle plan = plan_many(t, &inembed, 2, 22, &onembed, 5, 1);
  check_transform(plan, t, Storage{inembed, 2, 22}, Storage{onembed, 5, 1}, false, 400);
  CUFFT_CHECK(cufftDestroy(plan));

  // Overlapping frames (hop 5 < n = 8, idist = 10): R2C reads shared samples.
  plan = plan_many(t, &inembed, 2, 10, &onembed, 5, 1);
  check_transform(plan, t, Storage{inembed, 2, 10}, Storage{onembed, 5, 1}, false, 401);
  CUFFT_CHECK(cufftDestroy(plan));

  // C2R back: strided half spectra in, interleaved real frames out.
  const Transform c2r{CUFFT_C2R, {8}, 3};
  std::vector<int> cin{5}, rout{8};
  plan = plan_many(c2r, &cin, 3, 17, &rout, 3, 1);
  check_transform(plan, c2r, Storage{cin, 3, 17}, Storage{rout, 3, 1}, false, 402);
  CUFFT_CHECK(cufftDestroy(plan));

  // C2C with strides on both sides, in both directions.
  Transform c2c{CUFFT_C2C, {6}, 3};
  std::vector<int> e{6};
  plan = plan_many(c2c, &e, 2, 15, &e, 3, 1);
  check_transform(plan, c2c, Storage{e, 2, 15}, Storage{e, 3, 1}, false, 403);
  c2c.direction = CUFFT_INVERSE;
  check_transform(plan, c2c, Storage{e, 2, 15}, Storage{e, 3, 1}, false, 404);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST(Cufft, AdvancedLayoutRank2) {
  // 5 x 6 C2C: input rows padded to 8 elements, istride 2, 3 elements
  // between batches beyond the data; inembed[0] is not used (99 would be a
  // wrong row count if it were). Output contiguous.
  const Transform c2c{CUFFT_C2C, {5, 6}, 2};
  std::vector<int> inembed{99, 8}, onembed{5, 6};
  cufftHandle plan = plan_many(c2c, &inembed, 2, 83, &onembed, 1, 30);
  check_transform(plan, c2c, Storage{inembed, 2, 83}, Storage{onembed, 1, 30}, false, 500);
  CUFFT_CHECK(cufftDestroy(plan));

  // 4 x 6 R2C: real rows of 7, half-spectrum rows of 5 (>= 6/2+1 = 4) at
  // ostride 2, so every other complex slot is a gap.
  const Transform r2c{CUFFT_R2C, {4, 6}, 3};
  std::vector<int> rin{4, 7}, cout{4, 5};
  plan = plan_many(r2c, &rin, 1, 29, &cout, 2, 40);
  check_transform(plan, r2c, Storage{rin, 1, 29}, Storage{cout, 2, 40}, false, 501);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST(Cufft, Rank2BasicLayoutAllTypes) {
  uint64_t seed = 600;
  for (cufftType type : {CUFFT_R2C, CUFFT_C2R, CUFFT_C2C}) {
    const Transform t{type, {6, 5}, 2};
    cufftHandle plan = plan_many(t, nullptr, 1, 0, nullptr, 1, 0);
    check_transform(plan, t, contiguous(in_shape(type, t.n)), contiguous(out_shape(type, t.n)),
                    false, seed += 10);
    // In place: the real side's rows padded to 2*(5/2+1) = 6 floats.
    const Storage in = contiguous(type == CUFFT_R2C ? padded_real(t.n) : in_shape(type, t.n));
    const Storage out = contiguous(type == CUFFT_C2R ? padded_real(t.n) : out_shape(type, t.n));
    check_transform(plan, t, in, out, true, seed += 10);
    CUFFT_CHECK(cufftDestroy(plan));
  }
}

TEST(Cufft, UnalignedPointersGiveTheSameResults) {
  // Arrays 8 bytes past a 256-byte boundary (aligned for float and float2,
  // not for SIMD), between aligned runs of the same plan.
  const Transform r2c{CUFFT_R2C, {64}, 2};
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, 64, r2c.type, r2c.batch));
  const Storage in = contiguous(r2c.n), out = contiguous(half_shape(r2c.n));
  check_transform(plan, r2c, in, out, false, 700);
  check_transform(plan, r2c, in, out, false, 701, /*lead_floats=*/2);
  check_transform(plan, r2c, in, out, false, 702);
  check_transform(plan, r2c, contiguous(padded_real(r2c.n)), out, true, 703, 2);
  CUFFT_CHECK(cufftDestroy(plan));

  const Transform c2c{CUFFT_C2C, {30}, 3};
  CUFFT_CHECK(cufftPlan1d(&plan, 30, c2c.type, c2c.batch));
  check_transform(plan, c2c, contiguous(c2c.n), contiguous(c2c.n), false, 704, 2);
  check_transform(plan, c2c, contiguous(c2c.n), contiguous(c2c.n), true, 705, 2);
  check_transform(plan, c2c, contiguous(c2c.n), contiguous(c2c.n), false, 706);
  CUFFT_CHECK(cufftDestroy(plan));
}

TEST(Cufft, PlansOfSeveralHostThreads) {
  // cuFFT is thread-safe for different plans: each thread plans, runs (the
  // first exec plans FFTW lazily) and destroys its own, all at once.
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([i] {
      for (int rep = 0; rep < 3; ++rep) {
        const Transform t{i % 2 ? CUFFT_C2C : CUFFT_R2C, {16 + 4 * i}, 2};
        cufftHandle plan = 0;
        CUFFT_CHECK(cufftPlan1d(&plan, t.n[0], t.type, t.batch));
        check_transform(plan, t, contiguous(t.n), contiguous(out_shape(t.type, t.n)), false,
                        800 + 10 * i + rep);
        CUFFT_CHECK(cufftDestroy(plan));
      }
    });
  for (std::thread& th : threads) th.join();
}

#if TIMBRE_BACKEND_SIM
TEST(Cufft, InPlaceWithDifferentInputAndOutputLayouts) {
  // In place with input and output laid out differently: FFTW cannot plan
  // these in place, so simcuda transforms a copy of the input (the result is
  // the transform of the input as it was before the call). cuFFT does not
  // document such layouts, hence sim only.
  const Transform one{CUFFT_C2C, {8}, 1};
  std::vector<int> e{8};
  cufftHandle plan = plan_many(one, &e, 1, 8, &e, 2, 16);
  check_transform(plan, one, Storage{e, 1, 8}, Storage{e, 2, 16}, true, 750);
  CUFFT_CHECK(cufftDestroy(plan));

  const Transform three{CUFFT_C2C, {8}, 3, CUFFT_INVERSE};
  plan = plan_many(three, &e, 1, 8, &e, 1, 9);
  check_transform(plan, three, Storage{e, 1, 8}, Storage{e, 1, 9}, true, 751);
  CUFFT_CHECK(cufftDestroy(plan));
}
#endif

TEST(Cufft, ExecWithMismatchedTypeOrBadArgumentsFails) {
  DeviceBuffer<float> d(std::vector<float>(64, 1.f));
  float* p = d.get();
  auto* c = reinterpret_cast<cufftComplex*>(p);
  cufftHandle r2c = 0, c2c = 0;
  CUFFT_CHECK(cufftPlan1d(&r2c, 16, CUFFT_R2C, 1));
  CUFFT_CHECK(cufftPlan1d(&c2c, 16, CUFFT_C2C, 1));
  // cuFFT documents only that these fail; simcuda answers INVALID_VALUE
  // (the handle is valid, the call does not fit it).
  const cufftResult mismatched[] = {cufftExecC2C(r2c, c, c, CUFFT_FORWARD),
                                    cufftExecC2R(r2c, c, p), cufftExecR2C(c2c, p, c),
                                    cufftExecC2C(c2c, c, c, 0), cufftExecC2C(c2c, c, c, 2)};
  for (cufftResult r : mismatched) {
    EXPECT_NE(r, CUFFT_SUCCESS);
#if TIMBRE_BACKEND_SIM
    EXPECT_EQ(r, CUFFT_INVALID_VALUE);
#endif
  }
  CUFFT_CHECK(cufftDestroy(r2c));
  CUFFT_CHECK(cufftDestroy(c2c));
}

TEST(Cufft, UnknownAndDestroyedHandlesAreInvalidPlans) {
  DeviceBuffer<float> d(std::vector<float>(64, 1.f));
  float* p = d.get();
  auto* c = reinterpret_cast<cufftComplex*>(p);
  cufftHandle plan = 0;
  CUFFT_CHECK(cufftPlan1d(&plan, 16, CUFFT_C2C, 2));
  CUFFT_CHECK(cufftSetStream(plan, nullptr));
  CUFFT_CHECK(cufftExecC2C(plan, c, c, CUFFT_FORWARD));
  CUFFT_CHECK(cufftDestroy(plan));
  EXPECT_EQ(cufftExecC2C(plan, c, c, CUFFT_FORWARD), CUFFT_INVALID_PLAN);
  EXPECT_EQ(cufftSetStream(plan, nullptr), CUFFT_INVALID_PLAN);
  EXPECT_EQ(cufftDestroy(plan), CUFFT_INVALID_PLAN);

  const cufftHandle never_made = 987654;
  EXPECT_EQ(cufftExecR2C(never_made, p, c), CUFFT_INVALID_PLAN);
  EXPECT_EQ(cufftExecC2R(never_made, c, p), CUFFT_INVALID_PLAN);
  EXPECT_EQ(cufftDestroy(never_made), CUFFT_INVALID_PLAN);
#if TIMBRE_BACKEND_SIM
  // cufft.h calls CUFFT_PLAN_NULL safe to destroy; simcuda makes it a no-op.
  EXPECT_EQ(cufftDestroy(CUFFT_PLAN_NULL), CUFFT_SUCCESS);
#endif
}

TEST(Cufft, PlanCreationErrors) {
  cufftHandle plan = 0;
  EXPECT_EQ(cufftPlan1d(&plan, 16, cufftType(0x7f), 1), CUFFT_INVALID_TYPE);
  EXPECT_EQ(cufftPlan1d(&plan, 0, CUFFT_C2C, 1), CUFFT_INVALID_SIZE);
  EXPECT_EQ(cufftPlan1d(&plan, -4, CUFFT_R2C, 1), CUFFT_INVALID_SIZE);
  EXPECT_EQ(cufftPlan1d(&plan, 16, CUFFT_C2C, 0), CUFFT_INVALID_SIZE);
#if TIMBRE_BACKEND_SIM
  // simcuda's choices where cuFFT's documentation is not specific.
  int n4[4] = {2, 2, 2, 2};
  EXPECT_EQ(cufftPlanMany(&plan, 4, n4, nullptr, 1, 0, nullptr, 1, 0, CUFFT_C2C, 1),
            CUFFT_INVALID_SIZE);
  int n[2] = {4, 6}, small[2] = {4, 5}, ok[2] = {4, 6};
  EXPECT_EQ(cufftPlanMany(&plan, 2, n, small, 1, 20, ok, 1, 24, CUFFT_C2C, 2),
            CUFFT_INVALID_VALUE)
      << "inembed[1] < n[1]";
  EXPECT_EQ(cufftPlanMany(&plan, 2, n, ok, 0, 24, ok, 1, 24, CUFFT_C2C, 2), CUFFT_INVALID_VALUE)
      << "istride 0";
#endif
}

// Double precision (D2Z, Z2D, Z2Z): the same layouts as R2C, C2R and C2C
// with double and double2. Batched 1-D transforms at an odd and a power-of-two
// length against the DFT in double. Tolerance: FFTW's double error grows like
// log2(n) * eps * max|X|; 1e-12 * (1 + max|X|) leaves a wide margin at n 2048
// while a float transform (eps 6e-8) would miss it by orders of magnitude.
TEST(Cufft, DoublePrecisionD2ZZ2DZ2Z) {
  for (const int n : {15, 2048}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const int batch = 3, half = n / 2 + 1;
    const auto xf = random_floats(size_t(batch) * n, 11 + n);
    std::vector<double> x(xf.begin(), xf.end());
    for (size_t i = 0; i < x.size(); ++i) x[i] += 1e-3 * std::sin(double(i));  // not float-exact

    // D2Z, out of place.
    DeviceBuffer<double> din(x);
    DeviceBuffer<double2> dspec(size_t(batch) * half);
    cufftHandle d2z = 0, z2d = 0, z2z = 0;
    CUFFT_CHECK(cufftPlan1d(&d2z, n, CUFFT_D2Z, batch));
    CUFFT_CHECK(cufftExecD2Z(d2z, din.get(), reinterpret_cast<cufftDoubleComplex*>(dspec.get())));
    const auto spec = dspec.to_host();
    double worst = 0, scale = 0;
    std::vector<cd> full(size_t(batch) * n);
    for (int b = 0; b < batch; ++b) {
      std::vector<cd> row(x.begin() + size_t(b) * n, x.begin() + size_t(b + 1) * n);
      const auto X = dft(row, {n}, -1);
      std::copy(X.begin(), X.end(), full.begin() + size_t(b) * n);
      for (int k = 0; k < half; ++k) {
        const double2 got = spec[size_t(b) * half + k];
        worst = std::max(worst, std::abs(cd(got.x, got.y) - X[k]));
        scale = std::max(scale, std::abs(X[k]));
      }
    }
    EXPECT_LE(worst, 1e-12 * (1 + scale)) << "D2Z";

    // Z2D of that spectrum gives n * x back (unnormalised).
    DeviceBuffer<double> dback(size_t(batch) * n);
    CUFFT_CHECK(cufftPlan1d(&z2d, n, CUFFT_Z2D, batch));
    CUFFT_CHECK(cufftExecZ2D(z2d, reinterpret_cast<cufftDoubleComplex*>(dspec.get()), dback.get()));
    const auto back = dback.to_host();
    worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(back[i] - n * x[i]));
    EXPECT_LE(worst, 1e-12 * n) << "Z2D";

    // Z2Z forward in place on the full complex rows.
    std::vector<double2> z(full.size());
    for (size_t i = 0; i < z.size(); ++i) z[i] = double2{x[i], -x[i] * 0.5};
    DeviceBuffer<double2> dz(z);
    CUFFT_CHECK(cufftPlan1d(&z2z, n, CUFFT_Z2Z, batch));
    auto* zc = reinterpret_cast<cufftDoubleComplex*>(dz.get());
    CUFFT_CHECK(cufftExecZ2Z(z2z, zc, zc, CUFFT_FORWARD));
    const auto Z = dz.to_host();
    worst = 0, scale = 0;
    for (int b = 0; b < batch; ++b) {
      std::vector<cd> row(static_cast<size_t>(n));
      for (int j = 0; j < n; ++j) row[j] = cd(z[size_t(b) * n + j].x, z[size_t(b) * n + j].y);
      const auto X = dft(row, {n}, -1);
      for (int k = 0; k < n; ++k) {
        const double2 got = Z[size_t(b) * n + k];
        worst = std::max(worst, std::abs(cd(got.x, got.y) - X[k]));
        scale = std::max(scale, std::abs(X[k]));
      }
    }
    EXPECT_LE(worst, 1e-12 * (1 + scale)) << "Z2Z";

    // A double exec on a single-precision plan (and the reverse) is refused.
    cufftHandle r2c = 0;
    CUFFT_CHECK(cufftPlan1d(&r2c, n, CUFFT_R2C, 1));
    EXPECT_NE(cufftExecD2Z(r2c, din.get(), reinterpret_cast<cufftDoubleComplex*>(dspec.get())),
              CUFFT_SUCCESS);
    EXPECT_NE(cufftExecR2C(d2z, reinterpret_cast<float*>(din.get()),
                           reinterpret_cast<cufftComplex*>(dspec.get())),
              CUFFT_SUCCESS);
    for (cufftHandle h : {d2z, z2d, z2z, r2c}) CUFFT_CHECK(cufftDestroy(h));
  }
}

}  // namespace
