#include "kernels/knn.cuh"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

// ===========================================================================
// Argument checks.

namespace {

[[noreturn]] void fail_rule(const char* op, const char* arg, long long v, const char* rule) {
  throw std::invalid_argument(std::string(op) + ": " + arg + " must be " + rule + ", not " +
                              std::to_string(v));
}

}  // namespace

// ===========================================================================
// CPU references.

void column_stats_cpu(const float* x, long long n, int d, double* mean, double* var) {
  for (int j = 0; j < d; ++j) {
    double s = 0;
    for (long long i = 0; i < n; ++i) s += x[i * d + j];
    const double m = s / double(n);
    double q = 0;
    for (long long i = 0; i < n; ++i) q += (x[i * d + j] - m) * (x[i * d + j] - m);
    mean[j] = m;
    var[j] = q / double(n);
  }
}

void standardize_columns_cpu(float* x, long long n, int d, const double* mean,
                             const double* var) {
  for (long long i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j)
      x[i * d + j] = float((x[i * d + j] - mean[j]) / standard_scale(mean[j], var[j]));
}

void orthonormalize_columns_cpu(float* q, int rows, int cols, int* rank) {
  std::vector<double> a(q, q + (size_t)rows * cols);
  int r = 0;
  for (int j = 0; j < cols; ++j) {
    double* aj = a.data() + (size_t)j * rows;
    double n0 = 0;
    for (int i = 0; i < rows; ++i) n0 += aj[i] * aj[i];
    for (int pass = 0; pass < 2; ++pass)
      for (int p = 0; p < j; ++p) {  // modified: subtract one projection at a time
        const double* ap = a.data() + (size_t)p * rows;
        double dot = 0;
        for (int i = 0; i < rows; ++i) dot += ap[i] * aj[i];
        for (int i = 0; i < rows; ++i) aj[i] -= dot * ap[i];
      }
    double n1 = 0;
    for (int i = 0; i < rows; ++i) n1 += aj[i] * aj[i];
    const bool keep = n0 > 0 && std::sqrt(n1) > kOrthoDropTol * std::sqrt(n0);
    for (int i = 0; i < rows; ++i) aj[i] = keep ? aj[i] / std::sqrt(n1) : 0.0;
    r += keep;
  }
  for (size_t i = 0; i < a.size(); ++i) q[i] = float(a[i]);
  if (rank) *rank = r;
}

void fix_column_signs_cpu(float* w, int rows, int cols) {
  for (int j = 0; j < cols; ++j) {
    float* c = w + (size_t)j * rows;
    int best = 0;
    for (int i = 1; i < rows; ++i)
      if (std::fabs(c[i]) > std::fabs(c[best])) best = i;
    if (c[best] < 0)
      for (int i = 0; i < rows; ++i) c[i] = -c[i];
  }
}

void knn_search_cpu(const float* queries, int m, const float* refs, int n, int dim, int k,
                    int* index, float* dist2) {
  // All n distances, then a stable sort by distance: the lower index first
  // among equals. A different selection method from the kernel's insertion.
  std::vector<float> d(static_cast<size_t>(n));
  std::vector<int> order(static_cast<size_t>(n));
  for (int q = 0; q < m; ++q) {
    for (int r = 0; r < n; ++r) {
      float s = 0.f;
      for (int c = 0; c < dim; ++c) {
        const float diff = queries[(size_t)q * dim + c] - refs[(size_t)r * dim + c];
        s = std::fma(diff, diff, s);
      }
      d[size_t(r)] = s;
      order[size_t(r)] = r;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return d[size_t(a)] < d[size_t(b)]; });
    for (int j = 0; j < k; ++j) {
      index[(size_t)q * k + j] = order[size_t(j)];
      dist2[(size_t)q * k + j] = d[size_t(order[size_t(j)])];
    }
  }
}

void knn_vote_cpu(const int* index, const float* dist2, int m, int k, const int* ref_labels,
                  int classes, float* probs) {
  for (int q = 0; q < m; ++q) {
    std::vector<double> p(static_cast<size_t>(classes), 0.0);
    bool exact = false;
    for (int j = 0; j < k; ++j) exact = exact || dist2[(size_t)q * k + j] == 0.f;
    double total = 0;
    for (int j = 0; j < k; ++j) {
      const double d2 = dist2[(size_t)q * k + j];
      const double w = exact ? (d2 == 0 ? 1.0 : 0.0) : 1.0 / std::sqrt(d2);
      p[size_t(ref_labels[index[(size_t)q * k + j]])] += w;
      total += w;
    }
    for (int c = 0; c < classes; ++c) probs[(size_t)q * classes + c] = float(p[size_t(c)] / total);
  }
}

