#include "kernels/gru.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/blas.h"
#include "kernels/common.cuh"
#include "kernels/copy_rows.cuh"
#include "kernels/device_math.cuh"
#include "kernels/launcher.h"
#include "kernels/reference.h"

namespace timbre::kernels {

// Kernels and helpers in an anonymous namespace: other kernel files may use
// the same names.
namespace {

// ===========================================================================
// The cell's arithmetic for one hidden unit j, shared by the per-step gate
// kernels and the whole-sequence kernels below.
//
// Forward, with a_* the gate pre-activations:
//   a_r = (gx_r + b_ir) + (gh_r + b_hr)      r = sigmoid(a_r)
//   a_z = (gx_z + b_iz) + (gh_z + b_hz)      z = sigmoid(a_z)
//   hn  = gh_n + b_hn
//   a_n = (gx_n + b_in) + r * hn             n = tanh(a_n)
//   h   = n + z * (h_prev - n)               (= (1 - z) n + z h_prev)
// x_row: the (3H) row W_ih x_t [r z n]; gh_*: W_hh h_prev without bias.
// Returns h; writes the saved values of unit j into s_row (5H) when not null.
template <class T>
__device__ __forceinline__ T gru_cell_forward(const T* x_row, const T* b_ih, const T* b_hh, int H,
                                              int j, T gh_r, T gh_z, T gh_n, T hp, T* s_row) {
  const T r = sigmoid_of((x_row[j] + b_ih[j]) + (gh_r + b_hh[j]));
  const T z = sigmoid_of((x_row[H + j] + b_ih[H + j]) + (gh_z + b_hh[H + j]));
  const T hn = gh_n + b_hh[2 * H + j];
  const T n = tanh_of((x_row[2 * H + j] + b_ih[2 * H + j]) + r * hn);
  if (s_row) {
    s_row[kGruSavedR * H + j] = r;
    s_row[kGruSavedZ * H + j] = z;
    s_row[kGruSavedN * H + j] = n;
    s_row[kGruSavedHn * H + j] = hn;
    s_row[kGruSavedHPrev * H + j] = hp;
  }
  return n + z * (hp - n);
}

// Backward, for one unit j, from dh = dL/dh_t (both contributions):
//   h = n + z (h_prev - n)  gives  dn = dh (1 - z),  dz = dh (h_prev - n),
//                                  dh_prev (direct) = dh z;
//   n = tanh(a_n)            gives  da_n = dn (1 - n)(1 + n);
//   z = sigmoid(a_z)         gives  da_z = dz z (1 - z);
//   a_n = ... + r hn         gives  dr = da_n hn,  dhn = da_n r;
//   r = sigmoid(a_r)         gives  da_r = dr r (1 - r).
// gx_* enter a_* with slope 1, so dGx = [da_r, da_z, da_n]; gh_r, gh_z
// likewise, gh_n through hn = gh_n + b_hn: dGh = [da_r, da_z, da_n r].
// Writes unit j's columns of the dGx and dGh rows (and of dgh_copy, a
// second dGh row, when not null); returns dh z.
template <class T>
__device__ __forceinline__ T gru_cell_backward(const T* s_row, int H, int j, T dh, T* dgx_row,
                                               T* dgh_row, T* dgh_copy = nullptr) {
  const T r = s_row[kGruSavedR * H + j];
  const T z = s_row[kGruSavedZ * H + j];
  const T n = s_row[kGruSavedN * H + j];
  const T hn = s_row[kGruSavedHn * H + j];
  const T hp = s_row[kGruSavedHPrev * H + j];
  // (1 - n)(1 + n) rather than 1 - n*n: exact where n is near +-1.
  const T da_n = dh * (T(1) - z) * ((T(1) - n) * (T(1) + n));
  const T da_z = dh * (hp - n) * (z * (T(1) - z));
  const T da_r = da_n * hn * (r * (T(1) - r));
  dgx_row[j] = da_r;
  dgx_row[H + j] = da_z;
  dgx_row[2 * H + j] = da_n;
  dgh_row[j] = da_r;
  dgh_row[H + j] = da_z;
  dgh_row[2 * H + j] = da_n * r;
  if (dgh_copy) {
    dgh_copy[j] = da_r;
    dgh_copy[H + j] = da_z;
    dgh_copy[2 * H + j] = da_n * r;
  }
  return dh * z;
}

// ===========================================================================
// GRU gate kernels, one time step. Thread i of the grid-stride loop handles
// (b, j) = (i / H, i % H); the three gates of unit j sit at columns j,
// H + j, 2H + j of the (3H)-wide rows. No barrier, no shared memory, no
// atomics.
template <class T>
__global__ void gru_gates_forward_kernel(int batch, int hidden, const T* gx, long long gx_stride,
                                         const T* gh, const T* b_ih, const T* b_hh,
                                         const T* h_prev, long long h_prev_stride, T* h,
                                         long long h_stride, T* h_copy, T* saved,
                                         long long saved_stride) {
  const long long n_items = (long long)batch * hidden;
  const long long grid_stride = (long long)blockDim.x * gridDim.x;
  const int H = hidden;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_items;
       i += grid_stride) {
    const long long b = i / H;
    const int j = int(i - b * H);
    const T* x_row = gx + b * gx_stride;
    T gh_r = T(0), gh_z = T(0), gh_n = T(0);
    if (gh) {
      const T* h_row = gh + b * 3 * H;
      gh_r = h_row[j];
      gh_z = h_row[H + j];
      gh_n = h_row[2 * H + j];
    }
    const T hp = h_prev ? h_prev[b * h_prev_stride + j] : T(0);
    const T hv = gru_cell_forward(x_row, b_ih, b_hh, H, j, gh_r, gh_z, gh_n, hp,
                                  saved ? saved + b * saved_stride : nullptr);
    h[b * h_stride + j] = hv;
    if (h_copy) h_copy[b * H + j] = hv;
  }
}

// Backward, for one (b, j): the cell's backward (above) from dh = dh_seq +
// dh_in. dh_in is read before dh_out is written, by the same thread: they
// may alias.
template <class T>
__global__ void gru_gates_backward_kernel(int batch, int hidden, const T* saved,
                                          long long saved_stride, const T* dh_seq,
                                          long long dh_seq_stride, const T* dh_in, T* dgx,
                                          long long dgx_stride, T* dgh, long long dgh_stride,
                                          T* dh_out) {
  const long long n_items = (long long)batch * hidden;
  const long long grid_stride = (long long)blockDim.x * gridDim.x;
  const int H = hidden;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n_items;
       i += grid_stride) {
    const long long b = i / H;
    const int j = int(i - b * H);
    T dh = T(0);
    if (dh_seq) dh += dh_seq[b * dh_seq_stride + j];
    if (dh_in) dh += dh_in[b * H + j];
    const T direct = gru_cell_backward(saved + b * saved_stride, H, j, dh, dgx + b * dgx_stride,
                                       dgh + b * dgh_stride);
    if (dh_out) dh_out[b * H + j] = direct;
  }
}

