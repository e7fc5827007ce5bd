#!/usr/bin/env bash
# What checkpoints cost the default job: training time per step with checkpoints off, every
# 50 steps and every 10 steps (moerun launch, 4 ranks, 100 steps), the write bandwidth the
# shard writers reached, and this disk's sequential write bandwidth (dd, fsync) beside it.
# Prints JSON lines. Usage: bench/checkpoint_cost.sh [JOB.yaml] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-configs/tiny-cpu.yaml}
steps=${2:-100}
work=$(mktemp -d /tmp/moerun-ckpt-cost-XXXX)
trap 'rm -rf "$work"' EXIT
for interval in 0 50 10; do
  sed "s/^  interval_steps: .*/  interval_steps: $interval/" "$job" > "$work/job-$interval.yaml"
  # keep data paths absolute-or-as-written: the copy lives elsewhere
  sed -i "s|^  paths: \[\([^/]\)|  paths: [$(pwd)/$(dirname "$job")/\1|" "$work/job-$interval.yaml"
  build/bin/moerun launch --nproc 4 "$work/job-$interval.yaml" --run-dir "$work/run-$interval" \
    --steps "$steps" --no-progress > /dev/null 2>&1
  /usr/bin/python3 - "$work/run-$interval" "$interval" <<'PY'
import glob, json, re, statistics, sys
run, interval = sys.argv[1], int(sys.argv[2])
times = [json.loads(l)["step_time_s"] for l in open(run + "/metrics.jsonl") if l.strip()][1:]
mib = secs = 0.0
for log in glob.glob(run + "/train*.log"):
    for m in re.finditer(r"checkpoint step \d+ written: ([0-9.]+) MiB in ([0-9.]+) s", open(log).read()):
        mib += float(m.group(1)); secs += float(m.group(2))
print(json.dumps({"bench": "checkpoint-cost", "interval_steps": interval,
                  "step_time_ms_mean": round(1000 * statistics.mean(times), 2),
                  "step_time_ms_median": round(1000 * statistics.median(times), 2),
                  "written_mib": round(mib, 1),
                  "writer_mib_per_s": round(mib / secs, 1) if secs else None}))
PY
done
dd_out=$(dd if=/dev/zero of="$work/dd.bin" bs=1M count=512 conv=fsync 2>&1 | tail -1)
echo "{\"bench\": \"checkpoint-cost\", \"disk\": \"dd bs=1M count=512 conv=fsync\", \"result\": \"$dd_out\"}"
