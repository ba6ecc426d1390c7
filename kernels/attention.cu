#include "kernels/attention.cuh"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/blas.h"
#include "kernels/common.cuh"
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"
#include "kernels/reference.h"
#include "kernels/softmax.cuh"

namespace timbre::kernels {

namespace {

// ===========================================================================
// Kernels.

// u = tanh(P + b) in place over the (B*S, A) matrix P = H W^T: one thread
// per element, consecutive threads on consecutive elements (coalesced); the
// bias index is the element's column.
template <class T>
__global__ void attention_bias_tanh_kernel(long long rows, int attn, T* u, const T* bias) {
  const long long n_items = rows * attn;
  const long long grid_stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_items;
       i += grid_stride)
    u[i] = tanh_of(u[i] + bias[i % attn]);
}

// out[b, d] = sum_t alpha[b, t] h[b, t, d]: one thread per (b, d), summing
// over t = 0..S-1 in order; consecutive threads read consecutive d
// (coalesced).
template <class T>
__global__ void attention_weighted_sum_kernel(int batch, int steps, int dim, const T* hseq,
                                              const T* alpha, T* out) {
  const long long n_items = (long long)batch * dim;
  const long long grid_stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_items;
       i += grid_stride) {
    const long long b = i / dim;
    const int d = int(i - b * dim);
    const T* a_row = alpha + b * steps;
    const T* h_col = hseq + b * steps * dim + d;
    T acc = T(0);
    for (int t = 0; t < steps; ++t) acc += a_row[t] * h_col[(long long)t * dim];
    out[i] = acc;
  }
}

// dP[row, a] = de[row] v[a] (1 - u)(1 + u): the gradient of the
// pre-activation P + b. One thread per element, coalesced.
template <class T>
__global__ void attention_score_backward_kernel(long long rows, int attn, const T* u,
                                                const T* v, const T* de, T* dp) {
  const long long n_items = rows * attn;
  const long long grid_stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_items;
       i += grid_stride) {
    const long long row = i / attn;
    const int a = int(i - row * attn);
    const T uu = u[i];
    dp[i] = de[row] * v[a] * ((T(1) - uu) * (T(1) + uu));
  }
}

void check_attention_shape(const char* op, const AttentionShape& shape, int block) {
  check_at_least(op, "batch", shape.batch, 0);
  check_at_least(op, "steps", shape.steps, 1);
  check_at_least(op, "dim", shape.dim, 1);
  check_at_least(op, "attn", shape.attn, 1);
  check_block(op, block);
  check_fits_int(op, "batch*steps", (long long)shape.batch * shape.steps);
}

}  // namespace

// ===========================================================================
// Attention. With R = B*S rows and the column-major views as above:
//   P^c (A x R)     = W^c^T (A x D) H^c (D x R)   gemm(T, N, A, R, D), then
//                     u = tanh(P + b) in place (the reserve)
//   e (R x 1)       = u^c^T (R x A) v (A x 1)     gemm(T, N, R, 1, A)
//   per sequence b (strided batch over B, H_b^c (D x S) at b*S*D):
//   dalpha_b (S x 1) = H_b^c^T (S x D) dout_b (D x 1)    gemm(T, N, S, 1, D)
//   dH_b^c (D x S)  (+)= dout_b (D x 1) alpha_b^T (1 x S) gemm(N, N, D, S, 1)
//   dv (A x 1)      = u^c (A x R) de (R x 1)      gemm(N, N, A, 1, R)
//   db (A x 1)      = dP^c (A x R) 1 (R x 1)      gemm(N, N, A, 1, R)
//   dW^c (D x A)    = H^c (D x R) dP^c^T (R x A)  gemm(N, T, D, A, R)
//   dH^c (D x R)   += W^c (D x A) dP^c (A x R)    gemm(N, N, D, R, A)

size_t attention_reserve_size(const AttentionShape& shape) {
  return size_t(shape.batch) * shape.steps * shape.attn;
}

size_t attention_backward_workspace_size(const AttentionShape& shape) {
  const size_t rows = size_t(shape.batch) * shape.steps;
  return rows * shape.attn + 3 * rows;
}

