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

// Row kernels (im2col, col2im, the conv bias fill, max pooling) loop over
// planes (z), the rows of a plane (y) and the columns of a row (x), each a
// grid-stride loop, so any launch shape is correct and gives the same bits.
// row_threads() is how many threads share a row: defaults().row_threads,
// 0 for one thread per column (the GPU's: a warp's 32 threads touch 32
// consecutive addresses), 1 under simcuda (one thread walks the row).
int row_threads();
// Tests: force the threads per row (0: one per column); -1 restores the
// table's entry.
void set_row_threads(int threads);

// The launch of a row kernel over `planes` planes of rows x cols: blocks of
// 32 x block/32 threads with a thread per column, or 1 x block threads
// with row_threads() blocks along x; y over rows, z over planes (each at
// most 65535 blocks; the kernels' loops stride beyond), about
// max_grid_threads() threads in all, at least one plane. block: a multiple
// of 32.
struct RowLaunch {
  dim3 grid, tile;
};
RowLaunch row_launch(long long planes, long long rows, long long cols, int block);

}  // namespace timbre::kernels
