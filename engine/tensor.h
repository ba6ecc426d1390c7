// tensor.h: an n-dimensional array in device memory.
//
// A Tensor is a shape (up to 5 dimensions), a dtype and a view into a
// Storage: one block from the caching allocator (engine/allocator.h).
// Layout is always contiguous row-major ("NCHW"): element (i0, ..., ik) is at
// offset ((i0*d1 + i1)*d2 + ...) from the view's start. Copying a Tensor
// copies the handle, not the data: reshape, flatten, squeeze and unsqueeze
// are views that share storage. Data moves between host and device only
// through the named calls from_host and to_host.
//
// dtypes: f32 for activations and parameters, i32 for labels and indices,
// f64 for finite-difference gradient checks.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace timbre {

enum class DType { f32, f64, i32 };
const char* dtype_name(DType d);
size_t dtype_size(DType d);
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::i32; }

// Thrown for shape and dtype mismatches; the message names the op and the
// shapes involved.
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class Shape {
 public:
  static constexpr int kMaxRank = 5;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const;
  // Dimension `i`, counting from the end when negative (-1: the last).
  int64_t dim(int i) const;
  std::vector<int64_t> dims() const { return {dims_, dims_ + rank_}; }
  std::string str() const;  // "(3, 5, 7)"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  int64_t dims_[kMaxRank] = {};
  int rank_ = 0;
};

struct Storage;

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage

  // Uninitialised device memory (simcuda fills it with NaN).
  static Tensor empty(const Shape& s, DType d = DType::f32);
  static Tensor zeros(const Shape& s, DType d = DType::f32);
  static Tensor full(const Shape& s, double value, DType d = DType::f32);
  template <class T>
  static Tensor from_host(const Shape& s, const std::vector<T>& values);
  template <class T>
  std::vector<T> to_host() const;

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int rank() const { return shape_.rank(); }
  int64_t numel() const { return shape_.numel(); }
  int64_t size(int dim) const { return shape_.dim(dim); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype_); }

  // Raw device pointer; checks that T matches the dtype.
  template <class T>
  T* data() const;
  void* raw() const;

  // Views (no copy). reshape accepts one -1, inferred from the others.
  Tensor reshape(const std::vector<int64_t>& dims) const;
  Tensor flatten(int start_dim = 1) const;  // dims start_dim.. become one
  Tensor squeeze(int dim) const;            // drops a dimension of size 1
  Tensor unsqueeze(int dim) const;          // inserts a dimension of size 1
  // The s.numel() elements from element `offset` on, as shape s (a slice of
  // a flat buffer: Adam's contiguous parameters).
  Tensor slice(int64_t offset, const Shape& s) const;
  // The same bytes read as another dtype of the same size (f32 <-> i32:
  // one upload buffer holding features and labels).
  Tensor bitcast(DType d) const;

  Tensor clone() const;                        // a copy of the data
  void copy_from(const Tensor& src);           // same shape and dtype
  void fill(double value);
  bool shares_storage_with(const Tensor& o) const { return storage_ == o.storage_; }
  std::string str() const;  // "f32(3, 5)"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes from the storage's start
  Shape shape_;
  DType dtype_ = DType::f32;
};

// Throws ShapeError("op: ...") unless the tensors have equal shapes/dtypes.
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
void check_dtype(const char* op, const Tensor& t, DType want);
void check_float(const char* op, const Tensor& t);  // f32 or f64
void check_defined(const char* op, const Tensor& t, const char* what);

}  // namespace timbre
