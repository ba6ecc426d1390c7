#include "kernels/copy_rows.cuh"

#include <stdexcept>
#include <string>

#include "kernels/common.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

// Element i of the rows x cols block is (r, c) = (i / cols, i % cols).
template <class T>
__global__ void copy_rows_kernel(const T* src, long long src_stride, T* dst,
                                 long long dst_stride, long long rows, long long cols,
                                 bool accumulate) {
  const long long n = rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const long long r = i / cols, c = i - r * cols;
    const T v = src[r * src_stride + c];
    T& d = dst[r * dst_stride + c];
    d = accumulate ? d + v : v;
  }
}

template <class T>
void copy_rows(const T* d_src, long long src_stride, T* d_dst, long long dst_stride,
               long long rows, long long cols, bool accumulate, cudaStream_t s, int block) {
  if (rows < 0 || cols < 0 || src_stride < cols || dst_stride < cols)
    throw std::invalid_argument("copy_rows: need rows, cols >= 0 and strides >= cols; got rows " +
                                std::to_string(rows) + ", cols " + std::to_string(cols) +
                                ", strides " + std::to_string(src_stride) + " and " +
                                std::to_string(dst_stride));
  check_block("copy_rows", block);
  if (rows == 0 || cols == 0) return;
  if (!d_src || !d_dst) throw std::invalid_argument("copy_rows: null pointer");
  LAUNCH(copy_rows_kernel<T>, grid_1d(rows * cols, unsigned(block), 4096), block, 0, s, d_src,
         src_stride, d_dst, dst_stride, rows, cols, accumulate);
}

template <class T>
void copy_rows_cpu(const T* src, long long src_stride, T* dst, long long dst_stride,
                   long long rows, long long cols, bool accumulate) {
  for (long long r = 0; r < rows; ++r)
    for (long long c = 0; c < cols; ++c) {
      T& d = dst[r * dst_stride + c];
      d = accumulate ? d + src[r * src_stride + c] : src[r * src_stride + c];
    }
}

// Output element i of (batch, cols, rows) is (b, c, r); it reads in[b][r][c].
template <class T>
__global__ void transpose_last2_kernel(const T* in, T* out, long long batch, long long rows,
                                       long long cols, bool accumulate) {
  const long long n = batch * rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const long long r = i % rows, c = (i / rows) % cols, b = i / (rows * cols);
    const T v = in[(b * rows + r) * cols + c];
    out[i] = accumulate ? out[i] + v : v;
  }
}

template <class T>
void transpose_last2(const T* d_in, T* d_out, long long batch, long long rows, long long cols,
                     bool accumulate, cudaStream_t s, int block) {
  if (batch < 0 || rows < 0 || cols < 0)
    throw std::invalid_argument("transpose_last2: negative size");
  check_block("transpose_last2", block);
  const long long n = batch * rows * cols;
  if (n == 0) return;
  if (!d_in || !d_out || d_in == d_out)
    throw std::invalid_argument("transpose_last2: null or aliased pointers");
  LAUNCH(transpose_last2_kernel<T>, grid_1d(n, unsigned(block), 4096), block, 0, s, d_in, d_out,
         batch, rows, cols, accumulate);
}

template <class T>
void transpose_last2_cpu(const T* in, T* out, long long batch, long long rows, long long cols,
                         bool accumulate) {
  for (long long b = 0; b < batch; ++b)
    for (long long r = 0; r < rows; ++r)
      for (long long c = 0; c < cols; ++c) {
        T& o = out[(b * cols + c) * rows + r];
        const T v = in[(b * rows + r) * cols + c];
        o = accumulate ? o + v : v;
      }
}

#define TIMBRE_COPY_ROWS(T)                                                                  \
  template void copy_rows<T>(const T*, long long, T*, long long, long long, long long, bool, \
                             cudaStream_t, int);                                             \
  template void copy_rows_cpu<T>(const T*, long long, T*, long long, long long, long long, bool); \
  template void transpose_last2<T>(const T*, T*, long long, long long, long long, bool,        \
                                   cudaStream_t, int);                                        \
  template void transpose_last2_cpu<T>(const T*, T*, long long, long long, long long, bool);
TIMBRE_COPY_ROWS(float)
TIMBRE_COPY_ROWS(double)
TIMBRE_COPY_ROWS(int)
#undef TIMBRE_COPY_ROWS

}  // namespace timbre::kernels
