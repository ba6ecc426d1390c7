// shapes.h: where the three models run each op (per sample; the lab scales
// the batch), shared by the families and their cuDNN peers so that both
// time the same shapes under the same names (docs/models.md lists them all).
#pragma once

#include "kernels/conv2d.cuh"

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

// The parallel model's attention softmax: rows = batch, 64 time steps.
constexpr int kAttentionSteps = 64;

}  // namespace timbre::lab
