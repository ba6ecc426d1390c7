#include "engine/ops.h"

#include <algorithm>
#include <array>
#include <string>

#include "engine/context.h"
#include "kernels/activation.cuh"
#include "kernels/batchnorm.cuh"
#include "kernels/conv2d.cuh"
#include "kernels/copy_rows.cuh"
#include "kernels/attention.cuh"
#include "kernels/blas.h"
#include "kernels/gru.cuh"
#include "kernels/philox.cuh"
#include "kernels/pooling.cuh"
#include "kernels/cuda_check.h"
#include "kernels/softmax.cuh"

namespace timbre::ops {
namespace {

using kernels::Activation;
using kernels::kN;  // cuBLAS's "as stored"
using kernels::kT;  // cuBLAS's "transposed"

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

// cuBLAS GEMM in the tensors' type on column-major operands (see linear()).
void gemm(const kernels::GemmShape& shape, double alpha, const Tensor& A, const Tensor& B,
          double beta, Tensor& C) {
  dispatch(C.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::gemm(cublas(), shape, T(alpha), A.data<T>(), B.data<T>(), T(beta), C.data<T>());
  });
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
  gemm({kT, kN, out, N, in, in, in, out}, 1.0, W, X, 0.0, Y);
  Tensor ones;
  if (has_bias) {
    ones = Tensor::full(Shape{N}, 1.0, X.dtype());
    gemm({kN, kN, out, N, 1, out, 1, out}, 1.0, b.value(), ones, 1.0, Y);
  }
  return Variable::from_op(
      "linear", Y, {x, w, b}, [X, W, ones, N, in, out](const Tensor& dY, Inputs& v) {
        bool acc;
        if (v[0].requires_grad()) {
          Tensor& dx = v[0].grad_for_update(&acc);
          gemm({kN, kN, in, N, out, in, out, in}, 1.0, W, dY, acc ? 1.0 : 0.0, dx);
        }
        if (v[1].requires_grad()) {
          Tensor& dw = v[1].grad_for_update(&acc);
          gemm({kN, kT, in, out, N, in, out, in}, 1.0, X, dY, acc ? 1.0 : 0.0, dw);
        }
        if (v[2].defined() && v[2].requires_grad()) {
          Tensor& db = v[2].grad_for_update(&acc);
          gemm({kN, kN, out, 1, N, out, N, out}, 1.0, dY, ones, acc ? 1.0 : 0.0, db);
        }
      });
}

namespace {

// Workspace for im2col's columns and the filter gradient's partial sums:
// whole chunks of images, at most 512 MiB (one image's share at least):
// the whole batch of 32 for every layer of the three models, so each
// convolution pass is one im2col and one batched GEMM (a GPU has the
// memory; under simcuda it is host memory, ~1.5 GB peak for a training run).
// Pointwise convolutions need it only for the filter gradient.
Tensor conv_workspace(const kernels::Conv2dShape& cs, DType d, bool filter) {
  if (cs.pointwise() && !filter) return Tensor();
  const size_t per_image = size_t(kernels::conv2d_workspace_elements(cs)) * dtype_size(d);
  constexpr int64_t kBudget = int64_t(512) << 20;
  const int64_t images = std::max<int64_t>(1, std::min<int64_t>(cs.N, kBudget / int64_t(per_image)));
  return Tensor::empty(Shape{images * int64_t(per_image / dtype_size(d))}, d);
}

}  // namespace

Variable conv2d(const Variable& x, const Variable& w, const Variable& b, Conv2dOptions o) {
  const Tensor& X = x.value();
  const Tensor& Wt = w.value();
  check_float("conv2d", X);
  if (X.rank() != 4 || Wt.rank() != 4 || Wt.size(1) != X.size(1) || Wt.dtype() != X.dtype())
    throw ShapeError("conv2d: input " + X.str() + " and weight " + Wt.str() +
                     " do not fit: need (N, C, H, W) and (K, C, R, S)");
  if (b.defined() && (b.value().shape() != Shape{Wt.size(0)} || b.value().dtype() != X.dtype()))
    throw ShapeError("conv2d: bias " + b.value().str() + " for weight " + Wt.str() + ": need (K)");
  kernels::Conv2dShape cs;
  cs.N = int(X.size(0)), cs.C = int(X.size(1)), cs.H = int(X.size(2)), cs.W = int(X.size(3));
  cs.K = int(Wt.size(0)), cs.R = int(Wt.size(2)), cs.S = int(Wt.size(3));
  cs.stride_h = o.stride_h, cs.stride_w = o.stride_w, cs.pad_h = o.pad_h, cs.pad_w = o.pad_w;
  try {
    cs.validate("conv2d");
  } catch (const std::invalid_argument& e) {
    throw ShapeError(std::string(e.what()) + " (input " + X.str() + ", weight " + Wt.str() + ")");
  }
  Tensor Y = Tensor::empty(Shape{cs.N, cs.K, cs.P(), cs.Q()}, X.dtype());
  Tensor ws = conv_workspace(cs, X.dtype(), false);
  dispatch(X.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::conv2d_forward_v2_im2col<T>(cs, X.data<T>(), Wt.data<T>(),
                                         b.defined() ? b.value().data<T>() : nullptr, Y.data<T>(),
                                         ws.defined() ? ws.data<T>() : nullptr, ws.bytes(),
                                         cublas(), stream());
  });
  // dx = col2im(W^T dy), dW = sum_n dy_n col_n^T, db = sum of dy over N, P, Q.
  return Variable::from_op("conv2d", Y, {x, w, b}, [cs, X, Wt](const Tensor& dY, Inputs& v) {
    Tensor ws = conv_workspace(cs, X.dtype(), v[1].requires_grad());
    dispatch(X.dtype(), [&](auto t) {
      using T = decltype(t);
      bool acc_x = false, acc_w = false, acc_b = false;
      T* dx = v[0].requires_grad() ? v[0].grad_for_update(&acc_x).template data<T>() : nullptr;
      T* dw = v[1].requires_grad() ? v[1].grad_for_update(&acc_w).template data<T>() : nullptr;
      T* db = v[2].defined() && v[2].requires_grad()
                  ? v[2].grad_for_update(&acc_b).template data<T>()
                  : nullptr;
      kernels::conv2d_backward_v2_im2col<T>(cs,
                                            {X.data<T>(), Wt.data<T>(), dY.data<T>(), dx, dw, db},
                                            {acc_x, acc_w, acc_b},
                                            ws.defined() ? ws.data<T>() : nullptr, ws.bytes(),
                                            cublas(), stream());
    });
  });
}

