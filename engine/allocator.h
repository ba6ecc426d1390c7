// allocator.h: the caching device allocator every Tensor draws from.
//
// cudaMalloc and cudaFree are slow on a GPU (they synchronise the device)
// and, under simcuda, fresh memory page-faults on first touch. Training
// allocates the same sizes every step, so freed blocks are kept and handed
// out again:
//   * a request is rounded up to a multiple of 512 bytes;
//   * release() keeps the block in a free list keyed by its size;
//   * allocate() takes the smallest cached block that fits and wastes at
//     most a quarter of it, else calls cudaMalloc; if that fails it empties
//     the cache and tries once more.
// All work runs on one stream, so a block released by one op can be reused
// by the next without an event.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

namespace timbre {

class Allocator {
 public:
  struct Stats {
    size_t in_use = 0;        // bytes handed out and not yet released
    size_t peak = 0;          // largest in_use since start or reset_peak()
    size_t cached = 0;        // bytes kept in the free lists
    size_t device_calls = 0;  // cudaMalloc calls made
    size_t reuses = 0;        // requests served from the cache
  };

  static Allocator& instance();

  // Device memory for `bytes` (256-byte aligned; nullptr for 0 bytes).
  // Throws CudaError naming the size when the device is out of memory.
  void* allocate(size_t bytes);
  void release(void* p) noexcept;

  Stats stats() const;
  void reset_peak();
  void empty_cache();  // gives every cached block back to cudaFree

  static size_t rounded(size_t bytes) { return (bytes + 511) / 512 * 512; }

 private:
  Allocator() = default;
  mutable std::mutex m_;
  std::multimap<size_t, void*> free_;       // size -> cached block
  std::unordered_map<void*, size_t> live_;  // block -> size
  Stats stats_;
};

}  // namespace timbre
