// gru: one GRU layer over a batch-first sequence, forward and backward
// through time. T is float or double (double for finite-difference gradient
// checks). Derivations and layouts: docs/kernels/gru.md. The attention over
// time that follows the GRU in the parallel CNN-RNN is kernels/attention.cuh.
//
// GRU, the cuDNN/PyTorch formula (Keras reset_after=True), gates in the
// order r, z, n (PyTorch's and cuDNN's; Keras stores z, r, n):
//   r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
//   z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
//   n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
//   h_t = (1 - z_t) * n_t + z_t * h_{t-1}          (computed n + z (h_{t-1} - n))
// Shapes, all row-major: x (B, S, I), the sequence of S steps (S is "T" in
// the docs; `steps` here, T being the element type); W_ih (3H, I) and W_hh
// (3H, H) with row blocks [r; z; n]; b_ih, b_hh (3H); h0 (B, H), zeros when
// null; outputs hseq (B, S, H) = h_t for every t, and h_last (B, H).
// reverse = true runs t = S-1, ..., 0 (the backward direction of a
// bidirectional layer, as PyTorch: hseq[:, t] is still the state after
// reading x_t, and h_last = hseq[:, 0]).
//
// Parallel strategy (whole layer), 3 launches forward and at most 7
// backward whatever S:
//   forward : Gx = x W_ih^T for all B*S rows, one GEMM; W_hh transposed
//             once (coalesced reads below); then ONE launch for the whole
//             recurrence: block b owns sequence b (sequences are independent
//             through time) and walks the S steps, its state h in shared
//             memory; per step thread j computes unit j's three dot products
//             with h_prev, the gates (biases added), h_t, and saves
//             [r, z, n, W_hn h_prev + b_hn, h_prev] for backward ("reserve").
//   backward: ONE launch for the recurrence in reverse: per step thread j
//             gives the pre-activation gradients dGx (input side) and dGh
//             (hidden side) of unit j, then after a barrier
//             dh_prev[j] = dh[j] z_j + sum_g dGh[g] W_hh[g][j]; at the end one
//             GEMM each for dx, dW_ih, dW_hh over all B*S rows, and the
//             biases as GEMMs with a ones vector. No atomics: every output
//             has the same bits on every run.
// The gate kernels below are the same cell arithmetic for one step as
// separate launches (the per-step building blocks, tested on their own).
//
// Gradients: each output of a backward function has its own accumulate flag
// (false: assign, true: add into it), so that the engine can pass what
// Variable::grad_for_update says for each. Defaults follow timbre's rule:
// input gradients assign, parameter gradients accumulate. An output pointer
// that is null is not computed.
//
// cuBLAS: the handle must be bound to the stream s given (cublasSetStream)
// and in CUBLAS_POINTER_MODE_HOST; both are checked. Its math mode should
// not allow TF32 (the default does not): the tolerances of the tests assume
// full FP32 GEMMs.
//
// Arguments: batch >= 0 (0 is a no-op), every other size >= 1, and products
// such as batch*steps and steps*5*hidden must fit in int (cuBLAS takes int
// sizes); block = threads per block for the elementwise kernels, a multiple
// of 32 in [32, 1024]; required pointers not null. Violations throw
// std::invalid_argument naming the function and the argument, a field of
// a struct by its name ("gru_forward: w_ih is null").
//
// The arguments come in small aggregate structs, one per role: the geometry
// (GruShape), the parameters (GruWeights), the sequence tensors
// (GruForwardData, GruBackwardData) and the gradients with their accumulate
// flags (GruGradients); the gate kernels take what they read and what they
// write (GruGates{Forward,Backward}{In,Out}). Each is written at a call
// site as a braced list in its fields' order, e.g.
//   gru_forward<float>(handle, {B, S, I, H}, {w_ih, w_hh, b_ih, b_hh},
//                      {x, h0, hseq, h_last}, false, reserve, workspace, stream);
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cost.h"