Variable dropout(const Variable& x, double p, bool training, Generator& g) {
  check_float("dropout", x.value());
  if (!(p >= 0 && p < 1))
    throw ShapeError("dropout: probability " + std::to_string(p) + " is not in [0, 1)");
  if (!training || p == 0) return x;
  const Tensor& in = x.value();
  const PhiloxDraw d = g.draw(in.numel());
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch(in.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::dropout_forward<T>(in.data<T>(), out.data<T>(), in.numel(), p, d.seed, d.offset,
                                stream(), 256, d.base);
  });
  // dx = dy * mask / (1 - p), the same mask regenerated from the same draw
  // (within a step, the device word has not moved on before the step ends).
  return Variable::from_op("dropout", out, {x}, [p, d](const Tensor& dy, Inputs& v) {
    bool acc;
    Tensor& dx = v[0].grad_for_update(&acc);
    dispatch(dy.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::dropout_backward<T>(dy.data<T>(), dx.data<T>(), dy.numel(), p, d.seed, d.offset,
                                   acc, stream(), 256, d.base);
    });
  });
}

namespace {
// (N, C, H, W) of a rank-4 tensor, or (N, C, 1, 1) of a rank-2 one.
std::array<int, 4> nchw(const char* op, const Tensor& x, bool allow_2d) {
  check_float(op, x);
  if (x.rank() == 4) return {int(x.size(0)), int(x.size(1)), int(x.size(2)), int(x.size(3))};
  if (allow_2d && x.rank() == 2) return {int(x.size(0)), int(x.size(1)), 1, 1};
  throw ShapeError(std::string(op) + ": input " + x.str() + " must be (N, C, H, W)" +
                   (allow_2d ? " or (N, C)" : ""));
}
}  // namespace