// ===========================================================================
// Whole-sequence kernels: the recurrence of one layer in one launch.
//
// Each sequence b of the batch is independent of the others through time,
// so one block owns one sequence and walks all S steps itself, keeping the
// state in shared memory: no grid-wide barrier, no launch per step. Thread
// j (and j + blockDim, ... when H > blockDim) owns hidden unit j.
//
// Forward step: thread j computes its three recurrent dot products
//   gh_g = sum_k W_hh[gH + j][k] h_prev[k],  g in {r, z, n},
// reading h_prev from shared memory (every lane the same address: a
// broadcast) and W_hh from the transposed copy w_hh_t (H x 3H), where lanes
// j, j+1, ... read consecutive addresses (coalesced; W_hh itself would put
// the lanes H values apart). The 3H x H weights stay in L1/L2 across the
// steps. Then the cell, whose h_t goes to the other half of a two-buffer
// state, so one __syncthreads per step orders the writes before the next
// step's reads.
template <class T>
struct GruForwardSteps {
  const T* gx;      // (B*S, 3H), row b*S + t: W_ih x_t without bias
  const T* w_hh_t;  // (H, 3H): W_hh transposed
  const T* b_ih;    // (3H)
  const T* b_hh;    // (3H)
  const T* h0;      // (B, H) or null (zeros)
  T* hseq;          // (B, S, H)
  T* h_last;        // (B, H) or null
  T* saved;         // (B*S, 5H) or null
  int steps, hidden;
  bool reverse;
};

template <class T>
__global__ void gru_forward_steps_kernel(GruForwardSteps<T> p) {
  T* state = simcuda::dynamic_shared<T>();  // two buffers of H values
  const int H = p.hidden, G = 3 * H, S = p.steps;
  const long long b = blockIdx.x;
  for (int j = threadIdx.x; j < H; j += blockDim.x) state[j] = p.h0 ? p.h0[b * H + j] : T(0);
  __syncthreads();
  for (int step = 0; step < S; ++step) {
    const int t = p.reverse ? S - 1 - step : step;
    const long long row = b * S + t;
    const T* h_prev = state + (step & 1) * H;
    T* h_next = state + ((step + 1) & 1) * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
      T gh_r = T(0), gh_z = T(0), gh_n = T(0);
      for (int k = 0; k < H; ++k) {
        const T hk = h_prev[k];
        const T* w = p.w_hh_t + (long long)k * G;
        gh_r += w[j] * hk;
        gh_z += w[H + j] * hk;
        gh_n += w[2 * H + j] * hk;
      }
      const T hv = gru_cell_forward(p.gx + row * G, p.b_ih, p.b_hh, H, j, gh_r, gh_z, gh_n,
                                    h_prev[j], p.saved ? p.saved + row * kGruSavedWidth * H
                                                       : nullptr);
      h_next[j] = hv;
      p.hseq[row * H + j] = hv;
      if (p.h_last && step == S - 1) p.h_last[b * H + j] = hv;
    }
    __syncthreads();
  }
}

