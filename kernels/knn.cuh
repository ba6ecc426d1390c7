// knn: the device kernels of the paper's baselines (PCA + k-nearest
// neighbours, PCA + RBF SVM; tools/baseline.h runs them). Design:
// docs/baseline.md.
//
// Every matrix here is a flat float array. "Row-major n x d" means element
// (i, j) at i*d + j (one sample per row: the HDF5 store's layout, flattened);
// "column-major rows x cols" means element (r, c) at c*rows + r (cuBLAS's
// layout, used for the tall thin bases of the PCA).
//
// 1. Column statistics and standardisation (scikit-learn's StandardScaler):
//      mean_j = (1/n) sum_i x_ij,   var_j = (1/n) sum_i (x_ij - mean_j)^2
//    (population variance, ddof 0; two passes, summed in double, so no
//    E[x^2] - E[x]^2 cancellation), then
//      x_ij <- (x_ij - mean_j) / s_j,  s_j = sqrt(var_j), or s_j = 1 when
//    the column is constant: sqrt(var_j) <= kStdFloor * max(1, |mean_j|)
//    (a constant column becomes 0 instead of 0/0; scikit-learn does the
//    same with an absolute floor of 10 float64 epsilons).
//
// 2. Orthonormalising the columns of a tall column-major matrix Q (rows x
//    cols, cols <= kOrthoMaxCols): classical Gram-Schmidt applied twice
//    ("CGS2": twice is enough, Giraud et al. 2005) column by column:
//      for j = 0..cols-1:  repeat 2 times: r = Q[:, :j]^T q_j,  q_j -= Q[:, :j] r
//                          q_j /= |q_j|
//    with every dot product summed in double. A column whose norm after the
//    projections is below kOrthoDropTol times its norm before is (to float
//    precision) in the span of the earlier ones: it is set to 0, so the
//    basis has fewer than `cols` directions (rank-deficient data); the other
//    columns stay orthonormal.
//
// 3. Sign convention of the principal components (columns of W, rows x
//    cols column-major): each column is multiplied by the sign of its entry
//    of largest magnitude (ties: the lowest row), so that entry is positive
//    (scikit-learn's svd_flip on the rows of V^T). An all-zero column stays 0.
//
// 4. k nearest neighbours of m queries among n references, both row-major
//    with `dim` columns, by squared Euclidean distance
//      d2(q, r) = sum_c (q_c - r_c)^2,  summed in float in order c = 0..dim-1
//    with one fma per term (s = fmaf(diff, diff, s)): the CPU reference does
//    the same correctly rounded operations, so both give the same bits.
//    Output per query: the k indices and squared distances, nearest first.
//    Ties: among equal distances the lower reference index comes first (a
//    candidate replaces a kept neighbour only when strictly nearer), so the
//    result does not depend on the thread order or the block size.
//
// 5. Distance-weighted voting (scikit-learn's weights='distance'): with
//    d_j = sqrt(d2_j) the distances of the k neighbours,
//      if some d_j == 0:  w_j = 1 for the exact matches, 0 for the others
//                         (an exact match wins outright, no 1/0)
//      else:              w_j = 1 / d_j
//      P[c] = sum_{j: label_j = c} w_j / sum_j w_j        (in double)
//    Ties between classes are left to the argmax that reads P (timbre's
//    metrics: the lowest class index).
//
// Parallel strategy:
//   column_stats: one thread per column, a grid-stride loop over columns;
//     the threads of a warp read consecutive columns of the same row, so
//     every load of a row is coalesced. Two passes over the column, double
//     accumulators in registers, no barrier (simcuda's fast path).
//   standardize_columns: one thread per element, grid-stride, 64-bit indices
//     (n*d may pass 2^31: 20,000 spectrograms of 16,384 values), no barrier.
//   orthonormalize_columns: ONE block (the matrix is tall and thin: 16,384 x
//     25 is 400k values, a few microseconds of work). Thread t owns rows t,
//     t + B, t + 2B, ...; the j dot products of a projection step are summed
//     per thread, reduced per warp with __shfl_xor_sync, then across warps
//     through shared memory: three barriers per step, 2 steps per column.
//   fix_column_signs: one block per column: per-thread (|max|, row), a warp
//     and block reduction to the largest entry, then the block scales it.
//   knn_search: one thread per query, its query row and its sorted k-best
//     list in registers; a block stages tiles of `block` reference rows in
//     shared memory (cooperative coalesced loads, two barriers per tile), so
//     each reference is read from global memory once per block, not once
//     per query. Insertion into the sorted list is O(k) and rare after the
//     first tiles.
//   knn_vote: one thread per query, no barrier.
//
// Argument rules (std::invalid_argument naming the launcher, the argument
// and its value): sizes >= 0 where 0 is a no-op, otherwise >= 1; block a
// multiple of 32 in [32, 1024]; dim <= kKnnMaxDim, 1 <= k <= min(kKnnMaxK,
// n); cols <= kOrthoMaxCols; device pointers not null when there is work.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "kernels/cost.h"

