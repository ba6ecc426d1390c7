#include "tools/train_config.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace timbre::tools {

std::vector<std::string> expand_train_config(std::vector<std::string> args) {
  if (args.empty() || args[0] != "train") return args;
  std::string file;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      file = args[i + 1];
      args.erase(args.begin() + long(i), args.begin() + long(i) + 2);
      break;
    }
    if (args[i].rfind("--config=", 0) == 0) {
      file = args[i].substr(9);
      args.erase(args.begin() + long(i));
      break;
    }
  }
  if (file.empty()) return args;
  if (std::filesystem::is_directory(file))
    throw CLI::FileError("--config " + file + ": a directory, not a TOML file");
  std::ifstream in(file);
  if (!in) throw CLI::FileError::Missing(file);
  std::vector<std::string> from_file;
  for (const CLI::ConfigItem& item : CLI::ConfigTOML().from_config(in)) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    if (!item.parents.empty() && !(item.parents.size() == 1 && item.parents[0] == "train"))
      throw CLI::ConfigError("--config " + file + ": unknown section [" + item.parents[0] + "]");
    if (item.name == "config")
      throw CLI::ConfigError("--config " + file + ": a config file cannot name another");
    if (item.inputs.empty()) continue;
    if (item.inputs.size() == 1) {
      from_file.push_back("--" + item.name + "=" + item.inputs[0]);
    } else {
      from_file.push_back("--" + item.name);
      from_file.insert(from_file.end(), item.inputs.begin(), item.inputs.end());
    }
  }
  args.insert(args.begin() + 1, from_file.begin(), from_file.end());
  return args;
}

void fill_from_run(TrainOptions& o, const std::function<bool(const char*)>& given) {
  const std::string path = o.out + "/run.json";
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("--resume: " + path + " is missing (is " + o.out +
                             " a run folder of timbre train?)");
  nlohmann::json run;
  try {
    run = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("--resume: " + path + " is not valid JSON: " + e.what());
  }
  try {
    auto take = [&](const char* flag, const char* key, auto& field) {
      if (!given(flag) && run.contains(key)) run.at(key).get_to(field);
    };
    take("--model", "model", o.model);
    take("--data", "data", o.data);
    take("--epochs", "epochs", o.epochs);
    take("--batch-size", "batch_size", o.batch_size);
    take("--lr", "lr", o.lr);
    take("--decay", "decay", o.decay);
    take("--patience", "patience", o.patience);
    take("--seed", "seed", o.seed);
    take("--adam", "adam", o.adam);
    take("--max-steps", "max_steps", o.max_steps);
    take("--precise-bn", "precise_bn", o.precise_bn);
    if (!given("--model-config") && run.contains("model_config")) {
      // The model's full config, less what the data decides.
      o.model_config = run.at("model_config");
      o.model_config.erase("n_classes");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("--resume: " + path + " is not a run's: " + e.what());
  }
}

std::string train_config_toml(const TrainOptions& o, double lr) {
  const toml::table t{{"model", o.model},
                      {"data", o.data},
                      {"out", o.out},
                      {"epochs", o.epochs},
                      {"batch-size", o.batch_size},
                      {"lr", lr},
                      {"decay", o.decay},
                      {"patience", o.patience},
                      {"seed", int64_t(o.seed)},
                      {"model-config", o.model_config.dump()},
                      {"adam", o.adam},
                      {"max-steps", o.max_steps},
                      {"precise-bn", o.precise_bn},
                      {"cuda-graph", o.cuda_graph},
                      {"sync-batchnorm", o.sync_batchnorm}};
  std::ostringstream s;
  s << "# the effective configuration of this run: timbre train --config config.toml\n"
    << t << "\n";
  return s.str();
}

}  // namespace timbre::tools
