#include "engine/ops.h"

#include <string>

#include "engine/context.h"
#include "kernels/activation.cuh"
#include "kernels/cuda_check.h"
#include "kernels/softmax.cuh"

namespace timbre::ops {
namespace {

using kernels::Activation;

// Calls f.template operator()<T>() with T = float or double per the dtype.
template <class F>
void dispatch(DType d, F&& f) {
  if (d == DType::f32)
    f(float{});
  else
    f(double{});
}

Variable activation(const char* name, Activation a, const Variable& x, double alpha) {
  check_float(name, x.value());
  const Tensor& in = x.value();
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch(in.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::activation_forward<T>(a, in.data<T>(), out.data<T>(), in.numel(), T(alpha), stream());
  });
  // dL/dx = dL/dy * f'(x), f' from x or y (kernels/activation.cuh).
  return Variable::from_op(name, out, {x}, [a, alpha, in, out](const Tensor& dy, Inputs& inputs) {
    bool acc;
    Tensor& dx = inputs[0].grad_for_update(&acc);
    dispatch(in.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::activation_backward<T>(a, in.data<T>(), out.data<T>(), dy.data<T>(), dx.data<T>(),
                                      in.numel(), T(alpha), acc, stream());
    });
  });
}

// grad (+)= dy, for ops whose local derivative is the identity.
void pass_through(const Tensor& dy, Variable& input) {
  bool acc;
  Tensor& g = input.grad_for_update(&acc);
  if (!acc) {
    g.copy_from(dy);
    return;
  }
  dispatch(dy.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::add<T>(g.data<T>(), dy.data<T>(), g.data<T>(), g.numel(), T(1), T(1), stream());
  });
}

// cuBLAS GEMM in T on column-major operands (see linear()).
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double alpha,
          const Tensor& A, int lda, const Tensor& B, int ldb, double beta, Tensor& C, int ldc) {
  if (C.dtype() == DType::f32) {
    const float a = float(alpha), b = float(beta);
    CUBLAS_CHECK(cublasSgemm(cublas(), ta, tb, m, n, k, &a, A.data<float>(), lda, B.data<float>(),
                             ldb, &b, C.data<float>(), ldc));
  } else {
    CUBLAS_CHECK(cublasDgemm(cublas(), ta, tb, m, n, k, &alpha, A.data<double>(), lda,
                             B.data<double>(), ldb, &beta, C.data<double>(), ldc));
  }
}

}  // namespace

Variable relu(const Variable& x) { return activation("relu", Activation::relu, x, 0); }
Variable elu(const Variable& x, double alpha) { return activation("elu", Activation::elu, x, alpha); }
Variable tanh(const Variable& x) { return activation("tanh", Activation::tanh, x, 0); }
Variable sigmoid(const Variable& x) { return activation("sigmoid", Activation::sigmoid, x, 0); }

Variable add(const Variable& a, const Variable& b) {
  check_float("add", a.value());
  check_same_shape("add", a.value(), b.value());
  Tensor out = Tensor::empty(a.value().shape(), a.value().dtype());
  dispatch(out.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::add<T>(a.value().data<T>(), b.value().data<T>(), out.data<T>(), out.numel(), T(1),
                    T(1), stream());
  });
  // d(a + b)/da = d(a + b)/db = 1.
  return Variable::from_op("add", out, {a, b}, [](const Tensor& dy, Inputs& in) {
    for (Variable& v : in)
      if (v.requires_grad()) pass_through(dy, v);
  });
}

// Row-major y (N, out) is column-major Y = y^T (out x N); likewise x^T
// (in x N) and W^T (in x out). So
//   forward   Y  = W x^T + b 1^T  : gemm(T, N, out, N, in, W, x) then gemm(N, N, out, N, 1, b, ones)
//   dx^T = W^T dY   (in x N)      : gemm(N, N, in, N, out, W, dy)
//   dW^T = x^T dY^T (in x out)    : gemm(N, T, in, out, N, x, dy)
//   db   = dY 1     (out)         : gemm(N, N, out, 1, N, dy, ones)
Variable linear(const Variable& x, const Variable& w, const Variable& b) {
  const Tensor& X = x.value();
  const Tensor& W = w.value();
  check_float("linear", X);
  if (X.rank() != 2 || W.rank() != 2 || W.size(1) != X.size(1) || W.dtype() != X.dtype())
    throw ShapeError("linear: input " + X.str() + " and weight " + W.str() +
                     " do not fit: need (N, in) and (out, in)");
  const bool has_bias = b.defined();
  if (has_bias && (b.value().shape() != Shape{W.size(0)} || b.value().dtype() != X.dtype()))
    throw ShapeError("linear: bias " + b.value().str() + " for weight " + W.str() +
                     ": need (out)");
  const int N = int(X.size(0)), in = int(X.size(1)), out = int(W.size(0));
  Tensor Y = Tensor::empty(Shape{N, out}, X.dtype());
  if (N == 0 || out == 0)
    throw ShapeError("linear: empty input or output " + X.str() + ", " + W.str());
  gemm(CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, 1.0, W, in, X, in, 0.0, Y, out);
  Tensor ones;
  if (has_bias) {
    ones = Tensor::full(Shape{N}, 1.0, X.dtype());
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, out, N, 1, 1.0, b.value(), out, ones, 1, 1.0, Y, out);
  }
  return Variable::from_op(
      "linear", Y, {x, w, b}, [X, W, ones, N, in, out](const Tensor& dY, Inputs& v) {
        bool acc;
        if (v[0].requires_grad()) {
          Tensor& dx = v[0].grad_for_update(&acc);
          gemm(CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, 1.0, W, in, dY, out, acc ? 1.0 : 0.0, dx, in);
        }
        if (v[1].requires_grad()) {
          Tensor& dw = v[1].grad_for_update(&acc);
          gemm(CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, 1.0, X, in, dY, out, acc ? 1.0 : 0.0, dw, in);
        }
        if (v[2].defined() && v[2].requires_grad()) {
          Tensor& db = v[2].grad_for_update(&acc);
          gemm(CUBLAS_OP_N, CUBLAS_OP_N, out, 1, N, 1.0, dY, out, ones, N, acc ? 1.0 : 0.0, db,
               out);
        }
      });
}

