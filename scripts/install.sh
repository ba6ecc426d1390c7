#!/usr/bin/env bash
# Builds the timbre command (Release, the sim flavour unless a GPU is
# present, as scripts/demo.sh) and installs it with `cmake --install`:
#   ./scripts/install.sh                      -> ~/.local/bin/timbre
#   PREFIX=/usr/local sudo -E ./scripts/install.sh
# Prints the installed command's --version, and how to put its folder on
# the PATH when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PATH:/usr/local/cuda/bin"
prefix="${PREFIX:-$HOME/.local}"
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTIMBRE_BUILD_TESTS=OFF -DTIMBRE_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j "${JOBS:-2}" --target timbre
cmake --install build/demo --prefix "$prefix" >/dev/null
echo "installed $prefix/bin/timbre"
"$prefix/bin/timbre" --version
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on your PATH; add it with"
     echo "  export PATH=\"$prefix/bin:\$PATH\""
     echo "(Debian's ~/.profile adds ~/.local/bin by itself at your next login once it exists)" ;;
esac
