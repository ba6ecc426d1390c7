// grid.h: how many threads a grid-stride launch asks for.
//
// Elementwise and gather kernels loop `for (i = global thread; i < n; i +=
// threads in the grid)`, so any grid size is correct; the cap is about speed.
//   GPU: 2^19 threads, about two waves of a large device; more only adds
//        scheduling work.
//   simcuda: no useful cap. Its fast path runs a block's threads as a loop
//        over threadIdx around the kernel body; with one element per thread
//        that loop is the whole computation and the compiler vectorises it.
//        With a capped grid each thread instead walks its own grid-stride
//        loop, visiting addresses 2 MB apart, one at a time: ReLU over 8.4M
//        floats took 8 ns per element that way and 0.85 ns with a thread per
//        element (docs/benchmarks.md). So the cap is 2^31 threads there.
// The environment variable TIMBRE_MAX_GRID_THREADS overrides the cap: the
// test suite re-runs the kernel tests with a tiny cap and one column per
// thread (below) so that the loops and launch shapes a GPU runs are
// exercised under simcuda too.
#pragma once

#include <cuda_runtime_api.h>  // dim3

namespace timbre::kernels {

// The cap: TIMBRE_MAX_GRID_THREADS when set (read once), else the backend's.
long long max_grid_threads();

// Row kernels (im2col, col2im, the conv bias fill, max pooling) give each
// thread a run of consecutive columns of a row. On a GPU the run is one
// column: a warp's 32 threads touch 32 consecutive addresses (coalesced).
// Under simcuda a block's threads run one after another on a core, so a
// thread per column pays its set-up (indices, loop bounds) for very little
// work; there the run is the whole row, and the inner loop is a plain loop
// the compiler vectorises. Same kernel code, another launch shape; the
// kernels give the same bits for any run length.
int columns_per_thread(long long cols);
// Tests: force a run length (1 runs the GPU's launch shape under simcuda);
// 0 restores the backend's choice. The environment variable
// TIMBRE_COLUMNS_PER_THREAD sets the starting value.
void set_columns_per_thread(int columns);

// The launch of a row kernel over `planes` planes of rows x cols: x over
// runs of `span` = columns_per_thread(cols) columns (block 32 x block/32 for
// single columns, 1 x block for runs), y over rows, z over planes (each at
// most 65535 blocks; the kernels' loops stride beyond), about
// max_grid_threads() threads in all, at least one plane. block: a multiple
// of 32.
struct RowLaunch {
  dim3 grid, tile;
  int span;
};
RowLaunch row_launch(long long planes, long long rows, long long cols, int block);

}  // namespace timbre::kernels
