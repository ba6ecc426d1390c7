#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build (the sim flavour unless a GPU
# is present), then `timbre demo`. Until the training tools exist the demo
# runs timbre's kernels on random data and checks them against CPU loops.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PATH:/usr/local/cuda/bin"
export OMP_WAIT_POLICY=PASSIVE
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTIMBRE_BUILD_TESTS=OFF -DTIMBRE_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j "${JOBS:-2}" --target timbre
./build/demo/tools/timbre demo "$@"
