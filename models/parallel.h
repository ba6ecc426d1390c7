// parallel.h: the parallel CNN-RNN.
//
// Two branches read the same input (N, 1, 128, 128):
//   * CNN: the ResCNN trunk (models/rescnn.h), flattened: 128x4x4 = 2048.
//   * RNN: maxpool 4x2 -> (N, 32, 64), 32 mel bands x 64 frames, read as 64
//     time steps of 32-vectors; a per-step dense layer 32 -> 128 (the
//     "embedding", linear); a bidirectional GRU (hidden 64 each way,
//     concatenated: 128 per step); additive attention over the 64 steps
//     (u_t = tanh(W h_t + b), W 128 -> 128, alpha = softmax(v . u_t),
//     out = sum alpha_t h_t): 128.
// The two are concatenated (2176) and a dense layer gives the logits.
//
// Configuration (JSON, all optional): n_classes (8), input_height (128),
// input_width (128), channels and pools (the trunk's, as rescnn),
// branch_pool ([4, 2]), embedding (128), gru_hidden (64, per direction),
// attention (128, the width of W), batchnorm ("keras").
//
// Parameter names: cnn.* (as rescnn), embed.*, gru.*_l0 and *_l0_reverse,
// attention.{weight, bias, v}, dense.*.
#pragma once

#include "models/rescnn.h"

namespace timbre::models {

class ParallelCNNRNN : public Model {
 public:
  ParallelCNNRNN(const nlohmann::json& config, Generator& g);
  Variable forward(const Variable& x, Generator& g) override;
  std::string name() const override { return "parallel"; }
  nlohmann::json config() const override;
  std::vector<LayerInfo> describe() const override;

 private:
  int n_classes_;
  ResTrunkConfig trunk_config_;
  Pool branch_pool_;
  int embedding_, gru_hidden_, attention_;
  int cnn_features_, freq_, steps_;  // branch: freq_ bands x steps_ frames after its pool
  std::shared_ptr<ResTrunk> cnn_;
  std::shared_ptr<nn::Linear> embed_;
  std::shared_ptr<nn::GRU> gru_;
  std::shared_ptr<nn::Attention> attn_;
  std::shared_ptr<nn::Linear> dense_;
};

}  // namespace timbre::models
