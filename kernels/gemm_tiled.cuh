// gemm_tiled: C = A * B for row-major float matrices, A (M x K), B (K x N),
// C (M x N):  C[i][j] = sum_k A[i][k] * B[k][j].
//
// Teaching kernels: the engine sends its GEMMs to cuBLAS. These show the
// step from one-thread-per-output to shared-memory tiles, and they are
// simcuda's test of __syncthreads-heavy code.
//   v1_naive : one thread per C element, reads a row of A and a column of B
//              from global memory (2K loads per output).
//   v2_tiled : a block computes a T x T tile of C; it walks K in T-wide
//              steps, staging a tile of A and of B in shared memory, so each
//              global element is loaded once per block instead of T times.
#pragma once

#include <cuda_runtime_api.h>

namespace timbre::kernels {

// Reference: plain loops, double accumulation.
void gemm_cpu(int M, int N, int K, const float* A, const float* B, float* C);

// block: threads per block in x (columns) and y (rows), each <= 32.
void gemm_v1_naive(int M, int N, int K, const float* d_A, const float* d_B, float* d_C,
                   dim3 block, cudaStream_t stream);

// tile: 16 or 32 (the block is tile x tile threads).
void gemm_v2_tiled(int M, int N, int K, const float* d_A, const float* d_B, float* d_C,
                   int tile, cudaStream_t stream);

// Work of one GEMM, for benchmarks.
inline double gemm_flops(int M, int N, int K) { return 2.0 * M * N * K; }

}  // namespace timbre::kernels
