// attention: the additive attention over time that follows the
// bidirectional GRU in the parallel CNN-RNN model (Bahdanau-style scoring,
// softmax over the time steps, weighted sum). T is float or double (double
// for finite-difference gradient checks). GPU strategy and derivation:
// docs/kernels/attention.md.
//
// Attention over time (the model's attention), for hseq (B, S, D):
//   u_t   = tanh(W h_t + b)           W (A, D), b (A)
//   e_t   = v . u_t                   v (A)
//   alpha = softmax_t(e)              (B, S)
//   out   = sum_t alpha_t h_t         (B, D)
// W h_t for all B*S rows is one GEMM; bias + tanh one elementwise kernel;
// the scores one GEMM (a matrix-vector product); the softmax over t is
// kernels/softmax (rows B, cols S); the weighted sum is one kernel.
// Backward: dalpha and the alpha-side part of dhseq are strided-batched
// GEMMs (per sequence a matrix-vector product and a rank-1 update), the
// tanh derivative one elementwise kernel, and GEMMs give dW, dv, db and the
// W-side part of dhseq.
//
// Gradients: each output of attention_backward has its own accumulate flag
// (false: assign, true: add into it); a null output pointer is not computed.
// cuBLAS: the handle must be bound to the stream s given and in
// CUBLAS_POINTER_MODE_HOST (both checked). Arguments: batch >= 0 (0 is a
// no-op), every other size >= 1, batch*steps must fit in int, block a
// multiple of 32 in [32, 1024]; violations throw std::invalid_argument
// naming the function and the argument, a field of a struct by its name
// ("attention_forward: w is null").
//
// The arguments come in small aggregate structs, one per role, as in
// kernels/gru.cuh: the geometry (AttentionShape), the parameters
// (AttentionWeights), the sequence tensors (AttentionForwardData,
// AttentionBackwardData) and the gradients with their accumulate flags
// (AttentionGradients). At a call site each is a braced list in its
// fields' order, e.g.
//   attention_forward<float>(handle, {B, S, D, A}, {w, b, v}, {hseq, out, alpha},
//                            reserve, stream);
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cost.h"

namespace timbre::kernels {

// The geometry. Aggregate: AttentionShape{batch, steps, dim, attn}.
struct AttentionShape {
  int batch = 0;  // B: sequences in the batch; 0 is an empty batch (a no-op)
  int steps = 0;  // S: time steps attended over (the softmax runs over them)
  int dim = 0;    // D: features of each h_t (both GRU directions: 2H)
  int attn = 0;   // A: units of the scoring layer
};

// The parameters. Aggregate: AttentionWeights<T>{w, b, v}.
template <class T>
struct AttentionWeights {
  const T* w = nullptr;  // (A, D) W, row-major: u_t = tanh(W h_t + b)
  const T* b = nullptr;  // (A) b
  const T* v = nullptr;  // (A) v: e_t = v . u_t
};

// The sequence tensors of forward. Aggregate:
// AttentionForwardData<T>{hseq, out, alpha}.
template <class T>
struct AttentionForwardData {
  const T* hseq = nullptr;  // (B, S, D) the sequence attended over
  T* out = nullptr;         // (B, D) output: sum_t alpha_t h_t
  T* alpha = nullptr;       // (B, S) output: the attention weights (backward
                            //   needs them, and they are worth plotting)
};

// Reserve: u = tanh(H W^T + b), B*S*A, written by forward, read by backward.
size_t attention_reserve_size(const AttentionShape& shape);
// Backward workspace: dP (B*S*A), dalpha, de and ones (B*S each).
size_t attention_backward_workspace_size(const AttentionShape& shape);

// Forward. Writes data.out, data.alpha and the reserve (every pointer is
// required): d_reserve, attention_reserve_size(shape) elements.
template <class T>
void attention_forward(cublasHandle_t handle, const AttentionShape& shape,
                       const AttentionWeights<T>& weights, const AttentionForwardData<T>& data,
                       T* d_reserve, cudaStream_t s, int block = 256);

// What backward reads besides what forward saved. Aggregate:
// AttentionBackwardData<T>{hseq, dout}.
template <class T>
struct AttentionBackwardData {
  const T* hseq = nullptr;  // (B, S, D) forward's input
  const T* dout = nullptr;  // (B, D) dL/dout
};

// Which gradients of attention_backward add into their buffer (true) or
// overwrite it (false).
struct AttentionAccumulate {
  bool dhseq = false;
  bool w = true;
  bool b = true;
  bool v = true;
};

// What backward produces, each gradient only when its pointer is not null,
// added into it (true) or assigned (false) as its flag in accumulate says
// (accumulate.w for dw, and so on). Aggregate:
// AttentionGradients<T>{dhseq, dw, db, dv, accumulate}.
template <class T>
struct AttentionGradients {
  T* dhseq = nullptr;                // (B, S, D) dL/dhseq
  T* dw = nullptr;                   // (A, D) dL/dW
  T* db = nullptr;                   // (A) dL/db
  T* dv = nullptr;                   // (A) dL/dv
  AttentionAccumulate accumulate{};  // default: dhseq assigns; the parameters accumulate
};

// Backward from data.dout. d_alpha and d_reserve: what forward wrote.
// Reads weights.w and weights.v only (b may be null). d_workspace:
// attention_backward_workspace_size(shape) elements.
template <class T>
void attention_backward(cublasHandle_t handle, const AttentionShape& shape,
                        const AttentionWeights<T>& weights, const AttentionBackwardData<T>& data,
                        const T* d_alpha, const T* d_reserve, const AttentionGradients<T>& grads,
                        T* d_workspace, cudaStream_t s, int block = 256);

// CPU references: plain loops of the formulas above in double, rounded to
// T, taking the same structs (they recompute u and alpha: no reserve;
// data.alpha may be null).
template <class T>
void attention_forward_cpu(const AttentionShape& shape, const AttentionWeights<T>& weights,
                           const AttentionForwardData<T>& data);
template <class T>
void attention_backward_cpu(const AttentionShape& shape, const AttentionWeights<T>& weights,
                            const AttentionBackwardData<T>& data,
                            const AttentionGradients<T>& grads);

// Costs, for benchmarks (ideal traffic: each array once per kernel or GEMM).
Cost attention_forward_cost(const AttentionShape& shape, int elem = 4);
Cost attention_backward_cost(const AttentionShape& shape, int elem = 4);

}  // namespace timbre::kernels