// Backward step, in the reverse of the forward's order: thread j runs the
// cell's backward for unit j (writing the dGx and dGh rows to global memory
// for the weight GEMMs, and dGh to shared memory), then, after a barrier,
//   dh_prev[j] = dh_t[j] z_j + sum_{g < 3H} dGh[g] W_hh[g][j],
// where lanes j, j+1, ... read consecutive addresses of row g of W_hh
// (coalesced, no transpose needed) and dGh is a shared-memory broadcast. A
// second barrier keeps the next step from overwriting dGh while it is read.
// At the end dh holds dL/dh0.
template <class T>
struct GruBackwardSteps {
  const T* saved;    // (B*S, 5H) what the forward saved
  const T* w_hh;     // (3H, H)
  const T* dhseq;    // (B, S, H) or null (zeros)
  const T* dh_last;  // (B, H) or null (zeros)
  T* dgx;            // (B*S, 3H)
  T* dgh;            // (B*S, 3H)
  T* dh0;            // (B, H) or null
  bool dh0_accumulate;
  int steps, hidden;
  bool reverse;
};

template <class T>
__global__ void gru_backward_steps_kernel(GruBackwardSteps<T> p) {
  T* dh = simcuda::dynamic_shared<T>();  // H values: dL/dh of the step being processed
  T* dgh = dh + p.hidden;                // 3H values: this step's dGh row
  const int H = p.hidden, G = 3 * H, S = p.steps;
  const long long b = blockIdx.x;
  for (int j = threadIdx.x; j < H; j += blockDim.x)
    dh[j] = p.dh_last ? p.dh_last[b * H + j] : T(0);
  for (int step = S - 1; step >= 0; --step) {
    const int t = p.reverse ? S - 1 - step : step;
    const long long row = b * S + t;
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
      const T d = p.dhseq ? dh[j] + p.dhseq[row * H + j] : dh[j];
      dh[j] = gru_cell_backward(p.saved + row * kGruSavedWidth * H, H, j, d, p.dgx + row * G,
                                p.dgh + row * G, dgh);
    }
    __syncthreads();
    if (step > 0 || p.dh0) {
      for (int j = threadIdx.x; j < H; j += blockDim.x) {
        T acc = T(0);
        for (int g = 0; g < G; ++g) acc += dgh[g] * p.w_hh[(long long)g * H + j];
        dh[j] += acc;
      }
    }
    __syncthreads();
  }
  if (p.dh0)
    for (int j = threadIdx.x; j < H; j += blockDim.x)
      p.dh0[b * H + j] = p.dh0_accumulate ? p.dh0[b * H + j] + dh[j] : dh[j];
}

void check_gru_shape(const char* op, const GruShape& shape, int block) {
  check_at_least(op, "batch", shape.batch, 0);
  check_at_least(op, "steps", shape.steps, 1);
  check_at_least(op, "input", shape.input, 1);
  check_at_least(op, "hidden", shape.hidden, 1);
  check_block(op, block);
  check_fits_int(op, "batch*steps", (long long)shape.batch * shape.steps);
  check_fits_int(op, "steps*5*hidden", (long long)shape.steps * kGruSavedWidth * shape.hidden);
}

// Threads per block of the whole-sequence kernels: one per hidden unit up
// to `block` (rounded up to whole warps), each thread looping over units j,
// j + blockDim, ... beyond that. Their state lives in shared memory
// (shared_bytes per block), which must fit in the 48 KiB every GPU gives a
// block without opting in.
unsigned recurrence_threads(const char* op, int hidden, size_t shared_bytes, int block) {
  constexpr size_t kMaxShared = 48 * 1024;
  if (shared_bytes > kMaxShared)
    fail(op, "hidden = " + std::to_string(hidden) + " needs " + std::to_string(shared_bytes) +
                 " bytes of shared memory per block, more than the " +
                 std::to_string(kMaxShared) + " a block may use");
  return unsigned(std::min(block, (hidden + 31) / 32 * 32));
}

}  // namespace

// ===========================================================================
// Gate launchers.

