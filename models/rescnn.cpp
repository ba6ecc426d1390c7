#include "models/rescnn.h"

namespace timbre::models {

void check_input(const std::string& model, const Variable& x, int h, int w) {
  const Tensor& t = x.value();
  if (t.rank() != 4 || t.size(1) != 1 || t.size(2) != h || t.size(3) != w)
    throw ShapeError(model + ": input " + t.str() + " must be (N, 1, " + std::to_string(h) + ", " +
                     std::to_string(w) + ") (mel bands x frames)");
}

ResTrunkConfig ResTrunkConfig::read(const ConfigReader& r) {
  ResTrunkConfig c;
  c.input_height = r.positive_int("input_height", c.input_height);
  c.input_width = r.positive_int("input_width", c.input_width);
  c.channels = r.positive_ints("channels", c.channels);
  // Without explicit pools, every block pools 2x2.
  c.pools = r.pools("pools", std::vector<Pool>(c.channels.size(), Pool{2, 2}));
  if (c.pools.size() != c.channels.size())
    r.fail("pools", "has " + std::to_string(c.pools.size()) + " entries for " +
                        std::to_string(c.channels.size()) + " channel counts (one per block)");
  c.batchnorm = r.batchnorm("batchnorm", c.batchnorm);
  c.output_shape("config");  // throws if the pools shrink the input below 1x1
  return c;
}

void ResTrunkConfig::write(nlohmann::json& j) const {
  j["input_height"] = input_height;
  j["input_width"] = input_width;
  j["channels"] = channels;
  j["pools"] = pools_to_json(pools);
  j["batchnorm"] = nn::batchnorm_convention_name(batchnorm);
}

std::array<int, 3> ResTrunkConfig::output_shape(const std::string& model) const {
  int h = input_height, w = input_width;
  for (size_t i = 0; i < pools.size(); ++i) {
    if (pools[i][0] > h || pools[i][1] > w)
      throw std::invalid_argument(model + ": pool " + std::to_string(pools[i][0]) + "x" +
                                  std::to_string(pools[i][1]) + " of block " +
                                  std::to_string(i + 1) + " does not fit its " +
                                  std::to_string(h) + "x" + std::to_string(w) + " input");
    h /= pools[i][0];
    w /= pools[i][1];
  }
  return {channels.back(), h, w};
}

ResidualBlock::ResidualBlock(int in_channels, int out_channels, Pool pool,
                             nn::BatchNormConvention bn, Generator& g)
    : in_(in_channels), out_(out_channels), pool_(pool) {
  conv1_ = register_module("conv1", std::make_shared<nn::Conv2d>(in_, out_, 3, 1, g));
  bn1_ = register_module("bn1", std::make_shared<nn::BatchNorm>(out_, bn));
  conv2_ = register_module("conv2", std::make_shared<nn::Conv2d>(out_, out_, 3, 1, g));
  bn2_ = register_module("bn2", std::make_shared<nn::BatchNorm>(out_, bn));
  if (in_ != out_)
    shortcut_ = register_module("shortcut", std::make_shared<nn::Conv2d>(in_, out_, 1, 0, g));
}

Variable ResidualBlock::forward(const Variable& x) {
  // relu(bn1(conv1(x))), then max_pool(relu(bn2(conv2(y)) + s)): each batch
  // norm with its ReLU (and the residual add, and the pooling) in one pass
  // (nn::BatchNorm::forward_relu).
  const Variable y = bn1_->forward_relu(conv1_->forward(x));
  const Variable s = shortcut_ ? shortcut_->forward(x) : x;
  return bn2_->forward_relu(conv2_->forward(y), s, {pool_[0], pool_[1]});
}

void ResidualBlock::describe(const std::string& p, int h, int w, std::vector<LayerInfo>* out) const {
  const int64_t e = int64_t(out_) * h * w;  // elements of one block-resolution map
  const std::vector<int64_t> full{out_, h, w};
  out->push_back({p + "conv1 3x3", full, conv1_->parameter_count(), conv_flops(in_, out_, 3, h, w)});
  out->push_back({p + "bn1 + relu", full, bn1_->parameter_count(), 3 * e});
  out->push_back({p + "conv2 3x3", full, conv2_->parameter_count(), conv_flops(out_, out_, 3, h, w)});
  out->push_back({p + "bn2", full, bn2_->parameter_count(), 2 * e});
  if (shortcut_)
    out->push_back({p + "shortcut 1x1", full, shortcut_->parameter_count(),
                    conv_flops(in_, out_, 1, h, w)});
  out->push_back({p + "add + relu", full, 0, 2 * e});
  const int ho = h / pool_[0], wo = w / pool_[1];
  out->push_back({p + "maxpool " + std::to_string(pool_[0]) + "x" + std::to_string(pool_[1]),
                  {out_, ho, wo}, 0, int64_t(out_) * ho * wo * (pool_[0] * pool_[1] - 1)});
}

ResTrunk::ResTrunk(const ResTrunkConfig& c, Generator& g) : c_(c) {
  int in = 1;
  for (size_t i = 0; i < c.channels.size(); ++i) {
    blocks_.push_back(register_module(
        "block" + std::to_string(i + 1),
        std::make_shared<ResidualBlock>(in, c.channels[i], c.pools[i], c.batchnorm, g)));
    in = c.channels[i];
  }
}

Variable ResTrunk::forward(const Variable& x) {
  Variable h = x;
  for (auto& b : blocks_) h = b->forward(h);
  return h;
}

void ResTrunk::describe(const std::string& prefix, std::vector<LayerInfo>* out) const {
  int h = c_.input_height, w = c_.input_width;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    blocks_[i]->describe(prefix + "block" + std::to_string(i + 1) + ".", h, w, out);
    h /= c_.pools[i][0];
    w /= c_.pools[i][1];
  }
}

ResCNN::ResCNN(const nlohmann::json& config, Generator& g) {
  ConfigReader r("rescnn", config,
                 {"n_classes", "input_height", "input_width", "channels", "pools", "batchnorm"});
  n_classes_ = r.positive_int("n_classes", 8);
  trunk_config_ = ResTrunkConfig::read(r);
  const auto [c, h, w] = trunk_config_.output_shape("rescnn");
  features_ = c * h * w;
  cnn_ = register_module("cnn", std::make_shared<ResTrunk>(trunk_config_, g));
  dense_ = register_module("dense", std::make_shared<nn::Linear>(features_, n_classes_, g));
}

Variable ResCNN::forward(const Variable& x, Generator&) {
  check_input("rescnn", x, trunk_config_.input_height, trunk_config_.input_width);
  return dense_->forward(ops::flatten(cnn_->forward(x)));
}

nlohmann::json ResCNN::config() const {
  nlohmann::json j;
  j["n_classes"] = n_classes_;
  trunk_config_.write(j);
  return j;
}

std::vector<LayerInfo> ResCNN::describe() const {
  std::vector<LayerInfo> out;
  out.push_back({"input", {1, trunk_config_.input_height, trunk_config_.input_width}, 0, 0});
  cnn_->describe("", &out);
  out.push_back({"flatten", {features_}, 0, 0});
  out.push_back({"dense", {n_classes_}, dense_->parameter_count(), dense_flops(features_, n_classes_)});
  return out;
}

}  // namespace timbre::models
