#!/usr/bin/env bash
# What trainers' transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which worker
# daemons set for their trainers: common/subprocess.h) do to the default job under
# `moerun local`: the start, the first step and the step time with huge pages off (hugetlb=0)
# and on, interleaved over ROUNDS rounds in one run.
# Prints JSON lines (bench/local_run_summary.py).
# Usage: bench/huge_pages_cost.sh [JOB.yaml] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-configs/tiny-cpu.yaml}
steps=${2:-200}
rounds=${3:-2}
work=$(mktemp -d /tmp/moerun-thp-cost-XXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$rounds"); do
  for thp in 0 1; do
    run="$work/run-$round-$thp"
    GLIBC_TUNABLES="glibc.malloc.hugetlb=$thp" build/bin/moerun local "$job" --run-dir "$run" \
      --steps "$steps" --no-progress > "$run.out" 2>&1 || { cat "$run.out" >&2; exit 1; }
    bench/local_run_summary.py "$run" huge-pages-cost "round=$round" "malloc_hugetlb=$thp"
  done
done