template <class T>
void gru_gates_forward(int batch, int hidden, const GruGatesForwardIn<T>& in,
                       const GruGatesForwardOut<T>& out, cudaStream_t s, int block) {
  const char* op = "gru_gates_forward";
  check_at_least(op, "batch", batch, 0);
  check_at_least(op, "hidden", hidden, 1);
  check_block(op, block);
  if (batch == 0) return;
  check_pointer(op, in.gx, "gx");
  check_pointer(op, in.b_ih, "b_ih");
  check_pointer(op, in.b_hh, "b_hh");
  check_pointer(op, out.h, "h");
  if (in.h_prev && !in.gh) fail(op, "gh is null but h_prev is not");
  const long long H = hidden;
  check_at_least(op, "gx_stride", in.gx_stride, 3 * H);
  check_at_least(op, "h_stride", out.h_stride, H);
  if (in.h_prev) check_at_least(op, "h_prev_stride", in.h_prev_stride, H);
  if (out.saved) check_at_least(op, "saved_stride", out.saved_stride, kGruSavedWidth * H);
  LAUNCH((gru_gates_forward_kernel<T>), blocks_for(batch * H, block), block, 0, s, batch, hidden,
         in.gx, in.gx_stride, in.gh, in.b_ih, in.b_hh, in.h_prev, in.h_prev_stride, out.h,
         out.h_stride, out.h_copy, out.saved, out.saved_stride);
}

template <class T>
void gru_gates_backward(int batch, int hidden, const GruGatesBackwardIn<T>& in,
                        const GruGatesBackwardOut<T>& out, cudaStream_t s, int block) {
  const char* op = "gru_gates_backward";
  check_at_least(op, "batch", batch, 0);
  check_at_least(op, "hidden", hidden, 1);
  check_block(op, block);
  if (batch == 0) return;
  check_pointer(op, in.saved, "saved");
  check_pointer(op, out.dgx, "dgx");
  check_pointer(op, out.dgh, "dgh");
  const long long H = hidden;
  check_at_least(op, "saved_stride", in.saved_stride, kGruSavedWidth * H);
  if (in.dh_seq) check_at_least(op, "dh_seq_stride", in.dh_seq_stride, H);
  check_at_least(op, "dgx_stride", out.dgx_stride, 3 * H);
  check_at_least(op, "dgh_stride", out.dgh_stride, 3 * H);
  LAUNCH((gru_gates_backward_kernel<T>), blocks_for(batch * H, block), block, 0, s, batch, hidden,
         in.saved, in.saved_stride, in.dh_seq, in.dh_seq_stride, in.dh_in, out.dgx, out.dgx_stride,
         out.dgh, out.dgh_stride, out.dh_out);
}

// ===========================================================================
// Whole GRU layer.
//
// Row-major (rows, cols) is column-major (cols x rows) with leading
// dimension cols (or the row stride). Writing G = 3H, R = B*S, and X^c for
// the column-major view of row-major X:
//   Gx^c (G x R)      = W_ih^c^T (G x I) x^c (I x R)      gemm(T, N, G, R, I)
//   Gh^c (G x B)      = W_hh^c^T (G x H) h_prev^c (H x B) gemm(T, N, G, B, H)
//   dh^c (H x B)     += W_hh^c (H x G) dGh_t^c (G x B)    gemm(N, N, H, B, G)
//   dx^c (I x R)      = W_ih^c (I x G) dGx^c (G x R)      gemm(N, N, I, R, G)
//   dW_ih^c (I x G)   = x^c (I x R) dGx^c^T (R x G)       gemm(N, T, I, G, R)
//   dW_hh^c (H x G)   = h_prev^c (H x R) dGh^c^T (R x G)  gemm(N, T, H, G, R)
//   db (G x 1)        = dG^c (G x R) 1 (R x 1)            gemm(N, N, G, 1, R)
// Rows of x, Gx, dGx, dGh, the reserve and hseq are indexed b*S + t, so the
// B rows of one step t are every S-th row: one step's matrices are the same
// arrays with a leading dimension S times larger (no copies).

size_t gru_forward_workspace_size(const GruShape& shape) {
  const size_t B = size_t(shape.batch), S = size_t(shape.steps), H = size_t(shape.hidden);
  return B * S * 3 * H + 3 * H * H;
}

size_t gru_reserve_size(const GruShape& shape) {
  return size_t(shape.batch) * shape.steps * kGruSavedWidth * shape.hidden;
}

size_t gru_backward_workspace_size(const GruShape& shape) {
  const size_t rows = size_t(shape.batch) * shape.steps;
  return 2 * rows * 3 * shape.hidden + rows;
}