namespace timbre::kernels {

constexpr double kStdFloor = 1e-10;      // relative floor below which a column is constant
constexpr double kOrthoDropTol = 1e-5;   // see 2. above: float roundoff is ~1e-7
constexpr int kOrthoMaxCols = 64;        // per-thread dot-product accumulators
constexpr int kKnnMaxDim = 64;           // a query row in registers
constexpr int kKnnMaxK = 32;             // the k-best list in registers

// The scale of a column given its mean and population variance (rule 1).
__host__ __device__ inline double standard_scale(double mean, double var) {
  const double s = var > 0 ? sqrt(var) : 0.0;
  const double am = mean < 0 ? -mean : mean;
  return s <= kStdFloor * (am > 1 ? am : 1) ? 1.0 : s;
}

// ---------------------------------------------------------------------------
// Launchers.

// x: row-major n x d. mean, var: d doubles each (var is ddof 0). n >= 1.
void column_stats(const float* d_x, long long n, int d, double* d_mean, double* d_var,
                  cudaStream_t s, int block = 256);

// In place: x_ij = (x_ij - mean_j) / standard_scale(mean_j, var_j). n >= 0.
void standardize_columns(float* d_x, long long n, int d, const double* d_mean,
                         const double* d_var, cudaStream_t s, int block = 256);

// In place, q column-major rows x cols (rule 2). Returns nothing; the number
// of nonzero columns left is written to *d_rank when d_rank is not null.
void orthonormalize_columns(float* d_q, int rows, int cols, int* d_rank, cudaStream_t s,
                            int block = 256);

// In place, w column-major rows x cols (rule 3).
void fix_column_signs(float* d_w, int rows, int cols, cudaStream_t s, int block = 256);

// queries: row-major m x dim, refs: row-major n x dim. index, dist2: m x k
// row-major, nearest first (rule 4).
void knn_search(const float* d_queries, int m, const float* d_refs, int n, int dim, int k,
                int* d_index, float* d_dist2, cudaStream_t s, int block = 128);

// index, dist2: m x k from knn_search; ref_labels: n labels in [0, classes)
// (not checked on the device: the caller validates them); probs: m x classes
// row-major (rule 5).
void knn_vote(const int* d_index, const float* d_dist2, int m, int k, const int* d_ref_labels,
              int classes, float* d_probs, cudaStream_t s, int block = 128);

// ---------------------------------------------------------------------------
// References: plain loops, double sums where the kernels sum in double; the
// same tie rules and the same float distance arithmetic as the kernels.

void column_stats_cpu(const float* x, long long n, int d, double* mean, double* var);
void standardize_columns_cpu(float* x, long long n, int d, const double* mean,
                             const double* var);
// Modified Gram-Schmidt in double, then rounded to float (a different
// algorithm from the kernel's CGS2: it checks the result, not the steps).
void orthonormalize_columns_cpu(float* q, int rows, int cols, int* rank);
void fix_column_signs_cpu(float* w, int rows, int cols);
void knn_search_cpu(const float* queries, int m, const float* refs, int n, int dim, int k,
                    int* index, float* dist2);
void knn_vote_cpu(const int* index, const float* dist2, int m, int k, const int* ref_labels,
                  int classes, float* probs);

// ---------------------------------------------------------------------------
// Costs, for benchmarks (an add, multiply or compare is one operation).

inline Cost knn_search_cost(double m, double n, double dim, double k) {
  // 2 ops per coordinate (sub, fma counts 2 -> 3) and a compare per
  // candidate; refs read once per block of 128 queries.
  return Cost{m * n * (3 * dim + 1), (m * dim + n * dim * (m / 128 + 1)) * 4 + m * k * 8};
}
inline Cost column_stats_cost(double n, double d) {
  return Cost{n * d * 4, 2 * n * d * 4 + d * 16};
}
inline Cost standardize_columns_cost(double n, double d) {
  return Cost{n * d * 2, 2 * n * d * 4 + d * 16};
}

}  // namespace timbre::kernels
