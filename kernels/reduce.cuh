// reduce: s = sum_i x[i] over n floats, in two passes that give the same
// bits on every run (no floating-point atomics):
//   pass 1: `blocks` blocks each sum a grid-strided slice into partial[b];
//   pass 2: one block sums the partials into *out.
//
//   v1_smem    : each thread accumulates its slice, then the block halves a
//                shared array log2(threads) times (a barrier per step).
//   v2_shuffle : each warp reduces its 32 values with __shfl_xor_sync (no
//                shared memory, no barrier), warp sums meet in a 32-float
//                shared array, and warp 0 reduces those.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace timbre::kernels {

// Reference: double accumulation.
double reduce_sum_cpu(const float* x, size_t n);

// Blocks used by pass 1 for n items (the size d_partial needs).
int reduce_sum_blocks(long long n, int threads);

// threads: a power of two from 32 to 1024. d_partial: reduce_sum_blocks floats.
void reduce_sum_v1_smem(const float* d_x, long long n, float* d_out, float* d_partial,
                        int threads, cudaStream_t stream);
void reduce_sum_v2_shuffle(const float* d_x, long long n, float* d_out, float* d_partial,
                           int threads, cudaStream_t stream);

}  // namespace timbre::kernels
