// rescnn.h: the residual CNN.
//
// Input (N, 1, 128, 128): 128 mel bands x 128 frames. Five residual blocks,
// channels 16, 32, 64, 128, 128, each
//
//   y   = ReLU(BN(conv3x3(x)))          3x3 'same' convolutions (pad 1), with bias
//   y   = BN(conv3x3(y))
//   s   = conv1x1(x) if the channel count changes, else x     (the shortcut)
//   out = maxpool2x2(ReLU(y + s))
//
// halve the spatial size five times: 128x128 -> 4x4, so the trunk ends in
// 128 x 4 x 4 = 2048 features; a dense layer maps them to the logits.
//
// Configuration (JSON, all optional): n_classes (8), input_height (128),
// input_width (128), channels ([16, 32, 64, 128, 128]: one block each),
// pools ([[2, 2] x blocks]: each block's (freq, time) max-pool window, equal
// to its stride), batchnorm ("keras" or "pytorch", see engine/nn.h).
//
// Parameter names: cnn.block<i>.{conv1, bn1, conv2, bn2, shortcut}.*,
// dense.{weight, bias}. The parallel CNN-RNN reuses ResTrunk as its CNN.
#pragma once

#include "models/registry.h"

namespace timbre::models {

struct ResTrunkConfig {
  int input_height = 128, input_width = 128;
  std::vector<int> channels{16, 32, 64, 128, 128};
  std::vector<Pool> pools{{2, 2}, {2, 2}, {2, 2}, {2, 2}, {2, 2}};
  nn::BatchNormConvention batchnorm = nn::BatchNormConvention::keras;
  // Reads input_height, input_width, channels, pools, batchnorm.
  static ResTrunkConfig read(const ConfigReader& r);
  void write(nlohmann::json& j) const;
  // (C, H, W) after the last block; throws if a pool does not fit.
  std::array<int, 3> output_shape(const std::string& model) const;
};

class ResidualBlock : public Module {
 public:
  ResidualBlock(int in_channels, int out_channels, Pool pool, nn::BatchNormConvention bn,
                Generator& g);
  Variable forward(const Variable& x);
  // Rows of describe() for an input of (in_channels, h, w), names prefixed.
  void describe(const std::string& prefix, int h, int w, std::vector<LayerInfo>* out) const;

 private:
  int in_, out_;
  Pool pool_;
  std::shared_ptr<nn::Conv2d> conv1_, conv2_, shortcut_;
  std::shared_ptr<nn::BatchNorm> bn1_, bn2_;
};

// The stack of residual blocks: (N, 1, H, W) -> (N, C, H', W').
class ResTrunk : public Module {
 public:
  ResTrunk(const ResTrunkConfig& c, Generator& g);
  Variable forward(const Variable& x);
  void describe(const std::string& prefix, std::vector<LayerInfo>* out) const;

 private:
  ResTrunkConfig c_;
  std::vector<std::shared_ptr<ResidualBlock>> blocks_;
};

class ResCNN : public Model {
 public:
  ResCNN(const nlohmann::json& config, Generator& g);
  Variable forward(const Variable& x, Generator& g) override;
  std::string name() const override { return "rescnn"; }
  nlohmann::json config() const override;
  std::vector<LayerInfo> describe() const override;

 private:
  int n_classes_;
  ResTrunkConfig trunk_config_;
  int features_;
  std::shared_ptr<ResTrunk> cnn_;
  std::shared_ptr<nn::Linear> dense_;
};

// Throws ShapeError unless x is (N, 1, h, w).
void check_input(const std::string& model, const Variable& x, int h, int w);

}  // namespace timbre::models