template <class T>
void gru_forward(cublasHandle_t handle, const GruShape& shape, const GruWeights<T>& weights,
                 const GruForwardData<T>& data, bool reverse, T* d_reserve, T* d_workspace,
                 cudaStream_t s, int block) {
  const char* op = "gru_forward";
  check_gru_shape(op, shape, block);
  if (shape.batch == 0) return;
  check_pointer(op, data.x, "x");
  check_pointer(op, weights.w_ih, "w_ih");
  check_pointer(op, weights.w_hh, "w_hh");
  check_pointer(op, weights.b_ih, "b_ih");
  check_pointer(op, weights.b_hh, "b_hh");
  check_pointer(op, data.hseq, "hseq");
  check_pointer(op, d_workspace, "d_workspace");
  check_handle(op, handle, s);

  const int B = shape.batch, S = shape.steps, I = shape.input, H = shape.hidden, G = 3 * H,
            R = B * S;
  T* gx = d_workspace;
  T* w_hh_t = gx + size_t(R) * G;
  const unsigned threads = recurrence_threads(op, H, 2 * H * sizeof(T), block);

  gemm(handle, {kT, kN, G, R, I, I, I, G}, T(1), weights.w_ih, data.x, T(0), gx);
  transpose_last2<T>(weights.w_hh, w_hh_t, 1, G, H, false, s, block);
  const GruForwardSteps<T> p{gx,        w_hh_t,      weights.b_ih, weights.b_hh,
                             data.h0,   data.hseq,   data.h_last,  d_reserve,
                             S,         H,           reverse};
  LAUNCH(gru_forward_steps_kernel<T>, unsigned(B), threads, 2 * H * sizeof(T), s, p);
}

template <class T>
void gru_backward(cublasHandle_t handle, const GruShape& shape, const GruWeights<T>& weights,
                  const GruBackwardData<T>& data, bool reverse, const T* d_reserve,
                  const GruGradients<T>& grads, T* d_workspace, cudaStream_t s, int block) {
  const char* op = "gru_backward";
  check_gru_shape(op, shape, block);
  if (shape.batch == 0) return;
  check_pointer(op, data.x, "x");
  check_pointer(op, weights.w_ih, "w_ih");
  check_pointer(op, weights.w_hh, "w_hh");
  check_pointer(op, d_reserve, "d_reserve");
  check_pointer(op, d_workspace, "d_workspace");
  check_handle(op, handle, s);

  const int B = shape.batch, S = shape.steps, I = shape.input, H = shape.hidden, G = 3 * H,
            R = B * S;
  const int W = kGruSavedWidth * H;
  const GruAccumulate& acc = grads.accumulate;
  T* dgx = d_workspace;
  T* dgh = dgx + size_t(R) * G;
  T* ones = dgh + size_t(R) * G;
  const unsigned threads = recurrence_threads(op, H, 4 * H * sizeof(T), block);

  const GruBackwardSteps<T> p{d_reserve, weights.w_hh, data.dhseq, data.dh_last, dgx, dgh,
                              grads.dh0, acc.dh0,      S,          H,            reverse};
  LAUNCH(gru_backward_steps_kernel<T>, unsigned(B), threads, 4 * H * sizeof(T), s, p);

  if (grads.dx)
    gemm(handle, {kN, kN, I, R, G, I, G, I}, T(1), weights.w_ih, dgx, beta_for<T>(acc.dx),
         grads.dx);
  if (grads.dw_ih)
    gemm(handle, {kN, kT, I, G, R, I, G, I}, T(1), data.x, dgx, beta_for<T>(acc.w_ih), grads.dw_ih);
  // h_prev of every (b, t) is column kGruSavedHPrev*H of its reserve row.
  if (grads.dw_hh)
    gemm(handle, {kN, kT, H, G, R, W, G, H}, T(1), d_reserve + size_t(kGruSavedHPrev) * H, dgh,
         beta_for<T>(acc.w_hh), grads.dw_hh);
  if (grads.db_ih || grads.db_hh) fill<T>(ones, R, T(1), s, block);
  if (grads.db_ih)
    gemm(handle, {kN, kN, G, 1, R, G, R, G}, T(1), dgx, ones, beta_for<T>(acc.b_ih), grads.db_ih);
  if (grads.db_hh)
    gemm(handle, {kN, kN, G, 1, R, G, R, G}, T(1), dgh, ones, beta_for<T>(acc.b_hh), grads.db_hh);
}

// ===========================================================================
// CPU references: the formulas of the header, one loop nest each, in double.

