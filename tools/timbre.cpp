// timbre: the command-line tool. Subcommands so far:
//   timbre info          the device timbre computes on
//   timbre demo          a small kernel demo, checked against CPU references
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "kernels/cuda_check.h"
#include "tools/kernel_demo.h"

int main(int argc, char** argv) {
  CLI::App app{"timbre: music genre classification on its own CUDA engine"};
  app.require_subcommand(1);

  app.add_subcommand("info", "Describe the device (a GPU, or simcuda on the CPU)");

  auto* demo = app.add_subcommand(
      "demo", "Run the tiled GEMM and block reduction kernels on random data and check them "
              "against their CPU references");
  int size = 256;
  unsigned seed = 1;
  demo->add_option("--size", size, "Matrix side for the GEMM")->check(CLI::Range(1, 4096));
  demo->add_option("--seed", seed, "Seed of the random inputs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints the message (or the help text)
    return rc == 0 ? 0 : 2;      // --help is success; every usage error exits 2
  }

  try {
    if (app.got_subcommand("info")) return run_info();
    if (demo->parsed()) return run_kernel_demo(size, seed);
  } catch (const timbre::CudaError& e) {
    std::fprintf(stderr, "timbre: CUDA error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "timbre: %s\n", e.what());
    return 1;
  }
  return 0;
}
