// train_config.h: `timbre train --config FILE.toml` and the config.toml a
// run folder keeps (tools/timbre.cpp parses the flags).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tools/train.h"

namespace timbre::tools {

// The command line (without the program name) with `train --config FILE`
// replaced by FILE's `key = value` lines as `--key=value` arguments, placed
// before the command line's own (every train option takes the last value
// given, so the command line wins). CLI11 2.1 reads config files only for
// the top-level app, hence this step. A key that names no option becomes an
// unexpected argument (a usage error naming it); a [train] section is
// accepted; another section, a nested --config, a missing file or a
// directory throw CLI11's ConfigError / FileError (usage errors, exit 2).
// Any other command line comes back unchanged.
std::vector<std::string> expand_train_config(std::vector<std::string> args);

// `timbre train --resume --out RUN`: every option the command line did not
// give (`given(flag)` is false for "--model", "--data", ...) is taken from
// RUN/run.json, so a run resumes from its folder alone: model, data,
// model-config, epochs, batch-size, lr, decay, patience, seed, adam,
// max-steps and precise-bn. Options the command line gives stay (run_train
// then refuses those that would change the run). Throws std::runtime_error
// naming RUN/run.json when it is missing or not a run's.
void fill_from_run(TrainOptions& o, const std::function<bool(const char*)>& given);

// The effective training configuration as TOML that --config accepts,
// written by toml++ (strings escaped as TOML requires, whatever a path holds).
std::string train_config_toml(const TrainOptions& o, double lr);

}  // namespace timbre::tools
