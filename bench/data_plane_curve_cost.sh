#!/usr/bin/env bash
# What the CURVE-encrypted data plane costs a training job: the default job under
# `moerun local` with plain sockets (--insecure-data-plane) and with CURVE (the default),
# interleaved over ROUNDS rounds in one run. Prints JSON lines (bench/local_run_summary.py).
# Usage: bench/data_plane_curve_cost.sh [JOB.yaml] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-configs/tiny-cpu.yaml}
steps=${2:-200}
rounds=${3:-2}
work=$(mktemp -d /tmp/moerun-curve-cost-XXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$rounds"); do
  for curve in 0 1; do
    run="$work/run-$round-$curve"
    flag=()
    [[ "$curve" == 0 ]] && flag=(--insecure-data-plane)
    build/bin/moerun local "$job" --run-dir "$run" --steps "$steps" --no-progress "${flag[@]}" \
      > "$run.out" 2>&1 || { cat "$run.out" >&2; exit 1; }
    bench/local_run_summary.py "$run" data-plane-curve-cost "round=$round" "curve=$curve"
  done
done