// ===========================================================================
// Kernels.

namespace {

// One thread per column j: two passes down the column (mean, then the sum
// of squared deviations), double accumulators. Consecutive threads read
// consecutive addresses of each row.
__global__ void column_stats_kernel(const float* __restrict__ x, long long n, int d,
                                    double* __restrict__ mean, double* __restrict__ var) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += blockDim.x * gridDim.x) {
    double s = 0;
    for (long long i = 0; i < n; ++i) s += x[i * d + j];
    const double m = s / double(n);
    double q = 0;
    for (long long i = 0; i < n; ++i) {
      const double e = x[i * d + j] - m;
      q += e * e;
    }
    mean[j] = m;
    var[j] = q / double(n);
  }
}

// One thread per element, 64-bit grid-stride loop. The division is done in
// double, as in the reference, then rounded once to float.
__global__ void standardize_kernel(float* __restrict__ x, long long total, int d,
                                   const double* __restrict__ mean,
                                   const double* __restrict__ var) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int j = int(e % d);
    x[e] = float((x[e] - mean[j]) / standard_scale(mean[j], var[j]));
  }
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The block-wide sums of `count` per-thread values v[0..count): each warp
// butterflies its values, lane 0 stores them in partial[warp][*], one
// barrier, threads i < count add the warps' partials into out[i], a second
// barrier; every thread then reads out[0..count). The caller must not write
// `partial` or `out` again before a barrier that all threads pass after
// reading out (the next call's first barrier is one).
__device__ void block_sums(const double* v, int count, double (*partial)[kOrthoMaxCols + 1],
                           double* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int i = 0; i < count; ++i) {
    const double s = warp_sum(v[i]);
    if (lane == 0) partial[warp][i] = s;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    double s = 0;
    for (int w = 0; w < warps; ++w) s += partial[w][i];
    out[i] = s;
  }
  __syncthreads();
}

// CGS2 on a column-major rows x cols matrix, one block (see the header).
// Thread t owns rows t, t + B, ...; acc holds its share of the j dot
// products of the current step, plus one slot (index j) for |q_j|^2.
__global__ void orthonormalize_kernel(float* __restrict__ q, int rows, int cols,
                                      int* __restrict__ rank) {
  __shared__ double partial[32][kOrthoMaxCols + 1];
  __shared__ double sums[kOrthoMaxCols + 1];
  double acc[kOrthoMaxCols + 1];
  int kept = 0;
  for (int j = 0; j < cols; ++j) {
    float* qj = q + (size_t)j * rows;
    // |q_j|^2 before the projections.
    acc[0] = 0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) acc[0] += double(qj[i]) * qj[i];
    block_sums(acc, 1, partial, sums);
    const double norm0 = sqrt(sums[0]);
    for (int pass = 0; pass < 2 && j > 0; ++pass) {
      // r = Q[:, :j]^T q_j, all j dot products in one reduction.
      for (int p = 0; p < j; ++p) acc[p] = 0;
      for (int i = threadIdx.x; i < rows; i += blockDim.x) {
        const double v = qj[i];
        for (int p = 0; p < j; ++p) acc[p] += double(q[(size_t)p * rows + i]) * v;
      }
      block_sums(acc, j, partial, sums);
      // q_j -= Q[:, :j] r: each thread updates its own rows only.
      for (int i = threadIdx.x; i < rows; i += blockDim.x) {
        double v = qj[i];
        for (int p = 0; p < j; ++p) v -= sums[p] * q[(size_t)p * rows + i];
        qj[i] = float(v);
      }
    }
    acc[0] = 0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) acc[0] += double(qj[i]) * qj[i];
    block_sums(acc, 1, partial, sums);
    const double norm1 = sqrt(sums[0]);
    const bool keep = norm0 > 0 && norm1 > kOrthoDropTol * norm0;
    const double scale = keep ? 1.0 / norm1 : 0.0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) qj[i] = float(qj[i] * scale);
    kept += keep;
    // The next column reads these rows only through this thread's own
    // loops (the same ownership), so no barrier is needed here; the
    // shared sums are protected by block_sums's barriers.
  }
  if (rank && threadIdx.x == 0) *rank = kept;
}

