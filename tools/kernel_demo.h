#pragma once

// `timbre demo` until the training tools exist: runs the tiled GEMM and the
// block reduction on random data, checks them against their CPU references
// and prints what it computed. Returns the process exit code.
int run_kernel_demo(int size, unsigned seed);
