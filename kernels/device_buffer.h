// device_buffer.h: a move-only owner of device memory with explicit,
// named transfers. The engine's Tensor builds on the same rules; tests,
// benchmarks and tools use this directly.
//
//   timbre::DeviceBuffer<float> d_x(n);      // cudaMalloc
//   d_x.copy_from_host(h_x);                  // std::vector or pointer+count
//   std::vector<float> back = d_x.to_host();
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/cuda_check.h"

namespace timbre {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    copy_from_host(host);
  }
  ~DeviceBuffer() {
    if (ptr_) CUDA_CHECK_LOG(cudaFree(ptr_));
  }
  // No copies: a copy of device memory is never an accident.
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      this->~DeviceBuffer();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  void copy_from_host(const T* src, size_t count) {
    check_count(count);
    if (count)
      CUDA_CHECK(cudaMemcpy(ptr_, src, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  void copy_from_host(const std::vector<T>& src) { copy_from_host(src.data(), src.size()); }
  void copy_to_host(T* dst, size_t count) const {
    check_count(count);
    if (count)
      CUDA_CHECK(cudaMemcpy(dst, ptr_, count * sizeof(T), cudaMemcpyDeviceToHost));
  }
  std::vector<T> to_host() const {
    std::vector<T> h(count_);
    copy_to_host(h.data(), count_);
    return h;
  }
  void fill_zero() {
    if (count_) CUDA_CHECK(cudaMemset(ptr_, 0, bytes()));
  }

 private:
  void check_count(size_t count) const {
    if (count > count_)
      throw CudaError("DeviceBuffer: transfer of " + std::to_string(count) +
                      " elements into a buffer of " + std::to_string(count_));
  }
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace timbre
