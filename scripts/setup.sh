#!/usr/bin/env bash
# Installs every Debian package timbre needs to build, test and benchmark.
# Idempotent: packages already present are left alone, and apt is not touched
# at all when nothing is missing. Needs root (or sudo) only when installing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libboost-context-dev   # simcuda: fibers for the threads of a block
  libthrust-dev libcub-dev  # the sim flavour without the CUDA toolkit: Thrust and CUB
  libopenblas-dev        # simcuda: cuBLAS subset
  libfftw3-dev           # simcuda: cuFFT subset
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev  # the libFuzzer harnesses (scripts/fuzz.sh)
  libcli11-dev libfmt-dev nlohmann-json3-dev
  libtomlplusplus-dev    # tools: config.toml written (and checked) by a real TOML library
  libmpg123-dev          # features: MP3 decoding
  libsndfile1-dev        # features: WAV, FLAC, OGG decoding
  libsoxr-dev            # features: resampling (librosa's soxr_hq)
  libhdf5-dev            # features: the HDF5 feature store
  libcsv-dev             # features: FMA's tracks.csv (quoted, multi-line fields)
  libmp3lame-dev         # tests: MP3 fixtures encoded from synthesized audio
  libsvm-dev             # tools: the RBF SVM baseline
  zlib1g-dev             # engine: checkpoint checksums (crc32)
  openmpi-bin libopenmpi-dev  # distributed runs: mpirun, MPI (simcuda's NCCL, the id exchange)
  python3-protobuf python3-crc32c  # tests: TensorBoard files read back by an independent reader
  mma fluidsynth fluid-soundfont-gm  # the demo dataset: accompaniment styles rendered to audio
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

# The CUDA toolkit is not a Debian package here. The sim flavour (CPU only)
# does not need it: without it, simcuda's own CUDA API headers
# (kernels/sim/include) and Debian's Thrust and CUB stand in. The cuda
# flavour (real GPUs) needs it.
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: no CUDA toolkit (nvcc) found: the sim flavour (CPU) builds without it;" \
       "the cuda flavour needs CUDA 12 or newer with nvcc on PATH"
fi
