// metrics: a training step's loss and accuracy summed on the device, so the
// host reads them once per log interval instead of once per step.
//
// One block. Thread r takes rows r, r + blockDim.x, ...: the argmax of its
// row of logits (the first largest, as std::max_element) against the label;
// the block sums its counts with warp shuffles, then one shared-memory pass
// over the warps' sums; thread 0 adds the counts and loss * rows to the
// accumulators. Launches on one stream run in order, so the plain adds of
// thread 0 need no atomics and the sums are the same bits on every run: the
// loss sum is the host's old sequential sum, step after step, in double.
// A batch is at most a few hundred rows of a few classes: one block is the
// right size (the launch, not the arithmetic, is the cost).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cost.h"

namespace timbre::kernels {

// Device accumulators; the caller sets them (zeros, or the sums so far when a
// run resumes) and reads them back.
struct StepMetrics {
  double loss_sum = 0;                         // sum over steps of mean loss * rows
  unsigned long long correct = 0;              // rows whose argmax is their label
  unsigned long long samples = 0;              // rows seen
  unsigned long long first_nonfinite = ~0ull;  // smallest index of a step with a non-finite loss
  unsigned long long steps = 0;                // steps added: the next step's index
};

// Adds one step: logits (rows x cols, row-major), labels (rows, each in
// [0, cols): the caller checked them) and the step's mean loss (one T on the
// device). The step's index is the count `steps` before it (recorded in
// first_nonfinite when the loss is NaN or infinite); counted on the device,
// so a step captured once in a CUDA graph gets its own index at every
// replay. rows >= 1, cols >= 1.
template <class T>
void accumulate_step_metrics(const T* d_logits, const int32_t* d_labels, const T* d_loss,
                             int rows, int cols, StepMetrics* d_acc, cudaStream_t s);

// The CPU reference: the same sums in the same order.
template <class T>
void accumulate_step_metrics_cpu(const T* logits, const int32_t* labels, const T* loss, int rows,
                                 int cols, StepMetrics* acc);

// Work of one launch: each logit compared once, the logits, labels and the
// loss read, the 40-byte accumulators read and written.
inline Cost step_metrics_cost(long long rows, long long cols, int elem = 4) {
  return Cost{double(rows) * double(cols),
              double(elem) * double(rows * cols + 1) + 4.0 * double(rows) + 80.0};
}

}  // namespace timbre::kernels
