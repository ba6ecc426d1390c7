// cudnn_peer.cpp (cuda flavour only): cuDNN at the shapes of timbre's own
// cases, registered as version "cudnn" so that the driver prints timbre's
// best version against it. Each case is checked against timbre's CPU
// reference, like timbre's own. cuDNN runs in FP32 with FMA math (no TF32:
// timbre's kernels and tests assume full FP32).
//
// The legacy cuDNN calls used here (filter and pooling descriptors) are
// deprecated in cuDNN 9 but still shipped; the graph API would time the
// same kernels.
#define CUDNN_DEPRECATED  // the legacy API: silence its deprecation warnings
#include <cudnn.h>

#include <cublas_v2.h>

#include <stdexcept>
#include <string>

#include "bench/lab/lab.h"
#include "bench/lab/shapes.h"
#include "kernels/conv2d.cuh"
#include "kernels/cuda_check.h"
#include "kernels/gru.cuh"
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
}
