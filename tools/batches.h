// batches.h: a background reader that overlaps HDF5 reads with compute.
//
// HDF5 (Debian's serial build) may be used by one thread only, so the
// loader owns the FeatureStore outright: after construction every read
// happens on its worker thread. The training loop asks for an epoch's
// batches (a split, an order of sample indices, a batch size); the worker
// reads them ahead into a small queue (two batches) while the device computes
// on the current one, so the next step rarely waits for the disk.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "features/h5store.h"

namespace timbre::tools {

struct HostBatch {
  std::vector<float> x;          // n * rows * frames, raw dB (not normalised)
  std::vector<int32_t> y;        // n labels
  std::vector<int64_t> indices;  // which samples of the split
  int64_t n() const { return int64_t(y.size()); }
};

class BatchLoader {
 public:
  // Takes the store; the caller must not touch HDF5 through it afterwards.
  explicit BatchLoader(features::FeatureStore store);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // What was read on the constructing thread, before the worker started.
  const features::FeatureStore& store() const { return store_; }
  const std::vector<int32_t>& labels(features::Split s) const { return y_[int(s)]; }

  // Starts a pass: batches of `batch` samples in `order` (the last one may
  // be smaller). Any pass still running is abandoned first.
  void start(features::Split split, std::vector<int64_t> order, int batch);
  // The next batch of the pass; false when the pass is over. Rethrows a
  // read error from the worker.
  bool next(HostBatch& out);

 private:
  void worker();
  features::FeatureStore store_;
  std::vector<int32_t> y_[3];
  std::mutex mu_;
  std::condition_variable cv_;
  // The current pass.
  features::Split split_ = features::Split::train;
  std::vector<int64_t> order_;
  int batch_ = 0;
  uint64_t pass_ = 0;        // bumped by start(): the worker drops stale work
  size_t next_read_ = 0;     // position in order_ the worker reads next
  size_t delivered_ = 0;     // samples handed out by next()
  std::deque<HostBatch> ready_;
  std::string error_;
  bool quit_ = false;
  std::thread thread_;
};

// 0, 1, ..., n-1 shuffled by a generator seeded with (seed, epoch): an
// epoch's order depends on nothing else, so a resumed run sees the same
// batches.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int epoch);

}  // namespace timbre::tools
