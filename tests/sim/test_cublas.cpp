// test_cublas.cpp: cublasSgemm and cublasSgemmStridedBatched against a
// column-major GEMM computed in double here,
//   C = alpha * op(A) * op(B) + beta * C,  op(A) m x k, op(B) k x n, C m x n,
// on device memory (cudaMalloc / cudaMemcpy through DeviceBuffer), plus the
// status codes cuBLAS documents for bad arguments. Padding rows (ld > rows)
// and gaps between batches hold a sentinel that must survive exactly.

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;
using timbre::testing::all_close;
using timbre::testing::random_floats;

constexpr float kSentinel = 12345.f;  // in padding and gaps; must stay untouched
const float kNaN = std::numeric_limits<float>::quiet_NaN();

const char* op_name(cublasOperation_t op) {
  return op == CUBLAS_OP_N ? "N" : op == CUBLAS_OP_T ? "T" : op == CUBLAS_OP_C ? "C" : "?";
}

// One GEMM problem. The leading dimensions are the smallest legal ones plus
// the given number of padding rows.
struct Gemm {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  int m = 1, n = 1, k = 1;
  float alpha = 1.f, beta = 0.f;
  int lda_pad = 0, ldb_pad = 0, ldc_pad = 0;

  // A is stored rows_a x cols_a (op(A) = A or A^T), likewise B.
  int rows_a() const { return ta == CUBLAS_OP_N ? m : k; }
  int cols_a() const { return ta == CUBLAS_OP_N ? k : m; }
  int rows_b() const { return tb == CUBLAS_OP_N ? k : n; }
  int cols_b() const { return tb == CUBLAS_OP_N ? n : k; }
  int lda() const { return std::max(1, rows_a()) + lda_pad; }
  int ldb() const { return std::max(1, rows_b()) + ldb_pad; }
  int ldc() const { return std::max(1, m) + ldc_pad; }

  std::string describe() const {
    std::ostringstream s;
    s << "op(A)=" << op_name(ta) << " op(B)=" << op_name(tb) << " m=" << m << " n=" << n
      << " k=" << k << " lda=" << lda() << " ldb=" << ldb() << " ldc=" << ldc()
      << " alpha=" << alpha << " beta=" << beta;
    return s.str();
  }
};

// A rows x cols column-major matrix in a buffer with leading dimension ld:
// random values in [-1, 1) inside, kSentinel in the padding rows. Never empty
// (a zero-sized matrix still gets one element, so no pointer is null).
std::vector<float> make_matrix(int rows, int cols, int ld, uint64_t seed) {
  std::vector<float> v(std::max<size_t>(1, size_t(ld) * cols), kSentinel);
  const std::vector<float> r = random_floats(size_t(rows) * cols, seed);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) v[size_t(j) * ld + i] = r[size_t(j) * rows + i];
  return v;
}

struct Reference {
  std::vector<double> c;  // the whole C buffer after the GEMM, padding included
  double atol = 0;        // error bound for float arithmetic, see below
};

