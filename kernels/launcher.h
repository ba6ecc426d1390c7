// launcher.h: what every host launcher checks and computes, written once.
//
// A launcher (the host function beside a kernel) checks its arguments before
// it launches anything: a bad argument throws std::invalid_argument with the
// message "<op>: <what>", so the caller learns which op refused what.
// blocks_for() sizes the grid of a grid-stride loop from the table of backend
// defaults (kernels/defaults.h): the one launch choice that differs between
// a GPU and simcuda.
#pragma once

#include <string>

namespace timbre::kernels {

// Throws std::invalid_argument("<op>: <what>").
[[noreturn]] void fail(const char* op, const std::string& what);

// "<op>: <name> is null".
void check_pointer(const char* op, const void* p, const char* name);

// Threads per block: a multiple of 32 (whole warps) in [32, 1024].
void check_block(const char* op, int block);

// "<op>: <name> must be >= <least>, not <value>".
void check_at_least(const char* op, const char* name, long long value, long long least);

// n >= 0 elements and a valid block: the checks of every elementwise op.
void check_size_and_block(const char* op, long long n, int block);

// cuBLAS and some grids take int sizes.
void check_fits_int(const char* op, const char* what, long long value);

// Blocks of `block` threads for a grid-stride loop over n items: one thread
// per item up to max_grid_threads() threads (kernels/grid.h), at least one
// block.
unsigned blocks_for(long long n, int block);

}  // namespace timbre::kernels
