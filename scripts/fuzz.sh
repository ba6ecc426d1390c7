#!/usr/bin/env bash
# fuzz.sh [SECONDS]: builds timbre's libFuzzer harnesses (fuzz/, clang, ASan
# + UBSan) in build/fuzz and runs each for SECONDS (default 20) on its seed
# corpus (fuzz/corpus/<name>, copied to build/fuzz/corpus/<name>, where
# what the fuzzer finds accumulates between runs). A crash, a sanitizer
# report or a broken invariant fails the run; the input is saved as
# build/fuzz/artifacts/<name>/crash-* (replay: build/fuzz/fuzz/fuzz_<name> FILE).
#   scripts/fuzz.sh            # the CI budget: 20 s each
#   scripts/fuzz.sh 3600       # an hour each
#   FUZZ_ONLY=h5store scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; }
harnesses=${FUZZ_ONLY:-tracks_csv audio checkpoint h5store train_config}
export OMP_WAIT_POLICY=PASSIVE

CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DTIMBRE_BACKEND=sim -DTIMBRE_FUZZ=ON \
  -DTIMBRE_BUILD_TESTS=OFF -DTIMBRE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=()
for h in $harnesses; do targets+=("fuzz_$h"); done
cmake --build build/fuzz -j "${JOBS:-2}" --target "${targets[@]}"

status=0
for h in $harnesses; do
  corpus=build/fuzz/corpus/$h artifacts=build/fuzz/artifacts/$h
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/corpus/"$h"/* "$corpus"/ 2>/dev/null || true
  # -rss_limit_mb: a reader must not allocate without bound on a small file.
  if build/fuzz/fuzz/fuzz_"$h" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" > "build/fuzz/$h.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "build/fuzz/$h.log")
    echo "fuzz_$h: no finding in ${seconds} s (${runs:-?} inputs, corpus $(ls "$corpus" | wc -l))"
  else
    status=1
    echo "fuzz_$h: FINDING (build/fuzz/$h.log; input in $artifacts/):" >&2
    grep -E "ERROR|invariant|SUMMARY|Test unit written" "build/fuzz/$h.log" | head -20 >&2
  fi
done
exit $status
