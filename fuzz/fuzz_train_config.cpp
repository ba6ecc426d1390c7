// fuzz_train_config: `timbre train --config FILE` (CLI11's TOML reader and
// timbre's expansion into arguments) on arbitrary bytes. Every input must
// either be refused with an exception or expand to `train`, the file's
// options, then the command line's own, last (so the command line wins).
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "tools/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("config.toml", data, size);
  try {
    const auto args =
        timbre::tools::expand_train_config({"train", "--config", path, "--epochs", "2"});
    if (args.size() < 3 || args.front() != "train" || args[args.size() - 2] != "--epochs" ||
        args.back() != "2")
      fuzz::broken("the command line is not kept, last");
  } catch (const std::exception&) {
  }
  return 0;
}
