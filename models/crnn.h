// crnn.h: the convolutional-recurrent network (C-RNN).
//
// Input (N, 1, 128, 128). Four blocks of
//
//   conv3x3 ('same', with bias) -> maxpool -> BN -> ReLU -> dropout 0.1
//
// with channels 64, 128, 128, 128 and (freq x time) pools 2x2, 4x2, 4x2,
// 4x1 shrink 128x128 to 1x16. The map (N, C, H', W') is read as a sequence
// over time: W' steps of C*H'-vectors (with the defaults 16 steps of 128),
// via reshape (N, C*H', W') and a transpose to (N, W', C*H'). A GRU (hidden
// 32, zero initial state) reads it; its last hidden state goes through a
// dense layer to the logits.
//
// Configuration (JSON, all optional): n_classes (8), input_height (128),
// input_width (128), channels ([64, 128, 128, 128]), pools ([[2, 2], [4, 2],
// [4, 2], [4, 1]]), gru_hidden (32), dropout (0.1), batchnorm ("keras").
//
// Parameter names: block<i>.{conv, bn}.*, gru.{weight,bias}_{ih,hh}_l0,
// dense.{weight, bias}.
#pragma once

#include "models/registry.h"

namespace timbre::models {

class CRNN : public Model {
 public:
  CRNN(const nlohmann::json& config, Generator& g);
  Variable forward(const Variable& x, Generator& g) override;
  std::string name() const override { return "crnn"; }
  nlohmann::json config() const override;
  std::vector<LayerInfo> describe() const override;

 private:
  struct Block {
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::BatchNorm> bn;
  };
  int n_classes_, input_height_, input_width_, gru_hidden_;
  std::vector<int> channels_;
  std::vector<Pool> pools_;
  double dropout_p_;
  nn::BatchNormConvention batchnorm_;
  int out_h_, out_w_;  // map size after the blocks: features C*out_h_, steps out_w_
  std::vector<Block> blocks_;
  std::shared_ptr<nn::Dropout> dropout_;
  std::shared_ptr<nn::GRU> gru_;
  std::shared_ptr<nn::Linear> dense_;
};

}  // namespace timbre::models
