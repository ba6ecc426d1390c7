#pragma once

// `timbre demo` until the training tools exist: runs the tiled GEMM and the
// block reduction on random data, checks them against their CPU references
// and prints what it computed. Returns the process exit code.
int run_kernel_demo(int size, unsigned seed);

// `timbre info`: the device (a GPU, or simcuda's description of the CPU).
int run_info();

#include <string>

// The backend line of `timbre --version`, without touching a device: the
// flavour, the CUDA versions (toolkit built against, runtime, driver) or
// simcuda's workers.
std::string backend_description();
