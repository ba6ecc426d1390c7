#include "models/parallel.h"

namespace timbre::models {

ParallelCNNRNN::ParallelCNNRNN(const nlohmann::json& config, Generator& g) {
  ConfigReader r("parallel", config,
                 {"n_classes", "input_height", "input_width", "channels", "pools", "batchnorm",
                  "branch_pool", "embedding", "gru_hidden", "attention"});
  n_classes_ = r.positive_int("n_classes", 8);
  trunk_config_ = ResTrunkConfig::read(r);
  branch_pool_ = r.pool("branch_pool", {4, 2});
  embedding_ = r.positive_int("embedding", 128);
  gru_hidden_ = r.positive_int("gru_hidden", 64);
  attention_ = r.positive_int("attention", 128);
  const auto [c, h, w] = trunk_config_.output_shape("parallel");
  cnn_features_ = c * h * w;
  if (branch_pool_[0] > trunk_config_.input_height || branch_pool_[1] > trunk_config_.input_width)
    r.fail("branch_pool", "does not fit the input");
  freq_ = trunk_config_.input_height / branch_pool_[0];
  steps_ = trunk_config_.input_width / branch_pool_[1];
  // Construction (and so weight-drawing) order: CNN, embedding, GRU,
  // attention, dense.
  cnn_ = register_module("cnn", std::make_shared<ResTrunk>(trunk_config_, g));
  embed_ = register_module("embed", std::make_shared<nn::Linear>(freq_, embedding_, g));
  gru_ = register_module("gru", std::make_shared<nn::GRU>(embedding_, gru_hidden_, true, g));
  attn_ = register_module("attention",
                          std::make_shared<nn::Attention>(2 * gru_hidden_, attention_, g));
  dense_ = register_module(
      "dense", std::make_shared<nn::Linear>(cnn_features_ + 2 * gru_hidden_, n_classes_, g));
}

Variable ParallelCNNRNN::forward(const Variable& x, Generator&) {
  check_input("parallel", x, trunk_config_.input_height, trunk_config_.input_width);
  const Variable cnn = ops::flatten(cnn_->forward(x));
  // (N, 1, H, W) -> pool -> (N, F, T) -> (N, T, F): time steps of band vectors.
  Variable s = ops::max_pool2d(x, {branch_pool_[0], branch_pool_[1], branch_pool_[0], branch_pool_[1]});
  const int64_t n = x.value().size(0);
  s = ops::transpose_last2(ops::reshape(s, {n, freq_, steps_}));
  s = embed_->forward(s);               // (N, T, embedding)
  s = gru_->forward(s);                 // (N, T, 2 * hidden)
  const Variable rnn = attn_->forward(s);  // (N, 2 * hidden)
  return dense_->forward(ops::concat_last(cnn, rnn));
}

nlohmann::json ParallelCNNRNN::config() const {
  nlohmann::json j;
  j["n_classes"] = n_classes_;
  trunk_config_.write(j);
  j["branch_pool"] = {branch_pool_[0], branch_pool_[1]};
  j["embedding"] = embedding_;
  j["gru_hidden"] = gru_hidden_;
  j["attention"] = attention_;
  return j;
}

std::vector<LayerInfo> ParallelCNNRNN::describe() const {
  std::vector<LayerInfo> out;
  out.push_back({"input", {1, trunk_config_.input_height, trunk_config_.input_width}, 0, 0});
  cnn_->describe("cnn.", &out);
  out.push_back({"cnn.flatten", {cnn_features_}, 0, 0});
  const int64_t bp = branch_pool_[0] * branch_pool_[1];
  out.push_back({"rnn.maxpool " + std::to_string(branch_pool_[0]) + "x" + std::to_string(branch_pool_[1]) +
                     " -> (time, freq)",
                 {steps_, freq_}, 0, int64_t(steps_) * freq_ * (bp - 1)});
  out.push_back({"rnn.embed (per step)", {steps_, embedding_}, embed_->parameter_count(),
                 steps_ * dense_flops(freq_, embedding_)});
  out.push_back({"rnn.bigru", {steps_, 2 * gru_hidden_}, gru_->parameter_count(),
                 2 * gru_flops(steps_, embedding_, gru_hidden_)});
  out.push_back({"rnn.attention", {2 * gru_hidden_}, attn_->parameter_count(),
                 attention_flops(steps_, 2 * gru_hidden_, attention_)});
  const int feats = cnn_features_ + 2 * gru_hidden_;
  out.push_back({"concat", {feats}, 0, 0});
  out.push_back({"dense", {n_classes_}, dense_->parameter_count(), dense_flops(feats, n_classes_)});
  return out;
}

}  // namespace timbre::models
