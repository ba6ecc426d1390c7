// context.h: the device state every op uses: the stream work is issued on
// and the cuBLAS handle. One of each per process for now; every op runs on
// the same stream, so ops are ordered and the allocator can reuse a block
// as soon as its tensor is gone. stream() is a created, blocking stream (it
// orders against the legacy default stream), so that the trainer can
// capture a step from it as a CUDA graph (tools/train_step.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace timbre {

cudaStream_t stream();
cublasHandle_t cublas();
// The stream batches are uploaded on, so that copies overlap compute
// (tools/train_step.h); ordered against stream() by events only.
cudaStream_t copy_stream();

}  // namespace timbre
