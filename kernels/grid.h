// grid.h: how many threads a grid-stride launch asks for, and the launch
// shape of row kernels.
//
// Elementwise and gather kernels loop `for (i = global thread; i < n; i +=
// threads in the grid)`, so any grid size is correct; the cap is about speed.
// Both numbers below are entries of the table of backend defaults
// (kernels/defaults.h, with the reasons): 2^19 threads and one column per
// thread on a GPU, a thread per element and whole rows under simcuda.
// TIMBRE_DEFAULTS=gpu runs the sim build with the GPU's values; the test
// suite also re-runs the kernel tests with a tiny cap
// (TIMBRE_MAX_GRID_THREADS=64) so that every grid-stride loop iterates.
#pragma once

#include <cuda_runtime_api.h>  // dim3

namespace timbre::kernels {

// The cap: defaults().grid_threads.
long long max_grid_threads();

// Row kernels (im2col, col2im, the conv bias fill, max pooling) give each
// thread a run of consecutive columns of a row: defaults().row_columns
// (1 on a GPU, so a warp's 32 threads touch 32 consecutive addresses; the
// whole row under simcuda), at most cols. Same kernel code, another launch
// shape; the kernels give the same bits for any run length.
int columns_per_thread(long long cols);
// Tests: force a run length; 0 restores the table's entry.
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
