#include "tools/batches.h"

#include <random>

namespace timbre::tools {

using features::Split;

BatchLoader::BatchLoader(features::FeatureStore store) : store_(std::move(store)) {
  for (Split s : {Split::train, Split::validation, Split::test}) y_[int(s)] = store_.read_y(s);
  thread_ = std::thread([this] { worker(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BatchLoader::start(Split split, std::vector<int64_t> order, int batch) {
  std::lock_guard<std::mutex> lock(mu_);
  split_ = split;
  order_ = std::move(order);
  batch_ = batch < 1 ? 1 : batch;
  ++pass_;
  next_read_ = delivered_ = 0;
  ready_.clear();
  error_.clear();
  cv_.notify_all();
}

bool BatchLoader::next(HostBatch& out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] {
    return !ready_.empty() || !error_.empty() || delivered_ >= order_.size();
  });
  if (!error_.empty()) throw std::runtime_error(error_);
  if (ready_.empty()) return false;
  out = std::move(ready_.front());
  ready_.pop_front();
  delivered_ += size_t(out.n());
  cv_.notify_all();  // room in the queue
  return true;
}

void BatchLoader::worker() {
  constexpr size_t kAhead = 2;  // batches read ahead of the consumer
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return quit_ || (error_.empty() && next_read_ < order_.size() && ready_.size() < kAhead);
    });
    if (quit_) return;
    // Take the work, then read without the lock so next() can proceed.
    const uint64_t pass = pass_;
    const Split split = split_;
    const size_t begin = next_read_;
    const size_t end = std::min(order_.size(), begin + size_t(batch_));
    HostBatch b;
    b.indices.assign(order_.begin() + begin, order_.begin() + end);
    next_read_ = end;
    lock.unlock();
    std::string err;
    try {
      const size_t per = size_t(store_.rows()) * store_.frames();
      b.x.resize(b.indices.size() * per);
      store_.read_x(split, b.indices.data(), b.indices.size(), b.x.data());
      b.y.reserve(b.indices.size());
      for (int64_t i : b.indices) b.y.push_back(y_[int(split)][size_t(i)]);
    } catch (const std::exception& e) {
      err = e.what();
    }
    lock.lock();
    if (pass != pass_) continue;  // start() began another pass meanwhile
    if (!err.empty()) {
      error_ = err;
    } else {
      ready_.push_back(std::move(b));
    }
    cv_.notify_all();
  }
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(epoch), 0x74696d62u};
  std::mt19937_64 rng(seq);
  // Fisher-Yates with our own bounded draws (std::uniform_int_distribution
  // differs between standard libraries).
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t bound = uint64_t(i) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = rng(); while (r >= limit);
    std::swap(order[size_t(i)], order[size_t(r % bound)]);
  }
  return order;
}

}  // namespace timbre::tools
