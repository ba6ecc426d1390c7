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
//
// CUDA graphs (tools/train_step.h): a graph replays its kernels on the
// addresses they had when the step was captured, so every block the step
// touched must stay the graph's for as long as the graph lives. Between
// begin_capture() and end_capture(), every block allocated, and every block
// released, joins a private pool: the capture's requests are served from
// the pool's free blocks first (the graph runs its work in capture order,
// so a block freed by one op is free for the next), then from the general
// cache (the block moves to the pool), then from cudaMalloc (in relaxed
// capture mode: an allocation is not stream work). After end_capture() the
// pool's blocks are still the graph's: a pool block released later (a
// tensor that outlived the capture) goes back to the pool, never to the
// general cache. release_pool() gives them all back once the graph is
// destroyed and its replays are done.
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
  void empty_cache();  // gives every cached block outside pools back to cudaFree

  // A private pool for one graph's capture (see above); one capture at a
  // time. Returns the pool's id.
  int begin_capture();
  void end_capture();
  void release_pool(int pool);
  size_t pool_bytes(int pool) const;  // blocks the pool holds, live or free

  static size_t rounded(size_t bytes) { return (bytes + 511) / 512 * 512; }

 private:
  struct Block {
    size_t size;
    int pool;  // -1: general
    bool live;
  };
  Allocator() = default;
  // Takes the smallest block of `from` that fits and wastes at most a
  // quarter of it; nullptr if none. Under m_.
  void* take_free(std::multimap<size_t, void*>& from, size_t size);
  mutable std::mutex m_;
  std::multimap<size_t, void*> free_;                  // general cache: size -> block
  std::map<int, std::multimap<size_t, void*>> pools_;  // pool -> its free blocks
  std::unordered_map<void*, Block> blocks_;            // every block from cudaMalloc
  int capturing_ = -1, next_pool_ = 0;
  Stats stats_;
};

}  // namespace timbre