// Naive double GEMM on the m x n block of C (the rest of C copied as is).
// beta == 0 does not read C, as BLAS defines it.
Reference reference_gemm(const Gemm& g, const std::vector<float>& A, const std::vector<float>& B,
                         const std::vector<float>& C) {
  Reference r;
  r.c.assign(C.begin(), C.end());
  double scale = 0;  // max over C of |alpha| sum_p |a_ip b_pj| + |beta c_ij|
  for (int j = 0; j < g.n; ++j) {
    for (int i = 0; i < g.m; ++i) {
      double acc = 0, mag = 0;
      for (int p = 0; p < g.k; ++p) {
        // op(A)[i][p] and op(B)[p][j], column-major.
        const double a = g.ta == CUBLAS_OP_N ? A[size_t(p) * g.lda() + i]
                                             : A[size_t(i) * g.lda() + p];
        const double b = g.tb == CUBLAS_OP_N ? B[size_t(j) * g.ldb() + p]
                                             : B[size_t(p) * g.ldb() + j];
        acc += a * b;
        mag += std::fabs(a * b);
      }
      const double c = g.beta == 0.f ? 0.0 : double(C[size_t(j) * g.ldc() + i]);
      r.c[size_t(j) * g.ldc() + i] = double(g.alpha) * acc + double(g.beta) * c;
      scale = std::max(scale, std::fabs(g.alpha) * mag + std::fabs(g.beta * c));
    }
  }
  // Tolerance: each float result is a k-term dot product followed by the
  // alpha and beta terms, so its rounding error is at most gamma_(k+2) times
  // |alpha| sum_p |a_ip||b_pj| + |beta||c_ij|, gamma_j ~ j * 2^-24 (the
  // standard dot-product bound). FLT_EPSILON = 2^-23 doubles it for margin.
  // A wrong index, transpose or scale errs by O(1), far above this.
  r.atol = (g.k + 2) * double(FLT_EPSILON) * scale;
  return r;
}

// Number of padding entries of C (rows m..ldc-1 of each column) that differ
// from kSentinel.
int padding_changes(const std::vector<float>& c, int m, int n, int ldc, size_t offset = 0) {
  int changed = 0;
  for (int j = 0; j < n; ++j)
    for (int i = m; i < ldc; ++i) changed += c[offset + size_t(j) * ldc + i] != kSentinel;
  return changed;
}

class CublasTest : public ::testing::Test {
 protected:
  void SetUp() override { CUBLAS_CHECK(cublasCreate(&handle_)); }
  void TearDown() override { CUBLAS_CHECK(cublasDestroy(handle_)); }

  // Runs g on the device and compares the whole of C with the reference.
  // nan_c: the m x n block of C starts as NaN (only meaningful for beta = 0).
  void expect_gemm(const Gemm& g, uint64_t seed, bool nan_c = false) {
    SCOPED_TRACE(g.describe());
    const std::vector<float> A = make_matrix(g.rows_a(), g.cols_a(), g.lda(), seed);
    const std::vector<float> B = make_matrix(g.rows_b(), g.cols_b(), g.ldb(), seed + 1);
    std::vector<float> C = make_matrix(g.m, g.n, g.ldc(), seed + 2);
    if (nan_c)
      for (int j = 0; j < g.n; ++j)
        for (int i = 0; i < g.m; ++i) C[size_t(j) * g.ldc() + i] = kNaN;
    const Reference ref = reference_gemm(g, A, B, C);

    DeviceBuffer<float> dA(A), dB(B), dC(C);
    CUBLAS_CHECK(cublasSgemm(handle_, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, dA.get(), g.lda(),
                             dB.get(), g.ldb(), &g.beta, dC.get(), g.ldc()));
    const std::vector<float> got = dC.to_host();
    EXPECT_TRUE(all_close(got, ref.c, {.atol = ref.atol, .rtol = 0}));
    EXPECT_EQ(padding_changes(got, g.m, g.n, g.ldc()), 0) << "C's padding rows were written";
  }