namespace {

// Rows and columns of x seen as (everything but the last dim, last dim).
std::pair<int, int> rows_cols(const char* op, const Tensor& x) {
  check_float(op, x);
  if (x.rank() < 1 || x.numel() == 0)
    throw ShapeError(std::string(op) + ": needs a non-empty tensor with at least one dimension, got " +
                     x.str());
  const int cols = int(x.size(-1));
  return {int(x.numel() / cols), cols};
}

template <bool Log>
Variable softmax_op(const char* name, const Variable& x) {
  const Tensor& in = x.value();
  const auto [rows, cols] = rows_cols(name, in);
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch(in.dtype(), [&](auto t) {
    using T = decltype(t);
    if (Log)
      kernels::log_softmax_forward<T>(in.data<T>(), out.data<T>(), rows, cols, stream());
    else
      kernels::softmax_forward<T>(in.data<T>(), out.data<T>(), rows, cols, stream());
  });
  // softmax:     dx = y * (dy - <dy, y>)      log-softmax: dx = dy - exp(y) * sum(dy)
  return Variable::from_op(name, out, {x}, [out, rows = rows, cols = cols](const Tensor& dy, Inputs& v) {
    bool acc;
    Tensor& dx = v[0].grad_for_update(&acc);
    dispatch(out.dtype(), [&](auto t) {
      using T = decltype(t);
      if (Log)
        kernels::log_softmax_backward<T>(out.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols,
                                         acc, stream());
      else
        kernels::softmax_backward<T>(out.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols, acc,
                                     stream());
    });
  });
}

}  // namespace

Variable softmax(const Variable& x) { return softmax_op<false>("softmax", x); }
Variable log_softmax(const Variable& x) { return softmax_op<true>("log_softmax", x); }

Variable cross_entropy(const Variable& logits, const Tensor& labels) {
  const Tensor& x = logits.value();
  check_float("cross_entropy", x);
  check_defined("cross_entropy", labels, "labels tensor");
  if (x.rank() != 2 || labels.dtype() != DType::i32 || labels.shape() != Shape{x.size(0)} ||
      x.size(0) == 0 || x.size(1) == 0)
    throw ShapeError("cross_entropy: logits " + x.str() + " and labels " + labels.str() +
                     ": need (N, C) with N, C >= 1 and i32 (N)");
  const int rows = int(x.size(0)), cols = int(x.size(1));
  Tensor loss = Tensor::empty(Shape{}, x.dtype());
  Tensor probs = Tensor::empty(x.shape(), x.dtype());
  Tensor row_loss = Tensor::empty(Shape{rows}, x.dtype());
  Tensor bad = Tensor::empty(Shape{1}, DType::i32);
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::cross_entropy_forward<T>(x.data<T>(), labels.data<int32_t>(), loss.data<T>(),
                                      probs.data<T>(), row_loss.data<T>(), bad.data<int32_t>(),
                                      rows, cols, stream());
  });
  if (const int n_bad = bad.to_host<int32_t>()[0])
    throw ShapeError("cross_entropy: " + std::to_string(n_bad) + " of " + std::to_string(rows) +
                     " labels are outside [0, " + std::to_string(cols) + ")");
  // dL/dlogits = (softmax - onehot(label)) * dL / N.
  return Variable::from_op("cross_entropy", loss, {logits},
                           [probs, labels, rows, cols](const Tensor& dL, Inputs& v) {
                             bool acc;
                             Tensor& dx = v[0].grad_for_update(&acc);
                             dispatch(probs.dtype(), [&](auto t) {
                               using T = decltype(t);
                               kernels::cross_entropy_backward<T>(
                                   probs.data<T>(), labels.data<int32_t>(), dL.data<T>(),
                                   dx.data<T>(), rows, cols, acc, stream());
                             });
                           });
}

}  // namespace timbre::ops
