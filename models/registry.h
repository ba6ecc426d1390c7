// registry.h: what every timbre network has in common, and how one is built
// by name.
//
//   Generator g(42);
//   auto model = timbre::models::make_model("rescnn", {{"n_classes", 8}}, g);
//   Variable logits = model->forward(Variable(batch), g);   // (N, n_classes)
//   Variable loss = ops::cross_entropy(logits, labels);     // softmax is in the loss
//   std::cout << timbre::models::describe_table(*model);
//
// A Model is a Module whose forward maps a batch of log-mel patches
// (N, 1, mel bands, frames) to logits (N, n_classes); the generator feeds its
// dropout masks. Its configuration is a JSON object: every width, depth and
// pool has a default (the paper's network), config() returns the full
// configuration, and construction from JSON rejects unknown keys and bad
// values with a message naming the model and the key, so a typo in a
// configuration file is never silently ignored.
//
// describe() lists the layers in forward order with their per-sample output
// shape, parameter count and forward FLOPs per sample; describe_table()
// renders that list with totals (the `timbre models` command prints it).
// FLOP conventions (docs/models.md): a multiply-add is 2 FLOPs; a bias add,
// an activation, a batch-norm scale-and-shift (2) and a residual add count
// per element; max pooling counts kh*kw - 1 comparisons per output; dropout
// is free (it is off at inference).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/module.h"
#include "engine/nn.h"

namespace timbre::models {

// One row of describe(): the output shape excludes the batch dimension.
struct LayerInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t params = 0;
  int64_t flops = 0;
};

class Model : public Module {
 public:
  // x (N, 1, input_height, input_width) -> logits (N, n_classes).
  virtual Variable forward(const Variable& x, Generator& g) = 0;
  virtual std::string name() const = 0;
  virtual nlohmann::json config() const = 0;
  virtual std::vector<LayerInfo> describe() const = 0;
};

// The table of describe() as text: one line per layer, then the totals.
std::string describe_table(const Model& m);

// The registered names: "rescnn", "crnn", "parallel".
std::vector<std::string> model_names();
// Builds a model; weights drawn from g. A bad name throws
// std::invalid_argument listing the valid names; a bad configuration throws
// std::invalid_argument naming the model and the key.
std::unique_ptr<Model> make_model(const std::string& name, const nlohmann::json& config,
                                  Generator& g);
std::unique_ptr<Model> make_model(const std::string& name, const nlohmann::json& config = {});

// Configuration helpers shared by the models: a reader over one model's JSON
// object that rejects keys outside `known` and values of the wrong type or
// range, always naming "<model> config: key '<key>'".
using Pool = std::array<int, 2>;  // (freq, time) window = stride
class ConfigReader {
 public:
  ConfigReader(std::string model, const nlohmann::json& j, std::vector<std::string> known);
  bool has(const std::string& key) const { return j_.contains(key); }
  int positive_int(const std::string& key, int fallback) const;
  double probability(const std::string& key, double fallback) const;  // in [0, 1)
  std::vector<int> positive_ints(const std::string& key, std::vector<int> fallback) const;
  std::vector<Pool> pools(const std::string& key, std::vector<Pool> fallback) const;
  Pool pool(const std::string& key, Pool fallback) const;
  nn::BatchNormConvention batchnorm(const std::string& key, nn::BatchNormConvention fallback) const;
  [[noreturn]] void fail(const std::string& key, const std::string& why) const;

 private:
  std::string model_;
  nlohmann::json j_;
};

nlohmann::json pools_to_json(const std::vector<Pool>& pools);

// Per-sample FLOP counts of the layer kinds (see the conventions above).
int64_t conv_flops(int64_t c_in, int64_t c_out, int64_t k, int64_t h_out, int64_t w_out);
int64_t dense_flops(int64_t in, int64_t out);
// One GRU direction over T steps: input and hidden projections (2*3H*(I+H)
// per step), both biases (6H) and the gate arithmetic (9H: two sigmoids and
// a tanh counted as one each, r*(.), the (1 - z) blend).
int64_t gru_flops(int64_t steps, int64_t input, int64_t hidden);
// Additive attention: per step W h + b (2AD + A), tanh (A), v . u (2A), a
// 3-FLOP softmax share, and the weighted sum (2D).
int64_t attention_flops(int64_t steps, int64_t dim, int64_t att);

}  // namespace timbre::models