  // Strided batched: batch i uses A + i*strideA etc. Each stride is the
  // matrix buffer plus `gap` sentinel elements (A's is 0 when shared_a: every
  // batch reads the same A). Checks every batch and that the gaps and
  // padding of C keep the sentinel.
  void expect_strided(const Gemm& g, int batch, int gap, uint64_t seed, bool shared_a = false) {
    SCOPED_TRACE(g.describe() + " batch=" + std::to_string(batch) + " gap=" + std::to_string(gap));
    const long long size_a = static_cast<long long>(g.lda()) * g.cols_a();
    const long long size_b = static_cast<long long>(g.ldb()) * g.cols_b();
    const long long size_c = static_cast<long long>(g.ldc()) * g.n;
    const long long stride_a = shared_a ? 0 : size_a + gap;
    const long long stride_b = size_b + gap, stride_c = size_c + gap;
    const int batches_a = shared_a ? 1 : batch;
    std::vector<float> A(size_t(stride_a * (batches_a - 1) + size_a), kSentinel);
    std::vector<float> B(size_t(stride_b * (batch - 1) + size_b), kSentinel);
    std::vector<float> C(size_t(stride_c * (batch - 1) + size_c), kSentinel);
    std::vector<std::vector<float>> As, Bs, Cs;  // each batch's own matrices
    for (int i = 0; i < batch; ++i) {
      if (i < batches_a) As.push_back(make_matrix(g.rows_a(), g.cols_a(), g.lda(), seed + 3 * i));
      Bs.push_back(make_matrix(g.rows_b(), g.cols_b(), g.ldb(), seed + 3 * i + 1));
      Cs.push_back(make_matrix(g.m, g.n, g.ldc(), seed + 3 * i + 2));
      if (i < batches_a) std::copy(As[i].begin(), As[i].end(), A.begin() + i * stride_a);
      std::copy(Bs[i].begin(), Bs[i].end(), B.begin() + i * stride_b);
      std::copy(Cs[i].begin(), Cs[i].end(), C.begin() + i * stride_c);
    }
    std::vector<double> expected(C.begin(), C.end());
    double atol = 0;
    for (int i = 0; i < batch; ++i) {
      const Reference r = reference_gemm(g, As[shared_a ? 0 : i], Bs[i], Cs[i]);
      std::copy(r.c.begin(), r.c.end(), expected.begin() + i * stride_c);
      atol = std::max(atol, r.atol);
    }

    DeviceBuffer<float> dA(A), dB(B), dC(C);
    CUBLAS_CHECK(cublasSgemmStridedBatched(handle_, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, dA.get(),
                                           g.lda(), stride_a, dB.get(), g.ldb(), stride_b,
                                           &g.beta, dC.get(), g.ldc(), stride_c, batch));
    const std::vector<float> got = dC.to_host();
    // The gaps hold kSentinel in `expected` too, so this also checks them.
    EXPECT_TRUE(all_close(got, expected, {.atol = atol, .rtol = 0}));
    for (int i = 0; i < batch; ++i)
      EXPECT_EQ(padding_changes(got, g.m, g.n, g.ldc(), size_t(i * stride_c)), 0)
          << "padding of batch " << i;
  }

  cublasHandle_t handle_ = nullptr;
};

const cublasOperation_t kOps[] = {CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C};

TEST_F(CublasTest, EveryTransposeCombinationOddSizes) {
  // OP_C is OP_T for real matrices.
  uint64_t seed = 100;
  for (cublasOperation_t ta : kOps)
    for (cublasOperation_t tb : kOps) {
      Gemm g;
      g.ta = ta, g.tb = tb, g.m = 7, g.n = 5, g.k = 9;
      expect_gemm(g, seed += 10);
    }
}

TEST_F(CublasTest, VectorShapes) {
  struct Shape { int m, n, k; };
  // 1xK * Kx1 (a dot product), Kx1 * 1xK (an outer product, k = 1),
  // a row vector times a matrix and a matrix times a column vector.
  const Shape shapes[] = {{1, 1, 13}, {6, 4, 1}, {1, 9, 5}, {9, 1, 5}};
  uint64_t seed = 200;
  for (const Shape& s : shapes)
    for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
      for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
        Gemm g;
        g.ta = ta, g.tb = tb, g.m = s.m, g.n = s.n, g.k = s.k;
        expect_gemm(g, seed += 10);
      }
}

TEST_F(CublasTest, PaddedLeadingDimensionsKeepPadding) {
  uint64_t seed = 300;
  for (cublasOperation_t ta : kOps)
    for (cublasOperation_t tb : kOps) {
      Gemm g;
      g.ta = ta, g.tb = tb, g.m = 6, g.n = 7, g.k = 5;
      g.lda_pad = 3, g.ldb_pad = 2, g.ldc_pad = 4;
      g.alpha = 1.f, g.beta = 0.75f;  // beta != 0 reads C, still not its padding
      expect_gemm(g, seed += 10);
      g.beta = 0.f;  // the beta = 0 path zeroes C first: the m rows only
      expect_gemm(g, seed += 10);
    }
}