// One block per column: the largest |w| (lowest row among equals), then the
// column is multiplied by that entry's sign.
__global__ void fix_signs_kernel(float* __restrict__ w, int rows) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  __shared__ float sign;
  float* c = w + (size_t)blockIdx.x * rows;
  float bv = -1.f;  // |w| >= 0 always beats it
  int bi = rows;
  for (int i = threadIdx.x; i < rows; i += blockDim.x) {
    const float a = fabsf(c[i]);
    if (a > bv) {  // rows visited in increasing order: strict keeps the lowest
      bv = a;
      bi = i;
    }
  }
  // Warp then block arg-max; the order of combination does not matter
  // because the rule (larger value, then lower row) is a total order.
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, offset);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 1; k < int(blockDim.x >> 5); ++k)
      if (best_v[k] > bv || (best_v[k] == bv && best_i[k] < bi)) {
        bv = best_v[k];
        bi = best_i[k];
      }
    sign = (bi < rows && c[bi] < 0) ? -1.f : 1.f;
  }
  __syncthreads();
  const float sg = sign;
  if (sg < 0)
    for (int i = threadIdx.x; i < rows; i += blockDim.x) c[i] = -c[i];
}

// One thread per query; the block walks the references in tiles of
// blockDim.x rows staged in shared memory (blockDim.x * dim floats).
__global__ void knn_search_kernel(const float* __restrict__ queries, int m,
                                  const float* __restrict__ refs, int n, int dim, int k,
                                  int* __restrict__ index, float* __restrict__ dist2) {
  float* tile = simcuda::dynamic_shared<float>();
  const int qi = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = qi < m;
  float query[kKnnMaxDim];
  float best_d[kKnnMaxK];
  int best_i[kKnnMaxK];
  for (int c = 0; c < dim; ++c) query[c] = active ? queries[(size_t)qi * dim + c] : 0.f;
  for (int j = 0; j < k; ++j) {
    best_d[j] = INFINITY;
    best_i[j] = -1;
  }
  for (int base = 0; base < n; base += blockDim.x) {
    const int rows = min((int)blockDim.x, n - base);
    // Cooperative, coalesced copy of refs[base .. base + rows) (contiguous).
    for (int e = threadIdx.x; e < rows * dim; e += blockDim.x)
      tile[e] = refs[(size_t)base * dim + e];
    __syncthreads();
    if (active)
      for (int r = 0; r < rows; ++r) {
        float s = 0.f;
        const float* t = tile + r * dim;
        for (int c = 0; c < dim; ++c) {
          const float diff = query[c] - t[c];
          s = fmaf(diff, diff, s);
        }
        if (s < best_d[k - 1]) {  // strictly nearer: equals keep the lower index
          int p = k - 1;
          while (p > 0 && best_d[p - 1] > s) {  // shift the farther ones down
            best_d[p] = best_d[p - 1];
            best_i[p] = best_i[p - 1];
            --p;
          }
          best_d[p] = s;
          best_i[p] = base + r;
        }
      }
    __syncthreads();  // the tile is overwritten next
  }
  if (active)
    for (int j = 0; j < k; ++j) {
      index[(size_t)qi * k + j] = best_i[j];
      dist2[(size_t)qi * k + j] = best_d[j];
    }
}

// One thread per query: weights (exact matches win), per-class sums in double.
__global__ void knn_vote_kernel(const int* __restrict__ index, const float* __restrict__ dist2,
                                int m, int k, const int* __restrict__ labels, int classes,
                                float* __restrict__ probs) {
  for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < m; q += blockDim.x * gridDim.x) {
    const int* idx = index + (size_t)q * k;
    const float* d2 = dist2 + (size_t)q * k;
    bool exact = false;
    for (int j = 0; j < k; ++j) exact = exact || d2[j] == 0.f;
    double w[kKnnMaxK];
    double total = 0;
    for (int j = 0; j < k; ++j) {
      w[j] = exact ? (d2[j] == 0.f ? 1.0 : 0.0) : 1.0 / sqrt(double(d2[j]));
      total += w[j];
    }
    float* out = probs + (size_t)q * classes;
    for (int c = 0; c < classes; ++c) {
      double s = 0;
      for (int j = 0; j < k; ++j)
        if (labels[idx[j]] == c) s += w[j];
      out[c] = float(s / total);
    }
  }
}

}  // namespace

// ===========================================================================
// Launchers.

