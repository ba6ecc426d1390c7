#!/usr/bin/env bash
# gpu_check.sh: everything timbre can check on a real NVIDIA GPU, in one run
# of at most about 8 minutes, with one report (docs/gpu_check.md).
#
# The GPU machine this is written for has the driver, the CUDA toolkit
# (runtime, cuBLAS, cuFFT, compute-sanitizer) and python3 with PyTorch, but
# none of the Debian development packages timbre builds against and no
# network. So the binaries are built on a Debian machine (--prepare), packed
# with the shared libraries the GPU machine lacks into a bundle folder that
# travels beside the working tree, and run there (--bundle). The same stages
# run against the sim build with --sim, so the script itself is tested
# without a GPU.
#
# Stages, each timed, each failure recorded while the next stage still runs:
#   info       nvidia-smi, nvcc, compute-sanitizer versions, `timbre info`
#   tests      every test executable on the device (gtest JSON per executable)
#   sanitizer  compute-sanitizer memcheck, racecheck, synccheck and initcheck
#              over the kernel tests (one test per suite)
#   bench      bench_models, bench_ops, bench_features, bench_kernels (JSON)
#   e2e        synthetic WAV clips -> timbre extract -> train (parallel) -> eval
#   peers      bench/peers_models.py: the same networks in PyTorch on the GPU
# REPORT_DIR/report.md and report.json are always written; the exit status
# is 1 when a stage failed, 2 for a usage or set-up error.
set -uo pipefail
# (No -e: a failing test or benchmark is a result to record, not a reason to
# stop. Every command whose failure matters is checked where it runs.)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly root
readonly max_bundle_bytes=$((64 * 1024 * 1024))  # what may travel with the working tree
# sm_90 machine code for the H200 (Hopper); CMake's plain "90" also embeds
# compute_90 PTX, which the driver JIT-compiles for any newer architecture
# (Blackwell and later), so the bundle still runs there, after a one-off
# compile at start-up. Ampere (80) is left out: a Hopper bundle it is, and
# every architecture added costs space under the 64 MiB.
readonly bundle_archs="90"
readonly bundle_build=build/gpu-bundle
readonly all_stages="info tests sanitizer bench e2e peers"
readonly sanitizer_tools="memcheck racecheck synccheck initcheck"

usage() {
  cat <<'EOF'
Usage:
  scripts/gpu_check.sh --prepare DIR [--jobs N]
      On a Debian machine with the build dependencies and the CUDA toolkit
      (no GPU needed): build the cuda flavour into build/gpu-bundle (Release,
      sm_90 + PTX) and pack the test and bench executables, the timbre tool
      and the shared libraries they need into DIR (at most 64 MiB).
  scripts/gpu_check.sh --bundle DIR [--out REPORT_DIR] [--only STAGES] [--jobs N]
      On the GPU machine: run every stage on DIR's binaries.
  scripts/gpu_check.sh [--build DIR] [--out REPORT_DIR] [--only STAGES] [--jobs N]
      On a GPU machine that has cmake, ninja and every build dependency:
      build DIR (default build/gpu-local) for the local GPU with all cores,
      then run.
  scripts/gpu_check.sh --sim [--build DIR] [--out REPORT_DIR] [--only STAGES]
      The same stages, reduced, on a sim-flavour build (DIR, default
      build/sim, built beforehand; no GPU needed); compute-sanitizer and the
      PyTorch GPU peer are reported as skipped.

Options:
  --out DIR      report folder (default build/gpu-check, or build/gpu-check-sim
                 with --sim); an earlier report there is replaced
  --only LIST    comma-separated stages to run: info,tests,sanitizer,bench,e2e,peers
                 (the others are reported as skipped)
  --build DIR    the build folder used without --bundle (see above)
  --jobs N       build jobs with --prepare (default 2); processes run side by
                 side in the tests and sanitizer stages (default: cores / 2)
  -h, --help     this text

Environment:
  PYTHON         python3 with PyTorch for the peers stage (default: python3)
  CUDA_HOME      the CUDA toolkit, when not /usr/local/cuda

The run takes at most about 8 minutes on the GPU and about 3 with --sim;
REPORT_DIR/report.md and report.json are written whatever fails. Exit status:
0 all stages passed (or were skipped), 1 a stage failed, 2 usage or set-up
error. docs/gpu_check.md explains the report.
EOF
}

die() { echo "gpu_check: $*" >&2; exit 2; }
note() { echo "gpu_check: $*" >&2; }
now() { date +%s.%N; }
# Seconds since a `now` stamp, one decimal.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
human_bytes() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
nproc_() { nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2; }

