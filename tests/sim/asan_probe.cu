// asan_probe: kernels that overflow shared memory, for the ASan build
// (TIMBRE_SANITIZE=address). CTest passes when ASan's report names the
// overflow: static __shared__ is a plain static there (a "global"), dynamic
// shared memory an exact-size heap block.
#include <cstdio>
#include <cstring>

#include "kernels/common.cuh"
#include "kernels/device_buffer.h"

__global__ void static_shared_overflow(float* out) {
  __shared__ float s[32];
  s[threadIdx.x] = 1.f;  // launched with 33 threads: thread 32 writes s[32]
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void dynamic_shared_overflow(float* out) {
  float* s = simcuda::dynamic_shared<float>();
  s[threadIdx.x] = 1.f;  // launched with 32 floats of dynamic shared memory
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

int main(int argc, char** argv) {
  const char* which = argc > 1 ? argv[1] : "";
  timbre::DeviceBuffer<float> out(64);
  if (!std::strcmp(which, "static")) {
    LAUNCH(static_shared_overflow, 1, 33, 0, nullptr, out.get());
  } else if (!std::strcmp(which, "dynamic")) {
    LAUNCH(dynamic_shared_overflow, 1, 33, 32 * sizeof(float), nullptr, out.get());
  } else {
    std::fprintf(stderr, "usage: asan_probe static|dynamic\n");
    return 2;
  }
  std::printf("asan_probe %s: no report\n", which);
  return 0;
}
