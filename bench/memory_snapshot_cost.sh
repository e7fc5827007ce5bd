#!/usr/bin/env bash
# What memory snapshots (checkpoint.memory_interval_steps) cost the default job under
# `moerun local` (daemons, 4 ranks): step time with snapshots off and every step, interleaved
# over ROUNDS rounds in one run, and the time the snapshot threads spent writing.
# Prints JSON lines. Usage: bench/memory_snapshot_cost.sh [JOB.yaml] [STEPS] [ROUNDS]
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
    /usr/bin/python3 - "$run" "$every" "$round" <<'PY'
import json, statistics, sys
run, every, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = [json.loads(l) for l in open(run + "/metrics.jsonl") if l.strip()]
times = [l["step_time_s"] for l in lines[5:]]  # past the first steps' warm-up
toks = [l["tokens_per_s"] for l in lines[5:]]
print(json.dumps({"bench": "memory-snapshot-cost", "round": rnd, "memory_interval_steps": every,
                  "steps": len(lines), "step_time_ms_median": round(1000 * statistics.median(times), 2),
                  "step_time_ms_mean": round(1000 * statistics.mean(times), 2),
                  "tokens_per_s_median": round(statistics.median(toks))}))
PY
  done
done
