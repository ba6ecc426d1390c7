// internal.h: what simcuda's executor and runtime share. Not for users.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>

namespace simcuda::detail {

// The simulated device's shared-memory limits (those of an H100).
constexpr int kDefaultSharedPerBlock = 48 * 1024;    // without opt-in
constexpr int kMaxSharedPerBlockOptin = 227 * 1024;  // cudaFuncSetAttribute ceiling

#if defined(SIMCUDA_SHARED_STATIC)
constexpr bool SIMCUDA_SHARED_STATIC_ON = true;
#else
constexpr bool SIMCUDA_SHARED_STATIC_ON = false;
#endif

// Records `e` as this host thread's last error (cudaGetLastError), with an
// explanation that simcuda::last_error_detail() returns (runtime.cpp).
void set_error(cudaError_t e, std::string detail = {});
// Only the explanation: for launches, whose error simcuda::launch returns and
// which, like kernel<<<>>> followed by cudaGetLastError, leave no last error.
void set_error_detail(cudaError_t e, std::string detail);

// cudaFuncAttributeMaxDynamicSharedMemorySize, per kernel (executor.cpp).
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes);
int max_dynamic_smem(const void* kernel);

// Runs task(0) ... task(n-1) on simcuda's worker pool (the calling thread
// is one of the workers), each task exactly once, and returns when all are
// done; one parallel_host or kernel at a time. For host-side library work
// (cuBLAS's GEMMs) so that it shares the pool's passive waiting instead of
// a second thread pool that spins (executor.cpp).
void parallel_host(unsigned n, const std::function<void(unsigned)>& task);

// SIMCUDA_STREAMS=adversarial (runtime.cpp): runs what a library call on
// stream s must find done (cuBLAS and cuFFT run on the calling thread when
// called, after the work queued before them on their stream).
void before_host_work(cudaStream_t s);

// A library call's host work (cuBLAS's GEMMs, cuFFT's transforms) issued
// on stream s: recorded when s is being captured (cudaStreamBeginCapture),
// otherwise run now, after before_host_work(s). `work` must capture its
// arguments by value: a graph replays it later.
void host_work(cudaStream_t s, std::function<void()> work);

// Whether s is being captured. cuFFT's transforms are not captured by
// simcuda: a transform on a capturing stream fails and invalidates the
// capture (mark_capture_broken) rather than run out of order.
bool capturing(cudaStream_t s);
void mark_capture_broken(cudaStream_t s, const char* why);

}  // namespace simcuda::detail
