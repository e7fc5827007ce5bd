#!/usr/bin/env bash
# What memory snapshots (checkpoint.memory_interval_steps) cost the default job under
# `moerun local` (daemons, 4 ranks): step time with snapshots off and every step, interleaved
# over ROUNDS rounds in one run, and what each snapshot cost rank 0 by its own count.
# Prints JSON lines (bench/local_run_summary.py).
# Usage: bench/memory_snapshot_cost.sh [JOB.yaml] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-configs/tiny-cpu.yaml}
steps=${2:-200}
rounds=${3:-2}
work=$(mktemp -d /tmp/moerun-mem-cost-XXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$rounds"); do
  for every in 0 1; do
    spec="$work/job-$every.yaml"
    sed "s/^  memory_interval_steps: .*/  memory_interval_steps: $every/" "$job" > "$spec"
    grep -q "memory_interval_steps: $every" "$spec" ||
      { echo "no checkpoint.memory_interval_steps line in $job" >&2; exit 2; }
    run="$work/run-$round-$every"
    build/bin/moerun local "$spec" --run-dir "$run" --steps "$steps" --no-progress \
      > "$run.out" 2>&1 || { cat "$run.out" >&2; exit 1; }
    bench/local_run_summary.py "$run" memory-snapshot-cost "round=$round" \
      "memory_interval_steps=$every"
  done
done
