#include "engine/tensor.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "engine/allocator.h"
#include "engine/context.h"
#include "kernels/activation.cuh"
#include "kernels/cuda_check.h"
#include "kernels/profile.h"

namespace timbre {

// One block of device memory, returned to the allocator with its last view.
struct Storage {
  explicit Storage(size_t bytes) : ptr(Allocator::instance().allocate(bytes)), bytes(bytes) {}
  ~Storage() { Allocator::instance().release(ptr); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* ptr;
  size_t bytes;
};

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
  }
  return "?";
}

size_t dtype_size(DType d) { return d == DType::f64 ? 8 : 4; }

// --------------------------------- Shape -----------------------------------
Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  if (dims.size() > size_t(kMaxRank))
    throw ShapeError("a tensor has at most " + std::to_string(kMaxRank) + " dimensions, not " +
                     std::to_string(dims.size()));
  for (int64_t d : dims)
    if (d < 0) throw ShapeError("negative dimension in shape");
  rank_ = int(dims.size());
  for (int i = 0; i < rank_; ++i) dims_[i] = dims[size_t(i)];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

int64_t Shape::dim(int i) const {
  const int j = i < 0 ? i + rank_ : i;
  if (j < 0 || j >= rank_)
    throw ShapeError("dimension " + std::to_string(i) + " of a rank-" + std::to_string(rank_) +
                     " tensor " + str());
  return dims_[j];
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
  return s + ")";
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

// --------------------------------- Tensor ----------------------------------
Tensor Tensor::empty(const Shape& s, DType d) {
  Tensor t;
  t.shape_ = s;
  t.dtype_ = d;
  t.storage_ = std::make_shared<Storage>(size_t(s.numel()) * dtype_size(d));
  return t;
}

Tensor Tensor::zeros(const Shape& s, DType d) {
  Tensor t = empty(s, d);
  // Stream-ordered (the host does not wait; a captured step may hold it).
  if (t.bytes()) {
    CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.bytes(), stream()));
    kernels::profile::record_copy(kernels::profile::Copy::memset, t.bytes(), false);
  }
  return t;
}

Tensor Tensor::full(const Shape& s, double value, DType d) {
  Tensor t = empty(s, d);
  t.fill(value);
  return t;
}

template <class T>
Tensor Tensor::from_host(const Shape& s, const std::vector<T>& values) {
  if (int64_t(values.size()) != s.numel())
    throw ShapeError("from_host: " + std::to_string(values.size()) + " values for shape " +
                     s.str() + " (" + std::to_string(s.numel()) + " elements)");
  Tensor t = empty(s, dtype_of<T>());
  if (t.bytes()) {
    kernels::profile::record_copy(kernels::profile::Copy::h2d, t.bytes(), true);
    CUDA_CHECK(cudaMemcpy(t.raw(), values.data(), t.bytes(), cudaMemcpyHostToDevice));
  }
  return t;
}

template <class T>
std::vector<T> Tensor::to_host() const {
  check_defined("to_host", *this, "tensor");
  check_dtype("to_host", *this, dtype_of<T>());
  std::vector<T> h(static_cast<size_t>(numel()));
  if (bytes()) {
    kernels::profile::record_copy(kernels::profile::Copy::d2h, bytes(), true);
    CUDA_CHECK(cudaMemcpy(h.data(), raw(), bytes(), cudaMemcpyDeviceToHost));
  }
  return h;
}

template <class T>
T* Tensor::data() const {
  check_dtype("data", *this, dtype_of<T>());
  return static_cast<T*>(raw());
}

void* Tensor::raw() const {
  if (!storage_ || !storage_->ptr) return nullptr;
  return static_cast<char*>(storage_->ptr) + offset_;
}

Tensor Tensor::slice(int64_t offset, const Shape& s) const {
  check_defined("slice", *this, "tensor");
  if (offset < 0 || offset + s.numel() > numel())
    throw ShapeError("slice of " + str() + ": elements [" + std::to_string(offset) + ", " +
                     std::to_string(offset + s.numel()) + ") are outside it");
  Tensor t = *this;
  t.offset_ += size_t(offset) * dtype_size(dtype_);
  t.shape_ = s;
  return t;
}

Tensor Tensor::bitcast(DType d) const {
  check_defined("bitcast", *this, "tensor");
  if (dtype_size(d) != dtype_size(dtype_))
    throw ShapeError(std::string("bitcast of ") + str() + " to " + dtype_name(d) +
                     ": the element sizes differ");
  Tensor t = *this;
  t.dtype_ = d;
  return t;
}

