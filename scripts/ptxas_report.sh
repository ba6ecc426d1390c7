#!/usr/bin/env bash
# ptxas_report.sh BUILD_LOG OUT_FILE
# Turns the "-Xptxas -v" lines of a cuda-flavour build log into one table
# row per kernel and architecture: registers, spill stores/loads, stack
# frame, static shared memory, and the largest block its registers allow
# (64K registers per SM, allocated per warp in units of 256). Fails
#   - if any kernel spills (spill stores or loads > 0): a spill is local
#     memory traffic in the inner loop, and a kernel that spills has to be
#     restructured (or given __launch_bounds__), not shipped;
#   - if a kernel's static shared memory is over the 48 KiB a block gets
#     without opt-in (the one limit simcuda cannot check at launch: g++ does
#     not tell it the size of static __shared__).
# Kernels with a stack frame over 1 KiB are listed (each has a comment in
# its source saying why: a per-thread array by design).
set -euo pipefail
log=${1:?usage: ptxas_report.sh BUILD_LOG OUT_FILE}
out=${2:?usage: ptxas_report.sh BUILD_LOG OUT_FILE}

fn="" arch="" stack=0 sst=0 sld=0
re_entry="Compiling entry function '([^']+)' for '(sm_[0-9a-z]+)'"
re_frame="([0-9]+) bytes stack frame, ([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads"
re_used="Used ([0-9]+) registers"
re_smem="([0-9]+) bytes smem"
while IFS= read -r line; do
  if [[ $line =~ $re_entry ]]; then
    fn=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]} stack=0 sst=0 sld=0
  elif [[ $line =~ $re_frame ]]; then
    stack=${BASH_REMATCH[1]} sst=${BASH_REMATCH[2]} sld=${BASH_REMATCH[3]}
  elif [[ -n $fn && $line =~ $re_used ]]; then
    regs=${BASH_REMATCH[1]} smem=0
    if [[ $line =~ $re_smem ]]; then smem=${BASH_REMATCH[1]}; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$arch" "$regs" "$sst" "$sld" "$stack" "$smem" "$fn"
    fn=""
  fi
done < "$log" | sort -u > "$out.raw"

if [[ ! -s "$out.raw" ]]; then
  echo "ptxas_report: no ptxas lines in $log (was it a cuda-flavour build with -Xptxas -v?)" >&2
  exit 1
fi

{
  echo "# ptxas per-kernel report ($(date -u +%Y-%m-%d), $(nvcc --version | tail -1))"
  printf "%-6s %5s %11s %10s %6s %10s %9s  %s\n" arch regs spill_store spill_load stack \
    smem_bytes max_block kernel
  while IFS=$'\t' read -r arch regs sst sld stack smem fn; do
    # Registers are allocated per warp in units of 256: a warp takes
    # ceil(regs * 32 / 256) * 256 of the SM's 65536.
    per_warp=$(( (regs * 32 + 255) / 256 * 256 ))
    max_block=$(( per_warp > 0 ? 65536 / per_warp * 32 : 1024 ))
    (( max_block > 1024 )) && max_block=1024
    printf "%-6s %5s %11s %10s %6s %10s %9s  %s\n" "$arch" "$regs" "$sst" "$sld" "$stack" \
      "$smem" "$max_block" "$(echo "$fn" | c++filt)"
  done < "$out.raw"
} > "$out"
rm -f "$out.raw"

status=0
over=$(awk 'NR > 2 && $6 > 49152' "$out")
if [[ -n "$over" ]]; then
  echo "ptxas_report: kernels with more than 48 KiB of static shared memory:" >&2
  echo "$over" >&2
  status=1
fi
spills=$(awk 'NR > 2 && ($3 > 0 || $4 > 0)' "$out")
if [[ -n "$spills" ]]; then
  echo "ptxas_report: kernels that spill registers to local memory:" >&2
  echo "$spills" >&2
  status=1
fi
big_stack=$(awk 'NR > 2 && $5 > 1024' "$out")
if [[ -n "$big_stack" ]]; then
  echo "ptxas report: stack frames over 1 KiB (per-thread arrays by design; see each kernel's comment):"
  echo "$big_stack"
fi
echo "ptxas report: $(($(wc -l < "$out") - 2)) kernel builds, $(grep -c . <<< "$spills" || true) spilling -> $out"
exit $status