template <class T>
void attention_forward(cublasHandle_t handle, const AttentionShape& shape,
                       const AttentionWeights<T>& weights, const AttentionForwardData<T>& data,
                       T* d_reserve, cudaStream_t s, int block) {
  const char* op = "attention_forward";
  check_attention_shape(op, shape, block);
  if (shape.batch == 0) return;
  check_pointer(op, data.hseq, "hseq");
  check_pointer(op, weights.w, "w");
  check_pointer(op, weights.b, "b");
  check_pointer(op, weights.v, "v");
  check_pointer(op, data.out, "out");
  check_pointer(op, data.alpha, "alpha");
  check_pointer(op, d_reserve, "d_reserve");
  check_handle(op, handle, s);

  const int batch = shape.batch, steps = shape.steps, dim = shape.dim, attn = shape.attn;
  const int R = batch * steps;
  T* u = d_reserve;
  gemm(handle, {kT, kN, attn, R, dim, dim, dim, attn}, T(1), weights.w, data.hseq, T(0), u);
  LAUNCH((attention_bias_tanh_kernel<T>), blocks_for((long long)R * attn, block), block, 0, s,
         (long long)R, attn, u, weights.b);
  // The scores e = u v go straight into alpha; the softmax then runs in place.
  gemm(handle, {kT, kN, R, 1, attn, attn, attn, R}, T(1), u, weights.v, T(0), data.alpha);
  softmax_forward<T>(data.alpha, data.alpha, batch, steps, s, block);
  LAUNCH((attention_weighted_sum_kernel<T>), blocks_for((long long)batch * dim, block), block, 0, s,
         batch, steps, dim, data.hseq, data.alpha, data.out);
}

template <class T>
void attention_backward(cublasHandle_t handle, const AttentionShape& shape,
                        const AttentionWeights<T>& weights, const AttentionBackwardData<T>& data,
                        const T* d_alpha, const T* d_reserve, const AttentionGradients<T>& grads,
                        T* d_workspace, cudaStream_t s, int block) {
  const char* op = "attention_backward";
  check_attention_shape(op, shape, block);
  if (shape.batch == 0) return;
  check_pointer(op, data.hseq, "hseq");
  check_pointer(op, weights.w, "w");
  check_pointer(op, weights.v, "v");
  check_pointer(op, d_alpha, "d_alpha");
  check_pointer(op, d_reserve, "d_reserve");
  check_pointer(op, data.dout, "dout");
  check_pointer(op, d_workspace, "d_workspace");
  check_handle(op, handle, s);

  const int batch = shape.batch, steps = shape.steps, dim = shape.dim, attn = shape.attn;
  const int R = batch * steps;
  const AttentionAccumulate& acc = grads.accumulate;
  const T* u = d_reserve;
  T* dp = d_workspace;
  T* dalpha = dp + size_t(R) * attn;
  T* de = dalpha + R;
  T* ones = de + R;

  // Per sequence b: dalpha_b = H_b dout_b (S), and dH_b (=, +=) alpha_b dout_b^T (S x D),
  // a rank-1 update.
  gemm_batched(handle, {kT, kN, steps, 1, dim, dim, dim, steps},
               {(long long)steps * dim, dim, steps, batch}, T(1), data.hseq, data.dout, T(0),
               dalpha);
  if (grads.dhseq)
    gemm_batched(handle, {kN, kN, dim, steps, 1, dim, 1, dim},
                 {dim, steps, (long long)steps * dim, batch}, T(1), data.dout, d_alpha,
                 beta_for<T>(acc.dhseq), grads.dhseq);
  softmax_backward<T>(d_alpha, dalpha, de, batch, steps, false, s, block);
  LAUNCH((attention_score_backward_kernel<T>), blocks_for((long long)R * attn, block), block, 0, s,
         (long long)R, attn, u, weights.v, de, dp);
  if (grads.dv)
    gemm(handle, {kN, kN, attn, 1, R, attn, R, attn}, T(1), u, de, beta_for<T>(acc.v), grads.dv);
  if (grads.db) {
    fill<T>(ones, R, T(1), s, block);
    gemm(handle, {kN, kN, attn, 1, R, attn, R, attn}, T(1), dp, ones, beta_for<T>(acc.b), grads.db);
  }
  if (grads.dw)
    gemm(handle, {kN, kT, dim, attn, R, dim, attn, dim}, T(1), data.hseq, dp, beta_for<T>(acc.w),
         grads.dw);
  // The rank-1 update above assigned or accumulated alpha dout^T; the W path adds.
  if (grads.dhseq)
    gemm(handle, {kN, kN, dim, R, attn, dim, attn, dim}, T(1), weights.w, dp, T(1), grads.dhseq);
}
// ===========================================================================
// CPU references: the formulas of the header, one loop nest each, in double.

