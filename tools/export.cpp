#include "tools/export.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "features/h5store.h"
#include "tools/report.h"  // write_file_atomic
#include "tools/train.h"

namespace timbre::tools {

using nlohmann::json;

namespace {

void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s += char(uint8_t(v >> (8 * i)));
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

std::string safetensors_bytes(const SafeTensors& s) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : s.tensors) {  // std::map: name order
    if (numel(t.shape) != int64_t(t.data.size()))
      throw std::invalid_argument("safetensors: " + name + " has " + std::to_string(t.data.size()) +
                                  " values for its shape");
    const uint64_t bytes = t.data.size() * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!s.metadata.empty()) header["__metadata__"] = s.metadata;
  std::string text = header.dump(-1, ' ', false);  // compact; nlohmann sorts the keys
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  put_u64(out, text.size());
  out += text;
  for (const auto& [name, t] : s.tensors) {
    static_assert(sizeof(float) == 4);
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  return out;
}

SafeTensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  auto bad = [&](const std::string& why) {
    return std::runtime_error(path + ": not a safetensors file of F32 tensors: " + why);
  };
  if (bytes.size() < 8) throw bad("shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  if (n > bytes.size() - 8) throw bad("the header length " + std::to_string(n) + " runs past the end");
  json header;
  try {
    header = json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    throw bad(std::string("the header is not JSON: ") + e.what());
  }
  if (!header.is_object()) throw bad("the header is not a JSON object");
  const uint64_t data_bytes = bytes.size() - 8 - n;
  SafeTensors s;
  std::map<uint64_t, std::pair<uint64_t, std::string>> spans;  // begin -> (end, name)
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : e.items()) {
        if (!v.is_string()) throw bad("__metadata__ value of " + k + " is not a string");
        s.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    try {
      if (e.at("dtype") != "F32") throw bad(name + " has dtype " + e.at("dtype").dump());
      HostTensor t;
      t.shape = e.at("shape").get<std::vector<int64_t>>();
      const auto off = e.at("data_offsets").get<std::vector<uint64_t>>();
      for (int64_t d : t.shape)
        if (d < 0) throw bad(name + " has a negative dimension");
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_bytes)
        throw bad(name + "'s data_offsets lie outside the data");
      if (off[1] - off[0] != uint64_t(numel(t.shape)) * 4)
        throw bad(name + "'s data_offsets do not match its shape");
      t.data.resize(size_t(numel(t.shape)));
      std::memcpy(t.data.data(), bytes.data() + 8 + n + off[0], off[1] - off[0]);
      spans[off[0]] = {off[1], name};
      s.tensors[name] = std::move(t);
    } catch (const json::exception& x) {
      throw bad(name + "'s entry: " + x.what());
    }
  }
  uint64_t at = 0;
  for (const auto& [begin, span] : spans) {
    if (begin != at) throw bad(span.second + " leaves a gap or overlaps the tensor before it");
    at = span.first;
  }
  if (at != data_bytes) throw bad("the data does not end where the last tensor does");
  return s;
}

SafeTensors model_tensors(const models::Model& model) {
  SafeTensors s;
  auto add = [&](const std::string& name, const Tensor& t) {
    s.tensors[name] = HostTensor{t.shape().dims(), t.to_host<float>()};
  };
  for (const auto& [name, v] : model.named_parameters()) add(name, v.value());
  for (const auto& [name, t] : model.named_buffers()) add(name, t);
  return s;
}

void load_model_tensors(models::Model& model, const SafeTensors& s) {
  std::string problems;
  std::map<std::string, bool> used;
  auto take = [&](const std::string& name, Tensor dst) {
    auto it = s.tensors.find(name);
    if (it == s.tensors.end()) {
      problems += "\n  missing " + name;
      return;
    }
    used[name] = true;
    if (Shape(it->second.shape) != dst.shape()) {
      problems += "\n  " + name + ": the file has " + Shape(it->second.shape).str() +
                  ", the model " + dst.shape().str();
      return;
    }
    dst.copy_from(Tensor::from_host(dst.shape(), it->second.data));
  };
  for (const auto& [name, v] : model.named_parameters()) take(name, v.value());
  for (const auto& [name, t] : model.named_buffers()) take(name, t);
  for (const auto& [name, t] : s.tensors)
    if (!used.count(name) && name.rfind("timbre.", 0) != 0) problems += "\n  unexpected " + name;
  if (!problems.empty()) throw std::runtime_error("the tensors do not fit the model:" + problems);
}

std::string run_export(const ExportOptions& o) {
  if (o.format != "safetensors")
    throw UsageError("--format must be safetensors, not '" + o.format + "'");
  const LoadedRun run = load_run(o.run);
  SafeTensors s = model_tensors(*run.model);
  const int64_t rows = int64_t(run.band_mean.size());
  s.tensors["timbre.band_mean"] = HostTensor{{rows}, run.band_mean};
  s.tensors["timbre.band_std"] = HostTensor{{rows}, run.band_std};
  s.metadata = {{"format", "pt"},
                {"timbre.model", run.run.at("model").get<std::string>()},
                {"timbre.config", run.model->config().dump()},
                {"timbre.labels", json(run.label_names).dump()},
                {"timbre.features", run.run.at("features").dump()},
                {"timbre.version", features::timbre_version()}};
  const std::string out = o.out.empty() ? o.run + "/model.safetensors" : o.out;
  write_file_atomic(out, safetensors_bytes(s));
  return out;
}

}  // namespace timbre::tools