TEST_F(CublasTest, BetaZeroDoesNotReadC) {
  // C starts as NaN; beta = 0 means C is output only, so no NaN may appear.
  uint64_t seed = 400;
  for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T}) {
    Gemm g;
    g.ta = ta, g.tb = CUBLAS_OP_N, g.m = 5, g.n = 3, g.k = 4, g.ldc_pad = 2;
    g.alpha = 1.5f, g.beta = 0.f;
    expect_gemm(g, seed += 10, /*nan_c=*/true);
    g.k = 0;  // C = 0 * C must give exact zeros, not NaN
    expect_gemm(g, seed += 10, /*nan_c=*/true);
    g.k = 4, g.alpha = 0.f;  // alpha = 0 and beta = 0: zeros as well
    expect_gemm(g, seed += 10, /*nan_c=*/true);
  }
}

TEST_F(CublasTest, AlphaAndBetaScale) {
  struct Scale { float alpha, beta; };
  // accumulate into C, pure alpha scaling, C = beta * C (alpha = 0), and
  // beta = 1 (plain accumulate).
  const Scale scales[] = {{-1.25f, 0.5f}, {2.5f, 0.f}, {0.f, 2.f}, {0.5f, 1.f}, {1.f, -1.f}};
  uint64_t seed = 500;
  for (const Scale& s : scales) {
    Gemm g;
    g.ta = CUBLAS_OP_T, g.tb = CUBLAS_OP_N, g.m = 8, g.n = 6, g.k = 11;
    g.alpha = s.alpha, g.beta = s.beta, g.ldc_pad = 1;
    expect_gemm(g, seed += 10);
  }
}

TEST_F(CublasTest, KZeroScalesC) {
  // k = 0: op(A) * op(B) is an empty sum, so C = beta * C.
  uint64_t seed = 600;
  for (float beta : {0.5f, 1.f, 0.f}) {
    Gemm g;
    g.m = 4, g.n = 3, g.k = 0, g.alpha = 2.f, g.beta = beta, g.ldc_pad = 2;
    expect_gemm(g, seed += 10);
  }
}

TEST_F(CublasTest, EmptyResultIsNoOp) {
  // m = 0 or n = 0: nothing is computed and nothing is written.
  for (int which = 0; which < 2; ++which) {
    Gemm g;
    g.m = which == 0 ? 0 : 5, g.n = which == 0 ? 4 : 0, g.k = 3, g.alpha = 1.f, g.beta = 0.f;
    const std::vector<float> A = make_matrix(g.rows_a(), g.cols_a(), g.lda(), 700);
    const std::vector<float> B = make_matrix(g.rows_b(), g.cols_b(), g.ldb(), 701);
    const std::vector<float> C(16, kSentinel);
    DeviceBuffer<float> dA(A), dB(B), dC(C);
    CUBLAS_CHECK(cublasSgemm(handle_, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, dA.get(), g.lda(),
                             dB.get(), g.ldb(), &g.beta, dC.get(), g.ldc()));
    EXPECT_EQ(dC.to_host(), C) << g.describe();
  }
}

TEST_F(CublasTest, LargerSizesWithPadding) {
  // Big enough for OpenBLAS's blocked kernels and edge tiles.
  uint64_t seed = 800;
  for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
    for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
      Gemm g;
      g.ta = ta, g.tb = tb, g.m = 67, g.n = 45, g.k = 131;
      g.lda_pad = 5, g.ldb_pad = 1, g.ldc_pad = 3, g.alpha = 0.75f, g.beta = -0.5f;
      expect_gemm(g, seed += 10);
    }
}

