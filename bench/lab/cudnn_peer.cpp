// cudnn_peer.cpp (cuda flavour only): cuDNN at the shapes of timbre's own
// cases, registered in timbre's family as version "cudnn_<op>" so that the
// driver prints timbre's best version of the op against it: convolution,
// softmax and GRU forward, batch norm and max pooling. Each case is checked
// against timbre's CPU reference, like timbre's own. cuDNN runs in FP32
// with FMA math (no TF32: timbre's kernels and tests assume full FP32).
//
// The legacy cuDNN calls used here (filter and pooling descriptors, the
// batch-norm calls) are deprecated in cuDNN 9 but still shipped; the graph
// API would time the same kernels.
#define CUDNN_DEPRECATED  // the legacy API: silence its deprecation warnings
#include <cudnn.h>

#include <cublas_v2.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>

#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/batchnorm.cuh"
#include "kernels/conv2d.cuh"
#include "kernels/cuda_check.h"
#include "kernels/gru.cuh"
#include "kernels/pooling.cuh"
#include "kernels/softmax.cuh"

namespace k = timbre::kernels;

namespace timbre::lab {
namespace {

void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuDNN: ") + what + ": " + cudnnGetErrorString(s));
}
#define CUDNN(expr) check_cudnn((expr), #expr)

struct Handle {
  cudnnHandle_t h = nullptr;
  Handle() { CUDNN(cudnnCreate(&h)); }
  ~Handle() { cudnnDestroy(h); }
};

cudnnTensorDescriptor_t tensor4d(int n, int c, int h, int w) {
  cudnnTensorDescriptor_t d;
  CUDNN(cudnnCreateTensorDescriptor(&d));
  CUDNN(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
  return d;
}

// ---------------------------------------------------------------------------
// Convolution forward with bias: cudnnConvolutionForward + cudnnAddTensor,
// the algorithm cuDNN's heuristics rank first.
struct ConvRun : Run {
  k::Conv2dShape s;
  Handle cudnn;
  std::vector<float> x, w, b, ref;
  DeviceBuffer<float> dx, dw, db, y, ws;
  cudnnTensorDescriptor_t xd, yd, bd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnConvolutionFwdAlgo_t algo;
  size_t ws_bytes = 0;
  ConvRun(k::Conv2dShape shape, int batch) : s(shape) {
    s.N = batch;
    x = random_values<float>(size_t(s.x_size()), 31);
    w = random_values<float>(size_t(s.w_size()), 32, -0.2, 0.2);
    b = random_values<float>(size_t(s.K), 33);
    dx = DeviceBuffer<float>(x);
    dw = DeviceBuffer<float>(w);
    db = DeviceBuffer<float>(b);
    y = DeviceBuffer<float>(size_t(s.y_size()));
    xd = tensor4d(s.N, s.C, s.H, s.W);
    yd = tensor4d(s.N, s.K, s.P(), s.Q());
    bd = tensor4d(1, s.K, 1, 1);
    CUDNN(cudnnCreateFilterDescriptor(&wd));
    CUDNN(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.K, s.C, s.R, s.S));
    CUDNN(cudnnCreateConvolutionDescriptor(&cd));
    CUDNN(cudnnSetConvolution2dDescriptor(cd, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN(cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH));
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int returned = 0;
    CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(cudnn.h, xd, wd, cd, yd, 8, &returned, perf));
    algo = perf[0].algo;
    CUDNN(cudnnGetConvolutionForwardWorkspaceSize(cudnn.h, xd, wd, cd, yd, algo, &ws_bytes));
    if (ws_bytes) ws = DeviceBuffer<float>((ws_bytes + 3) / 4);
  }
  ~ConvRun() override {
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyTensorDescriptor(bd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyConvolutionDescriptor(cd);
  }
  void run(int) override {
    const float one = 1, zero = 0;
    CUDNN(cudnnConvolutionForward(cudnn.h, &one, xd, dx.get(), wd, dw.get(), cd, algo,
                                  ws_bytes ? ws.get() : nullptr, ws_bytes, &zero, yd, y.get()));
    CUDNN(cudnnAddTensor(cudnn.h, &one, bd, db.get(), &one, yd, y.get()));
  }
  std::string check() override {
    if (ref.empty()) {
      ref.resize(y.size());
      k::conv2d_forward_cpu<float>(s, x.data(), w.data(), b.data(), ref.data());
    }
    return compare(y.to_host(), widen(ref), 1e-4);  // as timbre's conv2d cases
  }
};

// ---------------------------------------------------------------------------
// Row softmax: cudnnSoftmaxForward over (rows, cols, 1, 1), per instance.
struct SoftmaxRun : Run {
  int rows, cols;
  Handle cudnn;
  std::vector<float> x;
  DeviceBuffer<float> dx, y;
  cudnnTensorDescriptor_t d;
  SoftmaxRun(int r, int c)
      : rows(r), cols(c), x(random_values<float>(size_t(r) * c, 21, -4, 4)), dx(x), y(x.size()),
        d(tensor4d(r, c, 1, 1)) {}
  ~SoftmaxRun() override { cudnnDestroyTensorDescriptor(d); }
  void run(int) override {
    const float one = 1, zero = 0;
    CUDNN(cudnnSoftmaxForward(cudnn.h, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_INSTANCE, &one,
                              d, dx.get(), &zero, d, y.get()));
  }
  std::string check() override {
    std::vector<float> ref(x.size());
    k::softmax_forward_cpu<float>(x.data(), ref.data(), rows, cols);
    return compare(y.to_host(), widen(ref), 1e-5);
  }
};

// ---------------------------------------------------------------------------
// One GRU direction, forward (training mode: the reserve is written), with
// timbre's weights copied into cuDNN's weight space. cuDNN's GRU is the
// same formula (gates r, z, n; n = tanh(W_n x + b_Wn + r (R_n h + b_Rn)),
// CUDNN_RNN_DOUBLE_BIAS). A reverse direction is the forward one over the
// time-reversed sequence, which costs cuDNN the same: the peer of both
// parallel directions is its forward direction over the same sizes.
struct GruRun : Run {
  GruSite site;
  int B;
  Handle cudnn;
  std::vector<float> x, w_ih, w_hh, b_ih, b_hh;
  DeviceBuffer<float> dx, y, weights, ws, reserve;
  DeviceBuffer<int> seq_dev;
  cudnnRNNDescriptor_t rnn;
  cudnnRNNDataDescriptor_t xd, yd;
  cudnnTensorDescriptor_t hd;
  size_t weight_bytes = 0, ws_bytes = 0, reserve_bytes = 0;
  GruRun(const GruSite& s, int batch) : site(s), B(batch) {
    const int S = s.steps, I = s.input, H = s.hidden, G = 3 * H;
    const double limit = 1 / std::sqrt(double(H));
    x = random_values<float>(size_t(B) * S * I, 41);
    w_ih = random_values<float>(size_t(G) * I, 42, -limit, limit);
    w_hh = random_values<float>(size_t(G) * H, 43, -limit, limit);
    b_ih = random_values<float>(size_t(G), 44, -limit, limit);
    b_hh = random_values<float>(size_t(G), 45, -limit, limit);
    dx = DeviceBuffer<float>(x);
    y = DeviceBuffer<float>(size_t(B) * S * H);
    CUDNN(cudnnCreateRNNDescriptor(&rnn));
    CUDNN(cudnnSetRNNDescriptor_v8(rnn, CUDNN_RNN_ALGO_STANDARD, CUDNN_GRU, CUDNN_RNN_DOUBLE_BIAS,
                                   CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT,
                                   CUDNN_DATA_FLOAT, CUDNN_FMA_MATH, I, H, H, 1, nullptr,
                                   CUDNN_RNN_PADDED_IO_DISABLED));
    std::vector<int> lengths(size_t(B), S);
    seq_dev = DeviceBuffer<int>(lengths);
    CUDNN(cudnnCreateRNNDataDescriptor(&xd));
    CUDNN(cudnnCreateRNNDataDescriptor(&yd));
    CUDNN(cudnnSetRNNDataDescriptor(xd, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                    S, B, I, lengths.data(), nullptr));
    CUDNN(cudnnSetRNNDataDescriptor(yd, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                    S, B, H, lengths.data(), nullptr));
    CUDNN(cudnnCreateTensorDescriptor(&hd));
    const int dims[3] = {1, B, H}, strides[3] = {B * H, H, 1};
    CUDNN(cudnnSetTensorNdDescriptor(hd, CUDNN_DATA_FLOAT, 3, dims, strides));
    CUDNN(cudnnGetRNNWeightSpaceSize(cudnn.h, rnn, &weight_bytes));
    weights = DeviceBuffer<float>(weight_bytes / 4);
    CUDNN(cudnnGetRNNTempSpaceSizes(cudnn.h, rnn, CUDNN_FWD_MODE_TRAINING, xd, &ws_bytes,
                                    &reserve_bytes));
    ws = DeviceBuffer<float>(ws_bytes / 4 + 1);
    reserve = DeviceBuffer<float>(reserve_bytes / 4 + 1);
    // Matrices 0..2: W_r, W_z, W_n (input); 3..5: R_r, R_z, R_n (recurrent).
    cudnnTensorDescriptor_t md, bdsc;
    CUDNN(cudnnCreateTensorDescriptor(&md));
    CUDNN(cudnnCreateTensorDescriptor(&bdsc));
    for (int id = 0; id < 6; ++id) {
      void *m = nullptr, *bias = nullptr;
      CUDNN(cudnnGetRNNWeightParams(cudnn.h, rnn, 0, weight_bytes, weights.get(), id, md, &m,
                                    bdsc, &bias));
      const int gate = id % 3, cols = id < 3 ? I : H;
      const float* wsrc = (id < 3 ? w_ih.data() : w_hh.data()) + size_t(gate) * H * cols;
      const float* bsrc = (id < 3 ? b_ih.data() : b_hh.data()) + size_t(gate) * H;
      CUDA_CHECK(cudaMemcpy(m, wsrc, sizeof(float) * H * cols, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(bias, bsrc, sizeof(float) * H, cudaMemcpyHostToDevice));
    }
    cudnnDestroyTensorDescriptor(md);
    cudnnDestroyTensorDescriptor(bdsc);
  }
  ~GruRun() override {
    cudnnDestroyRNNDataDescriptor(xd);
    cudnnDestroyRNNDataDescriptor(yd);
    cudnnDestroyTensorDescriptor(hd);
    cudnnDestroyRNNDescriptor(rnn);
  }
  void run(int) override {
    CUDNN(cudnnRNNForward(cudnn.h, rnn, CUDNN_FWD_MODE_TRAINING, seq_dev.get(), xd, dx.get(), yd,
                          y.get(), hd, nullptr, nullptr, nullptr, nullptr, nullptr, weight_bytes,
                          weights.get(), ws_bytes, ws.get(), reserve_bytes, reserve.get()));
  }
  std::string check() override {
    std::vector<float> ref(y.size());
    k::gru_forward_cpu<float>({B, site.steps, site.input, site.hidden},
                              {w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data()},
                              {x.data(), nullptr, ref.data(), nullptr}, false);
    return compare(y.to_host(), widen(ref), 1e-4);  // as timbre's gru cases
  }
};

// ---------------------------------------------------------------------------
// Batch norm over NCHW, per channel over N, H and W (CUDNN_BATCHNORM_SPATIAL;
// _PERSISTENT may be faster but, by cuDNN's own account, limits the range of
// values), with the family's sites, inputs (the same seeds) and convention:
// Keras's eps and momentum. The training forward (y, the saved mean and
// inverse standard deviation, the running statistics), the inference
// forward, and the training backward from what a training forward saved
// (cuDNN's "saved inverse variance" is 1/sqrt(var + eps), timbre's
// save_inv_std).
enum class BnOp { forward_train, forward_eval, backward_train };
const char* bn_op_name(BnOp op) {
  switch (op) {
    case BnOp::forward_train: return "forward_train";
    case BnOp::forward_eval: return "forward_eval";
    default: return "backward_train";
  }
}

// cuDNN refuses an eps below CUDNN_BN_MIN_EPSILON (1e-5 before cuDNN 8, 0
// since); Keras's 1e-3 is above either.
static_assert(k::kKerasBatchNormEps >= CUDNN_BN_MIN_EPSILON, "eps below cuDNN's minimum");
const double kBnEps = k::kKerasBatchNormEps;
// cuDNN's running variance takes the unbiased batch variance var*M/(M - 1)
// (it has no biased option), Keras's the biased one, so cuDNN's cannot be
// compared with Keras's reference. The reference here runs with Keras's
// momentum and cuDNN's estimator, BatchNormRunning{keep, true}: y (both
// normalise with the biased variance), the saved statistics and the
// running mean do not depend on the estimator, and the running variance is
// then comparable too. The estimator costs one multiply per channel.
const k::BatchNormRunning kBnRunning{k::keras_running().keep, true};
// cuDNN's exponentialAverageFactor weighs the batch, running = factor*batch
// + (1 - factor)*running: 1 - keep (0.01 for Keras's momentum 0.99).
const double kBnFactor = 1 - kBnRunning.keep;

struct BatchNormRun : Run {
  BatchNormSite site;
  BnOp op;
  int n;
  size_t count;
  Handle cudnn;
  std::vector<float> x, dy, gamma, beta, run_mean, run_var;
  DeviceBuffer<float> d_x, d_dy, d_gamma, d_beta, d_run_mean, d_run_var, d_y, d_mean, d_inv_std,
      d_dx, d_dgamma, d_dbeta;
  cudnnTensorDescriptor_t xd;  // x, y, dy, dx
  cudnnTensorDescriptor_t cd;  // gamma, beta, their gradients and the statistics: 1xCx1x1
  int runs = 0;                // training forwards run (each moves the running statistics)
  BatchNormRun(const BatchNormSite& s, BnOp o, int batch)
      : site(s), op(o), n(batch), count(size_t(batch) * s.c * s.h * s.w),
        x(random_values<float>(count, 21)), dy(random_values<float>(count, 22)),
        gamma(random_values<float>(size_t(s.c), 23, 0.5, 1.5)),
        beta(random_values<float>(size_t(s.c), 24)),
        run_mean(random_values<float>(size_t(s.c), 25, -0.5, 0.5)),
        run_var(random_values<float>(size_t(s.c), 26, 0.5, 1.5)), d_x(x), d_dy(dy),
        d_gamma(gamma), d_beta(beta), d_run_mean(run_mean), d_run_var(run_var), d_y(count),
        d_mean(size_t(s.c)), d_inv_std(size_t(s.c)), d_dx(count), d_dgamma(size_t(s.c)),
        d_dbeta(size_t(s.c)), xd(tensor4d(batch, s.c, s.h, s.w)) {
    CUDNN(cudnnCreateTensorDescriptor(&cd));
    CUDNN(cudnnDeriveBNTensorDescriptor(cd, xd, CUDNN_BATCHNORM_SPATIAL));
    if (op == BnOp::backward_train) forward_train();  // the saved statistics
  }
  ~BatchNormRun() override {
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(cd);
  }
  void forward_train() {
    const float one = 1, zero = 0;
    CUDNN(cudnnBatchNormalizationForwardTraining(
        cudnn.h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, d_x.get(), xd, d_y.get(), cd,
        d_gamma.get(), d_beta.get(), kBnFactor, d_run_mean.get(), d_run_var.get(), kBnEps,
        d_mean.get(), d_inv_std.get()));
  }
  void run(int) override {
    const float one = 1, zero = 0;
    switch (op) {
      case BnOp::forward_train:
        forward_train();
        ++runs;
        break;
      case BnOp::forward_eval:
        CUDNN(cudnnBatchNormalizationForwardInference(
            cudnn.h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, d_x.get(), xd, d_y.get(), cd,
            d_gamma.get(), d_beta.get(), d_run_mean.get(), d_run_var.get(), kBnEps));
        break;
      case BnOp::backward_train:
        // Data and parameter gradients assigned (alpha 1, beta 0), as the
        // family's BatchNormAccumulate{}.
        CUDNN(cudnnBatchNormalizationBackward(
            cudnn.h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd, d_x.get(), xd,
            d_dy.get(), xd, d_dx.get(), cd, d_gamma.get(), d_dgamma.get(), d_dbeta.get(), kBnEps,
            d_mean.get(), d_inv_std.get()));
        break;
    }
  }
  // The references, computed once (the training forward's running
  // statistics follow the device's: one CPU update per run so far).
  std::vector<float> ref_y, ref_mean, ref_inv_std, ref_rm, ref_rv, ref_dx, ref_dgamma, ref_dbeta;
  int ref_runs = 0;
  std::string check() override {
    const int c = site.c, h = site.h, w = site.w;
    const size_t cs = gamma.size();
    if (op == BnOp::forward_eval) {
      if (ref_y.empty()) {
        ref_y.resize(count);
        k::batchnorm_forward_eval_cpu<float>(
            {x.data(), gamma.data(), beta.data(), run_mean.data(), run_var.data(), ref_y.data()},
            {n, c, h, w}, kBnEps);
      }
      // No reduction: y from the running statistics in float, a few ulps of
      // |y|, as timbre's.
      return compare(d_y.to_host(), widen(ref_y), 1e-5);
    }
    if (ref_y.empty()) {
      ref_y.resize(count), ref_mean.resize(cs), ref_inv_std.resize(cs);
      ref_rm = run_mean, ref_rv = run_var;
      k::batchnorm_forward_train_cpu<float>(
          {x.data(), gamma.data(), beta.data(), ref_y.data(), ref_mean.data(), ref_inv_std.data(),
           ref_rm.data(), ref_rv.data()},
          {n, c, h, w}, kBnEps, kBnRunning);
      ref_runs = 1;
    }
    if (op == BnOp::forward_train) {
      for (; ref_runs < runs; ++ref_runs)
        k::batchnorm_forward_train_cpu<float>(
            {x.data(), gamma.data(), beta.data(), ref_y.data(), ref_mean.data(), ref_inv_std.data(),
             ref_rm.data(), ref_rv.data()},
            {n, c, h, w}, kBnEps, kBnRunning);
      // cuDNN's statistics are float reductions of M = n*h*w values (up to
      // 32,768 at the check batch) in an order it does not document, the
      // reference's double sums rounded once. inv_std (var ~ 1/3, no
      // cancellation), y normalised from it and the running statistics
      // (one update, the old value dominating): 1e-5. The mean of values in
      // [-1, 1) is ~1/sqrt(M) of their scale, so relative to the largest
      // channel mean a float sum's rounding shows ~sqrt(M) times larger:
      // 1e-4.
      std::string e = compare(d_y.to_host(), widen(ref_y), 1e-5);
      if (e.empty()) e = compare(d_mean.to_host(), widen(ref_mean), 1e-4);
      if (e.empty()) e = compare(d_inv_std.to_host(), widen(ref_inv_std), 1e-5);
      if (e.empty()) e = compare(d_run_mean.to_host(), widen(ref_rm), 1e-5);
      if (e.empty()) e = compare(d_run_var.to_host(), widen(ref_rv), 1e-5);
      return e;
    }
    if (ref_dx.empty()) {
      ref_dx.resize(count), ref_dgamma.resize(cs), ref_dbeta.resize(cs);
      k::batchnorm_backward_train_cpu<float>(
          {x.data(), dy.data(), gamma.data(), ref_mean.data(), ref_inv_std.data(), ref_dx.data(),
           ref_dgamma.data(), ref_dbeta.data()},
          {n, c, h, w}, k::BatchNormAccumulate{});
    }
    // dgamma, dbeta: float sums of M products against double ones, 1e-4 of
    // the largest (as conv2d's dw and db). dx = gamma inv_std (g - dbeta/M -
    // xhat dgamma/M): the sums enter divided by M (~1/sqrt(M) of g), so a
    // few ulps of the larger terms and cuDNN's float saved statistics: 1e-5.
    std::string e = compare(d_dx.to_host(), widen(ref_dx), 1e-5);
    if (e.empty()) e = compare(d_dgamma.to_host(), widen(ref_dgamma), 1e-4);
    if (e.empty()) e = compare(d_dbeta.to_host(), widen(ref_dbeta), 1e-4);
    return e;
  }
};

// ---------------------------------------------------------------------------
// Max pooling forward and backward over NCHW, no padding, at the models'
// pools (kPoolSites, the pooling family's max sites). cuDNN keeps no argmax:
// its backward takes x, y and dy and finds each window's maximum again, so
// the backward run's y comes from a forward in the constructor. Windows that
// do not overlap (stride >= window: every site, stride = window) give each
// input one writer, so CUDNN_POOLING_MAX's backward is deterministic as it
// stands; CUDNN_POOLING_MAX_DETERMINISTIC, cuDNN's mode for overlapping
// windows, would be taken where they overlap. NaN propagates, as in timbre
// (the inputs are finite).

// n distinct floats in [-1, 1) in a shuffled order (distinct while n <=
// 2^24: 2/n apart, at least two ulps; the largest site, crnn.block1.pool,
// reaches 2^24 at batch 16, the check batch is 2): no window has a tied
// maximum, which uniform random floats do not rule out. A tie's gradient is
// a convention: timbre's goes to the window's first maximum, cuDNN
// documents none.
std::vector<float> distinct_values(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(-1 + 2 * (double(i) / double(n)));
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  return v;
}

struct MaxPoolRun : Run {
  PoolSite site;
  bool backward, disjoint;
  int n;
  size_t ins, outs;
  Handle cudnn;
  std::vector<float> x, dy;
  DeviceBuffer<float> d_x, d_y, d_dy, d_dx;
  cudnnTensorDescriptor_t xd, yd;
  cudnnPoolingDescriptor_t pd;
  MaxPoolRun(const PoolSite& s, bool bw, int batch)
      : site(s), backward(bw), disjoint(s.p.kh <= s.p.sh && s.p.kw <= s.p.sw), n(batch),
        ins(size_t(batch) * s.c * s.h * s.w),
        outs(size_t(k::pool_outputs(batch, s.c, s.h, s.w, s.p))), x(distinct_values(ins, 31)),
        dy(random_values<float>(outs, 32)), d_x(x), d_y(outs), d_dy(dy), d_dx(ins),
        xd(tensor4d(batch, s.c, s.h, s.w)),
        yd(tensor4d(batch, s.c, k::pool_out_size(s.h, s.p.kh, s.p.sh),
                    k::pool_out_size(s.w, s.p.kw, s.p.sw))) {
    const cudnnPoolingMode_t mode =
        disjoint ? CUDNN_POOLING_MAX : CUDNN_POOLING_MAX_DETERMINISTIC;
    CUDNN(cudnnCreatePoolingDescriptor(&pd));
    CUDNN(cudnnSetPooling2dDescriptor(pd, mode, CUDNN_PROPAGATE_NAN, s.p.kh, s.p.kw, 0, 0, s.p.sh,
                                      s.p.sw));
    // cuDNN's output plane, floor((H - kh)/sh) + 1, is timbre's: checked.
    int on = 0, oc = 0, oh = 0, ow = 0;
    CUDNN(cudnnGetPooling2dForwardOutputDim(pd, xd, &on, &oc, &oh, &ow));
    if (size_t(on) * oc * oh * ow != outs)
      throw std::runtime_error(std::string("cuDNN pooling output differs from timbre's at ") +
                               s.shape);
    if (backward) forward();
  }
  ~MaxPoolRun() override {
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyPoolingDescriptor(pd);
  }
  void forward() {
    const float one = 1, zero = 0;
    CUDNN(cudnnPoolingForward(cudnn.h, pd, &one, xd, d_x.get(), &zero, yd, d_y.get()));
  }
  void run(int) override {
    if (!backward) return forward();
    const float one = 1, zero = 0;
    CUDNN(cudnnPoolingBackward(cudnn.h, pd, &one, yd, d_y.get(), yd, d_dy.get(), xd, d_x.get(),
                               &zero, xd, d_dx.get()));
  }
  std::string check() override {
    const int c = site.c, h = site.h, w = site.w;
    std::vector<float> y(outs), dx(ins);
    std::vector<int> argmax(outs);
    k::max_pool2d_forward_cpu<float>(x.data(), y.data(), argmax.data(), n, c, h, w, site.p);
    if (!backward) return compare(d_y.to_host(), widen(y), 0);  // a maximum: exact
    k::max_pool2d_backward_cpu<float>({dy.data(), argmax.data(), dx.data()}, n, c, h, w, site.p,
                                      false);
    // Disjoint windows: a copy of dy or 0, exact. Overlapping ones would add
    // up to ceil(kh/sh)*ceil(kw/sw) values of dy, maybe in another order.
    return compare(d_dx.to_host(), widen(dx), disjoint ? 0 : 1e-6);
  }
};

}  // namespace
}  // namespace timbre::lab

LAB_FAMILY(cudnn_peer) {
  using namespace timbre::lab;
  for (const ConvSite& site : kConvSites) {
    const k::Conv2dShape s = site.s;
    add({"conv2d", "cudnn_forward", site.shape,
         [s](int b) {
           k::Conv2dShape sb = s;
           sb.N = b;
           return k::conv2d_forward_cost(sb, true);
         },
         {0}, [s](int b) { return std::make_unique<ConvRun>(s, b); }});
  }
  add({"softmax", "cudnn_forward", "parallel.attention",
       [](int b) { return k::softmax_forward_cost(b, kAttentionSteps); }, {0},
       [](int b) { return std::make_unique<SoftmaxRun>(b, kAttentionSteps); }});
  for (const GruSite& s : kGruSites)
    add({"gru", "cudnn_forward", s.shape,
         [s](int b) { return k::gru_forward_cost({b, s.steps, s.input, s.hidden}); }, {0},
         [s](int b) { return std::make_unique<GruRun>(s, b); }});
  // Each op's cost is timbre's (the ideal traffic of the op), as for every
  // version: GB/s and GFLOP/s compare times directly.
  for (const BatchNormSite& s : kBatchNormSites)
    for (BnOp op : {BnOp::forward_train, BnOp::forward_eval, BnOp::backward_train})
      add({"batchnorm", std::string("cudnn_") + bn_op_name(op), s.shape,
           [s, op](int b) {
             switch (op) {
               case BnOp::forward_train: return k::batchnorm_forward_train_cost(b, s.c, s.h, s.w);
               case BnOp::forward_eval: return k::batchnorm_forward_eval_cost(b, s.c, s.h, s.w);
               default: return k::batchnorm_backward_train_cost(b, s.c, s.h, s.w, false);
             }
           },
           {0}, [s, op](int b) { return std::make_unique<BatchNormRun>(s, op, b); }});
  // cuDNN writes no argmax and its backward reads x and y instead: the cost
  // is still timbre's, the op's, for the same reason.
  for (const PoolSite& s : kPoolSites)
    for (bool bw : {false, true})
      add({"pooling", bw ? "cudnn_max_pool2d_backward" : "cudnn_max_pool2d_forward", s.shape,
           [s, bw](int b) {
             return bw ? k::max_pool2d_backward_cost(b, s.c, s.h, s.w, s.p, false)
                       : k::max_pool2d_forward_cost(b, s.c, s.h, s.w, s.p);
           },
           {0}, [s, bw](int b) { return std::make_unique<MaxPoolRun>(s, bw, b); }});
}
