#include "kernels/reduce.cuh"

#include <stdexcept>
#include <string>

#include "kernels/common.cuh"

namespace timbre::kernels {

double reduce_sum_cpu(const float* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

int reduce_sum_blocks(long long n, int threads) {
  const long long b = ceil_div(n > 0 ? n : 1, threads);
  return int(b < 1024 ? b : 1024);  // pass 2 then reads at most 1024 partials
}

// Thread t of block b adds x[b*T + t], x[(b + G)*T + t], ... (T threads, G
// blocks), then the block folds its T sums through dynamic shared memory:
// step s adds s[t + s] into s[t] for t < s, for s = T/2, T/4, ..., 1.
__global__ void reduce_v1_kernel(const float* __restrict__ x, long long n,
                                 float* __restrict__ out) {
  float* s = simcuda::dynamic_shared<float>();
  const unsigned t = threadIdx.x;
  float v = 0.f;
  for (long long i = (long long)blockIdx.x * blockDim.x + t; i < n;
       i += (long long)blockDim.x * gridDim.x)
    v += x[i];
  s[t] = v;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Same slices as v1; then warp w's lanes butterfly-sum into every lane,
// lane 0 stores warp_sums[w], one barrier, and warp 0 sums the warp sums.
__global__ void reduce_v2_kernel(const float* __restrict__ x, long long n,
                                 float* __restrict__ out) {
  __shared__ float warp_sums[32];
  const unsigned t = threadIdx.x, lane = t & 31u, warp = t >> 5;
  float v = 0.f;
  for (long long i = (long long)blockIdx.x * blockDim.x + t; i < n;
       i += (long long)blockDim.x * gridDim.x)
    v += x[i];
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const unsigned nwarps = blockDim.x / 32;
    v = lane < nwarps ? warp_sums[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

namespace {
void check_threads(int threads) {
  if (threads < 32 || threads > 1024 || (threads & (threads - 1)))
    throw std::invalid_argument("reduce_sum: threads must be a power of two in [32, 1024], not " +
                                std::to_string(threads));
}
}  // namespace

void reduce_sum_v1_smem(const float* d_x, long long n, float* d_out, float* d_partial,
                        int threads, cudaStream_t stream) {
  check_threads(threads);
  const int blocks = reduce_sum_blocks(n, threads);
  const size_t smem = size_t(threads) * sizeof(float);
  LAUNCH(reduce_v1_kernel, blocks, threads, smem, stream, d_x, n, d_partial);
  LAUNCH(reduce_v1_kernel, 1, threads, smem, stream, d_partial, (long long)blocks, d_out);
}

void reduce_sum_v2_shuffle(const float* d_x, long long n, float* d_out, float* d_partial,
                           int threads, cudaStream_t stream) {
  check_threads(threads);
  const int blocks = reduce_sum_blocks(n, threads);
  LAUNCH(reduce_v2_kernel, blocks, threads, 0, stream, d_x, n, d_partial);
  LAUNCH(reduce_v2_kernel, 1, threads, 0, stream, d_partial, (long long)blocks, d_out);
}

}  // namespace timbre::kernels
