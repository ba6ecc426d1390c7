// conv2d: 2-D convolution (cross-correlation, as PyTorch and Keras), NCHW,
// forward and backward. T is float or double (double for finite-difference
// gradient checks). Derivations and diagrams: docs/kernels/conv2d.md.
//
// Shapes: input x (N, C, H, W), weight w (K, C, R, S) (PyTorch's layout),
// bias b (K), output y (N, K, P, Q), all contiguous row-major, with zero
// padding (pad_h, pad_w) and strides (stride_h, stride_w):
//   P = floor((H + 2 pad_h - R) / stride_h) + 1,  Q likewise with W, S.
//
// Forward:
//   y[n,k,p,q] = b[k] + sum_{c<C, r<R, s<S} w[k,c,r,s] * x[n,c, p*stride_h - pad_h + r,
//                                                             q*stride_w - pad_w + s]
// where x outside [0, H) x [0, W) is 0 (the padding). Backward, from
// dy = dL/dy:
//   dx[n,c,h,v] = sum_{k,r,s : h = p*stride_h - pad_h + r, v = q*stride_w - pad_w + s,
//                              0 <= p < P, 0 <= q < Q} w[k,c,r,s] * dy[n,k,p,q]
//   dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n,c, p*stride_h - pad_h + r, q*stride_w - pad_w + s]
//   db[k]       = sum_{n,p,q} dy[n,k,p,q]
//
// Two versions, both tested against the CPU references:
//   v1_direct : one thread per output element of each pass (y, dx, dw, db),
//               summing its terms straight from global memory in a fixed
//               order. Barrier-free. The readable reference kernels.
//   v2_im2col : what the engine uses. Per image, im2col copies the input
//               patches into the column matrix
//                 col[(c,r,s), (p,q)] = x[n, c, p*stride_h - pad_h + r, q*stride_w - pad_w + s]
//               of (C*R*S) x (P*Q), so that the convolution is a GEMM:
//                 forward      y_n  = w * col_n                 (K x PQ)
//                 backward dx  dcol = w^T * dy_n, then col2im    (CRS x PQ -> C x H x W)
//                 backward dw  dw  = sum_n dy_n * col_n^T       (K x CRS)
//               with w seen as a (K x CRS) matrix and y_n, dy_n as (K x PQ).
//               The GEMMs are cuBLAS (column-major; the mapping is in
//               conv2d.cu). col2im is a gather: each input pixel sums the
//               column entries that came from it, so no two threads write one
//               address and there are no atomics. db is a block reduction per
//               channel. dw's sum over images is a batched GEMM into
//               per-image slots of partial sums, then one kernel adding the
//               slots in order (no GEMM per image). 1x1 convolutions with stride 1 and no padding
//               ("pointwise") skip im2col: col_n is x_n itself.
//
// Determinism: no atomics anywhere; every sum has a fixed order. The same
// inputs, shapes, block size and workspace size give the same bits on every
// run (on a GPU: with the same cuBLAS version on the same GPU model).
//
// Gradients: accumulate = false assigns (the output is never read, so it may
// hold anything), accumulate = true adds into it. Parameter gradients (dw,
// db) typically accumulate, input gradients (dx) assign.
//
// Arguments, checked by every launcher (std::invalid_argument, naming the
// launcher and the wrong value): every size >= 1, strides >= 1, pads >= 0,
// the kernel fits in the padded input (P, Q >= 1), C*R*S and P*Q below 2^31;
// block a multiple of 32 in [32, 1024]; the pointers a launcher reads or
// writes not null. Outputs must not alias inputs.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "kernels/cost.h"

namespace timbre::kernels {

// The geometry of one convolution. Aggregate: Conv2dShape{N, C, H, W, K, R,
// S, stride_h, stride_w, pad_h, pad_w}; strides default to 1, pads to 0.
struct Conv2dShape {
  int N = 0, C = 0, H = 0, W = 0;  // input x (N, C, H, W)
  int K = 0, R = 0, S = 0;         // weight w (K, C, R, S)
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;

  // Output height and width; 0 when the kernel does not fit in the padded
  // input or a stride is < 1 (validate() rejects both).
  int P() const { return out_size(H, R, stride_h, pad_h); }
  int Q() const { return out_size(W, S, stride_w, pad_w); }

  long long x_size() const { return (long long)N * C * H * W; }
  long long w_size() const { return (long long)K * C * R * S; }
  long long y_size() const { return (long long)N * K * P() * Q(); }
  // The column matrix of one image: col_rows() x col_cols() = (C*R*S) x (P*Q).
  long long col_rows() const { return (long long)C * R * S; }
  long long col_cols() const { return (long long)P() * Q(); }
  // 1x1, stride 1, no padding: the column matrix of image n is x_n itself.
  bool pointwise() const {
    return R == 1 && S == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }

  // "x (3, 5, 7, 9), w (4, 5, 3, 3), stride (1, 1), pad (1, 1) -> y (3, 4, 7, 9)".
  std::string str() const;
  // Throws std::invalid_argument("<op>: ...") naming the first bad value.
  void validate(const std::string& op) const;

 private:
  // floor((in + 2 pad - kernel) / stride) + 1, computed in 64 bits and
  // clamped to 2^31 - 1, so that no int arguments overflow (validate()
  // rejects padded sizes that large).
  static int out_size(int in, int kernel, int stride, int pad) {
    const long long span = in + 2LL * pad - kernel;
    if (stride < 1 || span < 0) return 0;
    const long long out = span / stride + 1;
    return out > 0x7fffffffLL ? 0x7fffffff : int(out);
  }
};

// ---------------------------------------------------------------------------
// v1_direct: one thread per output element (grid-stride loops), no barrier,
// no shared memory. d_b may be null (no bias). block: a multiple of 32 in
// [32, 1024].

template <class T>
void conv2d_forward_v1_direct(const Conv2dShape& shape, const T* d_x, const T* d_w, const T* d_b,
                              T* d_y, cudaStream_t stream, int block = 256);
// dx (=, or += when accumulate) from w and dy: one thread per x element.
template <class T>
void conv2d_backward_data_v1_direct(const Conv2dShape& shape, const T* d_w, const T* d_dy, T* d_dx,
                                    bool accumulate, cudaStream_t stream, int block = 256);
// dw from x and dy: one thread per w element, summing over n, p, q.
template <class T>
void conv2d_backward_filter_v1_direct(const Conv2dShape& shape, const T* d_x, const T* d_dy,
                                      T* d_dw, bool accumulate, cudaStream_t stream,
                                      int block = 256);
// db from dy: one thread per channel k, summing over n, p, q.
template <class T>
void conv2d_backward_bias_v1_direct(const Conv2dShape& shape, const T* d_dy, T* d_db,
                                    bool accumulate, cudaStream_t stream, int block = 256);

// ---------------------------------------------------------------------------
// v2_im2col: im2col + cuBLAS GEMM (the engine's version).
//
// Workspace. The v2 launchers take a caller-owned device workspace
// (d_workspace, workspace_bytes). One image's share is
// conv2d_workspace_elements(shape) values of T: its column matrix
// (conv2d_col_elements) and a slot of filter-gradient partial sums (K*C*R*S
// values). A launcher processes the batch in chunks of
//   images = min(N, workspace_bytes / (conv2d_workspace_elements(shape) * sizeof(T)))
// images: im2col of the chunk, then one strided-batched GEMM over the chunk.
// The workspace holds the chunk's column matrices first, then its slots.
// A workspace smaller than one image's share is an error, except for the
// forward and backward-data passes of pointwise convolutions, which need
// none (d_workspace may then be null). Larger chunks mean fewer, larger
// GEMMs. Forward and dx have the same bits for any chunk size under
// simcuda; dw's sum over images is grouped by slot (slot i holds images i,
// i + chunk, ...), so another chunk size changes its rounding, never its
// determinism.
//
// cuBLAS: `handle` must be set to `stream` (cublasSetStream) and to
// CUBLAS_POINTER_MODE_HOST (the default); the launchers check both. GEMMs
// run on the handle, their own kernels on `stream`.

// Values of T in one image's column matrix: C*R*S*P*Q, or 0 when pointwise.
long long conv2d_col_elements(const Conv2dShape& shape);
// Values of T in one image's share of the workspace: the column matrix plus
// one slot of filter-gradient partials, conv2d_col_elements + K*C*R*S.
long long conv2d_workspace_elements(const Conv2dShape& shape);

// Bytes of workspace for chunks of `images` images (1 <= images; more than
// N counts as N).
template <class T>
size_t conv2d_workspace_bytes(const Conv2dShape& shape, int images = 1) {
  const long long n = images < shape.N ? images : shape.N;
  return size_t(n > 0 ? n : 0) * size_t(conv2d_workspace_elements(shape)) * sizeof(T);
}

// y = w * x + b. d_b may be null (no bias). With a bias, y is first filled
// with b[k] and the GEMM adds into it (beta = 1); the fill rides in each
// chunk's im2col launch (a pointwise layer, which has none, fills in a
// launch of its own). Launches: im2col and one strided-batched GEMM per
// chunk (pointwise: the GEMM per chunk, plus the fill with a bias).
template <class T>
void conv2d_forward_v2_im2col(const Conv2dShape& shape, const T* d_x, const T* d_w, const T* d_b,
                              T* d_y, T* d_workspace, size_t workspace_bytes,
                              cublasHandle_t handle, cudaStream_t stream, int block = 256);

// dx (=, or += when accumulate): strided-batched GEMM dcol = w^T dy_n into
// the workspace, then the col2im gather (which assigns or adds). Pointwise:
// one GEMM straight into dx (beta = 0 or 1).
template <class T>
void conv2d_backward_data_v2_im2col(const Conv2dShape& shape, const T* d_w, const T* d_dy,
                                    T* d_dx, bool accumulate, T* d_workspace,
                                    size_t workspace_bytes, cublasHandle_t handle,
                                    cudaStream_t stream, int block = 256);

// dw (=, or += when accumulate) = sum_n dy_n col_n^T: per chunk, im2col and
// one strided-batched GEMM in which image i of the chunk writes (first
// chunk) or adds to (later chunks) slot i of the workspace's partials; then
// one kernel sums the slots, in slot order, into dw. 2 launches per chunk
// plus 1 (pointwise: 1 per chunk plus 1), whatever N.
template <class T>
void conv2d_backward_filter_v2_im2col(const Conv2dShape& shape, const T* d_x, const T* d_dy,
                                      T* d_dw, bool accumulate, T* d_workspace,
                                      size_t workspace_bytes, cublasHandle_t handle,
                                      cudaStream_t stream, int block = 256);

// db (=, or += when accumulate): one block per channel k; each thread sums a
// fixed slice of (n, p, q) in T, then the block combines the partial sums by
// warp shuffles and one barrier, in a fixed order.
template <class T>
void conv2d_backward_bias_v2_reduce(const Conv2dShape& shape, const T* d_dy, T* d_db,
                                    bool accumulate, cudaStream_t stream, int block = 256);

// The tensors of the combined backward pass (device pointers). Aggregate:
// Conv2dGradTensors<T>{x, w, dy, dx, dw, db}.
template <class T>
struct Conv2dGradTensors {
  const T* x;   // input (N, C, H, W); read only for dw (may be null without dw)
  const T* w;   // weight (K, C, R, S); read only for dx (may be null without dx)
  const T* dy;  // dL/dy (N, K, P, Q), the upstream gradient
  T* dx;        // dL/dx (N, C, H, W), or null to skip it
  T* dw;        // dL/dw (K, C, R, S), or null to skip it
  T* db;        // dL/db (K), or null to skip it
};

// Backward: false assigns a gradient, true adds to it.
struct Conv2dAccumulate {
  bool dx = false;
  bool dw = false;
  bool db = false;
};

// All three gradients. Any of t.dx, t.dw, t.db may be null to skip it; t.x
// is read only for dw, t.w only for dx, and the handle and workspace only for
// dx and dw (each may be null otherwise). Each gradient has its own
// accumulate flag. All arguments are checked before anything runs. Order:
// dw, then dx (both use the workspace), then db.
template <class T>
void conv2d_backward_v2_im2col(const Conv2dShape& shape, const Conv2dGradTensors<T>& t,
                               Conv2dAccumulate acc, T* d_workspace, size_t workspace_bytes,
                               cublasHandle_t handle, cudaStream_t stream, int block = 256);

// ---------------------------------------------------------------------------
// CPU references: the textbook loops of the formulas above, accumulating in
// double, results rounded to T. backward_data scatters (each dy term into
// the x pixel it came from), the transpose of forward as written, unlike the
// kernels' gather. Shapes are validated; b may be null.

template <class T>
void conv2d_forward_cpu(const Conv2dShape& shape, const T* x, const T* w, const T* b, T* y);
template <class T>
void conv2d_backward_data_cpu(const Conv2dShape& shape, const T* w, const T* dy, T* dx,
                              bool accumulate);
template <class T>
void conv2d_backward_filter_cpu(const Conv2dShape& shape, const T* x, const T* dy, T* dw,
                                bool accumulate);
template <class T>
void conv2d_backward_bias_cpu(const Conv2dShape& shape, const T* dy, T* db, bool accumulate);

// ---------------------------------------------------------------------------
// Costs, for benchmarks. FLOPs count a multiply-add as 2, padding included
// (the GEMM does those products too); bytes are the ideal traffic (each
// array read or written once; elem = sizeof(T)). conv2d_im2col_cost is what
// v2 adds on top: im2col writes the column matrices and the GEMM reads them
// back (forward, and dw), or the GEMM writes them and col2im reads them (dx).
Cost conv2d_forward_cost(const Conv2dShape& shape, bool bias, int elem = 4);
Cost conv2d_backward_data_cost(const Conv2dShape& shape, bool accumulate, int elem = 4);
Cost conv2d_backward_filter_cost(const Conv2dShape& shape, bool accumulate, int elem = 4);
Cost conv2d_backward_bias_cost(const Conv2dShape& shape, bool accumulate, int elem = 4);
Cost conv2d_im2col_cost(const Conv2dShape& shape, int elem = 4);


}  // namespace timbre::kernels