TEST_F(CublasTest, DevicePointerModeReadsScalarsFromDeviceMemory) {
  Gemm g;
  g.ta = CUBLAS_OP_N, g.tb = CUBLAS_OP_T, g.m = 5, g.n = 6, g.k = 7;
  g.alpha = -0.5f, g.beta = 1.5f;
  const std::vector<float> A = make_matrix(g.rows_a(), g.cols_a(), g.lda(), 900);
  const std::vector<float> B = make_matrix(g.rows_b(), g.cols_b(), g.ldb(), 901);
  const std::vector<float> C = make_matrix(g.m, g.n, g.ldc(), 902);
  const Reference ref = reference_gemm(g, A, B, C);
  DeviceBuffer<float> dA(A), dB(B), dC(C), dScalars(std::vector<float>{g.alpha, g.beta});
  CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_DEVICE));
  CUBLAS_CHECK(cublasSgemm(handle_, g.ta, g.tb, g.m, g.n, g.k, dScalars.get(), dA.get(), g.lda(),
                           dB.get(), g.ldb(), dScalars.get() + 1, dC.get(), g.ldc()));
  CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
  EXPECT_TRUE(all_close(dC.to_host(), ref.c, {.atol = ref.atol, .rtol = 0}));
}

TEST_F(CublasTest, StridedBatchedWithGapsBetweenBatches) {
  Gemm g;
  g.m = 5, g.n = 4, g.k = 6, g.alpha = 1.f, g.beta = 0.f;
  expect_strided(g, /*batch=*/3, /*gap=*/7, 1000);

  g.ta = CUBLAS_OP_T, g.tb = CUBLAS_OP_C, g.lda_pad = 2, g.ldc_pad = 3;
  g.alpha = 0.5f, g.beta = 2.f;
  expect_strided(g, /*batch=*/4, /*gap=*/13, 1100);

  // strideA = 0: every batch multiplies the same A (shared weights).
  g.ta = CUBLAS_OP_N, g.tb = CUBLAS_OP_N, g.beta = 0.f;
  expect_strided(g, /*batch=*/3, /*gap=*/5, 1200, /*shared_a=*/true);
}