# --- arguments ---------------------------------------------------------------
mode=""        # prepare | bundle | local | sim
bundle=""      # --prepare DIR or --bundle DIR
out=""
only=""
jobs=""
build_dir=""
while (($#)); do
  case $1 in
    --prepare) [[ -z $mode ]] || die "--prepare, --bundle and --sim exclude each other"
               mode=prepare; bundle=${2:-}; [[ -n $bundle ]] || die "--prepare needs a folder"; shift 2 ;;
    --bundle)  [[ -z $mode ]] || die "--prepare, --bundle and --sim exclude each other"
               mode=bundle; bundle=${2:-}; [[ -n $bundle ]] || die "--bundle needs a folder"; shift 2 ;;
    --sim)     [[ -z $mode ]] || die "--prepare, --bundle and --sim exclude each other"
               mode=sim; shift ;;
    --out)     out=${2:-}; [[ -n $out ]] || die "--out needs a folder"; shift 2 ;;
    --only)    only=${2:-}; [[ -n $only ]] || die "--only needs a list of stages"; shift 2 ;;
    --build)   build_dir=${2:-}; [[ -n $build_dir ]] || die "--build needs a folder"; shift 2 ;;
    --jobs)    jobs=${2:-}; [[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive number"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *)         usage >&2; die "unknown argument '$1'" ;;
  esac
done
[[ -n $mode ]] || mode=local
if [[ -n $only ]]; then
  for s in ${only//,/ }; do
    [[ " $all_stages " == *" $s "* ]] || die "--only: unknown stage '$s' (stages: ${all_stages// /,})"
  done
fi
[[ $mode != prepare || -z $out ]] || die "--out is for running the checks, not --prepare"
[[ -z $build_dir || $mode == sim || $mode == local ]] || die "--build goes with --sim or a local build"
if [[ -z $build_dir ]]; then
  [[ $mode == sim ]] && build_dir=$root/build/sim || build_dir=$root/build/gpu-local
fi
[[ $build_dir == /* ]] || build_dir=$PWD/$build_dir

cuda_home=${CUDA_HOME:-/usr/local/cuda}
# nvcc and compute-sanitizer live in the toolkit's bin/, which need not be
# on PATH (on Debian it usually is not).
export PATH="$PATH:$cuda_home/bin:$cuda_home/compute-sanitizer"

# =============================================================================
# --prepare: build the cuda flavour and pack the bundle
# =============================================================================

# Shared objects that must come from the machine that runs the binaries: glibc
# (it has to match the kernel and the loader), the NVIDIA driver, and the CUDA
# toolkit's libraries (the GPU machine has its own, matched to its driver).
is_system_lib() {
  local name=$1 path=$2
  case $name in
    linux-vdso.so*|linux-gate.so*|ld-linux*.so*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|\
    libdl.so.*|librt.so.*|libresolv.so.*|libutil.so.*|libanl.so.*|libnsl.so.*|libnss_*|\
    libBrokenLocale.so.*|libthread_db.so.*|libcrypt.so.*) return 0 ;;
    libcuda.so*|libnvidia-*|libcudart.so*|libcublas*.so*|libcufft*.so*|libcurand.so*|\
    libcusolver*.so*|libcusparse*.so*|libnvrtc*.so*|libnvJitLink.so*|libnvjpeg.so*|\
    libnpp*.so*|libcudnn*.so*|libnccl.so*|libcupti.so*|libnvToolsExt.so*) return 0 ;;
  esac
  # Anything resolved inside a CUDA toolkit is the toolkit's, whatever its name.
  local real
  real=$(readlink -f "$path" 2>/dev/null || echo "$path")
  [[ $real == /usr/local/cuda* || $real == "$(readlink -f "$cuda_home")"/* ]]
}

prepare_bundle() {
  command -v cmake >/dev/null || die "cmake not found (scripts/setup.sh installs the build dependencies)"
  command -v ninja >/dev/null || die "ninja not found (scripts/setup.sh installs the build dependencies)"
  command -v nvcc >/dev/null || die "nvcc not found in PATH or $cuda_home/bin (the CUDA toolkit is needed to build the cuda flavour)"
  command -v xz >/dev/null || die "xz not found (Debian: apt-get install xz-utils)"
  local build_jobs=${jobs:-2}

  # The bundle folder is replaced; refuse anything that does not look like
  # an earlier bundle, so a mistyped path cannot delete someone's files.
  if [[ -e $bundle ]]; then
    [[ -d $bundle ]] || die "$bundle exists and is not a folder"
    if [[ -n $(ls -A "$bundle") && ! -f $bundle/manifest.txt ]]; then
      die "$bundle is not empty and holds no manifest.txt: not a bundle, refusing to replace it"
    fi
  fi
  mkdir -p "$bundle" || die "cannot create $bundle"
  bundle=$(cd "$bundle" && pwd)
  if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
     [[ $bundle == "$root"/* ]] && ! git -C "$root" check-ignore -q "$bundle/"; then
    note "warning: $bundle is inside the repository but not ignored by git (.gitignore has /gpu-bundle/)"
  fi

  echo "=== configure $bundle_build (cuda flavour, Release, CUDA architectures $bundle_archs)"
  mkdir -p "$root/$bundle_build"
  # Test executables are never run at build time in the cuda flavour (gtest
  # discovery is PRE_TEST there), so this builds on a machine without a GPU.
  if ! cmake -S "$root" -B "$root/$bundle_build" -G Ninja -DTIMBRE_BACKEND=cuda \
         -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$bundle_archs" \
         -DTIMBRE_BUILD_TESTS=ON -DTIMBRE_BUILD_BENCH=ON \
         > "$root/$bundle_build/configure.log" 2>&1; then
    tail -30 "$root/$bundle_build/configure.log" >&2
    die "configure failed (full log: $bundle_build/configure.log)"
  fi
  echo "=== build ($build_jobs jobs; log: $bundle_build/build.log)"
  local t0
  t0=$(now)
  if ! cmake --build "$root/$bundle_build" -j "$build_jobs" > "$root/$bundle_build/build.log" 2>&1; then
    grep -E "error|FAILED" "$root/$bundle_build/build.log" | head -30 >&2
    die "build failed (full log: $bundle_build/build.log)"
  fi
  echo "built in $(since "$t0") s"

  # What goes in: every test executable, every benchmark and the tool.
  local -a bins=()
  local f
  for f in "$root/$bundle_build"/tests/test_* "$root/$bundle_build"/bench/bench_* "$root/$bundle_build/tools/timbre"; do
    [[ -f $f && -x $f ]] && bins+=("$f")
  done
  [[ -x $root/$bundle_build/tools/timbre ]] || die "$bundle_build/tools/timbre was not built"

  # The files are staged as bin/ and lib/ and travel as one xz archive: the
  # ~35 executables each carry the same kernels and libraries statically
  # (about 95 MiB stripped, over the 64 MiB limit), and xz's 64 MiB window
  # stores each copy once (about 13 MiB). The GPU side unpacks it into a
  # temporary folder (with xz, or python3's lzma where xz is missing).
  local stage=$root/$bundle_build/bundle-stage
  rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-cxx" || die "cannot create $stage"
  for f in "${bins[@]}"; do
    cp "$f" "$stage/bin/" && strip --strip-all "$stage/bin/$(basename "$f")" ||
      die "cannot copy and strip $f"
  done

  # Shared libraries: ldd lists the whole closure (libraries of libraries),
  # resolved as the loader would here. "not found" means the build links
  # something this machine cannot resolve: the bundle would be incomplete.
  local line name path missing=""
  declare -A seen=()
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]=\>[[:space:]]not[[:space:]]found ]]; then
      missing+=" ${BASH_REMATCH[1]}"
      continue
    fi
    [[ $line =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]=\>[[:space:]]([^[:space:]]+) ]] || continue
    name=${BASH_REMATCH[1]} path=${BASH_REMATCH[2]}
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    is_system_lib "$name" "$path" && continue
    # Copied under the name the loader asks for (the soname), following
    # symlinks. libstdc++ and libgcc_s go to lib-cxx/, used only where the
    # GPU machine's own are older than the GLIBCXX versions g++ used here:
    # Debian 12's libstdc++ needs glibc 2.36 (arc4random), which e.g.
    # Ubuntu 22.04 lacks, while that system's own libstdc++ would do.
    case $name in
      libstdc++.so.*|libgcc_s.so.*) cp -L "$path" "$stage/lib-cxx/$name" ;;
      *) cp -L "$path" "$stage/lib/$name" ;;
    esac || die "cannot copy $path"
  done < <(for f in "$stage"/bin/*; do ldd "$f"; done)
  [[ -z $missing ]] || die "libraries not found by ldd here:$missing"

  # The highest symbol versions needed from the GPU machine: glibc for the
  # executables and lib/, glibc for the bundled libstdc++ (lib-cxx/), and
  # the GLIBCXX/CXXABI versions a system libstdc++ must offer to be used
  # instead of the bundled one.
  local glibc_max glibc_max_cxx glibcxx_max cxxabi_max symbols
  symbols=$(for f in "$stage"/bin/* "$stage"/lib/*; do objdump -T "$f" 2>/dev/null; done)
  glibc_max=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$symbols" | sort -u -V | tail -1)
  glibcxx_max=$(grep -o 'GLIBCXX_[0-9][0-9.]*' <<<"$symbols" | sort -u -V | tail -1)
  cxxabi_max=$(grep -o 'CXXABI_[0-9][0-9.]*' <<<"$symbols" | sort -u -V | tail -1)
  glibc_max_cxx=$(for f in "$stage"/lib-cxx/*; do objdump -T "$f" 2>/dev/null; done |
                  grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | tail -1)

  echo "=== pack (xz -9: about a minute on two cores)"
  local archive=$bundle/timbre-gpu.tar.xz unpacked
  unpacked=$(du -sb "$stage" | cut -f1)
  # Only the archive and the manifest: anything else from an earlier
  # bundle goes.
  find "$bundle" -mindepth 1 -maxdepth 1 ! -name manifest.txt -exec rm -rf {} +
  if ! tar -C "$stage" -cf - bin lib lib-cxx | xz -9 -T"$build_jobs" > "$archive.tmp"; then
    rm -f "$archive.tmp"
    die "packing $archive failed"
  fi
  mv "$archive.tmp" "$archive"

  local commit="unknown" dirty="unknown" diff_sha="none"
  if git -C "$root" rev-parse HEAD >/dev/null 2>&1; then
    commit=$(git -C "$root" rev-parse HEAD)
    dirty=$(git -C "$root" status --porcelain --untracked-files=no | wc -l)
    diff_sha=$(git -C "$root" diff HEAD | sha256sum | cut -c1-16)
  fi
  {
    echo "# timbre GPU bundle: made by scripts/gpu_check.sh --prepare; run with"
    echo "#   scripts/gpu_check.sh --bundle $(basename "$bundle") --out REPORT_DIR"
    echo "format: 1"
    echo "created: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "built_on: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}"), $(uname -m)"
    echo "git_commit: $commit"
    echo "git_modified_files: $dirty"
    echo "git_diff_sha256: $diff_sha"
    echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*' || echo unknown)"
    echo "cxx: $(c++ --version | head -1)"
    echo "cmake_build_type: Release"
    echo "cuda_architectures: $bundle_archs (sm_90 SASS + compute_90 PTX)"
    echo "glibc_max: ${glibc_max:-none}"
    echo "glibcxx_max: ${glibcxx_max:-none}"
    echo "cxxabi_max: ${cxxabi_max:-none}"
    echo "glibc_max_bundled_libstdcxx: ${glibc_max_cxx:-none}"
    echo "archive: $(basename "$archive")"
    echo "archive_bytes: $(stat -c %s "$archive")"
    echo "archive_sha256: $(sha256sum "$archive" | cut -d' ' -f1)"
    echo "unpacked_bytes: $unpacked"
    echo "files: (bytes, sha256 prefix, path inside the archive)"
    (cd "$stage" && find bin lib lib-cxx -type f | sort | while read -r f; do
       printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
     done)
  } > "$bundle/manifest.txt"
  rm -rf "$stage"

  local total
  total=$(du -sb "$bundle" | cut -f1)
  echo "=== bundle $bundle"
  echo "  executables: ${#bins[@]}, libraries: ${#seen[@]} seen, $(grep -c '  lib' "$bundle/manifest.txt") bundled"
  echo "  needs glibc >= ${glibc_max#GLIBC_} on the GPU machine (${glibc_max_cxx#GLIBC_} where its libstdc++ lacks ${glibcxx_max}); commit ${commit:0:12}$( [[ $dirty != 0 ]] && echo " + $dirty modified files")"
  echo "  unpacked $(human_bytes "$unpacked"); size: $(human_bytes "$total") ($total bytes; limit $(human_bytes "$max_bundle_bytes"))"
  if ((total > max_bundle_bytes)); then
    echo "gpu_check: the bundle is $(human_bytes "$total"), over the $(human_bytes "$max_bundle_bytes") that travel with the working tree" >&2
    exit 1
  fi
  echo "run on the GPU machine: scripts/gpu_check.sh --bundle $(basename "$bundle") --out REPORT_DIR"
}

if [[ $mode == prepare ]]; then
  prepare_bundle
  exit 0
fi

# =============================================================================
# Running the checks
# =============================================================================
t_start=$(now)
if [[ -z $out ]]; then
  [[ $mode == sim ]] && out=$root/build/gpu-check-sim || out=$root/build/gpu-check
fi
# The report folder is replaced; only an earlier report (or nothing) may be
# there, so that a mistyped --out cannot delete someone's files.
if [[ -e $out ]]; then
  [[ -d $out ]] || die "--out $out exists and is not a folder"
  if [[ -n $(ls -A "$out") && ! -f $out/stages.tsv && ! -f $out/report.md ]]; then
    die "--out $out is not empty and holds no earlier report: refusing to replace it"
  fi
  rm -rf "${out:?}"/* 2>/dev/null
fi
mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/timbre-gpu-check.XXXXXX") || die "cannot create a work folder"
pids_dir=$work/pids
mkdir -p "$pids_dir"
cores=$(nproc_)
if [[ -n $jobs ]]; then par=$jobs
elif [[ $mode == sim ]]; then par=$cores
else par=$((cores / 2)); ((par < 2)) && par=2; ((par > 8)) && par=8
fi
PY=python3
PEER_PY=${PYTHON:-python3}
printf 'name\tstatus\tseconds\tnote\n' > "$out/stages.tsv"
# Everything printed also goes to run.log. tee ignores Ctrl-C and SIGTERM
# (they reach the whole process group): it must outlive the handler below,
# or the report could not be printed, and the script would die of SIGPIPE.
exec > >(trap '' INT TERM; exec tee "$out/run.log") 2>&1

# Every child that can run long is started through run_limited: its own
# process group (GNU timeout's), a pid file, and a time limit. On Ctrl-C or
# SIGTERM those groups are ended by pid and the report is still written.
interrupted=0
cleanup_children() {
  local f
  for f in "$pids_dir"/*; do
    [[ -f $f ]] || continue
    kill -TERM -- "-$(basename "$f")" 2>/dev/null
  done
}
on_signal() {
  interrupted=1
  note "interrupted: stopping the running checks, writing the report"
  cleanup_children
}
trap on_signal INT TERM
trap 'cleanup_children; rm -rf "$work"' EXIT

# run_limited SECONDS LOG COMMAND...: COMMAND's status, 124 when it ran out
# of time (its whole process tree is then ended, including a sanitizer's
# target process).
run_limited() {
  local secs=$1 log=$2
  shift 2
  ((interrupted)) && return 130
  timeout -k 10 "$secs" "$@" < /dev/null > "$log" 2>&1 &
  local pid=$!
  : > "$pids_dir/$pid"
  # (wait's stderr: bash's own "Aborted ..." notice for a crashed child;
  # the status says the same and goes to the report.)
  wait "$pid" 2>/dev/null
  local rc=$?
  rm -f "$pids_dir/$pid"
  return $rc
}

# Seconds left until an absolute deadline (date +%s), at most CAP.
left() {
  local deadline=$1 cap=$2 l
  l=$((deadline - $(date +%s)))
  ((l > cap)) && l=$cap
  echo "$l"
}

status_of_rc() {
  case $1 in
    0) echo pass ;;
    124|137) echo timeout ;;
    130) echo interrupted ;;
    *) if (($1 > 128)); then echo "crash (signal $(($1 - 128)))"; else echo fail; fi ;;
  esac
}

# A small pool: at most $par jobs at once (`wait -n` needs bash 4.3).
# pool_wait waits for the pool's own jobs by pid: a bare `wait` would also
# wait for the `tee` of run.log, which ends only when the script does.
pool_pids=()
pool_start() {
  while (($(jobs -rp | wc -l) >= par)); do wait -n; done
  "$@" &
  pool_pids+=($!)
}
pool_wait() {
  ((${#pool_pids[@]})) && wait "${pool_pids[@]}"
  pool_pids=()
}

# --- where the binaries are --------------------------------------------------
tests_dir="" bench_dir="" timbre="" libdir=""
case $mode in
  sim)
    [[ -d $build_dir ]] || die "--sim: no build folder $build_dir (configure and build the sim flavour first)"
    tests_dir=$build_dir/tests bench_dir=$build_dir/bench timbre=$build_dir/tools/timbre ;;
  bundle)
    [[ -d $bundle ]] || die "--bundle $bundle: no such folder"
    bundle=$(cd "$bundle" && pwd)
    archive=$bundle/$(sed -n 's/^archive: //p' "$bundle/manifest.txt" 2>/dev/null)
    [[ -f $bundle/manifest.txt && -f $archive ]] ||
      die "--bundle $bundle: not a bundle (no manifest.txt naming an archive; make one with --prepare)"
    # A truncated copy would fail in confusing ways later: check it first.
    want=$(sed -n 's/^archive_sha256: //p' "$bundle/manifest.txt")
    if [[ -n $want && $(sha256sum "$archive" | cut -d' ' -f1) != "$want" ]]; then
      die "--bundle: $archive does not match the sha256 in manifest.txt (an incomplete copy?)"
    fi
    mkdir -p "$work/bundle"
    if command -v xz >/dev/null; then
      tar -C "$work/bundle" -xJf "$archive" || die "cannot unpack $archive"
    else
      "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$archive" "$work/bundle" || die "cannot unpack $archive (no xz; python3's tarfile failed too)"
    fi
    chmod +x "$work/bundle/bin"/* 2>/dev/null
    bin=$work/bundle/bin
    tests_dir=$bin bench_dir=$bin timbre=$bin/timbre libdir=$work/bundle/lib ;;
  local)
    if ! nvidia-smi -L >/dev/null 2>&1; then
      die "nvidia-smi -L does not work here: no usable GPU. On a machine without one use --sim;
a GPU machine without the build dependencies needs a bundle: run
  scripts/gpu_check.sh --prepare gpu-bundle   (on a Debian machine with scripts/setup.sh's packages)
and then, on the GPU machine,
  scripts/gpu_check.sh --bundle gpu-bundle --out REPORT_DIR"
    fi
    if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
      die "cmake or ninja is missing: this machine cannot build timbre. Prepare a bundle on a
Debian machine (scripts/gpu_check.sh --prepare gpu-bundle) and run with --bundle gpu-bundle"
    fi
    echo "=== building $build_dir for the local GPU ($cores jobs)"
    mkdir -p "$build_dir"
    if ! cmake -S "$root" -B "$build_dir" -G Ninja -DTIMBRE_BACKEND=cuda \
           -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
           -DTIMBRE_BUILD_TESTS=ON -DTIMBRE_BUILD_BENCH=ON > "$build_dir/configure.log" 2>&1; then
      tail -15 "$build_dir/configure.log"
      die "configuring $build_dir failed: a build dependency is missing (log above:
$build_dir/configure.log). Without them, prepare a bundle on a Debian machine
(scripts/gpu_check.sh --prepare gpu-bundle) and run with --bundle gpu-bundle"
    fi
    if ! cmake --build "$build_dir" -j "$cores" > "$build_dir/build.log" 2>&1; then
      grep -E "error|FAILED" "$build_dir/build.log" | head -30
      die "building $build_dir failed (log: $build_dir/build.log)"
    fi
    echo "built in $(since "$t_start") s (not counted in the stages' times)"
    t_start=$(now)
    tests_dir=$build_dir/tests bench_dir=$build_dir/bench timbre=$build_dir/tools/timbre ;;
esac

# The environment of every timbre process: fixtures from this working tree,
# the timbre tool for the pipeline test, the bundle's libraries first, then
# the toolkit's (its lib64 need not be in the loader's cache). Set per
# process, so nvidia-smi, compute-sanitizer and python never load the
# bundle's libstdc++.
ld_path=""
cxx_choice=""
if [[ -n $libdir ]]; then
  ld_path=$libdir
  # libstdc++ and libgcc_s: the system's when it offers every GLIBCXX and
  # CXXABI version the bundle needs (it then matches whatever else the
  # process loads), else the bundled ones (lib-cxx/, which need glibc
  # glibc_max_bundled_libstdcxx).
  need_cxx=$(sed -n 's/^glibcxx_max: //p' "$bundle/manifest.txt")
  need_abi=$(sed -n 's/^cxxabi_max: //p' "$bundle/manifest.txt")
  sys_cxx=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null |
            awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
  for f in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
    [[ -z $sys_cxx && -f $f ]] && sys_cxx=$f
  done
  if [[ -n $sys_cxx && ( $need_cxx == none || -z $need_cxx ) ]] ||
     { [[ -n $sys_cxx ]] && grep -qa "$need_cxx" "$sys_cxx" &&
       { [[ $need_abi == none || -z $need_abi ]] || grep -qa "$need_abi" "$sys_cxx"; }; }; then
    cxx_choice="system ($sys_cxx has $need_cxx)"
  else
    ld_path+=":$work/bundle/lib-cxx"
    cxx_choice="bundled (${sys_cxx:-no system libstdc++.so.6} lacks $need_cxx)"
  fi
  for d in "$cuda_home/lib64" "$cuda_home/targets/x86_64-linux/lib" "$cuda_home/lib"; do
    [[ -d $d ]] && ld_path+=":$d"
  done
  [[ -n ${LD_LIBRARY_PATH:-} ]] && ld_path+=":$LD_LIBRARY_PATH"
fi
run_env=(env "TIMBRE_FIXTURES=$root/tests/fixtures" "TIMBRE_EXE=$timbre")
[[ -n $ld_path ]] && run_env+=("LD_LIBRARY_PATH=$ld_path")
# What CTest sets for the sim flavour: OpenMP and OpenBLAS must not spin
# while simcuda's workers (or another test) want the core.
[[ $mode == sim ]] && run_env+=(OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1)

# Every test executable of the build: on a GPU the whole suite runs.
list_tests() {
  local f
  for f in "$tests_dir"/test_*; do
    [[ -f $f && -x $f && $f != *.cmake ]] && echo "$f"
  done
}

# --- stage bookkeeping -------------------------------------------------------
stage_note=""
want_stage() { [[ -z $only || ",$only," == *",$1,"* ]]; }
record_stage() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >> "$out/stages.tsv"; }

# run_stage NAME FUNCTION: FUNCTION returns 0 (pass), 3 (skipped) or
# anything else (fail), and may leave a one-line note in stage_note.
run_stage() {
  local name=$1 fn=$2 t0 rc st dt
  if ! want_stage "$name"; then
    record_stage "$name" skipped 0 "not selected (--only $only)"
    return
  fi
  if ((interrupted)); then
    record_stage "$name" fail 0 "not run: interrupted"
    return
  fi
  printf '\n=== %s\n' "$name"
  mkdir -p "$out/$name"
  stage_note=""
  t0=$(now)
  "$fn"
  rc=$?
  dt=$(since "$t0")
  stage_note=${stage_note%; }
  stage_note=${stage_note//$'\n'/ }
  case $rc in 0) st=pass ;; 3) st=skipped ;; *) st=fail ;; esac
  ((interrupted)) && [[ $st == pass ]] && st=fail && stage_note="interrupted; $stage_note"
  record_stage "$name" "$st" "$dt" "$stage_note"
  printf -- '--- %s: %s in %s s%s\n' "$name" "$st" "$dt" "${stage_note:+ ($stage_note)}"
}

# =============================================================================
# Stage 1: the device
# =============================================================================
stage_info() {
  local d=$out/info rc=0
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname 2>/dev/null), $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}"), $(uname -r)"
    echo "mode: $mode"
    echo "cores: $cores"
    echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null)"
    if git -C "$root" rev-parse HEAD >/dev/null 2>&1; then
      echo "tree_commit: $(git -C "$root" rev-parse HEAD)"
      echo "tree_diff_sha256: $(git -C "$root" diff HEAD | sha256sum | cut -c1-16)"
    fi
  } > "$d/host.txt"
  cat "$d/host.txt"

  if [[ $mode != sim ]]; then
    if ! command -v nvidia-smi >/dev/null; then
      echo "nvidia-smi: not installed" | tee "$d/nvidia-smi.txt"
      stage_note+="no nvidia-smi; "
      rc=1
    elif nvidia-smi -L > "$d/nvidia-smi.txt" 2>&1; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm \
                 --format=csv >> "$d/nvidia-smi.txt" 2>&1
      cat "$d/nvidia-smi.txt"
    else
      cat "$d/nvidia-smi.txt"
      stage_note+="nvidia-smi -L failed; "
      rc=1
    fi
    if command -v nvcc >/dev/null; then nvcc --version > "$d/nvcc.txt" 2>&1; tail -2 "$d/nvcc.txt"
    else echo "nvcc: not installed" | tee "$d/nvcc.txt"; fi
    if command -v compute-sanitizer >/dev/null; then
      compute-sanitizer --version > "$d/compute-sanitizer.txt" 2>&1; tail -1 "$d/compute-sanitizer.txt"
    fi
  fi

  if [[ $mode == bundle ]]; then
    cp "$bundle/manifest.txt" "$d/manifest.txt"
    # The bundle was built against some glibc; an older one here cannot load it.
    local need have
    need=$(sed -n 's/^glibc_max: GLIBC_//p' "$bundle/manifest.txt")
    echo "libstdc++: $cxx_choice"
    echo "libstdc++: $cxx_choice" >> "$d/host.txt"
    if [[ $cxx_choice == bundled* ]]; then
      need=$(printf '%s\n%s\n' "$need" "$(sed -n 's/^glibc_max_bundled_libstdcxx: GLIBC_//p' "$bundle/manifest.txt")" |
             sort -V | tail -1)
    fi
    have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
    if [[ -n $need && -n $have && $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
      echo "the bundle needs glibc $need, this machine has $have: build the bundle on an older Debian"
      stage_note+="glibc $have < $need needed; "
      rc=1
    fi
    # The bundle was built from some commit; fixtures and scripts come
    # from this tree. A difference is worth a warning, not a failure.
    local bc tc
    bc=$(sed -n 's/^git_commit: //p' "$bundle/manifest.txt")
    tc=$(git -C "$root" rev-parse HEAD 2>/dev/null)
    if [[ -n $tc && -n $bc && $bc != "$tc" ]]; then
      echo "warning: the bundle was built from ${bc:0:12}, this tree is ${tc:0:12}"
      stage_note+="bundle from another commit; "
    elif [[ -n $tc && $(sed -n 's/^git_diff_sha256: //p' "$bundle/manifest.txt") != \
            "$(git -C "$root" diff HEAD | sha256sum | cut -c1-16)" ]]; then
      echo "warning: the bundle was built from the same commit with other uncommitted changes"
      stage_note+="bundle from other uncommitted changes; "
    fi
    local missing
    missing=$("${run_env[@]}" ldd "$timbre" "$tests_dir"/test_* 2>&1 | grep 'not found' | sort -u)
    if [[ -n $missing ]]; then
      echo "libraries not found:"; echo "$missing"
      echo "$missing" > "$d/missing-libraries.txt"
      stage_note+="libraries not found: $(echo "$missing" | awk '{print $1}' | sort -u | tr '\n' ' '); "
      rc=1
    fi
  fi

  if [[ ! -x $timbre ]]; then
    echo "no timbre executable at $timbre"
    stage_note+="timbre missing ($timbre); "
    return 1
  fi
  local trc=0
  run_limited 20 "$d/timbre-info.txt" "${run_env[@]}" "$timbre" info || trc=$?
  cat "$d/timbre-info.txt"
  if ((trc != 0)); then
    stage_note+="timbre info: $(status_of_rc "$trc") (rc $trc): $(grep -m1 -i 'error' "$d/timbre-info.txt" | cut -c1-160); "
    rc=1
  fi
  return $rc
}

# =============================================================================
# Stage 2: the test suite
# =============================================================================
# --sim runs the quick executables whole (about 40 CPU-seconds on the
# 2-core development machine): most kernel families through simcuda, the
# cuBLAS/cuFFT call sites, the features and models against their fixtures
# (TIMBRE_FIXTURES) and the pipeline through the timbre command
# (TIMBRE_EXE). The full sim suite is ctest's job; this checks the stage.
sim_tests=(
  test_kernels_basic test_kernels_activation test_kernels_batchnorm test_kernels_copy_rows
  test_kernels_conv2d test_kernels_pooling test_kernels_philox test_kernels_gru
  test_kernels_knn test_kernels_spectral test_kernels_phase_vocoder
  test_simcuda_cublas test_simcuda_cufft test_engine_nn test_features_logmel
  test_features_h5store test_models test_tools_metrics test_tools_report test_tools_pipeline
)
# ... except the pipeline, whose whole run (every tool, several trainings)
# outgrew the stage's budget on 2 cores: under --sim it runs one training,
# the profile and the graph check (ctest runs all of it).
sim_pipeline_filter='Pipeline.TrainsAndWritesTheRun:Pipeline.Profile*:Pipeline.CudaGraphs*'
# Time budgets (seconds). On the GPU the stages' worst cases add up to
# about 7.8 minutes (info 20, tests 140, sanitizer 110, bench 70, e2e 60,
# peers 65); a healthy run takes far less.
tests_budget=140      # the whole stage; each executable at most:
tests_timeout=120
[[ $mode == sim ]] && tests_budget=75 tests_timeout=60

job_test() {
  local exe=$1 filter=$2 deadline=$3 res=$4
  local name t0 rc=0 secs st
  name=$(basename "$exe")
  secs=$(left "$deadline" "$tests_timeout")
  if ((secs < 5)); then
    printf '%s\t%s\t-\tnot run\t0\n' "$name" "$filter" > "$res"
    echo "  not run  $name (the stage's time budget is spent)"
    return
  fi
  local -a args=("--gtest_output=json:$out/tests/$name.json")
  [[ -n $filter ]] && args+=("--gtest_filter=$filter")
  t0=$(now)
  run_limited "$secs" "$out/tests/$name.log" "${run_env[@]}" "$exe" "${args[@]}" || rc=$?
  st=$(status_of_rc "$rc")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$filter" "$rc" "$st" "$(since "$t0")" > "$res"
  printf '  %-8s %-32s %6s s  %s ok\n' "$st" "$name" "$(since "$t0")" \
    "$(grep -c '^\[       OK \]' "$out/tests/$name.log" 2>/dev/null)"
}

stage_tests() {
  local deadline=$(($(date +%s) + tests_budget)) i=0 e missing=""
  local -a queue=()
  if [[ $mode == sim ]]; then
    for e in "${sim_tests[@]}"; do
      if [[ ! -x $tests_dir/$e ]]; then missing+=" $e"
      elif [[ $e == test_tools_pipeline ]]; then queue+=("$tests_dir/$e|$sim_pipeline_filter")
      else queue+=("$tests_dir/$e|"); fi
    done
  else
    while IFS= read -r e; do queue+=("$e|"); done < <(list_tests)
  fi
  if [[ -n $missing ]]; then
    echo "missing test executables in $tests_dir:$missing"
    stage_note="missing:$missing; "
  fi
  if ((${#queue[@]} == 0)); then
    stage_note+="no test executables in $tests_dir"
    return 1
  fi
  echo "${#queue[@]} executables, $par at a time, at most ${tests_timeout} s each, ${tests_budget} s in all"
  mkdir -p "$work/tests"
  for e in "${queue[@]}"; do
    pool_start job_test "${e%%|*}" "${e#*|}" "$deadline" "$work/tests/$(printf '%03d' $i)"
    i=$((i + 1))
  done
  pool_wait
  printf 'exe\tfilter\trc\tstatus\tseconds\n' > "$out/tests/results.tsv"
  cat "$work/tests"/* >> "$out/tests/results.tsv"
  local bad
  bad=$(awk -F'\t' 'NR > 1 && $4 != "pass" { n++ } END { print n + 0 }' "$out/tests/results.tsv")
  stage_note+="$((i - bad)) of $i executables passed"
  [[ -z $missing ]] && ((bad == 0))
}

# =============================================================================
# Stage 3: compute-sanitizer
# =============================================================================
sanitizer_budget=110   # the four tools together
sanitizer_timeout=50   # one tool over one executable

# One test per suite, the quickest that ran in the tests stage (from its
# gtest JSON), preferring one that took measurable time (i.e. launched
# kernels) over argument checks; the first test of each suite when the
# tests stage left no JSON. Prints a gtest filter.
sanitizer_filter() {
  local exe=$1 name
  name=$(basename "$exe")
  run_limited 30 "$work/list-$name.txt" "${run_env[@]}" "$exe" --gtest_list_tests || return 1
  "$PY" - "$work/list-$name.txt" "$out/tests/$name.json" <<'PYEOF'
import json, os, sys
listing, report = sys.argv[1], sys.argv[2]
suites, order = {}, []
suite = None
for line in open(listing, errors="replace"):
    if not line.strip() or line.startswith("Running main()"):
        continue
    if not line.startswith(" "):
        suite = line.split()[0]            # "Suite." (with a parameter prefix)
        order.append(suite)
        suites[suite] = []
    elif suite:
        suites[suite].append(line.split()[0])
times = {}
if os.path.exists(report):
    try:
        for s in json.load(open(report)).get("testsuites", []):
            for t in s.get("testsuite", []):
                if t.get("result") == "COMPLETED" and not t.get("failures"):
                    times[s["name"] + "." + t["name"]] = float(str(t.get("time", "0s")).rstrip("s") or 0)
    except (ValueError, KeyError):
        times = {}
picked = []
for s in order:
    names = [s + n for n in suites[s]]
    ran = [(times[n], n) for n in names if n in times]
    timed = sorted(x for x in ran if x[0] > 0)
    if timed:
        picked.append(timed[0][1])
    elif ran:
        picked.append(sorted(ran)[0][1])
    elif names:
        picked.append(names[0])
print(":".join(picked))
PYEOF
}

job_sanitize() {
  local tool=$1 exe=$2 filter=$3 deadline=$4 res=$5
  local name secs t0 rc=0 log errors st
  name=$(basename "$exe")
  log=$out/sanitizer/$tool-$name.log
  secs=$(left "$deadline" "$sanitizer_timeout")
  if ((secs < 5)); then
    printf '%s\t%s\t-\tnot run\t0\t-\n' "$tool" "$name" > "$res"
    return
  fi
  t0=$(now)
  # --target-processes all: the target is started through env (which sets
  # the bundle's library path for it alone) and the tool must follow it.
  run_limited "$secs" "$out/sanitizer/$tool-$name.out" compute-sanitizer --tool "$tool" \
    --target-processes all --log-file "$log" \
    "${run_env[@]}" "$exe" "--gtest_filter=$filter" || rc=$?
  errors=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$log" 2>/dev/null | tail -1 | grep -oE '[0-9]+$')
  if [[ -z $errors ]]; then
    # Killed before its summary: count the error records printed so far.
    errors=">=$(grep -cE '^========= (Invalid|Race|Barrier|Uninitialized|Program hit|Error|Warning|Cuda API error|Misaligned|Out-of-range|Malloc|Free|Divergent|Leaked)' "$log" 2>/dev/null)"
  fi
  if [[ $errors =~ ^[0-9]+$ ]] && ((errors > 0)); then st=errors
  elif ((rc == 0)); then st=pass
  else st=$(status_of_rc "$rc"); fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "$rc" "$st" "$(since "$t0")" "$errors" > "$res"
  printf '  %-9s %-28s %-8s %6s s  errors %s\n' "$tool" "$name" "$st" "$(since "$t0")" "$errors"
}

stage_sanitizer() {
  if [[ $mode == sim ]]; then
    stage_note="no GPU: compute-sanitizer needs one"
    return 3
  fi
  if ! command -v compute-sanitizer >/dev/null; then
    stage_note="compute-sanitizer not found (PATH, $cuda_home/bin)"
    return 1
  fi
  local deadline=$(($(date +%s) + sanitizer_budget)) i=0 e tool filter
  local -a exes=()
  while IFS= read -r e; do
    [[ $(basename "$e") == test_kernels_* ]] && exes+=("$e")
  done < <(list_tests)
  ((${#exes[@]})) || { stage_note="no test_kernels_* executables"; return 1; }
  mkdir -p "$work/sanitizer"
  echo "${#exes[@]} kernel test executables x 4 tools, one test per suite, $par at a time"
  # Executable-major order: if time runs out, the executables left are the
  # ones not checked, and every tool has seen the ones before.
  for e in "${exes[@]}"; do
    filter=$(sanitizer_filter "$e") || filter=""
    [[ -n $filter ]] || filter="*"
    echo "$(basename "$e"): $filter" >> "$out/sanitizer/filters.txt"
    for tool in $sanitizer_tools; do
      pool_start job_sanitize "$tool" "$e" "$filter" "$deadline" "$work/sanitizer/$(printf '%03d' $i)"
      i=$((i + 1))
    done
  done
  pool_wait
  printf 'tool\texe\trc\tstatus\tseconds\terrors\n' > "$out/sanitizer/results.tsv"
  cat "$work/sanitizer"/* >> "$out/sanitizer/results.tsv"
  # Errors, crashes and tests failing under a tool fail the stage; a run
  # that ran out of time (or was not reached) is incomplete coverage, which
  # the note and the report say, not a finding.
  local summary
  summary=$(awk -F'\t' 'NR > 1 { e = $6; sub(/^>=/, "", e); err[$1] += e
                                  if ($4 == "timeout") slow++; else if ($4 == "not run") skipped++
                                  else if ($4 != "pass") bad++ }
                        END { n = split("memcheck racecheck synccheck initcheck", tools, " ")
                              for (i = 1; i <= n; i++) { printf "%s %d, ", tools[i], err[tools[i]]; total += err[tools[i]] }
                              printf "|%d|%d|%d|%d", bad + 0, slow + 0, skipped + 0, total }' \
            "$out/sanitizer/results.tsv")
  local counts=${summary#*|} bad slow skipped total
  IFS='|' read -r bad slow skipped total <<<"$counts"
  stage_note="errors: ${summary%%|*}"
  stage_note=${stage_note%, }
  ((bad)) && stage_note+="; $bad runs with errors or failing tests"
  ((slow)) && stage_note+="; $slow runs timed out (${sanitizer_timeout} s)"
  ((skipped)) && stage_note+="; $skipped runs not reached in ${sanitizer_budget} s"
  ((bad == 0 && total == 0))
}

# =============================================================================
# Stage 4: benchmarks
# =============================================================================
bench_budget=70
bench_timeout=45
[[ $mode == sim ]] && bench_budget=60 bench_timeout=40

stage_bench() {
  local deadline=$(($(date +%s) + bench_budget)) b rc t0 secs fail=0 mt
  # Google Benchmark 1.7 (Debian 12, and the bundle's libbenchmark) takes
  # --benchmark_min_time as plain seconds; 1.8 wants a suffix ("0.1s") and
  # only warns about a plain number, so ask the program which it is.
  local min_time=0.1 filter_models="" filter_ops="" filter_features="" filter_kernels="" reps=2
  if [[ $mode == sim ]]; then
    min_time=0.01 reps=1
    filter_models="parallel"
    filter_ops="BM_Linear|BM_SoftmaxOverTime|BM_CrossEntropy"
    filter_features="BM_LogMel/f64_banded/32"
    filter_kernels="BM_Gemm/v1_naive/128|BM_ReduceSum/v2_shuffle/1048576"
  fi
  printf 'exe\trc\tstatus\tseconds\n' > "$out/bench/results.tsv"
  for b in bench_models bench_ops bench_features bench_kernels; do
    local exe=$bench_dir/$b
    if [[ ! -x $exe ]]; then
      echo "  missing  $b ($exe)"
      printf '%s\t-\tmissing\t0\n' "$b" >> "$out/bench/results.tsv"
      stage_note+="$b missing; "
      fail=1
      continue
    fi
    secs=$(left "$deadline" "$bench_timeout")
    if ((secs < 5)); then
      printf '%s\t-\tnot run\t0\n' "$b" >> "$out/bench/results.tsv"
      echo "  not run  $b (the stage's time budget is spent)"
      stage_note+="$b not run (time budget); "
      fail=1
      continue
    fi
    mt=$min_time
    if timeout 10 "${run_env[@]}" "$exe" --help 2>&1 < /dev/null | grep -q '<float>s'; then
      mt=${min_time}s
    fi
    local -a args=("--benchmark_out=$out/bench/$b.json" --benchmark_out_format=json
                   "--benchmark_min_time=$mt")
    local f=""
    case $b in
      bench_models) f=$filter_models
        # bench_models runs a fixed 3 steps; on the GPU a second repetition
        # is timed with the allocator, cuBLAS and cuFFT already warm (the
        # report takes the better one, as the PyTorch peer times after a
        # warm-up step).
        args+=("--benchmark_repetitions=$reps") ;;
      bench_ops) f=$filter_ops ;;
      bench_features) f=$filter_features ;;
      bench_kernels) f=$filter_kernels ;;
    esac
    [[ -n $f ]] && args+=("--benchmark_filter=$f")
    t0=$(now)
    rc=0
    run_limited "$secs" "$out/bench/$b.log" "${run_env[@]}" "$exe" "${args[@]}" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$b" "$rc" "$(status_of_rc "$rc")" "$(since "$t0")" >> "$out/bench/results.tsv"
    printf '  %-8s %-16s %6s s\n' "$(status_of_rc "$rc")" "$b" "$(since "$t0")"
    ((rc == 0)) || { fail=1; stage_note+="$b: $(status_of_rc "$rc"); "; }
  done
  # The figures themselves go to the report (bench_models' samples/s).
  if [[ -f $out/bench/bench_models.json ]]; then
    stage_note+=$("$PY" - "$out/bench/bench_models.json" <<'PYEOF'
import json, sys
best = {}
try:
    benchmarks = json.load(open(sys.argv[1])).get("benchmarks", [])
except (OSError, ValueError):
    benchmarks = []  # a run that crashed leaves half a file
for b in benchmarks:
    if b.get("run_type", "iteration") != "iteration" or "samples/s" not in b:
        continue
    # "BM_Train/parallel/iterations:3/repeats:2/real_time" -> "Train/parallel"
    name = "/".join(b.get("run_name", b["name"]).replace("BM_", "").split("/")[:2])
    best[name] = max(best.get(name, 0.0), b["samples/s"])
print(", ".join(f"{k} {v:.1f}/s" for k, v in best.items()))
PYEOF
)
  fi
  return $fail
}

# =============================================================================
# Stage 5: end to end on generated audio
# =============================================================================
e2e_budget=60
classes=4 clips=24 epochs=2
[[ $mode == sim ]] && e2e_budget=75 classes=3 clips=5 epochs=1

stage_e2e() {
  local deadline=$(($(date +%s) + e2e_budget)) d=$out/e2e w=$work/e2e
  mkdir -p "$w"
  printf 'step\trc\tstatus\tseconds\n' > "$d/steps.tsv"
  # e2e_step NAME COMMAND...: runs within what is left of the stage's budget.
  e2e_step() {
    local name=$1 secs t0 rc=0
    shift
    secs=$(left "$deadline" 600)
    if ((secs < 3)); then
      printf '%s\t-\tnot run\t0\n' "$name" >> "$d/steps.tsv"
      echo "  not run  $name (the stage's time budget is spent)"
      return 1
    fi
    t0=$(now)
    run_limited "$secs" "$d/$name.log" "$@" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(status_of_rc "$rc")" "$(since "$t0")" >> "$d/steps.tsv"
    printf '  %-8s %-8s %6s s\n' "$(status_of_rc "$rc")" "$name" "$(since "$t0")"
    return $rc
  }
  [[ -x $timbre ]] || { stage_note="timbre missing ($timbre)"; return 1; }
  # Each step needs the one before; the first failure ends the chain.
  local failed=""
  e2e_step data "$PY" "$root/scripts/gpu_check_data.py" "$w/audio" --classes "$classes" \
      --clips "$clips" --seconds 4 --jobs "$cores" || failed="data"
  [[ -n $failed ]] || e2e_step extract "${run_env[@]}" "$timbre" extract --dataset folder \
      --audio "$w/audio" --out "$w/features.h5" --jobs "$cores" || failed="extract"
  [[ -n $failed ]] || e2e_step train "${run_env[@]}" "$timbre" train --model parallel \
      --data "$w/features.h5" --out "$w/run" --epochs "$epochs" || failed="train"
  [[ -n $failed ]] || e2e_step eval "${run_env[@]}" "$timbre" eval --run "$w/run" || failed="eval"
  # One clip per class through predict: decoding and windowed inference.
  local -a one_per_class=()
  local c f
  for c in "$w"/audio/*/; do
    for f in "$c"*.wav; do one_per_class+=("$f"); break; done
  done
  [[ -n $failed ]] || e2e_step predict "${run_env[@]}" "$timbre" predict --run "$w/run" --json \
      "${one_per_class[@]}" || failed="predict"
  # Keep the small results (also of a failed run), not the audio, the
  # features or the checkpoints.
  for f in run.json log.csv config.toml report.html report-test.html metrics-test.json; do
    [[ -f $w/run/$f ]] && cp "$w/run/$f" "$d/"
  done
  if [[ -n $failed ]]; then
    stage_note="$failed failed"
    return 1
  fi
  stage_note=$("$PY" - "$d/metrics-test.json" <<'PYEOF'
import json, sys
try:
    m = json.load(open(sys.argv[1]))
    print(f"test accuracy: clips {m['clip']['accuracy']:.3f} ({m['clip'].get('count', '?')}), "
          f"tracks {m['track']['accuracy']:.3f} ({m['track'].get('count', '?')})")
except (OSError, ValueError, KeyError, TypeError):
    print("no test metrics")
PYEOF
)
  return 0
}

# =============================================================================
# Stage 6: the PyTorch peer on the GPU
# =============================================================================
peers_budget=45

stage_peers() {
  if [[ $mode == sim ]]; then
    stage_note="no GPU (PyTorch's CPU figures: bench/peers_models.py --device cpu)"
    return 3
  fi
  # The same batch and step count as bench_models (read from its source, so
  # that the two cannot drift apart).
  local batch steps rc=0
  batch=$(grep -oE 'kBatch = [0-9]+' "$root/bench/bench_models.cpp" | grep -oE '[0-9]+$')
  steps=$(grep -oE 'Iterations\([0-9]+\)' "$root/bench/bench_models.cpp" | head -1 | grep -oE '[0-9]+')
  batch=${batch:-32} steps=${steps:-3}
  if ! run_limited 20 "$out/peers/torch-check.log" "$PEER_PY" -c \
       'import sys, torch; print(torch.__version__, torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 3)'; then
    cat "$out/peers/torch-check.log"
    stage_note="$PEER_PY has no PyTorch with CUDA (set PYTHON)"
    return 1
  fi
  echo "PyTorch $(head -1 "$out/peers/torch-check.log"), batch $batch, $steps steps after one warm-up"
  run_limited "$peers_budget" "$out/peers/peers.log" "$PEER_PY" "$root/bench/peers_models.py" \
    --device cuda --batch "$batch" --steps "$steps" --json "$out/peers/peers.json" || rc=$?
  cat "$out/peers/peers.log"
  if ((rc != 0)); then
    stage_note="peers_models.py: $(status_of_rc "$rc") (rc $rc)"
    return 1
  fi
  stage_note="batch $batch, $steps steps"
  return 0
}

# =============================================================================
# The report
# =============================================================================
write_report() {
  local total
  total=$(since "$t_start")
  if ! command -v "$PY" >/dev/null; then
    # Without python: the stage table alone.
    {
      echo "# timbre GPU check ($mode)"; echo
      echo "| stage | status | seconds | note |"; echo "| --- | --- | --- | --- |"
      tail -n +2 "$out/stages.tsv" | awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
    } > "$out/report.md"
    echo "{\"mode\": \"$mode\", \"note\": \"python3 missing: see report.md\"}" > "$out/report.json"
    return
  fi
  "$PY" - "$out" "$mode" "$total" <<'PYEOF'
import csv, json, os, re, sys

out, mode, total = sys.argv[1], sys.argv[2], float(sys.argv[3])

def tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def read(path, limit=None):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text if limit is None else text[:limit]

def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"

def tail_block(title, path, n=8):
    lines = [l for l in read(path).splitlines() if l.strip()][-n:]
    if lines:
        md.append(f"\n{title} (last lines of {os.path.relpath(path, out)}):\n```\n" + "\n".join(lines) + "\n```")

md, rep = [], {"mode": mode, "seconds": round(total, 1)}
stages = tsv(os.path.join(out, "stages.tsv"))
rep["stages"] = stages
failed = [s["name"] for s in stages if s["status"] == "fail"]
rep["passed"] = not failed
md.append(f"# timbre GPU check: {mode}\n")
md.append(f"{'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'} in {total:.0f} s.\n")
md.append("| stage | status | seconds | note |\n| --- | --- | --- | --- |")
for s in stages:
    md.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {s['note'].replace('|', '/')} |")

# --- info -------------------------------------------------------------------
info = {}
host = read(os.path.join(out, "info/host.txt"))
for line in host.splitlines():
    k, _, v = line.partition(": ")
    info[k] = v
smi = read(os.path.join(out, "info/nvidia-smi.txt")).strip()
tinfo = read(os.path.join(out, "info/timbre-info.txt"))
info["nvidia_smi"] = smi
info["timbre_info"] = tinfo
nvcc = [l for l in read(os.path.join(out, "info/nvcc.txt")).splitlines() if "release" in l or "not installed" in l]
info["nvcc"] = nvcc[-1].strip() if nvcc else ""
manifest = read(os.path.join(out, "info/manifest.txt"))
if manifest:
    info["bundle"] = {k: v for k, _, v in (l.partition(": ") for l in manifest.splitlines()
                                          if ": " in l and not l.startswith(("#", " ")))}
rep["info"] = info
md.append("\n## Device\n")
md.append("| what | value |\n| --- | --- |")
for k in ("host", "glibc", "libstdc++", "cores", "tree_commit"):
    if info.get(k):
        md.append(f"| {k} | {info[k]} |")
for line in smi.splitlines():
    md.append(f"| nvidia-smi | {line.strip()} |")
if info["nvcc"]:
    md.append(f"| nvcc | {info['nvcc']} |")
for line in tinfo.splitlines():
    mt = re.match(r"(device|backend|compute cap\.|SMs/workers|memory)\s{2,}(.*)", line)
    if mt:
        md.append(f"| timbre info: {mt.group(1)} | {mt.group(2)} |")
if "bundle" in info:
    b = info["bundle"]
    md.append(f"| bundle | commit {b.get('git_commit', '?')[:12]} (+{b.get('git_modified_files', '?')} modified), "
              f"{b.get('nvcc', '?')}, arch {b.get('cuda_architectures', '?')}, needs {b.get('glibc_max', '?')} |")
if any(s["name"] == "info" and s["status"] == "fail" for s in stages):
    tail_block("timbre info", os.path.join(out, "info/timbre-info.txt"))

# --- tests ------------------------------------------------------------------
tests = []
for r in tsv(os.path.join(out, "tests/results.tsv")):
    j = load(os.path.join(out, "tests", r["exe"] + ".json"))
    passed = failed_n = skipped = 0
    failures = []
    if j:
        for s in j.get("testsuites", []):
            for t in s.get("testsuite", []):
                if t.get("status", "RUN") != "RUN":
                    continue
                if t.get("failures"):
                    failed_n += 1
                    # "file:line" (or "unknown file" for an exception), then the message.
                    msg = [l.strip() for l in t["failures"][0].get("failure", "").splitlines() if l.strip()]
                    failures.append(f"{s['name']}.{t['name']}: {' / '.join(msg[:3])}"[:300])
                elif t.get("result") == "SKIPPED":
                    skipped += 1
                else:
                    passed += 1
    else:
        # No JSON (crash or timeout): count from the console output.
        log = read(os.path.join(out, "tests", r["exe"] + ".log"))
        passed = sum(1 for l in log.splitlines() if l.startswith("[       OK ]"))
        failed_n = sum(1 for l in log.splitlines() if l.startswith("[  FAILED  ]") and "ms)" in l)
    tests.append({"exe": r["exe"], "filter": r["filter"], "status": r["status"], "rc": r["rc"],
                  "seconds": float(r["seconds"] or 0), "passed": passed, "failed": failed_n,
                  "skipped": skipped, "failures": failures, "json": bool(j)})
rep["tests"] = tests
if tests:
    md.append("\n## Tests\n")
    tp = sum(t["passed"] for t in tests); tf = sum(t["failed"] for t in tests)
    ts = sum(t["skipped"] for t in tests)
    md.append(f"{tp} passed, {tf} failed, {ts} skipped in {len(tests)} executables.\n")
    md.append("| executable | status | seconds | passed | failed | skipped |\n| --- | --- | --- | --- | --- | --- |")
    for t in tests:
        name = t["exe"] + (f" (`{t['filter']}`)" if t["filter"] not in ("", "*") else "")
        md.append(f"| {name} | {t['status']} | {t['seconds']:.1f} | {t['passed']} | {t['failed']} | {t['skipped']} |")
    fails = [(t["exe"], f) for t in tests for f in t["failures"]]
    if fails:
        md.append("\nFailed tests (first 40):\n")
        for exe, f in fails[:40]:
            md.append(f"- {exe}: {f}")
    broken = [t for t in tests if t["status"] not in ("pass", "fail")]
    for t in broken[:10]:
        tail_block(f"{t['exe']} ({t['status']})", os.path.join(out, "tests", t["exe"] + ".log"), 6)

# --- sanitizer --------------------------------------------------------------
san = tsv(os.path.join(out, "sanitizer/results.tsv"))
rep["sanitizer"] = san
if san:
    tools = ["memcheck", "racecheck", "synccheck", "initcheck"]
    md.append("\n## compute-sanitizer\n")
    md.append("Errors per tool and executable (one test per suite; filters in sanitizer/filters.txt, "
              "details in sanitizer/TOOL-EXE.log).\n")
    md.append("| executable | " + " | ".join(tools) + " |\n| --- |" + " --- |" * len(tools))
    cell = {(r["tool"], r["exe"]): r for r in san}
    totals = {t: 0 for t in tools}
    for exe in sorted({r["exe"] for r in san}):
        cells = []
        for t in tools:
            r = cell.get((t, exe))
            if not r:
                cells.append("-"); continue
            e = r["errors"]
            n = int(e.lstrip(">=")) if e.lstrip(">=").isdigit() else 0
            totals[t] += n
            cells.append(f"{e}" if r["status"] in ("pass", "errors") else f"{r['status']} ({e})")
        md.append(f"| {exe} | " + " | ".join(cells) + " |")
    md.append("| **total** | " + " | ".join(str(totals[t]) for t in tools) + " |")
    rep["sanitizer_totals"] = totals
    # The first records of the first few runs with errors.
    shown = 0
    for r in san:
        if r["status"] == "errors" and shown < 6:
            shown += 1
            log = read(os.path.join(out, "sanitizer", f"{r['tool']}-{r['exe']}.log")).splitlines()
            body = [l for l in log if l.startswith("=========") and "COMPUTE-SANITIZER" not in l][:14]
            md.append(f"\n{r['tool']} on {r['exe']} ({r['errors']} errors), first lines:\n```\n"
                      + "\n".join(body) + "\n```")

# --- benchmarks and the peer ------------------------------------------------
bench = {"runs": tsv(os.path.join(out, "bench/results.tsv"))}
models = {}
bm = load(os.path.join(out, "bench/bench_models.json"))
if bm:
    for b in bm.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or "samples/s" not in b:
            continue
        parts = b.get("run_name", b["name"]).replace("BM_", "").split("/")
        kind, model = parts[0], parts[1] if len(parts) > 1 else "?"
        m = models.setdefault(model, {})
        key = kind.lower()
        if b["samples/s"] > m.get(key, 0):
            m[key] = b["samples/s"]
            m[key + "_peak_mib"] = b.get("peak_MiB")
peers = load(os.path.join(out, "peers/peers.json"))
if peers:
    for p in peers.get("models", []):
        m = models.setdefault(p["model"], {})
        m["torch_train"] = p["train_samples_per_s"]
        m["torch_infer"] = p["infer_samples_per_s"]
        m["torch_peak_mib"] = p["peak_mib"]
bench["models"] = models
bench["peers"] = peers
if bm:
    bench["context"] = bm.get("context", {})
others = {}
for name in ("bench_ops", "bench_features", "bench_kernels"):
    j = load(os.path.join(out, "bench", name + ".json"))
    if not j:
        continue
    rows = []
    for b in j.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        counters = {k: v for k, v in b.items() if isinstance(v, (int, float)) and k not in (
            "family_index", "per_family_instance_index", "repetitions", "repetition_index",
            "threads", "iterations", "real_time", "cpu_time")}
        rows.append({"name": b["name"], "real_time": b.get("real_time"), "unit": b.get("time_unit", "ns"),
                     "iterations": b.get("iterations"), "counters": counters})
    others[name] = rows
bench["others"] = others
rep["bench"] = bench
if models or others or bench["runs"]:
    md.append("\n## Benchmarks\n")
    if bench["runs"]:
        md.append("| program | status | seconds |\n| --- | --- | --- |")
        for r in bench["runs"]:
            md.append(f"| {r['exe']} | {r['status']} | {r['seconds']} |")
        for r in bench["runs"]:
            if r["status"] not in ("pass", "missing", "not run"):
                tail_block(r["exe"], os.path.join(out, "bench", r["exe"] + ".log"), 6)
    if models:
        src = (f"PyTorch {peers['torch']} + cuDNN {peers.get('cudnn')} on {peers.get('device_name')}"
               if peers else "no PyTorch peer in this run")
        md.append(f"\n### The three networks, batch 32, samples/s (timbre: bench_models, best "
                  f"repetition; {src})\n")
        md.append("| model | timbre train | PyTorch train | ratio | timbre infer | PyTorch infer | ratio "
                  "| timbre peak MiB | PyTorch peak MiB |\n" + "| --- " * 9 + "|")
        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "-"
        for name in ("rescnn", "crnn", "parallel"):
            m = models.get(name)
            if not m:
                continue
            md.append(f"| {name} | {fmt(m.get('train'))} | {fmt(m.get('torch_train'))} | "
                      f"{ratio(m.get('train'), m.get('torch_train'))} | {fmt(m.get('infer'))} | "
                      f"{fmt(m.get('torch_infer'))} | {ratio(m.get('infer'), m.get('torch_infer'))} | "
                      f"{fmt(m.get('train_peak_mib'), 0)} | {fmt(m.get('torch_peak_mib'), 0)} |")
            m["train_ratio"] = (m["train"] / m["torch_train"]) if m.get("train") and m.get("torch_train") else None
            m["infer_ratio"] = (m["infer"] / m["torch_infer"]) if m.get("infer") and m.get("torch_infer") else None
        md.append("\n(ratio: timbre / PyTorch; above 1 timbre is faster.)")
    for name, rows in others.items():
        md.append(f"\n### {name}\n")
        md.append("| benchmark | ms | counters |\n| --- | --- | --- |")
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
        for r in rows:
            c = ", ".join(f"{k} {v:.4g}" for k, v in r["counters"].items())
            t = r["real_time"] * scale.get(r["unit"], 1.0) if r["real_time"] is not None else None
            md.append(f"| {r['name']} | {'-' if t is None else f'{t:.4g}'} | {c} |")

# --- end to end -------------------------------------------------------------
steps = tsv(os.path.join(out, "e2e/steps.tsv"))
if steps:
    e2e = {"steps": steps, "metrics": load(os.path.join(out, "e2e/metrics-test.json"))}
    log = read(os.path.join(out, "e2e/train.log"))
    epochs = [l.strip() for l in log.splitlines() if " - loss:" in l]
    e2e["epochs"] = epochs
    rep["e2e"] = e2e
    md.append("\n## End to end (generated clips, parallel model)\n")
    md.append("| step | status | seconds |\n| --- | --- | --- |")
    for s in steps:
        md.append(f"| {s['step']} | {s['status']} | {s['seconds']} |")
    if epochs:
        md.append("\n```\n" + "\n".join(epochs) + "\n```")
    for s in steps:
        if s["status"] not in ("pass", "not run"):
            tail_block(s["step"], os.path.join(out, "e2e", s["step"] + ".log"))
    ev = read(os.path.join(out, "e2e/eval.log")).strip()
    if ev:
        md.append("\n`timbre eval`:\n```\n" + "\n".join(ev.splitlines()[:30]) + "\n```")

peer_stage = [s for s in stages if s["name"] == "peers" and s["status"] == "fail"]
if peer_stage:
    md.append("\n## PyTorch peer")
    for name in ("peers.log", "torch-check.log"):
        if os.path.exists(os.path.join(out, "peers", name)):
            tail_block("peers", os.path.join(out, "peers", name))
            break

with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(rep, f, indent=2)
with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
PYEOF
}

echo "timbre GPU check: mode $mode, report in $out"
case $mode in
  sim) echo "binaries: $build_dir (reduced sizes; no compute-sanitizer, no GPU peer)" ;;
  bundle) echo "binaries: $bundle" ;;
  local) echo "binaries: $build_dir" ;;
esac

run_stage info stage_info
run_stage tests stage_tests
run_stage sanitizer stage_sanitizer
run_stage bench stage_bench
run_stage e2e stage_e2e
run_stage peers stage_peers

write_report || note "writing the report failed"
echo
echo "report: $out/report.md ($(since "$t_start") s)"
tail -n +2 "$out/stages.tsv" | awk -F'\t' '{ printf "  %-10s %-8s %7s s  %s\n", $1, $2, $3, $4 }'
((interrupted)) && exit 130
awk -F'\t' 'NR > 1 && $2 == "fail" { bad = 1 } END { exit bad }' "$out/stages.tsv" || exit 1
exit 0