namespace {
thread_local kernels::BatchNormSync t_batchnorm_sync;
}  // namespace

SyncBatchNormScope::SyncBatchNormScope(kernels::BatchNormSync sync) {
  if (t_batchnorm_sync.ranks != 1)
    throw std::logic_error("SyncBatchNormScope: a scope is already open on this thread");
  t_batchnorm_sync = sync;
}

SyncBatchNormScope::~SyncBatchNormScope() { t_batchnorm_sync = {}; }

Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta,
                    Tensor& running_mean, Tensor& running_var, bool training, BatchNormOptions o,
                    const Variable& residual) {
  const Tensor& X = x.value();
  // Named, not a structured binding: lambdas below capture them, which C++17
  // allows for variables only (clang refuses bindings; the fuzz build uses it).
  const auto dims = nchw("batch_norm", X, true);
  const int n = dims[0], c = dims[1], h = dims[2], w = dims[3];
  for (const Tensor* t : std::initializer_list<const Tensor*>{&gamma.value(), &beta.value(), &running_mean, &running_var})
    if (t->shape() != Shape{c} || t->dtype() != X.dtype())
      throw ShapeError("batch_norm: gamma, beta and the running statistics must be " +
                       std::string(dtype_name(X.dtype())) + "(" + std::to_string(c) +
                       ") for input " + X.str() + ", got " + t->str());
  const DType d = X.dtype();
  const bool has_residual = residual.defined();
  if (has_residual && (residual.value().shape() != X.shape() || residual.value().dtype() != d))
    throw ShapeError("batch_norm: residual " + residual.value().str() + " must match input " +
                     X.str());
  const Tensor R = has_residual ? residual.value() : Tensor();
  const bool relu = o.relu;
  const kernels::BatchNormPool pool = o.pool;
  Tensor argmax;
  Shape out_shape = X.shape();
  if (pool.h != 0 || pool.w != 0) {
    if (X.rank() != 4 || pool.h < 1 || pool.w < 1 || pool.h > h || pool.w > w)
      throw ShapeError("batch_norm: the fused max pool " + std::to_string(pool.h) + "x" +
                       std::to_string(pool.w) + " does not fit input " + X.str());
    out_shape = Shape{n, c, h / pool.h, w / pool.w};
    argmax = Tensor::empty(out_shape, DType::i32);
  }
  Tensor Y = Tensor::empty(out_shape, d);
  Tensor ws = Tensor::empty(Shape{kernels::batchnorm_workspace_size(c)}, DType::f64);
  const kernels::BatchNormSync sync = training ? t_batchnorm_sync : kernels::BatchNormSync{};
  Tensor mean, inv_std;
  dispatch(d, [&](auto t) {
    using T = decltype(t);
    const kernels::BatchNormEpilogue<T> epi{has_residual ? R.data<T>() : nullptr, relu, pool,
                                            pool.on() ? argmax.data<int32_t>() : nullptr};
    if (training) {
      mean = Tensor::empty(Shape{c}, d);
      inv_std = Tensor::empty(Shape{c}, d);
      kernels::batchnorm_forward_train<T>(
          {X.data<T>(), gamma.value().data<T>(), beta.value().data<T>(), Y.data<T>(),
           mean.data<T>(), inv_std.data<T>(), running_mean.data<T>(), running_var.data<T>(), epi,
           sync},
          {n, c, h, w}, o.eps, o.running, ws.data<double>(), stream());
    } else {
      kernels::batchnorm_forward_eval<T>(
          {X.data<T>(), gamma.value().data<T>(), beta.value().data<T>(), running_mean.data<T>(),
           running_var.data<T>(), Y.data<T>(), epi},
          {n, c, h, w}, o.eps, stream());
    }
  });
  // Training: dx = gamma inv_std / M (M dy - sum dy - xhat sum(dy xhat)),
  // dgamma = sum dy xhat, dbeta = sum dy. Evaluation: dx = gamma inv_std_run dy.
  // (Evaluation captures the running statistics as they are now.)
  Tensor rm = training ? Tensor() : running_mean.clone(), rv = training ? Tensor() : running_var.clone();
  std::vector<Variable> inputs{x, gamma, beta};
  if (has_residual) inputs.push_back(residual);
  // The op's name says what it fused: [add][relu][max_pool] bits index it.
  static const char* const names[8] = {
      "batch_norm",          "batch_norm_add",          "batch_norm_relu",
      "batch_norm_add_relu", "batch_norm_max_pool",     "batch_norm_add_max_pool",
      "batch_norm_relu_max_pool", "batch_norm_add_relu_max_pool"};
  return Variable::from_op(
      names[(has_residual ? 1 : 0) + (relu ? 2 : 0) + (pool.on() ? 4 : 0)], Y, inputs,
      [=](const Tensor& dY, Inputs& v) {
        Tensor ws2 = Tensor::empty(Shape{kernels::batchnorm_workspace_size(c)}, DType::f64);
        dispatch(d, [&](auto t) {
          using T = decltype(t);
          kernels::BatchNormAccumulate acc;
          T* dx = v[0].requires_grad() ? v[0].grad_for_update(&acc.dx).template data<T>() : nullptr;
          T* dg = v[1].requires_grad() ? v[1].grad_for_update(&acc.dgamma).template data<T>() : nullptr;
          T* db = v[2].requires_grad() ? v[2].grad_for_update(&acc.dbeta).template data<T>() : nullptr;
          T* dr = has_residual && v[3].requires_grad()
                      ? v[3].grad_for_update(&acc.dresidual).template data<T>()
                      : nullptr;
          // dx is always computed; a scratch buffer when x needs no gradient.
          Tensor scratch;
          if (!dx) {
            scratch = Tensor::empty(X.shape(), d);
            dx = scratch.template data<T>();
          }
          const kernels::BatchNormEpilogueGrad<T> epi{
              relu ? Y.data<T>() : nullptr, dr, pool,
              pool.on() ? argmax.data<int32_t>() : nullptr};
          if (training)
            kernels::batchnorm_backward_train<T>({X.data<T>(), dY.data<T>(), v[1].value().data<T>(),
                                                  mean.data<T>(), inv_std.data<T>(), dx, dg, db,
                                                  epi, sync},
                                                 {n, c, h, w}, acc, ws2.data<double>(), stream());
          else
            kernels::batchnorm_backward_eval<T>({X.data<T>(), dY.data<T>(), v[1].value().data<T>(),
                                                 rm.data<T>(), rv.data<T>(), dx, dg, db, epi},
                                                {n, c, h, w}, o.eps, acc, ws2.data<double>(),
                                                stream());
        });
      });
}