TEST_F(CublasTest, StridedBatchedBatchCount) {
  std::vector<float> buf(64, kSentinel);
  DeviceBuffer<float> dA(buf), dB(buf), dC(buf);
  const float alpha = 1.f, beta = 0.f;
  // batchCount = 0: nothing to do.
  EXPECT_EQ(cublasSgemmStridedBatched(handle_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha,
                                      dA.get(), 2, 4, dB.get(), 2, 4, &beta, dC.get(), 2, 4, 0),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSgemmStridedBatched(handle_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha,
                                      dA.get(), 2, 4, dB.get(), 2, 4, &beta, dC.get(), 2, 4, -1),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(dC.to_host(), buf);
}

TEST_F(CublasTest, BadArgumentsReturnInvalidValueAndWriteNothing) {
  // The checks cuBLAS documents for gemm: m, n, k >= 0; trans in {N, T, C};
  // lda >= max(1, rows of A as stored) = max(1, transa == N ? m : k);
  // ldb >= max(1, transb == N ? k : n); ldc >= max(1, m); alpha, beta != NULL.
  struct Bad {
    const char* what;
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    bool null_alpha;
  };
  const auto N = CUBLAS_OP_N, T = CUBLAS_OP_T;
  const Bad bad[] = {
      {"m < 0", N, N, -1, 5, 9, 7, 9, 7, false},
      {"n < 0", N, N, 7, -1, 9, 7, 9, 7, false},
      {"k < 0", N, N, 7, 5, -1, 7, 9, 7, false},
      // CONJG (3), a placeholder, is the one invalid value an enum of 0..3
      // may hold (anything larger would be undefined behaviour here).
      {"transa CONJG", CUBLAS_OP_CONJG, N, 7, 5, 9, 9, 9, 7, false},
      {"transb CONJG", N, CUBLAS_OP_CONJG, 7, 5, 9, 7, 9, 7, false},
      {"lda < m (N)", N, N, 7, 5, 9, 6, 9, 7, false},
      {"lda < k (T), though >= m", T, N, 7, 5, 9, 8, 9, 7, false},
      {"ldb < k (N)", N, N, 7, 5, 9, 7, 8, 7, false},
      {"ldb < n (T), though >= k", N, T, 7, 15, 9, 7, 14, 7, false},
      {"ldc < m", N, N, 7, 5, 9, 7, 9, 6, false},
      {"lda = 0 with m = 0", N, N, 0, 5, 9, 0, 9, 1, false},
      {"alpha NULL", N, N, 7, 5, 9, 7, 9, 7, true},
  };
  const std::vector<float> buf = random_floats(512, 1300);
  DeviceBuffer<float> dA(buf), dB(buf), dC(buf);
  const float alpha = 1.f, beta = 0.f;
  for (const Bad& b : bad) {
    EXPECT_EQ(cublasSgemm(handle_, b.ta, b.tb, b.m, b.n, b.k, b.null_alpha ? nullptr : &alpha,
                          dA.get(), b.lda, dB.get(), b.ldb, &beta, dC.get(), b.ldc),
              CUBLAS_STATUS_INVALID_VALUE)
        << b.what;
    EXPECT_EQ(cublasSgemmStridedBatched(handle_, b.ta, b.tb, b.m, b.n, b.k,
                                        b.null_alpha ? nullptr : &alpha, dA.get(), b.lda, 0,
                                        dB.get(), b.ldb, 0, &beta, dC.get(), b.ldc, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE)
        << b.what << " (strided batched)";
  }
  EXPECT_EQ(dC.to_host(), buf) << "a rejected call wrote C";
}

TEST(CublasHandle, NullHandleIsNotInitialized) {
  const std::vector<float> buf(16, 1.f);
  DeviceBuffer<float> d(buf);
  const float alpha = 1.f, beta = 0.f;
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, d.get(), 2, d.get(), 2,
                        &beta, d.get(), 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSgemmStridedBatched(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, d.get(),
                                      2, 4, d.get(), 2, 4, &beta, d.get(), 2, 4, 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSetStream(nullptr, nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSetPointerMode(nullptr, CUBLAS_POINTER_MODE_HOST),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSetMathMode(nullptr, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(d.to_host(), buf);
}

TEST_F(CublasTest, HandleSettingsRoundTrip) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(0x1);
  CUBLAS_CHECK(cublasGetStream(handle_, &stream));
  EXPECT_EQ(stream, nullptr) << "a new handle uses the default stream";
  CUBLAS_CHECK(cublasSetStream(handle_, nullptr));

  cublasPointerMode_t pm = CUBLAS_POINTER_MODE_DEVICE;
  CUBLAS_CHECK(cublasGetPointerMode(handle_, &pm));
  EXPECT_EQ(pm, CUBLAS_POINTER_MODE_HOST) << "host pointer mode is the default";
  CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_DEVICE));
  CUBLAS_CHECK(cublasGetPointerMode(handle_, &pm));
  EXPECT_EQ(pm, CUBLAS_POINTER_MODE_DEVICE);
  CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));

  cublasMath_t mm = CUBLAS_TF32_TENSOR_OP_MATH;
  CUBLAS_CHECK(cublasGetMathMode(handle_, &mm));
  EXPECT_EQ(mm, CUBLAS_DEFAULT_MATH);
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH));
  CUBLAS_CHECK(cublasGetMathMode(handle_, &mm));
  EXPECT_EQ(mm, CUBLAS_PEDANTIC_MATH);
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
}