namespace {
double sigmoid_cpu(double x) { return 1 / (1 + std::exp(-x)); }

// What the GRU forward computes, in double, for the backward reference:
// per (b, t) row the gate values and h_prev.
struct GruTrace {
  std::vector<double> r, z, n, hn, h_prev;  // (B*S, H) each
  std::vector<double> h_last;               // (B, H)
};

template <class T>
GruTrace gru_trace_cpu(const GruShape& shape, const GruWeights<T>& weights, const T* x, const T* h0,
                       bool reverse) {
  const int B = shape.batch, S = shape.steps, I = shape.input, H = shape.hidden, G = 3 * H;
  const T *w_ih = weights.w_ih, *w_hh = weights.w_hh, *b_ih = weights.b_ih, *b_hh = weights.b_hh;
  const size_t rows = size_t(B) * S;
  GruTrace tr;
  for (auto* v : {&tr.r, &tr.z, &tr.n, &tr.hn, &tr.h_prev}) v->assign(rows * H, 0.0);
  std::vector<double> h(size_t(B) * H, 0.0), ax(G), ah(G);
  if (h0)
    for (size_t i = 0; i < h.size(); ++i) h[i] = h0[i];
  for (int step = 0; step < S; ++step) {
    const int t = reverse ? S - 1 - step : step;
    for (int b = 0; b < B; ++b) {
      const size_t row = size_t(b) * S + t;
      const T* xr = x + row * I;
      double* hb = h.data() + size_t(b) * H;
      for (int g = 0; g < G; ++g) {
        double sx = b_ih[g], sh = b_hh[g];
        for (int i = 0; i < I; ++i) sx += double(w_ih[size_t(g) * I + i]) * xr[i];
        for (int j = 0; j < H; ++j) sh += double(w_hh[size_t(g) * H + j]) * hb[j];
        ax[g] = sx;
        ah[g] = sh;
      }
      for (int j = 0; j < H; ++j) {
        const size_t k = row * H + j;
        tr.r[k] = sigmoid_cpu(ax[j] + ah[j]);
        tr.z[k] = sigmoid_cpu(ax[H + j] + ah[H + j]);
        tr.hn[k] = ah[2 * H + j];
        tr.n[k] = std::tanh(ax[2 * H + j] + tr.r[k] * tr.hn[k]);
        tr.h_prev[k] = hb[j];
      }
      for (int j = 0; j < H; ++j) {
        const size_t k = row * H + j;
        hb[j] = (1 - tr.z[k]) * tr.n[k] + tr.z[k] * tr.h_prev[k];
      }
    }
  }
  tr.h_last = h;
  return tr;
}
}  // namespace

template <class T>
void gru_gates_forward_cpu(int batch, int hidden, const GruGatesForwardIn<T>& in,
                           const GruGatesForwardOut<T>& out) {
  const T *gx = in.gx, *gh = in.gh, *b_ih = in.b_ih, *b_hh = in.b_hh, *h_prev = in.h_prev;
  const long long gx_stride = in.gx_stride, h_prev_stride = in.h_prev_stride;
  T *h = out.h, *h_copy = out.h_copy, *saved = out.saved;
  const long long h_stride = out.h_stride, saved_stride = out.saved_stride;
  const int H = hidden;
  for (long long b = 0; b < batch; ++b)
    for (int j = 0; j < H; ++j) {
      const T* xr = gx + b * gx_stride;
      const T* hr = gh ? gh + b * 3 * H : nullptr;
      auto gh_at = [&](int g) { return hr ? double(hr[g]) : 0.0; };
      const double hp = h_prev ? double(h_prev[b * h_prev_stride + j]) : 0.0;
      const double r = sigmoid_cpu(double(xr[j]) + b_ih[j] + gh_at(j) + b_hh[j]);
      const double z = sigmoid_cpu(double(xr[H + j]) + b_ih[H + j] + gh_at(H + j) + b_hh[H + j]);
      const double hn = gh_at(2 * H + j) + b_hh[2 * H + j];
      const double n = std::tanh(double(xr[2 * H + j]) + b_ih[2 * H + j] + r * hn);
      const double hv = (1 - z) * n + z * hp;
      h[b * h_stride + j] = T(hv);
      if (h_copy) h_copy[b * H + j] = T(hv);
      if (saved) {
        T* sr = saved + b * saved_stride;
        sr[kGruSavedR * H + j] = T(r);
        sr[kGruSavedZ * H + j] = T(z);
        sr[kGruSavedN * H + j] = T(n);
        sr[kGruSavedHn * H + j] = T(hn);
        sr[kGruSavedHPrev * H + j] = T(hp);
      }
    }
}

template <class T>
void gru_gates_backward_cpu(int batch, int hidden, const GruGatesBackwardIn<T>& in,
                            const GruGatesBackwardOut<T>& out) {
  const T *saved = in.saved, *dh_seq = in.dh_seq, *dh_in = in.dh_in;
  const long long saved_stride = in.saved_stride, dh_seq_stride = in.dh_seq_stride;
  T *dgx = out.dgx, *dgh = out.dgh, *dh_out = out.dh_out;
  const long long dgx_stride = out.dgx_stride, dgh_stride = out.dgh_stride;
  const int H = hidden;
  for (long long b = 0; b < batch; ++b)
    for (int j = 0; j < H; ++j) {
      const double dh = (dh_seq ? double(dh_seq[b * dh_seq_stride + j]) : 0.0) +
                        (dh_in ? double(dh_in[b * H + j]) : 0.0);
      const T* sr = saved + b * saved_stride;
      const double r = sr[kGruSavedR * H + j], z = sr[kGruSavedZ * H + j],
                   n = sr[kGruSavedN * H + j], hn = sr[kGruSavedHn * H + j],
                   hp = sr[kGruSavedHPrev * H + j];
      const double da_n = dh * (1 - z) * (1 - n * n);
      const double da_z = dh * (hp - n) * z * (1 - z);
      const double da_r = da_n * hn * r * (1 - r);
      dgx[b * dgx_stride + j] = T(da_r);
      dgx[b * dgx_stride + H + j] = T(da_z);
      dgx[b * dgx_stride + 2 * H + j] = T(da_n);
      dgh[b * dgh_stride + j] = T(da_r);
      dgh[b * dgh_stride + H + j] = T(da_z);
      dgh[b * dgh_stride + 2 * H + j] = T(da_n * r);
      if (dh_out) dh_out[b * H + j] = T(dh * z);
    }
}