Variable max_pool2d(const Variable& x, kernels::PoolWindow pw) {
  const Tensor& X = x.value();
  const auto dims = nchw("max_pool2d", X, false);
  const int n = dims[0], c = dims[1], h = dims[2], w = dims[3];
  const int ph = kernels::pool_out_size(h, pw.kh, pw.sh), qw = kernels::pool_out_size(w, pw.kw, pw.sw);
  if (pw.kh < 1 || pw.kw < 1 || pw.sh < 1 || pw.sw < 1 || pw.kh > h || pw.kw > w || ph < 1 || qw < 1)
    throw ShapeError("max_pool2d: window " + std::to_string(pw.kh) + "x" + std::to_string(pw.kw) +
                     " (stride " + std::to_string(pw.sh) + "x" + std::to_string(pw.sw) + ") does not fit input " + X.str());
  Tensor Y = Tensor::empty(Shape{n, c, ph, qw}, X.dtype());
  Tensor argmax = Tensor::empty(Y.shape(), DType::i32);
  dispatch(X.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::max_pool2d_forward<T>(X.data<T>(), Y.data<T>(), argmax.data<int32_t>(), n, c, h, w,
                                   pw, stream());
  });
  // dx at each window's argmax gets that window's dy (gathered).
  return Variable::from_op("max_pool2d", Y, {x}, [=](const Tensor& dY, Inputs& v) {
    bool acc;
    Tensor& g = v[0].grad_for_update(&acc);
    dispatch(dY.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::max_pool2d_backward<T>({dY.data<T>(), argmax.data<int32_t>(), g.data<T>()}, n, c, h,
                                      w, pw, acc, stream());
    });
  });
}

