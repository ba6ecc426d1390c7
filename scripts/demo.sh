#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build (the sim flavour unless a GPU
# is present), then `timbre demo`: render a small labelled dataset of MMA
# accompaniment styles with fluidsynth, extract log-mel features, train the
# parallel CNN-RNN, evaluate it and write demo/run/report.html. Arguments go
# to `timbre demo` (see `timbre demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PATH:/usr/local/cuda/bin"
export OMP_WAIT_POLICY=PASSIVE
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTIMBRE_BUILD_TESTS=OFF -DTIMBRE_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j "${JOBS:-2}" --target timbre
./build/demo/tools/timbre demo "$@"