namespace timbre::kernels {

// ===========================================================================
// Fused GRU gate kernels, one time step, all B rows. One thread per (b, j),
// j < H, in a grid-stride loop: no barrier, no shared memory (simcuda's fast
// path), consecutive threads on consecutive j (coalesced). Row b of a
// strided array starts at ptr + b*stride: the layer passes one step's rows
// of its (B*S, ...) arrays, whose stride is S times the row width.

// Layout of one saved row (5H values) for a (b, t):
constexpr int kGruSavedR = 0;      // r
constexpr int kGruSavedZ = 1;      // z
constexpr int kGruSavedN = 2;      // n
constexpr int kGruSavedHn = 3;     // W_hn h_prev + b_hn
constexpr int kGruSavedHPrev = 4;  // h_prev
constexpr int kGruSavedWidth = 5;  // values per hidden unit: a row is 5H

// Forward step: what the kernel reads. Aggregate:
// GruGatesForwardIn<T>{gx, gx_stride, gh, b_ih, b_hh, h_prev, h_prev_stride}.
template <class T>
struct GruGatesForwardIn {
  const T* gx = nullptr;        // (B, 3H) rows [r z n]: W_ih x_t, without bias
  long long gx_stride = 0;      //   row stride of gx, >= 3H
  const T* gh = nullptr;        // (B, 3H) contiguous [r z n]: W_hh h_prev, without
                                //   bias; may be null only when h_prev is (then 0)
  const T* b_ih = nullptr;      // (3H) input bias [b_ir b_iz b_in]
  const T* b_hh = nullptr;      // (3H) hidden bias [b_hr b_hz b_hn]
  const T* h_prev = nullptr;    // (B, H) rows: h_{t-1}; null: zeros
  long long h_prev_stride = 0;  //   row stride of h_prev, >= H (unused when null)
};

// Forward step: what it writes. Must not overlap the inputs. Aggregate:
// GruGatesForwardOut<T>{h, h_stride, h_copy, saved, saved_stride}.
template <class T>
struct GruGatesForwardOut {
  T* h = nullptr;              // (B, H) rows: h_t
  long long h_stride = 0;      //   row stride of h, >= H
  T* h_copy = nullptr;         // (B, H) contiguous: h_t again; null: not written
  T* saved = nullptr;          // (B, 5H) rows [r z n hn h_prev] (kGruSaved*) for
                               //   backward; null: not written
  long long saved_stride = 0;  //   row stride of saved, >= 5H (unused when null)
};

// Forward step, all B rows: the gates from gx, gh and the biases, h_t from
// them and h_prev.
template <class T>
void gru_gates_forward(int batch, int hidden, const GruGatesForwardIn<T>& in,
                       const GruGatesForwardOut<T>& out, cudaStream_t s, int block = 256);

// Backward step: what the kernel reads. The gradient of the loss with
// respect to h_t is dh = dh_seq + dh_in. Aggregate:
// GruGatesBackwardIn<T>{saved, saved_stride, dh_seq, dh_seq_stride, dh_in}.
template <class T>
struct GruGatesBackwardIn {
  const T* saved = nullptr;     // (B, 5H) rows: what the forward step saved
  long long saved_stride = 0;   //   row stride of saved, >= 5H
  const T* dh_seq = nullptr;    // (B, H) rows: dL/dhseq[:, t]; null: 0
  long long dh_seq_stride = 0;  //   row stride of dh_seq, >= H (unused when null)
  const T* dh_in = nullptr;     // (B, H) contiguous: dL/dh_t carried back from
                                //   the next step processed; null: 0
};

// Backward step: what it writes, with da_* the gradients of the gate
// pre-activations (derivation in the .cu file and the docs). dh_out may
// alias dh_in (each element is read and written by one thread); nothing
// else may overlap. Aggregate:
// GruGatesBackwardOut<T>{dgx, dgx_stride, dgh, dgh_stride, dh_out}.
template <class T>
struct GruGatesBackwardOut {
  T* dgx = nullptr;          // (B, 3H) rows: dGx = [da_r, da_z, da_n]
  long long dgx_stride = 0;  //   row stride of dgx, >= 3H
  T* dgh = nullptr;          // (B, 3H) rows: dGh = [da_r, da_z, da_n * r]
  long long dgh_stride = 0;  //   row stride of dgh, >= 3H
  T* dh_out = nullptr;       // (B, H) contiguous: dh * z, the direct part of
                             //   dL/dh_{t-1}; null: not written
};

// Backward step, all B rows.
template <class T>
void gru_gates_backward(int batch, int hidden, const GruGatesBackwardIn<T>& in,
                        const GruGatesBackwardOut<T>& out, cudaStream_t s, int block = 256);

// ===========================================================================
// Whole GRU layer.

// The geometry of one layer. Aggregate: GruShape{batch, steps, input, hidden}.
struct GruShape {
  int batch = 0;   // B: sequences in the batch; 0 is an empty batch (a no-op)
  int steps = 0;   // S: time steps of each sequence (the docs' "T")
  int input = 0;   // I: features of each x_t
  int hidden = 0;  // H: hidden units; the three gates make G = 3H rows
};

// The parameters, PyTorch's nn.GRU layout (weight_ih_l0, weight_hh_l0,
// bias_ih_l0, bias_hh_l0), row blocks in the gate order [r; z; n].
// Aggregate: GruWeights<T>{w_ih, w_hh, b_ih, b_hh}.
template <class T>
struct GruWeights {
  const T* w_ih = nullptr;  // (3H, I) input weights [W_ir; W_iz; W_in]
  const T* w_hh = nullptr;  // (3H, H) hidden weights [W_hr; W_hz; W_hn]
  const T* b_ih = nullptr;  // (3H) input bias [b_ir; b_iz; b_in]
  const T* b_hh = nullptr;  // (3H) hidden bias [b_hr; b_hz; b_hn]
};

// The sequence tensors of forward. Aggregate:
// GruForwardData<T>{x, h0, hseq, h_last}.
template <class T>
struct GruForwardData {
  const T* x = nullptr;   // (B, S, I) the input sequence
  const T* h0 = nullptr;  // (B, H) the initial state; null: zeros
  T* hseq = nullptr;      // (B, S, H) output: hseq[:, t] = the state after reading x_t
  T* h_last = nullptr;    // (B, H) output: the state after the last step
                          //   processed; null: not written
};

// Sizes, in elements of T (none depends on shape.input).
// Forward workspace: Gx (B*S*3H) and W_hh transposed (3H*H).
size_t gru_forward_workspace_size(const GruShape& shape);
// Reserve: the saved rows, B*S*5H, written by forward, read by backward.
size_t gru_reserve_size(const GruShape& shape);
// Backward workspace: dGx and dGh (B*S*3H each), ones (B*S).
size_t gru_backward_workspace_size(const GruShape& shape);

// Forward: writes data.hseq and, when not null, data.h_last. Every weight
// is required. d_reserve may be null (inference: nothing saved); backward
// needs it. d_workspace: gru_forward_workspace_size(shape) elements.
template <class T>
void gru_forward(cublasHandle_t handle, const GruShape& shape, const GruWeights<T>& weights,
                 const GruForwardData<T>& data, bool reverse, T* d_reserve, T* d_workspace,
                 cudaStream_t s, int block = 256);

// The sequence tensors backward reads: forward's input, and the gradients
// of the loss with respect to forward's outputs. Aggregate:
// GruBackwardData<T>{x, dhseq, dh_last}.
template <class T>
struct GruBackwardData {
  const T* x = nullptr;        // (B, S, I) forward's input sequence
  const T* dhseq = nullptr;    // (B, S, H) dL/dhseq; null: zeros
  const T* dh_last = nullptr;  // (B, H) dL/dh_last; null: zeros
};

// Which gradients of gru_backward add into their buffer (true) or
// overwrite it (false).
struct GruAccumulate {
  bool dx = false;
  bool dh0 = false;
  bool w_ih = true;
  bool w_hh = true;
  bool b_ih = true;
  bool b_hh = true;
};

// What backward produces, each gradient only when its pointer is not null.
// accumulate holds one flag per gradient (accumulate.dx for dx,
// accumulate.w_ih for dw_ih, and so on): add into the buffer (true) or
// overwrite it (false). Aggregate:
// GruGradients<T>{dx, dh0, dw_ih, dw_hh, db_ih, db_hh, accumulate}.
template <class T>
struct GruGradients {
  T* dx = nullptr;             // (B, S, I) dL/dx
  T* dh0 = nullptr;            // (B, H) dL/dh0, also when forward ran with h0 null
                               //   (the gradient at zeros)
  T* dw_ih = nullptr;          // (3H, I) dL/dW_ih
  T* dw_hh = nullptr;          // (3H, H) dL/dW_hh
  T* db_ih = nullptr;          // (3H) dL/db_ih
  T* db_hh = nullptr;          // (3H) dL/db_hh
  GruAccumulate accumulate{};  // default: dx, dh0 assign; the parameters accumulate
};

// Backward through time. d_reserve: what the forward call with the same
// shape, weights, x, h0 and direction saved. Reads weights.w_ih and
// weights.w_hh only (the biases may be null). d_workspace:
// gru_backward_workspace_size(shape) elements.
template <class T>
void gru_backward(cublasHandle_t handle, const GruShape& shape, const GruWeights<T>& weights,
                  const GruBackwardData<T>& data, bool reverse, const T* d_reserve,
                  const GruGradients<T>& grads, T* d_workspace, cudaStream_t s, int block = 256);

// ===========================================================================
// CPU references: plain loops of the formulas above, double arithmetic and
// accumulation, results rounded to T. Same structs and null rules as the
// device functions (no handle, workspace, stream or block). The layer
// references recompute everything from the inputs: they share no
// intermediate with the device code (backward takes h0 instead of a
// reserve, and reads the biases).

template <class T>
void gru_gates_forward_cpu(int batch, int hidden, const GruGatesForwardIn<T>& in,
                           const GruGatesForwardOut<T>& out);
template <class T>
void gru_gates_backward_cpu(int batch, int hidden, const GruGatesBackwardIn<T>& in,
                            const GruGatesBackwardOut<T>& out);

template <class T>
void gru_forward_cpu(const GruShape& shape, const GruWeights<T>& weights,
                     const GruForwardData<T>& data, bool reverse);
// h0 (B, H; null: zeros) in place of the reserve: the h0 of the forward.
template <class T>
void gru_backward_cpu(const GruShape& shape, const GruWeights<T>& weights,
                      const GruBackwardData<T>& data, bool reverse, const T* h0,
                      const GruGradients<T>& grads);

// ===========================================================================
// Costs, for benchmarks: a GEMM (m, n, k) is 2mnk operations; sigmoid counts
// 4 (exp, add, divide, select), tanh 1; bytes are the ideal traffic (each
// array once per kernel or GEMM that touches it). elem = sizeof(T). The
// layer costs assume every optional output is produced, h0 given and all
// gradients assigned.
Cost gru_gates_forward_cost(int batch, int hidden, int elem = 4);
Cost gru_gates_backward_cost(int batch, int hidden, int elem = 4);
Cost gru_forward_cost(const GruShape& shape, int elem = 4);
Cost gru_backward_cost(const GruShape& shape, int elem = 4);

}  // namespace timbre::kernels