Variable avg_pool2d(const Variable& x, kernels::PoolWindow pw) {
  const Tensor& X = x.value();
  const auto dims = nchw("avg_pool2d", X, false);
  const int n = dims[0], c = dims[1], h = dims[2], w = dims[3];
  const int ph = kernels::pool_out_size(h, pw.kh, pw.sh), qw = kernels::pool_out_size(w, pw.kw, pw.sw);
  if (pw.kh < 1 || pw.kw < 1 || pw.sh < 1 || pw.sw < 1 || pw.kh > h || pw.kw > w || ph < 1 || qw < 1)
    throw ShapeError("avg_pool2d: window " + std::to_string(pw.kh) + "x" + std::to_string(pw.kw) +
                     " (stride " + std::to_string(pw.sh) + "x" + std::to_string(pw.sw) + ") does not fit input " + X.str());
  Tensor Y = Tensor::empty(Shape{n, c, ph, qw}, X.dtype());
  dispatch(X.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::avg_pool2d_forward<T>(X.data<T>(), Y.data<T>(), n, c, h, w, pw, stream());
  });
  // dx = the sum over the windows containing x of dy / (kh kw).
  return Variable::from_op("avg_pool2d", Y, {x}, [=](const Tensor& dY, Inputs& v) {
    bool acc;
    Tensor& g = v[0].grad_for_update(&acc);
    dispatch(dY.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::avg_pool2d_backward<T>(dY.data<T>(), g.data<T>(), n, c, h, w, pw, acc, stream());
    });
  });
}

Variable global_avg_pool(const Variable& x) {
  const Tensor& X = x.value();
  const auto dims = nchw("global_avg_pool", X, false);
  const int n = dims[0], c = dims[1], h = dims[2], w = dims[3];
  Tensor Y = Tensor::empty(Shape{n, c}, X.dtype());
  dispatch(X.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::global_avg_pool_forward<T>(X.data<T>(), Y.data<T>(), n, c, h, w, stream());
  });
  // dx = dy / (H W) everywhere in the plane.
  return Variable::from_op("global_avg_pool", Y, {x}, [=](const Tensor& dY, Inputs& v) {
    bool acc;
    Tensor& g = v[0].grad_for_update(&acc);
    dispatch(dY.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::global_avg_pool_backward<T>(dY.data<T>(), g.data<T>(), n, c, h, w, acc, stream());
    });
  });
}

Variable reshape(const Variable& x, const std::vector<int64_t>& dims) {
  const Tensor out = x.value().reshape(dims);
  // The gradient is dy seen in the input's shape.
  return Variable::from_op("reshape", out, {x}, [in_dims = x.value().shape().dims()](
                                                    const Tensor& dy, Inputs& v) {
    pass_through(dy.reshape(in_dims), v[0]);
  });
}

