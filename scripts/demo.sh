#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build (the sim flavour unless a GPU
# is present), then `timbre demo`: render a small labelled dataset of MMA
# accompaniment styles with fluidsynth, extract log-mel features, train the
# parallel CNN-RNN, evaluate it beside two baselines and write
# demo/run-<k>/report-test.html (a new run folder each time). Arguments go
# to `timbre demo` (see `timbre demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The command is installed first (scripts/install.sh: ~/.local/bin unless
# PREFIX says otherwise), so that the README's `timbre ...` commands work
# afterwards.
./scripts/install.sh
export OMP_WAIT_POLICY=PASSIVE
"${PREFIX:-$HOME/.local}/bin/timbre" demo "$@"
