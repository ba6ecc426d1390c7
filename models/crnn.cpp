#include "models/crnn.h"

#include "models/rescnn.h"  // check_input

namespace timbre::models {

CRNN::CRNN(const nlohmann::json& config, Generator& g) {
  ConfigReader r("crnn", config,
                 {"n_classes", "input_height", "input_width", "channels", "pools", "gru_hidden",
                  "dropout", "batchnorm"});
  n_classes_ = r.positive_int("n_classes", 8);
  input_height_ = r.positive_int("input_height", 128);
  input_width_ = r.positive_int("input_width", 128);
  channels_ = r.positive_ints("channels", {64, 128, 128, 128});
  pools_ = r.pools("pools", {{2, 2}, {4, 2}, {4, 2}, {4, 1}});
  if (pools_.size() != channels_.size())
    r.fail("pools", "has " + std::to_string(pools_.size()) + " entries for " +
                        std::to_string(channels_.size()) + " channel counts (one per block)");
  gru_hidden_ = r.positive_int("gru_hidden", 32);
  dropout_p_ = r.probability("dropout", 0.1);
  batchnorm_ = r.batchnorm("batchnorm", nn::BatchNormConvention::keras);
  out_h_ = input_height_, out_w_ = input_width_;
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i][0] > out_h_ || pools_[i][1] > out_w_)
      r.fail("pools", "entry " + std::to_string(i) + " does not fit its " +
                          std::to_string(out_h_) + "x" + std::to_string(out_w_) + " input");
    out_h_ /= pools_[i][0];
    out_w_ /= pools_[i][1];
  }
  int in = 1;
  for (size_t i = 0; i < channels_.size(); ++i) {
    const std::string b = "block" + std::to_string(i + 1);
    Block blk;
    blk.conv = std::make_shared<nn::Conv2d>(in, channels_[i], 3, 1, g);
    blk.bn = std::make_shared<nn::BatchNorm>(channels_[i], batchnorm_);
    // Registered as block<i>.conv / block<i>.bn through a holder module.
    struct Holder : Module {
      Holder(std::shared_ptr<nn::Conv2d> c, std::shared_ptr<nn::BatchNorm> n) {
        register_module("conv", std::move(c));
        register_module("bn", std::move(n));
      }
    };
    register_module(b, std::make_shared<Holder>(blk.conv, blk.bn));
    blocks_.push_back(blk);
    in = channels_[i];
  }
  dropout_ = register_module("dropout", std::make_shared<nn::Dropout>(dropout_p_));
  gru_ = register_module("gru", std::make_shared<nn::GRU>(channels_.back() * out_h_,
                                                          gru_hidden_, false, g));
  dense_ = register_module("dense", std::make_shared<nn::Linear>(gru_hidden_, n_classes_, g));
}

Variable CRNN::forward(const Variable& x, Generator& g) {
  check_input("crnn", x, input_height_, input_width_);
  Variable h = x;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Pool p = pools_[i];
    h = blocks_[i].conv->forward(h);
    h = ops::max_pool2d(h, {p[0], p[1], p[0], p[1]});
    h = blocks_[i].bn->forward_relu(h);  // batch norm and ReLU in one pass
    h = dropout_->forward(h, g);
  }
  // (N, C, H', W') -> (N, C*H', W') -> (N, W', C*H'): a sequence over time.
  const int64_t n = h.value().size(0), features = int64_t(channels_.back()) * out_h_;
  h = ops::transpose_last2(ops::reshape(h, {n, features, out_w_}));
  return dense_->forward(gru_->last_state(h));
}

nlohmann::json CRNN::config() const {
  return {{"n_classes", n_classes_},       {"input_height", input_height_},
          {"input_width", input_width_},   {"channels", channels_},
          {"pools", pools_to_json(pools_)}, {"gru_hidden", gru_hidden_},
          {"dropout", dropout_p_},          {"batchnorm", nn::batchnorm_convention_name(batchnorm_)}};
}

std::vector<LayerInfo> CRNN::describe() const {
  std::vector<LayerInfo> out;
  int h = input_height_, w = input_width_, in = 1;
  out.push_back({"input", {1, h, w}, 0, 0});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string b = "block" + std::to_string(i + 1) + ".";
    const int c = channels_[i];
    out.push_back({b + "conv 3x3", {c, h, w}, blocks_[i].conv->parameter_count(),
                   conv_flops(in, c, 3, h, w)});
    const int ho = h / pools_[i][0], wo = w / pools_[i][1];
    const int64_t e = int64_t(c) * ho * wo;
    out.push_back({b + "maxpool " + std::to_string(pools_[i][0]) + "x" + std::to_string(pools_[i][1]),
                   {c, ho, wo}, 0, e * (pools_[i][0] * pools_[i][1] - 1)});
    out.push_back({b + "bn + relu", {c, ho, wo}, blocks_[i].bn->parameter_count(), 3 * e});
    out.push_back({b + "dropout", {c, ho, wo}, 0, 0});
    h = ho, w = wo, in = c;
  }
  const int64_t features = int64_t(channels_.back()) * out_h_;
  out.push_back({"to sequence", {out_w_, features}, 0, 0});
  out.push_back({"gru (last state)", {gru_hidden_}, gru_->parameter_count(),
                 gru_flops(out_w_, features, gru_hidden_)});
  out.push_back({"dense", {n_classes_}, dense_->parameter_count(), dense_flops(gru_hidden_, n_classes_)});
  return out;
}

}  // namespace timbre::models