Variable flatten(const Variable& x) {
  check_defined("flatten", x.value(), "input");
  return reshape(x, x.value().flatten(1).shape().dims());
}

Variable transpose_last2(const Variable& x) {
  const Tensor& X = x.value();
  check_float("transpose_last2", X);
  if (X.rank() < 2) throw ShapeError("transpose_last2: " + X.str() + " has fewer than 2 dimensions");
  const int64_t R = X.size(-2), C = X.size(-1), B = X.numel() / std::max<int64_t>(R * C, 1);
  std::vector<int64_t> dims = X.shape().dims();
  std::swap(dims[dims.size() - 1], dims[dims.size() - 2]);
  Tensor out = Tensor::empty(Shape(dims), X.dtype());
  dispatch(X.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::transpose_last2<T>(X.data<T>(), out.data<T>(), B, R, C, false, stream());
  });
  // dx = dy transposed back.
  return Variable::from_op("transpose_last2", out, {x}, [B, R, C](const Tensor& dy, Inputs& v) {
    bool acc;
    Tensor& g = v[0].grad_for_update(&acc);
    dispatch(dy.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::transpose_last2<T>(dy.data<T>(), g.data<T>(), B, C, R, acc, stream());
    });
  });
}

Variable concat_last(const Variable& a, const Variable& b) {
  const Tensor& A = a.value();
  const Tensor& B = b.value();
  check_float("concat_last", A);
  bool fits = A.rank() == B.rank() && A.rank() >= 1 && A.dtype() == B.dtype();
  for (int i = 0; fits && i + 1 < A.rank(); ++i) fits = A.size(i) == B.size(i);
  if (!fits)
    throw ShapeError("concat_last: " + A.str() + " and " + B.str() +
                     " differ in more than the last dimension");
  const int64_t fa = A.size(-1), fb = B.size(-1), rows = A.numel() / std::max<int64_t>(fa, 1);
  std::vector<int64_t> dims = A.shape().dims();
  dims.back() = fa + fb;
  Tensor out = Tensor::empty(Shape(dims), A.dtype());
  dispatch(A.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::copy_rows<T>(A.data<T>(), fa, out.data<T>(), fa + fb, rows, fa, false, stream());
    kernels::copy_rows<T>(B.data<T>(), fb, out.data<T>() + fa, fa + fb, rows, fb, false, stream());
  });
  // Each input's gradient is its block of columns of dy.
  return Variable::from_op("concat_last", out, {a, b}, [fa, fb, rows](const Tensor& dy, Inputs& v) {
    dispatch(dy.dtype(), [&](auto t) {
      using T = decltype(t);
      bool acc;
      if (v[0].requires_grad()) {
        Tensor& ga = v[0].grad_for_update(&acc);
        kernels::copy_rows<T>(dy.data<T>(), fa + fb, ga.data<T>(), fa, rows, fa, acc, stream());
      }
      if (v[1].requires_grad()) {
        Tensor& gb = v[1].grad_for_update(&acc);
        kernels::copy_rows<T>(dy.data<T>() + fa, fa + fb, gb.data<T>(), fb, rows, fb, acc, stream());
      }
    });
  });
}

Variable time_step(const Variable& x, int t) {
  const Tensor& X = x.value();
  check_float("time_step", X);
  if (X.rank() != 3 || t < 0 || t >= X.size(1))
    throw ShapeError("time_step: step " + std::to_string(t) + " of " + X.str() +
                     ": need (B, T, F) and 0 <= t < T");
  const int64_t B = X.size(0), T_ = X.size(1), F = X.size(2);
  Tensor out = Tensor::empty(Shape{B, F}, X.dtype());
  dispatch(X.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::copy_rows<T>(X.data<T>() + t * F, T_ * F, out.data<T>(), F, B, F, false, stream());
  });
  // dx[:, t] = dy, zero at the other steps.
  return Variable::from_op("time_step", out, {x}, [B, T_, F, t](const Tensor& dy, Inputs& v) {
    bool acc;
    Tensor& g = v[0].grad_for_update(&acc);
    if (!acc) g.fill(0);
    dispatch(dy.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kernels::copy_rows<T>(dy.data<T>(), F, g.data<T>() + t * F, T_ * F, B, F, true, stream());
    });
  });
}

