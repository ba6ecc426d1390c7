#!/usr/bin/env bash
# The whole test suite on a fresh machine:
#   1. installs the Debian packages (scripts/setup.sh);
#   2. builds the cuda flavour with nvcc (compile and link only: no GPU here)
#      and writes ptxas's per-kernel register/spill/shared-memory report to
#      build/cuda/ptxas-report.txt;
#   3. builds the sim flavour with ASan+UBSan and runs simcuda's and the
#      kernels' tests there (shared-memory overflows must be seen);
#   4. builds the sim flavour and runs the full CTest suite.
# Set TIMBRE_SKIP_CUDA=1 or TIMBRE_SKIP_ASAN=1 to leave a stage out locally.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${JOBS:-2}

./scripts/setup.sh
export PATH="$PATH:/usr/local/cuda/bin"
# simcuda's workers sleep between launches; OpenMP (Thrust's sim backend)
# must not spin either, or it collapses when another process holds a core.
export OMP_WAIT_POLICY=PASSIVE

stage() { printf '\n=== %s\n' "$*"; }

if [[ ${TIMBRE_SKIP_CUDA:-0} != 1 ]]; then
  stage "cuda flavour: nvcc compile and link"
  cmake -S "$root" -B build/cuda -G Ninja -DTIMBRE_BACKEND=cuda -DCMAKE_BUILD_TYPE=Release >/dev/null
  # --clean-first: every .cu is compiled (ccache replays cached output), so
  # the log holds ptxas's report for every kernel.
  if ! cmake --build build/cuda -j "$jobs" --clean-first > build/cuda/build.log 2>&1; then
    tail -50 build/cuda/build.log
    echo "cuda flavour build failed (full log: build/cuda/build.log)" >&2
    exit 1
  fi
  ./scripts/ptxas_report.sh build/cuda/build.log build/cuda/ptxas-report.txt
fi

if [[ ${TIMBRE_SKIP_ASAN:-0} != 1 ]]; then
  stage "sim flavour with ASan+UBSan: simcuda and kernel tests"
  cmake -S "$root" -B build/sim-asan -G Ninja -DTIMBRE_BACKEND=sim -DTIMBRE_SANITIZE=address \
        -DTIMBRE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/sim-asan -j "$jobs"
  if ! ctest --test-dir build/sim-asan -L "simcuda|kernels" -j "$jobs" --output-on-failure \
         --timeout 600 > build/sim-asan/ctest.log 2>&1; then
    tail -100 build/sim-asan/ctest.log
    echo "ASan stage failed (full log: build/sim-asan/ctest.log)" >&2
    exit 1
  fi
  grep -E "tests passed|tests failed" build/sim-asan/ctest.log
fi

stage "sim flavour: build and full test suite"
cmake -S "$root" -B build/sim -G Ninja -DTIMBRE_BACKEND=sim -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/sim -j "$jobs"
ctest --test-dir build/sim -j "$jobs" --output-on-failure --timeout 900