template <class T>
void gru_forward_cpu(const GruShape& shape, const GruWeights<T>& weights,
                     const GruForwardData<T>& data, bool reverse) {
  const int batch = shape.batch, steps = shape.steps, hidden = shape.hidden;
  T *hseq = data.hseq, *h_last = data.h_last;
  const GruTrace tr = gru_trace_cpu(shape, weights, data.x, data.h0, reverse);
  // h_t of row (b, t) is h_prev of the next step's row, or h_last.
  for (int b = 0; b < batch; ++b)
    for (int step = 0; step < steps; ++step) {
      const int t = reverse ? steps - 1 - step : step;
      const int t_next = reverse ? t - 1 : t + 1;
      for (int j = 0; j < hidden; ++j) {
        const double h = step == steps - 1
                             ? tr.h_last[size_t(b) * hidden + j]
                             : tr.h_prev[(size_t(b) * steps + t_next) * hidden + j];
        hseq[(size_t(b) * steps + t) * hidden + j] = T(h);
      }
    }
  if (h_last)
    for (size_t i = 0; i < tr.h_last.size(); ++i) h_last[i] = T(tr.h_last[i]);
}

template <class T>
void gru_backward_cpu(const GruShape& shape, const GruWeights<T>& weights,
                      const GruBackwardData<T>& data, bool reverse, const T* h0,
                      const GruGradients<T>& grads) {
  const int B = shape.batch, S = shape.steps, I = shape.input, H = shape.hidden, G = 3 * H;
  const T *x = data.x, *dhseq = data.dhseq, *dh_last = data.dh_last;
  const T *w_ih = weights.w_ih, *w_hh = weights.w_hh;
  const GruTrace tr = gru_trace_cpu(shape, weights, x, h0, reverse);
  std::vector<double> gdx(size_t(B) * S * I, 0.0), gw_ih(size_t(G) * I, 0.0),
      gw_hh(size_t(G) * H, 0.0), gb_ih(G, 0.0), gb_hh(G, 0.0);
  std::vector<double> dh(size_t(B) * H, 0.0), dh_prev(size_t(B) * H), da_x(G), da_h(G);
  if (dh_last)
    for (size_t i = 0; i < dh.size(); ++i) dh[i] = dh_last[i];
  for (int step = S - 1; step >= 0; --step) {
    const int t = reverse ? S - 1 - step : step;
    for (int b = 0; b < B; ++b) {
      const size_t row = size_t(b) * S + t;
      for (int j = 0; j < H; ++j) {
        const size_t k = row * H + j;
        const double d = dh[size_t(b) * H + j] + (dhseq ? double(dhseq[k]) : 0.0);
        const double r = tr.r[k], z = tr.z[k], n = tr.n[k], hn = tr.hn[k], hp = tr.h_prev[k];
        // h = (1 - z) n + z h_prev
        const double dn = d * (1 - z), dz = d * (hp - n);
        const double dan = dn * (1 - n * n);
        const double daz = dz * z * (1 - z);
        const double dar = dan * hn * r * (1 - r);
        da_x[j] = dar;
        da_x[H + j] = daz;
        da_x[2 * H + j] = dan;
        da_h[j] = dar;
        da_h[H + j] = daz;
        da_h[2 * H + j] = dan * r;
        dh_prev[size_t(b) * H + j] = d * z;
      }
      for (int j = 0; j < H; ++j) {
        double sum = 0;
        for (int g = 0; g < G; ++g) sum += da_h[g] * w_hh[size_t(g) * H + j];
        dh_prev[size_t(b) * H + j] += sum;
      }
      for (int i = 0; i < I; ++i) {
        double sum = 0;
        for (int g = 0; g < G; ++g) sum += da_x[g] * w_ih[size_t(g) * I + i];
        gdx[row * I + i] = sum;
      }
      for (int g = 0; g < G; ++g) {
        for (int i = 0; i < I; ++i) gw_ih[size_t(g) * I + i] += da_x[g] * x[row * I + i];
        for (int j = 0; j < H; ++j) gw_hh[size_t(g) * H + j] += da_h[g] * tr.h_prev[row * H + j];
        gb_ih[g] += da_x[g];
        gb_hh[g] += da_h[g];
      }
    }
    dh = dh_prev;
  }
  const GruAccumulate& acc = grads.accumulate;
  store_all_cpu(grads.dx, gdx, acc.dx);
  store_all_cpu(grads.dh0, dh, acc.dh0);
  store_all_cpu(grads.dw_ih, gw_ih, acc.w_ih);
  store_all_cpu(grads.dw_hh, gw_hh, acc.w_hh);
  store_all_cpu(grads.db_ih, gb_ih, acc.b_ih);
  store_all_cpu(grads.db_hh, gb_hh, acc.b_hh);
}