Variable gru(const Variable& x, const Variable& w_ih, const Variable& w_hh, const Variable& b_ih,
             const Variable& b_hh, const Variable& h0, bool reverse) {
  const Tensor& X = x.value();
  check_float("gru", X);
  if (X.rank() != 3 || w_ih.value().rank() != 2 || w_ih.value().size(0) % 3 != 0)
    throw ShapeError("gru: input " + X.str() + " and w_ih " + w_ih.value().str() +
                     ": need (B, T, I) and (3H, I)");
  const int B = int(X.size(0)), T_ = int(X.size(1)), I = int(X.size(2));
  const int H = int(w_ih.value().size(0) / 3);
  auto expect = [&](const Variable& v, const Shape& s, const char* what) {
    if (v.value().shape() != s || v.value().dtype() != X.dtype())
      throw ShapeError(std::string("gru: ") + what + " is " + v.value().str() + ", need " +
                       s.str() + " for input " + X.str() + " and hidden size " + std::to_string(H));
  };
  expect(w_ih, Shape{3 * H, I}, "w_ih");
  expect(w_hh, Shape{3 * H, H}, "w_hh");
  expect(b_ih, Shape{3 * H}, "b_ih");
  expect(b_hh, Shape{3 * H}, "b_hh");
  if (h0.defined()) expect(h0, Shape{B, H}, "h0");
  const DType d = X.dtype();
  auto elems = [d](size_t n) { return Tensor::empty(Shape{int64_t(n)}, d); };
  Tensor out = Tensor::empty(Shape{B, T_, H}, d);
  Tensor last = Tensor::empty(Shape{B, H}, d);
  const kernels::GruShape shape{B, T_, I, H};
  Tensor reserve = elems(kernels::gru_reserve_size(shape));
  {
    Tensor ws = elems(kernels::gru_forward_workspace_size(shape));
    dispatch(d, [&](auto t) {
      using T = decltype(t);
      const kernels::GruWeights<T> weights{w_ih.value().data<T>(), w_hh.value().data<T>(),
                                           b_ih.value().data<T>(), b_hh.value().data<T>()};
      kernels::gru_forward<T>(cublas(), shape, weights,
                              {X.data<T>(), h0.defined() ? h0.value().data<T>() : nullptr,
                               out.data<T>(), last.data<T>()},
                              reverse, reserve.data<T>(), ws.data<T>(), stream());
    });
  }
  // Backward through time (kernels/gru.cuh, docs/kernels/gru.md).
  return Variable::from_op(
      "gru", out, {x, w_ih, w_hh, b_ih, b_hh, h0},
      [=](const Tensor& dY, Inputs& v) {
        Tensor ws = elems(kernels::gru_backward_workspace_size(shape));
        dispatch(d, [&](auto t) {
          using T = decltype(t);
          kernels::GruGradients<T> g;
          auto grad = [&](int i, bool* a) -> T* {
            if (!v[size_t(i)].defined() || !v[size_t(i)].requires_grad()) return nullptr;
            return v[size_t(i)].grad_for_update(a).template data<T>();
          };
          g.dx = grad(0, &g.accumulate.dx);
          g.dw_ih = grad(1, &g.accumulate.w_ih);
          g.dw_hh = grad(2, &g.accumulate.w_hh);
          g.db_ih = grad(3, &g.accumulate.b_ih);
          g.db_hh = grad(4, &g.accumulate.b_hh);
          g.dh0 = grad(5, &g.accumulate.dh0);
          // Only W_ih and W_hh: backward reads the gates from the reserve, not the biases.
          const kernels::GruWeights<T> weights{v[1].value().data<T>(), v[2].value().data<T>()};
          kernels::gru_backward<T>(cublas(), shape, weights, {X.data<T>(), dY.data<T>(), nullptr},
                                   reverse, reserve.data<T>(), g, ws.data<T>(), stream());
        });
      });
}