TEST(CublasStatus, EveryStatusHasANameAndADescription) {
  const std::pair<cublasStatus_t, const char*> statuses[] = {
      {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS"},
      {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED"},
      {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED"},
      {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE"},
      {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH"},
      {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR"},
      {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED"},
      {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR"},
      {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED"},
      {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR"},
  };
  for (const auto& [status, name] : statuses) {
    EXPECT_STREQ(cublasGetStatusName(status), name);
    ASSERT_NE(cublasGetStatusString(status), nullptr);
    EXPECT_GT(std::string(cublasGetStatusString(status)).size(), 0u) << name;
  }
}

}  // namespace

// Double precision (used by the engine's finite-difference gradient checks):
// every transpose case with padded leading dimensions, and strided batches,
// against a plain loop. Both sides accumulate in double over k <= 13 terms
// of magnitude <= 1, so they agree to ~1e-15.
namespace {
void naive_dgemm(bool ta, bool tb, int m, int n, int k, double alpha, const std::vector<double>& A,
                 int lda, const std::vector<double>& B, int ldb, double beta,
                 std::vector<double>& C, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p)
        acc += (ta ? A[size_t(i) * lda + p] : A[size_t(p) * lda + i]) *
               (tb ? B[size_t(p) * ldb + j] : B[size_t(j) * ldb + p]);
      C[size_t(j) * ldc + i] = alpha * acc + beta * C[size_t(j) * ldc + i];
    }
}
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
}  // namespace

TEST(CublasDouble, DgemmEveryTransposeAndStridedBatched) {
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const int m = 7, n = 5, k = 13, batches = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
      const size_t sa = size_t(lda) * (ta ? m : k) + 5, sb = size_t(ldb) * (tb ? k : n) + 4,
                   sc = size_t(ldc) * n + 6;
      const auto A = to_double(random_floats(sa * batches, 1));
      const auto B = to_double(random_floats(sb * batches, 2));
      auto C = to_double(random_floats(sc * batches, 3));
      DeviceBuffer<double> dA(A), dB(B), dC(C);
      const double alpha = 0.75, beta = -0.5;
      const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
      ASSERT_EQ(cublasDgemmStridedBatched(h, oa, ob, m, n, k, &alpha, dA.get(), lda, (long long)sa,
                                          dB.get(), ldb, (long long)sb, &beta, dC.get(), ldc,
                                          (long long)sc, batches),
                CUBLAS_STATUS_SUCCESS);
      std::vector<double> want = C;
      for (int b = 0; b < batches; ++b) {
        std::vector<double> a(A.begin() + b * sa, A.begin() + (b + 1) * sa),
            bb(B.begin() + b * sb, B.begin() + (b + 1) * sb),
            c(want.begin() + b * sc, want.begin() + (b + 1) * sc);
        naive_dgemm(ta, tb, m, n, k, alpha, a, lda, bb, ldb, beta, c, ldc);
        std::copy(c.begin(), c.end(), want.begin() + b * sc);
      }
      EXPECT_TRUE(all_close(dC.to_host(), want, {1e-13, 1e-13})) << "ta " << ta << " tb " << tb;
      // The single-matrix call equals batch 0.
      DeviceBuffer<double> dC1(C);
      ASSERT_EQ(cublasDgemm(h, oa, ob, m, n, k, &alpha, dA.get(), lda, dB.get(), ldb, &beta,
                            dC1.get(), ldc),
                CUBLAS_STATUS_SUCCESS);
      const auto got1 = dC1.to_host();
      EXPECT_TRUE(all_close(std::vector<double>(got1.begin(), got1.begin() + sc),
                            std::vector<double>(want.begin(), want.begin() + sc), {1e-13, 1e-13}));
      int bad_ld = 0;
      EXPECT_EQ(cublasDgemm(h, oa, ob, m, n, k, &alpha, dA.get(), bad_ld, dB.get(), ldb, &beta,
                            dC1.get(), ldc),
                CUBLAS_STATUS_INVALID_VALUE);
    }
  cublasDestroy(h);
}