void column_stats(const float* d_x, long long n, int d, double* d_mean, double* d_var,
                  cudaStream_t s, int block) {
  const char* op = "column_stats";
  if (n < 1) fail_rule(op, "n", n, ">= 1");
  if (d < 1) fail_rule(op, "d", d, ">= 1");
  check_block(op, block);
  check_pointer(op, d_x, "x");
  check_pointer(op, d_mean, "mean");
  check_pointer(op, d_var, "var");
  LAUNCH(column_stats_kernel, grid_1d(d, unsigned(block)), block, 0, s, d_x, n, d, d_mean, d_var);
}

void standardize_columns(float* d_x, long long n, int d, const double* d_mean,
                         const double* d_var, cudaStream_t s, int block) {
  const char* op = "standardize_columns";
  if (n < 0) fail_rule(op, "n", n, ">= 0");
  if (d < 1) fail_rule(op, "d", d, ">= 1");
  check_block(op, block);
  if (n == 0) return;
  check_pointer(op, d_x, "x");
  check_pointer(op, d_mean, "mean");
  check_pointer(op, d_var, "var");
  const long long total = n * d;
  LAUNCH(standardize_kernel, grid_1d(total, unsigned(block)), block, 0, s, d_x, total, d, d_mean,
         d_var);
}

void orthonormalize_columns(float* d_q, int rows, int cols, int* d_rank, cudaStream_t s,
                            int block) {
  const char* op = "orthonormalize_columns";
  if (rows < 1) fail_rule(op, "rows", rows, ">= 1");
  if (cols < 1 || cols > kOrthoMaxCols) fail_rule(op, "cols", cols, "in [1, kOrthoMaxCols = 64]");
  check_block(op, block);
  check_pointer(op, d_q, "q");
  LAUNCH(orthonormalize_kernel, 1, block, 0, s, d_q, rows, cols, d_rank);
}

void fix_column_signs(float* d_w, int rows, int cols, cudaStream_t s, int block) {
  const char* op = "fix_column_signs";
  if (rows < 1) fail_rule(op, "rows", rows, ">= 1");
  if (cols < 0) fail_rule(op, "cols", cols, ">= 0");
  check_block(op, block);
  if (cols == 0) return;
  check_pointer(op, d_w, "w");
  LAUNCH(fix_signs_kernel, unsigned(cols), block, 0, s, d_w, rows);
}

void knn_search(const float* d_queries, int m, const float* d_refs, int n, int dim, int k,
                int* d_index, float* d_dist2, cudaStream_t s, int block) {
  const char* op = "knn_search";
  if (m < 0) fail_rule(op, "m", m, ">= 0");
  if (n < 1) fail_rule(op, "n", n, ">= 1");
  if (dim < 1 || dim > kKnnMaxDim) fail_rule(op, "dim", dim, "in [1, kKnnMaxDim = 64]");
  if (k < 1 || k > kKnnMaxK || k > n) fail_rule(op, "k", k, "in [1, min(kKnnMaxK = 32, n)]");
  check_block(op, block);
  if (m == 0) return;
  check_pointer(op, d_queries, "queries");
  check_pointer(op, d_refs, "refs");
  check_pointer(op, d_index, "index");
  check_pointer(op, d_dist2, "dist2");
  const size_t smem = size_t(block) * dim * sizeof(float);  // at most 256 KiB: checked by simcuda
  if (smem > 48 * 1024)
    throw std::invalid_argument("knn_search: block * dim * 4 = " + std::to_string(smem) +
                                " bytes of shared memory exceeds 48 KiB; use a smaller block");
  LAUNCH(knn_search_kernel, unsigned(ceil_div(m, block)), block, smem, s, d_queries, m, d_refs, n,
         dim, k, d_index, d_dist2);
}

void knn_vote(const int* d_index, const float* d_dist2, int m, int k, const int* d_ref_labels,
              int classes, float* d_probs, cudaStream_t s, int block) {
  const char* op = "knn_vote";
  if (m < 0) fail_rule(op, "m", m, ">= 0");
  if (k < 1 || k > kKnnMaxK) fail_rule(op, "k", k, "in [1, kKnnMaxK = 32]");
  if (classes < 1) fail_rule(op, "classes", classes, ">= 1");
  check_block(op, block);
  if (m == 0) return;
  check_pointer(op, d_index, "index");
  check_pointer(op, d_dist2, "dist2");
  check_pointer(op, d_ref_labels, "ref_labels");
  check_pointer(op, d_probs, "probs");
  LAUNCH(knn_vote_kernel, grid_1d(m, unsigned(block)), block, 0, s, d_index, d_dist2, m, k,
         d_ref_labels, classes, d_probs);
}

}  // namespace timbre::kernels
