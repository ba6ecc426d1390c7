// ops.h: differentiable operations on Variables. Each op checks its inputs
// (names itself and the shapes in a ShapeError), runs the forward kernels,
// and records its backward rule; the rules are in ops.cpp beside their
// forward, with the derivative they implement. f32 and f64 tensors are both
// accepted (f64 for gradient checks); both operands of an op share a dtype.
#pragma once

#include "engine/autograd.h"

namespace timbre::ops {

// Elementwise activations (kernels/activation.cuh).
Variable relu(const Variable& x);
Variable elu(const Variable& x, double alpha = 1.0);
Variable tanh(const Variable& x);
Variable sigmoid(const Variable& x);

// a + b, same shapes (residual connections).
Variable add(const Variable& a, const Variable& b);

// Dense layer: y = x W^T + b, x (N, in), W (out, in), b (out) or undefined.
// Three cuBLAS GEMMs forward and backward (the bias enters as a rank-1
// update with a vector of ones).
Variable linear(const Variable& x, const Variable& w, const Variable& b);

// Softmax and log-softmax over the last dimension (kernels/softmax.cuh).
Variable softmax(const Variable& x);
Variable log_softmax(const Variable& x);

// Mean cross-entropy of logits (N, C) against i32 labels (N): a scalar.
// Labels outside [0, C) are an error (ShapeError naming how many), checked
// after the kernel has counted them on the device.
Variable cross_entropy(const Variable& logits, const Tensor& labels);

}  // namespace timbre::ops