Tensor Tensor::reshape(const std::vector<int64_t>& wanted) const {
  std::vector<int64_t> dims = wanted;
  auto wanted_str = [&] {
    std::string r = "(";
    for (size_t i = 0; i < wanted.size(); ++i) r += (i ? ", " : "") + std::to_string(wanted[i]);
    return r + ")";
  };
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (infer >= 0)
        throw ShapeError("reshape " + shape_.str() + " to " + wanted_str() + ": more than one -1");
      infer = int(i);
    } else if (dims[i] < 0) {
      throw ShapeError("reshape " + shape_.str() + " to " + wanted_str() + ": negative size");
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0) dims[size_t(infer)] = known > 0 && numel() % known == 0 ? numel() / known : -1;
  if (infer >= 0 && dims[size_t(infer)] < 0)
    throw ShapeError("reshape: " + shape_.str() + " (" + std::to_string(numel()) +
                     " elements) cannot become " + wanted_str());
  Shape target(dims);
  if (target.numel() != numel())
    throw ShapeError("reshape: " + shape_.str() + " (" + std::to_string(numel()) +
                     " elements) cannot become " + wanted_str());
  Tensor v = *this;
  v.shape_ = target;
  return v;
}

Tensor Tensor::flatten(int start_dim) const {
  const int r = rank();
  const int s = start_dim < 0 ? start_dim + r : start_dim;
  if (s < 0 || s >= std::max(r, 1))
    throw ShapeError("flatten: start dimension " + std::to_string(start_dim) + " of " + shape_.str());
  const std::vector<int64_t> all = shape_.dims();
  std::vector<int64_t> dims(all.begin(), all.begin() + s);
  int64_t rest = 1;
  for (int i = s; i < r; ++i) rest *= shape_[i];
  dims.push_back(rest);
  return reshape(dims);
}

Tensor Tensor::squeeze(int dim) const {
  const int r = rank(), d = dim < 0 ? dim + r : dim;
  if (d < 0 || d >= r || shape_[d] != 1)
    throw ShapeError("squeeze: dimension " + std::to_string(dim) + " of " + shape_.str() +
                     " is not of size 1");
  std::vector<int64_t> dims = shape_.dims();
  dims.erase(dims.begin() + d);
  return reshape(dims);
}

Tensor Tensor::unsqueeze(int dim) const {
  const int r = rank(), d = dim < 0 ? dim + r + 1 : dim;
  if (d < 0 || d > r)
    throw ShapeError("unsqueeze: position " + std::to_string(dim) + " for " + shape_.str());
  std::vector<int64_t> dims = shape_.dims();
  dims.insert(dims.begin() + d, 1);
  return reshape(dims);
}

Tensor Tensor::clone() const {
  check_defined("clone", *this, "tensor");
  Tensor t = empty(shape_, dtype_);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  check_same_shape("copy_from", *this, src);
  if (bytes()) {  // stream-ordered: the host does not wait
    kernels::profile::record_copy(kernels::profile::Copy::d2d, bytes(), false);
    CUDA_CHECK(cudaMemcpyAsync(raw(), src.raw(), bytes(), cudaMemcpyDeviceToDevice, stream()));
  }
}

void Tensor::fill(double value) {
  switch (dtype_) {
    case DType::f32: kernels::fill(data<float>(), numel(), float(value), stream()); break;
    case DType::f64: kernels::fill(data<double>(), numel(), value, stream()); break;
    case DType::i32: {
      std::vector<int32_t> h(static_cast<size_t>(numel()), int32_t(value));
      if (bytes()) {
        kernels::profile::record_copy(kernels::profile::Copy::h2d, bytes(), true);
        CUDA_CHECK(cudaMemcpy(raw(), h.data(), bytes(), cudaMemcpyHostToDevice));
      }
      break;
    }
  }
}

std::string Tensor::str() const {
  return defined() ? std::string(dtype_name(dtype_)) + shape_.str() : "undefined";
}

template Tensor Tensor::from_host<float>(const Shape&, const std::vector<float>&);
template Tensor Tensor::from_host<double>(const Shape&, const std::vector<double>&);
template Tensor Tensor::from_host<int32_t>(const Shape&, const std::vector<int32_t>&);
template std::vector<float> Tensor::to_host<float>() const;
template std::vector<double> Tensor::to_host<double>() const;
template std::vector<int32_t> Tensor::to_host<int32_t>() const;
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;

// ------------------------------ shape checks -------------------------------
void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a, "first operand");
  check_defined(op, b, "second operand");
  if (a.shape() != b.shape() || a.dtype() != b.dtype())
    throw ShapeError(std::string(op) + ": shapes differ: " + a.str() + " and " + b.str());
}

void check_dtype(const char* op, const Tensor& t, DType want) {
  if (t.dtype() != want)
    throw ShapeError(std::string(op) + ": expected a " + dtype_name(want) + " tensor, got " +
                     t.str());
}

void check_float(const char* op, const Tensor& t) {
  check_defined(op, t, "input");
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64)
    throw ShapeError(std::string(op) + ": expected a floating-point tensor, got " + t.str());
}

void check_defined(const char* op, const Tensor& t, const char* what) {
  if (!t.defined()) throw ShapeError(std::string(op) + ": the " + what + " is undefined");
}

}  // namespace timbre