namespace {
// u (B*S, A) and alpha (B, S) of the attention, in double.
template <class T>
void attention_trace_cpu(const AttentionShape& shape, const AttentionWeights<T>& weights,
                         const T* hseq, std::vector<double>& u, std::vector<double>& alpha) {
  const int B = shape.batch, S = shape.steps, D = shape.dim, A = shape.attn;
  const T *w = weights.w, *b = weights.b, *v = weights.v;
  u.assign(size_t(B) * S * A, 0.0);
  alpha.assign(size_t(B) * S, 0.0);
  for (size_t row = 0; row < size_t(B) * S; ++row) {
    double e = 0;
    for (int a = 0; a < A; ++a) {
      double p = b[a];
      for (int d = 0; d < D; ++d) p += double(w[size_t(a) * D + d]) * hseq[row * D + d];
      u[row * A + a] = std::tanh(p);
      e += double(v[a]) * u[row * A + a];
    }
    alpha[row] = e;
  }
  for (int bb = 0; bb < B; ++bb) {
    double* ar = alpha.data() + size_t(bb) * S;
    double m = ar[0], sum = 0;
    for (int t = 1; t < S; ++t) m = std::max(m, ar[t]);
    for (int t = 0; t < S; ++t) sum += std::exp(ar[t] - m);
    for (int t = 0; t < S; ++t) ar[t] = std::exp(ar[t] - m) / sum;
  }
}

}  // namespace

template <class T>
void attention_forward_cpu(const AttentionShape& shape, const AttentionWeights<T>& weights,
                           const AttentionForwardData<T>& data) {
  const int batch = shape.batch, steps = shape.steps, dim = shape.dim;
  const T* hseq = data.hseq;
  T *out = data.out, *alpha = data.alpha;
  std::vector<double> u, al;
  attention_trace_cpu(shape, weights, hseq, u, al);
  for (int bb = 0; bb < batch; ++bb)
    for (int d = 0; d < dim; ++d) {
      double sum = 0;
      for (int t = 0; t < steps; ++t)
        sum += al[size_t(bb) * steps + t] * hseq[(size_t(bb) * steps + t) * dim + d];
      out[size_t(bb) * dim + d] = T(sum);
    }
  if (alpha)
    for (size_t i = 0; i < al.size(); ++i) alpha[i] = T(al[i]);
}

