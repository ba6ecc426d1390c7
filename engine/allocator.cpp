#include "engine/allocator.h"

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda_check.h"

namespace timbre {

Allocator& Allocator::instance() {
  static Allocator* a = new Allocator;  // never destroyed: tensors may outlive statics
  return *a;
}

void* Allocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = rounded(bytes);
  std::unique_lock<std::mutex> lk(m_);
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first - size <= it->first / 4) {
    void* p = it->second;
    const size_t got = it->first;
    free_.erase(it);
    stats_.cached -= got;
    stats_.reuses++;
    live_[p] = got;
    stats_.in_use += got;
    if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
    return p;
  }
  lk.unlock();
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    empty_cache();
    e = cudaMalloc(&p, size);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaError("out of device memory: a tensor of " + std::to_string(bytes) +
                    " bytes does not fit (" + std::to_string(stats().in_use) +
                    " bytes in use); " + cudaGetErrorString(e));
  }
  lk.lock();
  stats_.device_calls++;
  live_[p] = size;
  stats_.in_use += size;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  return p;
}

void Allocator::release(void* p) noexcept {
  if (!p) return;
  std::lock_guard<std::mutex> lk(m_);
  auto it = live_.find(p);
  if (it == live_.end()) return;  // not ours: nothing sensible to do in a destructor
  stats_.in_use -= it->second;
  stats_.cached += it->second;
  free_.emplace(it->second, p);
  live_.erase(it);
}

Allocator::Stats Allocator::stats() const {
  std::lock_guard<std::mutex> lk(m_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lk(m_);
  stats_.peak = stats_.in_use;
}

void Allocator::empty_cache() {
  std::lock_guard<std::mutex> lk(m_);
  for (auto& [size, p] : free_) CUDA_CHECK_LOG(cudaFree(p));
  free_.clear();
  stats_.cached = 0;
}

}  // namespace timbre
