#include "models/registry.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "models/crnn.h"
#include "models/parallel.h"
#include "models/rescnn.h"

namespace timbre::models {

// ---- configuration --------------------------------------------------------

ConfigReader::ConfigReader(std::string model, const nlohmann::json& j, std::vector<std::string> known)
    : model_(std::move(model)), j_(j.is_null() ? nlohmann::json::object() : j) {
  if (!j_.is_object())
    throw std::invalid_argument(model_ + " config: must be a JSON object, got " + j_.dump());
  for (const auto& item : j_.items()) {
    if (std::find(known.begin(), known.end(), item.key()) != known.end()) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    throw std::invalid_argument(model_ + " config: unknown key '" + item.key() +
                                "' (known keys: " + list + ")");
  }
}

void ConfigReader::fail(const std::string& key, const std::string& why) const {
  throw std::invalid_argument(model_ + " config: key '" + key + "' " + why);
}

int ConfigReader::positive_int(const std::string& key, int fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (1 << 30))
    fail(key, "must be a positive integer, got " + v.dump());
  return v.get<int>();
}

double ConfigReader::probability(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_number() || v.get<double>() < 0 || v.get<double>() >= 1)
    fail(key, "must be a number in [0, 1), got " + v.dump());
  return v.get<double>();
}

std::vector<int> ConfigReader::positive_ints(const std::string& key, std::vector<int> fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  bool ok = v.is_array() && !v.empty();
  if (ok)
    for (const auto& e : v) ok = ok && e.is_number_integer() && e.get<int64_t>() >= 1 && e.get<int64_t>() <= (1 << 20);
  if (!ok) fail(key, "must be a non-empty list of positive integers, got " + v.dump());
  return v.get<std::vector<int>>();
}

Pool ConfigReader::pool(const std::string& key, Pool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  const bool ok = v.is_array() && v.size() == 2 && v[0].is_number_integer() &&
                  v[1].is_number_integer() && v[0].get<int64_t>() >= 1 && v[1].get<int64_t>() >= 1 &&
                  v[0].get<int64_t>() <= 4096 && v[1].get<int64_t>() <= 4096;
  if (!ok) fail(key, "must be a [freq, time] pair of positive integers, got " + v.dump());
  return {v[0].get<int>(), v[1].get<int>()};
}

std::vector<Pool> ConfigReader::pools(const std::string& key, std::vector<Pool> fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_array() || v.empty())
    fail(key, "must be a non-empty list of [freq, time] pairs, got " + v.dump());
  std::vector<Pool> out;
  for (size_t i = 0; i < v.size(); ++i) {
    ConfigReader one(model_, nlohmann::json{{key + "[" + std::to_string(i) + "]", v[i]}},
                     {key + "[" + std::to_string(i) + "]"});
    out.push_back(one.pool(key + "[" + std::to_string(i) + "]", {}));
  }
  return out;
}

nn::BatchNormConvention ConfigReader::batchnorm(const std::string& key,
                                                nn::BatchNormConvention fallback) const {
  if (!has(key)) return fallback;
  const auto& v = j_.at(key);
  if (!v.is_string()) fail(key, "must be \"keras\" or \"pytorch\", got " + v.dump());
  try {
    return nn::parse_batchnorm_convention(v.get<std::string>());
  } catch (const std::invalid_argument&) {
    fail(key, "must be \"keras\" or \"pytorch\", got " + v.dump());
  }
}

nlohmann::json pools_to_json(const std::vector<Pool>& pools) {
  nlohmann::json a = nlohmann::json::array();
  for (const Pool& p : pools) a.push_back({p[0], p[1]});
  return a;
}

// ---- FLOP counts -----------------------------------------------------------

int64_t conv_flops(int64_t c_in, int64_t c_out, int64_t k, int64_t h_out, int64_t w_out) {
  return (2 * c_in * k * k + 1) * c_out * h_out * w_out;  // multiply-adds + bias
}

int64_t dense_flops(int64_t in, int64_t out) { return (2 * in + 1) * out; }

int64_t gru_flops(int64_t steps, int64_t input, int64_t hidden) {
  return steps * (2 * 3 * hidden * (input + hidden) + 6 * hidden + 9 * hidden);
}

int64_t attention_flops(int64_t steps, int64_t dim, int64_t att) {
  return steps * (2 * att * dim + att + att + 2 * att + 3 + 2 * dim);
}

// ---- description -------------------------------------------------------------

namespace {
std::string shape_text(const std::vector<int64_t>& s) {
  std::string t;
  for (size_t i = 0; i < s.size(); ++i) t += (i ? " x " : "") + std::to_string(s[i]);
  return t;
}
std::string grouped(int64_t v) {  // 1234567 -> "1,234,567"
  std::string d = std::to_string(v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return out;
}
}  // namespace

std::string describe_table(const Model& m) {
  const std::vector<LayerInfo> rows = m.describe();
  size_t wn = 5, ws = 12;
  for (const auto& r : rows) {
    wn = std::max(wn, r.name.size());
    ws = std::max(ws, shape_text(r.shape).size());
  }
  std::ostringstream o;
  auto line = [&](const std::string& a, const std::string& b, const std::string& c,
                  const std::string& d) {
    o << a << std::string(wn + 2 - a.size(), ' ') << b << std::string(ws + 2 - b.size(), ' ');
    o << std::string(c.size() < 12 ? 12 - c.size() : 0, ' ') << c << "  ";
    o << std::string(d.size() < 16 ? 16 - d.size() : 0, ' ') << d << "\n";
  };
  o << m.name() << "  " << m.config().dump() << "\n";
  line("layer", "output shape", "params", "FLOPs/sample");
  int64_t params = 0, flops = 0;
  for (const auto& r : rows) {
    line(r.name, shape_text(r.shape), grouped(r.params), grouped(r.flops));
    params += r.params;
    flops += r.flops;
  }
  line("total", "", grouped(params), grouped(flops));
  return o.str();
}

// ---- registry ---------------------------------------------------------------

std::vector<std::string> model_names() { return {"rescnn", "crnn", "parallel"}; }

std::unique_ptr<Model> make_model(const std::string& name, const nlohmann::json& config,
                                  Generator& g) {
  if (name == "rescnn") return std::make_unique<ResCNN>(config, g);
  if (name == "crnn") return std::make_unique<CRNN>(config, g);
  if (name == "parallel") return std::make_unique<ParallelCNNRNN>(config, g);
  std::string list;
  for (const auto& n : model_names()) list += (list.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model '" + name + "': valid models are " + list);
}

std::unique_ptr<Model> make_model(const std::string& name, const nlohmann::json& config) {
  return make_model(name, config, default_generator());
}

}  // namespace timbre::models