// ===========================================================================
// Costs. Operations per element of the gate kernels (sigmoid 4, tanh 1;
// adds, multiplies and subtractions 1 each):
//   forward : r 3 + 4, z 3 + 4, hn 1, n 3 + 1, h 3              = 22
//   backward: dh 1, da_n 5, da_z 4, da_r 4, da_n r 1, dh z 1    = 16
// Bytes per element: forward reads gx, gh (3 each) and h_prev, writes h and
// the 5 saved values (biases: 6H once); backward reads the 5 saved values,
// dh_seq and dh_in, writes dGx, dGh (3 each) and dh_out.
Cost gru_gates_forward_cost(int batch, int hidden, int elem) {
  const double n = double(batch) * hidden;
  return Cost{22 * n, (13 * n + 6.0 * hidden) * elem};
}

Cost gru_gates_backward_cost(int batch, int hidden, int elem) {
  const double n = double(batch) * hidden;
  return Cost{16 * n, 14 * n * elem};
}

Cost gru_forward_cost(const GruShape& shape, int elem) {
  const int batch = shape.batch, steps = shape.steps, input = shape.input, hidden = shape.hidden;
  const double R = double(batch) * steps, G = 3.0 * hidden;
  Cost c = gemm_cost(G, R, input, elem);
  c += times(gemm_cost(G, batch, hidden, elem), steps);
  c += times(gru_gates_forward_cost(batch, hidden, elem), steps);
  return c;
}

Cost gru_backward_cost(const GruShape& shape, int elem) {
  const int batch = shape.batch, steps = shape.steps, input = shape.input, hidden = shape.hidden;
  const double R = double(batch) * steps, G = 3.0 * hidden;
  Cost c = times(gru_gates_backward_cost(batch, hidden, elem), steps);
  c += times(gemm_cost(hidden, batch, G, elem, true), steps);  // dh += dGh W_hh
  c += gemm_cost(input, R, G, elem);                            // dx
  c += gemm_cost(input, G, R, elem);                            // dW_ih
  c += gemm_cost(hidden, G, R, elem);                           // dW_hh
  c += times(gemm_cost(G, 1, R, elem), 2);                      // db_ih, db_hh
  return c;
}

// ===========================================================================
#define TIMBRE_GRU_INSTANTIATE(T)                                                                  \
  template void gru_gates_forward<T>(int, int, const GruGatesForwardIn<T>&,                        \
                                     const GruGatesForwardOut<T>&, cudaStream_t, int);             \
  template void gru_gates_backward<T>(int, int, const GruGatesBackwardIn<T>&,                      \
                                      const GruGatesBackwardOut<T>&, cudaStream_t, int);           \
  template void gru_forward<T>(cublasHandle_t, const GruShape&, const GruWeights<T>&,              \
                               const GruForwardData<T>&, bool, T*, T*, cudaStream_t, int);         \
  template void gru_backward<T>(cublasHandle_t, const GruShape&, const GruWeights<T>&,             \
                                const GruBackwardData<T>&, bool, const T*, const GruGradients<T>&, \
                                T*, cudaStream_t, int);                                            \
  template void gru_gates_forward_cpu<T>(int, int, const GruGatesForwardIn<T>&,                    \
                                         const GruGatesForwardOut<T>&);                            \
  template void gru_gates_backward_cpu<T>(int, int, const GruGatesBackwardIn<T>&,                  \
                                          const GruGatesBackwardOut<T>&);                          \
  template void gru_forward_cpu<T>(const GruShape&, const GruWeights<T>&,                          \
                                   const GruForwardData<T>&, bool);                                \
  template void gru_backward_cpu<T>(const GruShape&, const GruWeights<T>&,                         \
                                    const GruBackwardData<T>&, bool, const T*,                     \
                                    const GruGradients<T>&);

TIMBRE_GRU_INSTANTIATE(float)
TIMBRE_GRU_INSTANTIATE(double)

#undef TIMBRE_GRU_INSTANTIATE

}  // namespace timbre::kernels
