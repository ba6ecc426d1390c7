// shapes.h: where the three models run each op (per sample; the lab scales
// the batch), shared by the families and their cuDNN peers so that both
// time the same shapes under the same names (docs/models.md lists them all).
#pragma once

#include "kernels/conv2d.cuh"
#include "kernels/pooling.cuh"

namespace timbre::lab {

struct ConvSite {
  const char* shape;
  kernels::Conv2dShape s;  // N = 1
};
inline const ConvSite kConvSites[] = {
    {"rescnn.block1.conv2", {1, 16, 128, 128, 16, 3, 3, 1, 1, 1, 1}},
    {"rescnn.block2.shortcut1x1", {1, 16, 64, 64, 32, 1, 1}},
    {"rescnn.block3.conv1", {1, 32, 32, 32, 64, 3, 3, 1, 1, 1, 1}},
    {"crnn.block2.conv", {1, 64, 64, 64, 128, 3, 3, 1, 1, 1, 1}},
};

struct GruSite {
  const char* shape;
  int steps, input, hidden;
  bool reverse;
};
inline const GruSite kGruSites[] = {
    {"crnn.gru", 16, 128, 32, false},
    {"parallel.bigru.forward", 64, 128, 64, false},
    {"parallel.bigru.backward", 64, 128, 64, true},
};

// Every batch norm of the models: rescnn (and the parallel model's trunk)
// blocks 1-5, crnn blocks 1-4 (after pooling).
struct BatchNormSite {
  const char* shape;
  int c, h, w;
};
inline const BatchNormSite kBatchNormSites[] = {
    {"rescnn.block1.bn", 16, 128, 128}, {"rescnn.block2.bn", 32, 64, 64},
    {"rescnn.block3.bn", 64, 32, 32},   {"rescnn.block4.bn", 128, 16, 16},
    {"rescnn.block5.bn", 128, 8, 8},    {"crnn.block1.bn", 64, 64, 64},
    {"crnn.block2.bn", 128, 16, 32},    {"crnn.block3.bn", 128, 4, 16},
    {"crnn.block4.bn", 128, 1, 16},
};

// Every pool of the models, all max pooling with stride = window: rescnn
// and the parallel trunk 2x2 after blocks 1-5; crnn 2x2, 4x2, 4x2, 4x1 on
// the conv outputs; the parallel RNN branch 4x2 on the input.
struct PoolSite {
  const char* shape;
  int c, h, w;
  kernels::PoolWindow p;  // unused by the global pools (bench/lab/pooling.cpp)
};
constexpr kernels::PoolWindow kPool(int kh, int kw) { return kernels::PoolWindow{kh, kw, kh, kw}; }
inline const PoolSite kPoolSites[] = {
    {"rescnn.block1.pool", 16, 128, 128, kPool(2, 2)},
    {"rescnn.block2.pool", 32, 64, 64, kPool(2, 2)},
    {"rescnn.block3.pool", 64, 32, 32, kPool(2, 2)},
    {"rescnn.block4.pool", 128, 16, 16, kPool(2, 2)},
    {"rescnn.block5.pool", 128, 8, 8, kPool(2, 2)},
    {"crnn.block1.pool", 64, 128, 128, kPool(2, 2)},
    {"crnn.block2.pool", 128, 64, 64, kPool(4, 2)},
    {"crnn.block3.pool", 128, 16, 32, kPool(4, 2)},
    {"crnn.block4.pool", 128, 4, 16, kPool(4, 1)},
    {"parallel.branch.pool", 1, 128, 128, kPool(4, 2)},
};

// The parallel model's attention softmax: rows = batch, 64 time steps.
constexpr int kAttentionSteps = 64;

}  // namespace timbre::lab