Variable attention(const Variable& h, const Variable& w, const Variable& b, const Variable& v) {
  const Tensor& Hs = h.value();
  check_float("attention", Hs);
  if (Hs.rank() != 3 || w.value().rank() != 2 || w.value().size(1) != Hs.size(2))
    throw ShapeError("attention: sequence " + Hs.str() + " and W " + w.value().str() +
                     ": need (B, T, D) and (A, D)");
  const int B = int(Hs.size(0)), T_ = int(Hs.size(1)), D = int(Hs.size(2));
  const int A = int(w.value().size(0));
  for (const Variable* p : {&b, &v})
    if (p->value().shape() != Shape{A} || p->value().dtype() != Hs.dtype())
      throw ShapeError("attention: b and v must be (" + std::to_string(A) + "), got " +
                       p->value().str());
  const DType d = Hs.dtype();
  Tensor out = Tensor::empty(Shape{B, D}, d);
  Tensor alpha = Tensor::empty(Shape{B, T_}, d);
  const kernels::AttentionShape shape{B, T_, D, A};
  Tensor reserve = Tensor::empty(Shape{int64_t(kernels::attention_reserve_size(shape))}, d);
  dispatch(d, [&](auto t) {
    using T = decltype(t);
    kernels::attention_forward<T>(cublas(), shape,
                                  {w.value().data<T>(), b.value().data<T>(), v.value().data<T>()},
                                  {Hs.data<T>(), out.data<T>(), alpha.data<T>()},
                                  reserve.data<T>(), stream());
  });
  return Variable::from_op(
      "attention", out, {h, w, b, v}, [=](const Tensor& dOut, Inputs& in) {
        Tensor ws = Tensor::empty(
            Shape{int64_t(kernels::attention_backward_workspace_size(shape))}, d);
        dispatch(d, [&](auto t) {
          using T = decltype(t);
          kernels::AttentionGradients<T> g;
          auto grad = [&](int i, bool* a) -> T* {
            if (!in[size_t(i)].requires_grad()) return nullptr;
            return in[size_t(i)].grad_for_update(a).template data<T>();
          };
          g.dhseq = grad(0, &g.accumulate.dhseq);
          g.dw = grad(1, &g.accumulate.w);
          g.db = grad(2, &g.accumulate.b);
          g.dv = grad(3, &g.accumulate.v);
          // W and v only: backward does not read b.
          const kernels::AttentionWeights<T> weights{in[1].value().data<T>(), nullptr,
                                                     in[3].value().data<T>()};
          kernels::attention_backward<T>(cublas(), shape, weights, {Hs.data<T>(), dOut.data<T>()},
                                         alpha.data<T>(), reserve.data<T>(), g, ws.data<T>(),
                                         stream());
        });
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
  const std::pair<int, int> rc = rows_cols(name, in);  // named: lambdas capture them
  const int rows = rc.first, cols = rc.second;
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

Variable cross_entropy(const Variable& logits, const Tensor& labels, Labels labels_are) {
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
    kernels::cross_entropy_forward<T>({x.data<T>(), labels.data<int32_t>(), loss.data<T>(),
                                       probs.data<T>(), row_loss.data<T>(), bad.data<int32_t>()},
                                      rows, cols, stream());
  });
  if (labels_are == Labels::check)
    if (const int n_bad = bad.to_host<int32_t>()[0])
      throw ShapeError("cross_entropy: " + std::to_string(n_bad) + " of " +
                       std::to_string(rows) + " labels are outside [0, " +
                       std::to_string(cols) + ")");
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
