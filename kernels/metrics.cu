#include "kernels/metrics.cuh"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/common.cuh"
#include "kernels/launcher.h"

namespace timbre::kernels {

namespace {

constexpr int kThreads = 256;

template <class T>
__device__ inline int argmax_first(const T* row, int cols) {
  int best = 0;
  for (int k = 1; k < cols; ++k)
    if (row[best] < row[k]) best = k;
  return best;
}

template <class T>
__global__ void step_metrics_kernel(const T* logits, const int32_t* labels, const T* loss,
                                    int rows, int cols, StepMetrics* acc) {
  __shared__ unsigned warp_sums[kThreads / 32];
  unsigned correct = 0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    correct += argmax_first(logits + (long long)r * cols, cols) == labels[r] ? 1u : 0u;
  for (int offset = 16; offset > 0; offset >>= 1)
    correct += __shfl_down_sync(0xffffffffu, correct, offset);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = correct;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    const T l = *loss;
    const unsigned long long step = acc->steps;
    acc->correct += total;
    acc->samples += (unsigned long long)rows;
    acc->loss_sum += double(l) * double(rows);
    if (!(l - l == T(0)) && step < acc->first_nonfinite) acc->first_nonfinite = step;
    acc->steps = step + 1;
  }
}

}  // namespace

template <class T>
void accumulate_step_metrics(const T* d_logits, const int32_t* d_labels, const T* d_loss,
                             int rows, int cols, StepMetrics* d_acc, cudaStream_t s) {
  const char* op = "accumulate_step_metrics";
  check_at_least(op, "rows", rows, 1);
  check_at_least(op, "cols", cols, 1);
  check_pointer(op, d_logits, "d_logits");
  check_pointer(op, d_labels, "d_labels");
  check_pointer(op, d_loss, "d_loss");
  check_pointer(op, d_acc, "d_acc");
  LAUNCH(step_metrics_kernel<T>, 1, kThreads, 0, s, d_logits, d_labels, d_loss, rows, cols, d_acc);
}

template <class T>
void accumulate_step_metrics_cpu(const T* logits, const int32_t* labels, const T* loss, int rows,
                                 int cols, StepMetrics* acc) {
  for (int r = 0; r < rows; ++r) {
    const T* row = logits + (long long)r * cols;
    acc->correct += std::max_element(row, row + cols) - row == labels[r] ? 1 : 0;
  }
  acc->samples += (unsigned long long)rows;
  acc->loss_sum += double(*loss) * double(rows);
  if (!std::isfinite(double(*loss)) && acc->steps < acc->first_nonfinite)
    acc->first_nonfinite = acc->steps;
  acc->steps++;
}

#define TIMBRE_METRICS_INSTANTIATE(T)                                                       \
  template void accumulate_step_metrics<T>(const T*, const int32_t*, const T*, int, int,   \
                                           StepMetrics*, cudaStream_t);                     \
  template void accumulate_step_metrics_cpu<T>(const T*, const int32_t*, const T*, int, int, \
                                               StepMetrics*);
TIMBRE_METRICS_INSTANTIATE(float)
TIMBRE_METRICS_INSTANTIATE(double)

}  // namespace timbre::kernels
