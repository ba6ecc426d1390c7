// copy_rows: dst[r * dst_stride + c] = src[r * src_stride + c] (or +=) for
// r < rows, c < cols. The strided copy behind slicing and concatenation
// along the last dimension: taking time step t of a (B, T, H) sequence is
// rows = B, cols = H, src = seq + t*H, src_stride = T*H; writing a (B, F1)
// block into the first columns of a (B, F1 + F2) concat is rows = B,
// cols = F1, dst_stride = F1 + F2. Backward of either is the same copy the
// other way round, with accumulate when the gradient already holds values.
//
// One thread per element in a grid-stride loop over rows*cols; consecutive
// threads take consecutive columns (coalesced on a GPU); no barrier
// (simcuda's fast path). T is float or double; int32 for labels.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cost.h"

namespace timbre::kernels {

template <class T>
void copy_rows(const T* d_src, long long src_stride, T* d_dst, long long dst_stride,
               long long rows, long long cols, bool accumulate, cudaStream_t s, int block = 256);

// Batched transpose: out[b][c][r] = in[b][r][c] for a (batch, rows, cols)
// array (or += with accumulate). Turns (N, C, T) feature maps into (N, T, C)
// sequences. One thread per output element, consecutive threads along the
// output's last dimension (coalesced writes), no barrier.
template <class T>
void transpose_last2(const T* d_in, T* d_out, long long batch, long long rows, long long cols,
                     bool accumulate, cudaStream_t s, int block = 256);
template <class T>
void transpose_last2_cpu(const T* in, T* out, long long batch, long long rows, long long cols,
                         bool accumulate);

template <class T>
void copy_rows_cpu(const T* src, long long src_stride, T* dst, long long dst_stride,
                   long long rows, long long cols, bool accumulate);

inline Cost copy_rows_cost(long long rows, long long cols, bool accumulate, int elem = 4) {
  return elementwise_cost(double(rows) * double(cols), accumulate ? 2 : 1, 1, accumulate ? 1 : 0,
                          elem);
}

}  // namespace timbre::kernels
