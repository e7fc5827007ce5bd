#!/usr/bin/env bash
# What memory snapshots cost the default job under `moerun local` (daemons, 4 ranks, 2 hosts):
# step time with snapshots off, every step (checkpoint.memory_interval_steps: 1) without copies
# to another host, and every step with a pinned one copied every 20 steps
# (memory_replica_interval_steps: 20), interleaved over ROUNDS rounds in one run, and what
# each snapshot and each copy cost rank 0 by its own count.
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
  for variant in "0 0" "1 0" "1 20"; do
    read -r every pin <<< "$variant"
    spec="$work/job-$every-$pin.yaml"
    sed -e "s/^  memory_interval_steps: .*/  memory_interval_steps: $every/" \
      -e "s/^  memory_replica_interval_steps: .*/  memory_replica_interval_steps: $pin/" \
      "$job" > "$spec"
    grep -q "^  memory_interval_steps: $every" "$spec" &&
      grep -q "^  memory_replica_interval_steps: $pin" "$spec" ||
      { echo "no checkpoint.memory_(replica_)interval_steps lines in $job" >&2; exit 2; }
    run="$work/run-$round-$every-$pin"
    build/bin/moerun local "$spec" --run-dir "$run" --steps "$steps" --no-progress \
      > "$run.out" 2>&1 || { cat "$run.out" >&2; exit 1; }
    bench/local_run_summary.py "$run" memory-snapshot-cost "round=$round" \
      "memory_interval_steps=$every" "memory_replica_interval_steps=$pin"
  done
done
