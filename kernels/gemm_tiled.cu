#include "kernels/gemm_tiled.cuh"

#include <stdexcept>
#include <string>

#include "kernels/common.cuh"

namespace timbre::kernels {

void gemm_cpu(int M, int N, int K, const float* A, const float* B, float* C) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += double(A[size_t(i) * K + k]) * B[size_t(k) * N + j];
      C[size_t(i) * N + j] = float(acc);
    }
}

// v1: thread (x, y) of block (bx, by) computes C[by*bdy + y][bx*bdx + x].
__global__ void gemm_v1_naive_kernel(int M, int N, int K, const float* __restrict__ A,
                                     const float* __restrict__ B, float* __restrict__ C) {
  const int row = blockIdx.y * blockDim.y + threadIdx.y;
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= M || col >= N) return;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) acc = fmaf(A[size_t(row) * K + k], B[size_t(k) * N + col], acc);
  C[size_t(row) * N + col] = acc;
}

// v2: block (bx, by) owns the tile C[by*T .. by*T+T) x [bx*T .. bx*T+T).
// Per K-step t: thread (x, y) loads A[row][t+x] and B[t+y][col] into the
// shared tiles (zeros past the edges), the block syncs, each thread does T
// multiply-adds from shared memory, and the block syncs again before the
// tiles are overwritten. Bs has one extra column so that threads of a warp
// (same y, consecutive x) read consecutive banks.
template <int T>
__global__ void gemm_v2_tiled_kernel(int M, int N, int K, const float* __restrict__ A,
                                     const float* __restrict__ B, float* __restrict__ C) {
  __shared__ float As[T][T];
  __shared__ float Bs[T][T + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * T + ty;
  const int col = blockIdx.x * T + tx;
  float acc = 0.f;
  for (int t = 0; t < K; t += T) {
    As[ty][tx] = (row < M && t + tx < K) ? A[size_t(row) * K + t + tx] : 0.f;
    Bs[ty][tx] = (col < N && t + ty < K) ? B[size_t(t + ty) * N + col] : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < T; ++k) acc = fmaf(As[ty][k], Bs[k][tx], acc);
    __syncthreads();
  }
  if (row < M && col < N) C[size_t(row) * N + col] = acc;
}

void gemm_v1_naive(int M, int N, int K, const float* d_A, const float* d_B, float* d_C,
                   dim3 block, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const dim3 grid(unsigned(ceil_div(N, block.x)), unsigned(ceil_div(M, block.y)));
  LAUNCH(gemm_v1_naive_kernel, grid, block, 0, stream, M, N, K, d_A, d_B, d_C);
}

void gemm_v2_tiled(int M, int N, int K, const float* d_A, const float* d_B, float* d_C, int tile,
                   cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const dim3 grid(unsigned(ceil_div(N, tile)), unsigned(ceil_div(M, tile)));
  switch (tile) {
    case 16:
      LAUNCH(gemm_v2_tiled_kernel<16>, grid, dim3(16, 16), 0, stream, M, N, K, d_A, d_B, d_C);
      break;
    case 32:
      LAUNCH(gemm_v2_tiled_kernel<32>, grid, dim3(32, 32), 0, stream, M, N, K, d_A, d_B, d_C);
      break;
    default:
      throw std::invalid_argument("gemm_v2_tiled: tile must be 16 or 32, not " +
                                  std::to_string(tile));
  }
}

}  // namespace timbre::kernels
