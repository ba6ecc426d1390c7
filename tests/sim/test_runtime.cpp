// simcuda's CUDA runtime subset: allocation registry and poisoning, checked
// copies, streams, events, device description and error reporting.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/sim/control.h"

namespace {

TEST(Runtime, NewDeviceMemoryIsPoisonedAndAligned) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 1000 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 256, 0u);
  std::vector<float> h(1000, 1.f);
  ASSERT_EQ(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) ASSERT_TRUE(std::isnan(v));
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(Runtime, PoisonCanBeTurnedOff) {
  simcuda::Options o = simcuda::options();
  o.poison = false;
  simcuda::ScopedOptions scope(o);
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64), cudaSuccess);
  ASSERT_EQ(cudaMemset(d, 0, 64), cudaSuccess);
  int h[16];
  ASSERT_EQ(cudaMemcpy(h, d, 64, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int v : h) EXPECT_EQ(v, 0);
  cudaFree(d);
}

TEST(Runtime, FreedLargeBlocksAreReusedAndRepoisoned) {
  const size_t bytes = 1 << 20;
  void* a = nullptr;
  ASSERT_EQ(cudaMalloc(&a, bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(a, 0, bytes), cudaSuccess);
  ASSERT_EQ(cudaFree(a), cudaSuccess);
  void* b = nullptr;
  ASSERT_EQ(cudaMalloc(&b, bytes), cudaSuccess);
  EXPECT_EQ(a, b) << "a freed block of the same size should come back (no page faults)";
  unsigned char first = 0;
  ASSERT_EQ(cudaMemcpy(&first, b, 1, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(first, 0xff) << "reused memory is poisoned again";
  cudaFree(b);
}

TEST(Runtime, CopyKindsAreCheckedAgainstTheRegistry) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 16 * sizeof(float)), cudaSuccess);
  std::vector<float> h(16, 2.f), back(16);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
  // Wrong directions.
  EXPECT_EQ(cudaMemcpy(h.data(), d, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_NE(simcuda::error_detail(cudaErrorInvalidValue).find("not device memory"),
            std::string::npos);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "cudaGetLastError resets";
  EXPECT_EQ(cudaMemcpy(back.data(), h.data(), 64, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 64, static_cast<cudaMemcpyKind>(42)),
            cudaErrorInvalidMemcpyDirection);
  // Past the end of the allocation, also from an offset pointer.
  EXPECT_EQ(cudaMemcpy(d, h.data(), 65, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_NE(simcuda::error_detail(cudaErrorInvalidValue).find("run past the end"),
            std::string::npos);
  EXPECT_EQ(cudaMemcpy(d + 8, h.data(), 33, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d + 8, h.data(), 32, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemset(d + 15, 0, 8), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(h.data(), 0, 8), cudaErrorInvalidValue);
  // Default infers the direction from the pointers.
  EXPECT_EQ(cudaMemcpy(back.data(), d, 64, cudaMemcpyDefault), cudaSuccess);
  EXPECT_EQ(back, h);
  // Pinned host memory is host memory.
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 64), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(pinned, d, 64, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, pinned, 64, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(pinned), cudaErrorInvalidValue) << "pinned memory goes to cudaFreeHost";
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  cudaGetLastError();
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(Runtime, BadFreesAreErrorsNotCrashes) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64), cudaSuccess);
  EXPECT_EQ(cudaFree(d + 1), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue) << "double free";
  EXPECT_NE(simcuda::error_detail(cudaErrorInvalidValue).find("double free"), std::string::npos);
  int host = 0;
  EXPECT_EQ(cudaFree(&host), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
  cudaGetLastError();
}

TEST(Runtime, ZeroByteAllocationAndCopy) {
  void* d = reinterpret_cast<void*>(1);
  EXPECT_EQ(cudaMalloc(&d, 0), cudaSuccess);
  EXPECT_EQ(d, nullptr);
  EXPECT_EQ(cudaMemcpy(nullptr, nullptr, 0, cudaMemcpyHostToDevice), cudaSuccess);
}

TEST(Runtime, PointerAttributes) {
  void *d = nullptr, *p = nullptr;
  int host = 0;
  ASSERT_EQ(cudaMalloc(&d, 300), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&p, 300), cudaSuccess);
  cudaPointerAttributes a;
  ASSERT_EQ(cudaPointerGetAttributes(&a, static_cast<char*>(d) + 299), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  ASSERT_EQ(cudaPointerGetAttributes(&a, p), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeHost);
  ASSERT_EQ(cudaPointerGetAttributes(&a, &host), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeUnregistered);
  cudaFree(d);
  cudaFreeHost(p);
}

TEST(Runtime, StreamsAndEvents) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t start, stop, untimed;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaErrorInvalidResourceHandle)
      << "not recorded yet";
  ASSERT_EQ(cudaEventRecord(start, s), cudaSuccess);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(cudaEventRecord(stop, s), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(stop), cudaSuccess);
  ASSERT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  EXPECT_GE(ms, 19.f);
  EXPECT_LT(ms, 2000.f);
  ASSERT_EQ(cudaEventRecord(untimed, s), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamWaitEvent(s, stop, 0), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(cudaStreamPerThread), cudaSuccess);
  // Async copies on the stream complete in order.
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 4 * sizeof(int)), cudaSuccess);
  int a[4] = {1, 2, 3, 4}, b[4] = {};
  ASSERT_EQ(cudaMemsetAsync(d, 0, 16, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(d, a, 8, cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(b, d, 16, cudaMemcpyDeviceToHost, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(b[1], 2);
  EXPECT_EQ(b[2], 0);
  cudaFree(d);
  // Destroyed handles are refused.
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamDestroy(s), cudaErrorInvalidResourceHandle);
  for (cudaEvent_t e : {start, stop, untimed}) EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(start, nullptr), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
}

TEST(Runtime, DeviceDescription) {
  int n = 0, dev = -1;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_EQ(n, 1);
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(dev, 0);
  EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);
  cudaGetLastError();
  cudaDeviceProp p;
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_NE(std::string(p.name).find("simcuda"), std::string::npos);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_EQ(p.sharedMemPerBlock, 48u * 1024);
  EXPECT_EQ(p.multiProcessorCount, simcuda::worker_count());
  EXPECT_GT(p.totalGlobalMem, 0u);
  int v = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  EXPECT_EQ(v, 227 * 1024);
  size_t free_b = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total), cudaSuccess);
  EXPECT_LE(free_b, total);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(Runtime, ErrorNamesAndCheckMacros) {
  EXPECT_STREQ(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
  // CUDA_CHECK names the expression, the error and simcuda's explanation.
  int host = 0;
  try {
    CUDA_CHECK(cudaFree(&host));
    FAIL() << "no exception";
  } catch (const timbre::CudaError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cudaErrorInvalidValue"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaFree(&host)"), std::string::npos) << m;
    EXPECT_NE(m.find("test_runtime.cpp"), std::string::npos) << m;
    EXPECT_NE(m.find("not the start of a live cudaMalloc"), std::string::npos) << m;
  }
  cudaGetLastError();
  // A huge request fails as out of memory, not as a crash.
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, size_t(1) << 62), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
}

TEST(Runtime, LastErrorIsPerHostThread) {
  int host = 0;
  EXPECT_EQ(cudaFree(&host), cudaErrorInvalidValue);
  cudaError_t other = cudaErrorUnknown;
  std::thread([&] { other = cudaGetLastError(); }).join();
  EXPECT_EQ(other, cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

}  // namespace
