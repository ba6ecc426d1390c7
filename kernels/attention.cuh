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
// W h_t for all B*S rows is one GEMM; bias + tanh + score is one fused
// kernel; the softmax over t is kernels/softmax (rows B, cols S); the
// weighted sum is one kernel. Backward likewise, with GEMMs for dW, dv, db
// and the dW-side part of dhseq.
//
// Gradients: each output of attention_backward has its own accumulate flag
// (false: assign, true: add into it); a null output pointer is not computed.
// cuBLAS: the handle must be bound to the stream s given and in
// CUBLAS_POINTER_MODE_HOST (both checked). Arguments: batch >= 0 (0 is a
// no-op), every other size >= 1, batch*steps must fit in int, block a
// multiple of 32 in [32, 1024]; violations throw std::invalid_argument
// naming the function and the argument.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cost.h"

namespace timbre::kernels {

// Reserve: u = tanh(H W^T + b), B*S*A, written by forward, read by backward.
size_t attention_reserve_size(int batch, int steps, int attn);
// Backward workspace: dP (B*S*A), dalpha, de and ones (B*S each).
size_t attention_backward_workspace_size(int batch, int steps, int attn);

// Forward. Writes out (B, D), alpha (B, S) (the attention weights: backward
// needs them, and they are worth plotting) and the reserve.
template <class T>
void attention_forward(cublasHandle_t handle, int batch, int steps, int dim, int attn,
                       const T* d_hseq, const T* d_w, const T* d_b, const T* d_v, T* d_out,
                       T* d_alpha, T* d_reserve, cudaStream_t s, int block = 256);

struct AttentionAccumulate {
  bool dhseq = false;
  bool w = true;
  bool b = true;
  bool v = true;
};

// Backward from dout (B, D): dhseq (B, S, D), dW (A, D), db (A), dv (A),
// each only when its pointer is not null. d_alpha and d_reserve: what
// forward wrote. d_workspace: attention_backward_workspace_size elements.
template <class T>
void attention_backward(cublasHandle_t handle, int batch, int steps, int dim, int attn,
                        const T* d_hseq, const T* d_w, const T* d_v, const T* d_alpha,
                        const T* d_reserve, const T* d_dout, T* d_dhseq, T* d_dw, T* d_db,
                        T* d_dv, AttentionAccumulate accumulate, T* d_workspace, cudaStream_t s,
                        int block = 256);

// CPU references: plain loops of the formulas above in double, rounded to T.
template <class T>
void attention_forward_cpu(int batch, int steps, int dim, int attn, const T* hseq, const T* w,
                           const T* b, const T* v, T* out, T* alpha);
template <class T>
void attention_backward_cpu(int batch, int steps, int dim, int attn, const T* hseq, const T* w,
                            const T* b, const T* v, const T* dout, T* dhseq, T* dw, T* db,
                            T* dv, AttentionAccumulate accumulate);

// Costs, for benchmarks (ideal traffic: each array once per kernel or GEMM).
Cost attention_forward_cost(int batch, int steps, int dim, int attn, int elem = 4);
Cost attention_backward_cost(int batch, int steps, int dim, int attn, int elem = 4);

}  // namespace timbre::kernels
