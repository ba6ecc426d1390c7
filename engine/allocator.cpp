#include "engine/allocator.h"

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"

namespace timbre {

Allocator& Allocator::instance() {
  static Allocator* a = new Allocator;  // never destroyed: tensors may outlive statics
  return *a;
}

void* Allocator::take_free(std::multimap<size_t, void*>& from, size_t size) {
  auto it = from.lower_bound(size);
  if (it == from.end() || it->first - size > it->first / 4) return nullptr;
  void* p = it->second;
  from.erase(it);
  return p;
}

void* Allocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = rounded(bytes);
  std::unique_lock<std::mutex> lk(m_);
  const int pool = capturing_;
  void* p = pool >= 0 ? take_free(pools_[pool], size) : nullptr;
  if (p == nullptr) p = take_free(free_, size);
  if (p != nullptr) {
    Block& b = blocks_.at(p);
    if (pool >= 0) b.pool = pool;  // a general block the capture takes becomes the graph's
    b.live = true;
    stats_.cached -= b.size;
    stats_.reuses++;
    stats_.in_use += b.size;
    if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
    return p;
  }
  lk.unlock();
  // Under a capture in global mode cudaMalloc is refused on every thread
  // unless this one is relaxed: an allocation is not stream work.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  if (pool >= 0) CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  cudaError_t e = cudaMalloc(&p, size);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    empty_cache();
    e = cudaMalloc(&p, size);
  }
  if (pool >= 0) CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaError("out of device memory: a tensor of " + std::to_string(bytes) +
                    " bytes does not fit (" + std::to_string(stats().in_use) +
                    " bytes in use); " + cudaGetErrorString(e));
  }
  lk.lock();
  stats_.device_calls++;
  blocks_[p] = Block{size, pool, true};
  stats_.in_use += size;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  return p;
}

void Allocator::release(void* p) noexcept {
  if (!p) return;
  std::lock_guard<std::mutex> lk(m_);
  auto it = blocks_.find(p);
  if (it == blocks_.end() || !it->second.live) return;  // not ours: nothing sensible to do here
  Block& b = it->second;
  b.live = false;
  // A block released during a capture may still be read by the graph
  // (an input of one of its ops): it becomes the graph's too.
  if (capturing_ >= 0) b.pool = capturing_;
  stats_.in_use -= b.size;
  stats_.cached += b.size;
  (b.pool >= 0 ? pools_[b.pool] : free_).emplace(b.size, p);
}

int Allocator::begin_capture() {
  std::lock_guard<std::mutex> lk(m_);
  if (capturing_ >= 0) throw std::logic_error("Allocator::begin_capture: a capture is open");
  capturing_ = next_pool_++;
  pools_[capturing_];
  return capturing_;
}

void Allocator::end_capture() {
  std::lock_guard<std::mutex> lk(m_);
  capturing_ = -1;
}

void Allocator::release_pool(int pool) {
  std::lock_guard<std::mutex> lk(m_);
  if (pool == capturing_) throw std::logic_error("Allocator::release_pool: the pool is capturing");
  auto it = pools_.find(pool);
  if (it == pools_.end()) return;
  for (auto& [size, p] : it->second) free_.emplace(size, p);
  pools_.erase(it);
  for (auto& [p, b] : blocks_)
    if (b.pool == pool) b.pool = -1;  // live ones return to the general cache when released
}

size_t Allocator::pool_bytes(int pool) const {
  std::lock_guard<std::mutex> lk(m_);
  size_t n = 0;
  for (const auto& [p, b] : blocks_)
    if (b.pool == pool) n += b.size;
  return n;
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
  for (auto& [size, p] : free_) {
    CUDA_CHECK_LOG(cudaFree(p));
    blocks_.erase(p);
    stats_.cached -= size;
  }
  free_.clear();
}

}  // namespace timbre
