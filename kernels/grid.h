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
// test suite re-runs the kernel tests with a tiny cap so that the
// grid-stride loops (which a GPU runs) are exercised under simcuda too.
#pragma once

namespace timbre::kernels {

// The cap: TIMBRE_MAX_GRID_THREADS when set (read once), else the backend's.
long long max_grid_threads();

}  // namespace timbre::kernels