template <class T>
void attention_backward_cpu(const AttentionShape& shape, const AttentionWeights<T>& weights,
                            const AttentionBackwardData<T>& data,
                            const AttentionGradients<T>& grads) {
  const int B = shape.batch, S = shape.steps, D = shape.dim, A = shape.attn;
  const T *hseq = data.hseq, *dout = data.dout, *w = weights.w, *v = weights.v;
  std::vector<double> u, al;
  attention_trace_cpu(shape, weights, hseq, u, al);
  std::vector<double> gh(size_t(B) * S * D, 0.0), gw(size_t(A) * D, 0.0), gb(A, 0.0),
      gv(A, 0.0), dalpha(S), de(S), dp(A);
  for (int bb = 0; bb < B; ++bb) {
    const T* dr = dout + size_t(bb) * D;
    const double* ar = al.data() + size_t(bb) * S;
    // out = sum_t alpha_t h_t
    for (int t = 0; t < S; ++t) {
      const size_t row = size_t(bb) * S + t;
      double sum = 0;
      for (int d = 0; d < D; ++d) {
        sum += double(dr[d]) * hseq[row * D + d];
        gh[row * D + d] = ar[t] * dr[d];
      }
      dalpha[t] = sum;
    }
    // alpha = softmax(e): de_t = alpha_t (dalpha_t - sum_s alpha_s dalpha_s)
    double dot = 0;
    for (int t = 0; t < S; ++t) dot += ar[t] * dalpha[t];
    for (int t = 0; t < S; ++t) de[t] = ar[t] * (dalpha[t] - dot);
    // e = v . u, u = tanh(W h + b)
    for (int t = 0; t < S; ++t) {
      const size_t row = size_t(bb) * S + t;
      for (int a = 0; a < A; ++a) {
        const double uu = u[row * A + a];
        gv[a] += de[t] * uu;
        dp[a] = de[t] * v[a] * (1 - uu * uu);
        gb[a] += dp[a];
        for (int d = 0; d < D; ++d) {
          gw[size_t(a) * D + d] += dp[a] * hseq[row * D + d];
          gh[row * D + d] += dp[a] * w[size_t(a) * D + d];
        }
      }
    }
  }
  const AttentionAccumulate& acc = grads.accumulate;
  store_all_cpu(grads.dhseq, gh, acc.dhseq);
  store_all_cpu(grads.dw, gw, acc.w);
  store_all_cpu(grads.db, gb, acc.b);
  store_all_cpu(grads.dv, gv, acc.v);
}

// ===========================================================================
// Costs.

Cost attention_forward_cost(const AttentionShape& shape, int elem) {
  const int batch = shape.batch, steps = shape.steps, dim = shape.dim, attn = shape.attn;
  const double R = double(batch) * steps;
  Cost c = gemm_cost(attn, R, dim, elem);
  // u = tanh(P + b): read P, b, write u; e = u v (a GEMV): read u, v, write e.
  c += Cost{4 * R * attn, (3 * R * attn + 2.0 * attn + R) * elem};
  c += softmax_forward_cost(batch, steps, elem);
  c += Cost{2 * R * dim, (R * dim + R + double(batch) * dim) * elem};  // weighted sum
  return c;
}

Cost attention_backward_cost(const AttentionShape& shape, int elem) {
  const int batch = shape.batch, steps = shape.steps, dim = shape.dim, attn = shape.attn;
  const double R = double(batch) * steps;
  // dalpha = H dout (a batched GEMV): reads h, dout, writes dalpha; dh = alpha
  // dout^T (a batched rank-1 GEMM): reads alpha, dout, writes dh.
  Cost c{3 * R * dim, (2 * R * dim + 2 * R + 2.0 * batch * dim) * elem};
  c += softmax_backward_cost(batch, steps, false, elem);
  c += Cost{5 * R * attn, (2 * R * attn + attn + R) * elem};  // dP
  c += gemm_cost(attn, 1, R, elem);                           // dv
  c += gemm_cost(attn, 1, R, elem);                           // db
  c += gemm_cost(dim, attn, R, elem);                         // dW
  c += gemm_cost(dim, R, attn, elem, true);                   // dH += dP W
  return c;
}
// ===========================================================================
#define TIMBRE_ATTENTION_INSTANTIATE(T)                                                            \
  template void attention_forward<T>(cublasHandle_t, const AttentionShape&,                        \
                                     const AttentionWeights<T>&, const AttentionForwardData<T>&,   \
                                     T*, cudaStream_t, int);                                       \
  template void attention_backward<T>(cublasHandle_t, const AttentionShape&,                       \
                                      const AttentionWeights<T>&, const AttentionBackwardData<T>&, \
                                      const T*, const T*, const AttentionGradients<T>&, T*,        \
                                      cudaStream_t, int);                                          \
  template void attention_forward_cpu<T>(const AttentionShape&, const AttentionWeights<T>&,        \
                                         const AttentionForwardData<T>&);                          \
  template void attention_backward_cpu<T>(const AttentionShape&, const AttentionWeights<T>&,       \
                                          const AttentionBackwardData<T>&,                         \
                                          const AttentionGradients<T>&);

TIMBRE_ATTENTION_INSTANTIATE(float)
TIMBRE_ATTENTION_INSTANTIATE(double)

#undef TIMBRE_ATTENTION_INSTANTIATE

}  // namespace timbre::kernels
