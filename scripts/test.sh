#!/usr/bin/env bash
# The whole test suite on a fresh machine:
#   1. installs the Debian packages (scripts/setup.sh);
#   2. builds the cuda flavour with nvcc and writes ptxas's per-kernel
#      register/spill/shared-memory report to build/cuda/ptxas-report.txt
#      (a spill fails the run); checks that CTest lists every test there.
#      Where nvidia-smi sees a GPU, builds for it and runs the suite on the
#      device (label gpu); elsewhere the flavour is compiled and linked only;
#   3. builds the sim flavour with ASan+UBSan and runs simcuda's, the
#      kernels' and the tools' tests there (shared-memory overflows must be
#      seen; the tools read and write every user file);
#   4. builds the libFuzzer harnesses of the readers of user files (clang,
#      ASan+UBSan) and runs each for FUZZ_SECONDS (default 20) seconds;
#   5. builds the sim flavour and runs the full CTest suite with the sim
#      build's own backend defaults (kernels/defaults.h);
#   6. runs that suite again, simcuda's own tests aside, with the GPU's
#      defaults (TIMBRE_DEFAULTS=gpu): the GPU's launch shapes and paths
#      (cuFFT STFT, one column per thread, capped grids) end to end,
#      the librosa and PyTorch comparisons included;
#   7. runs the engine, models, tools and distributed suites with simcuda's adversarial
#      stream order (SIMCUDA_STREAMS=adversarial, kernels/sim/control.h):
#      work on created streams waits until an event or a synchronisation
#      needs it, so a missing cudaStreamWaitEvent reads stale data there.
# Set TIMBRE_SKIP_CUDA=1, TIMBRE_SKIP_ASAN=1, TIMBRE_SKIP_GPU_DEFAULTS=1,
# TIMBRE_SKIP_STREAMS=1 or TIMBRE_SKIP_FUZZ=1 to leave a stage out locally.
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
gpu_present() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; }

have_toolkit() { command -v nvcc >/dev/null 2>&1; }

if [[ ${TIMBRE_SKIP_CUDA:-0} != 1 ]] && ! have_toolkit; then
  if [[ ${CI:-} == true ]]; then
    echo "cuda flavour: the CUDA toolkit (nvcc) is required in CI and was not found" >&2
    exit 1
  fi
  stage "cuda flavour: skipped: it needs the CUDA toolkit (nvcc), which is not installed"
  TIMBRE_SKIP_CUDA=1
fi
if [[ ${TIMBRE_SKIP_CUDA:-0} != 1 ]]; then
  if gpu_present; then
    stage "cuda flavour: nvcc build for this machine's GPU, then the suite on the device"
    arch=native
  else
    stage "cuda flavour: nvcc compile and link (no GPU here: sm_80 and sm_90)"
    arch="80;90"
  fi
  cmake -S "$root" -B build/cuda -G Ninja -DTIMBRE_BACKEND=cuda -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
  # --clean-first: every .cu is compiled (ccache replays cached output), so
  # the log holds ptxas's report for every kernel.
  if ! cmake --build build/cuda -j "$jobs" --clean-first > build/cuda/build.log 2>&1; then
    tail -50 build/cuda/build.log
    echo "cuda flavour build failed (full log: build/cuda/build.log)" >&2
    exit 1
  fi
  ./scripts/ptxas_report.sh build/cuda/build.log build/cuda/ptxas-report.txt
  # Every test executable is registered (label gpu); listing runs no kernel.
  listed=$(ctest --test-dir build/cuda -N -L gpu | sed -n 's/^Total Tests: //p')
  echo "cuda flavour: CTest lists ${listed:-0} tests (label gpu)"
  if [[ ${listed:-0} -lt 100 ]]; then
    echo "cuda flavour: CTest lists too few tests; see 'ctest --test-dir build/cuda -N'" >&2
    exit 1
  fi
  if gpu_present; then
    ctest --test-dir build/cuda -L gpu -j "$jobs" --output-on-failure --timeout 900
  fi
fi

if [[ ${TIMBRE_SKIP_ASAN:-0} != 1 ]]; then
  stage "sim flavour with ASan+UBSan: simcuda, kernel and tools tests"
  cmake -S "$root" -B build/sim-asan -G Ninja -DTIMBRE_BACKEND=sim -DTIMBRE_SANITIZE=address \
        -DTIMBRE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/sim-asan -j "$jobs"
  if ! ctest --test-dir build/sim-asan -L "simcuda|kernels|tools" -j "$jobs" --output-on-failure \
         --timeout 600 > build/sim-asan/ctest.log 2>&1; then
    tail -100 build/sim-asan/ctest.log
    echo "ASan stage failed (full log: build/sim-asan/ctest.log)" >&2
    exit 1
  fi
  grep -E "tests passed|tests failed" build/sim-asan/ctest.log
fi

if [[ ${TIMBRE_SKIP_FUZZ:-0} != 1 ]]; then
  stage "fuzzing the readers of user files (${FUZZ_SECONDS:-20} s each)"
  JOBS=$jobs ./scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi

# The student's path: no CUDA toolkit. nvcc is taken off PATH and the build
# uses simcuda's own CUDA API headers with Debian's Thrust and CUB; the
# compile commands are checked to name no toolkit folder. (The ASan stage
# above compiles against the toolkit's headers, the cuda stage with nvcc.)
stage "sim flavour without the CUDA toolkit: build and full test suite (the sim build's own backend defaults)"
no_cuda_path=""
IFS=: read -r -a path_dirs <<< "$PATH"
for d in "${path_dirs[@]}"; do
  [[ -e $d/nvcc || $d == *cuda* ]] || no_cuda_path+="${no_cuda_path:+:}$d"
done
if PATH="$no_cuda_path" command -v nvcc >/dev/null 2>&1; then
  echo "sim flavour: nvcc is still on PATH ($no_cuda_path)" >&2
  exit 1
fi
PATH="$no_cuda_path" cmake -S "$root" -B build/sim -G Ninja -DTIMBRE_BACKEND=sim \
      -DTIMBRE_SIM_HEADERS=simcuda -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
PATH="$no_cuda_path" cmake --build build/sim -j "$jobs"
if grep -q -i "cuda/include\|/targets/x86_64-linux" build/sim/compile_commands.json; then
  echo "sim flavour: a compile command names the CUDA toolkit (see build/sim/compile_commands.json)" >&2
  exit 1
fi
PATH="$no_cuda_path" ctest --test-dir build/sim -j "$jobs" --output-on-failure --timeout 900

if [[ ${TIMBRE_SKIP_GPU_DEFAULTS:-0} != 1 ]]; then
  stage "sim flavour with the GPU's backend defaults (TIMBRE_DEFAULTS=gpu): every suite but simcuda's"
  TIMBRE_DEFAULTS=gpu build/sim/tools/timbre info | sed -n '/^backend defaults/,$p'
  # The op-case rows (*.op_cases) already ran under both rows of the table.
  TIMBRE_DEFAULTS=gpu ctest --test-dir build/sim -LE simcuda -E '[.]op_cases$' -j "$jobs" \
    --output-on-failure --timeout 900
fi

if [[ ${TIMBRE_SKIP_STREAMS:-0} != 1 ]]; then
  stage "sim flavour with adversarial stream order (SIMCUDA_STREAMS=adversarial): engine, models, tools, distributed"
  SIMCUDA_STREAMS=adversarial ctest --test-dir build/sim -L "engine|models|tools|distributed" -j "$jobs" \
    --output-on-failure --timeout 900
fi
