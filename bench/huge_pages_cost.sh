#!/usr/bin/env bash
# What trainers' transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which worker
# daemons set for their trainers: common/subprocess.h) do to the default job under
# `moerun local`: the first step and the median step time with huge pages off (hugetlb=0) and
# on, interleaved over ROUNDS rounds in one run.
# Prints JSON lines. Usage: bench/huge_pages_cost.sh [JOB.yaml] [STEPS] [ROUNDS]
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
    /usr/bin/python3 - "$run" "$thp" "$round" <<'PY'
import json, re, statistics, sys
run, thp, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = [json.loads(l) for l in open(run + "/metrics.jsonl") if l.strip()]
times = [l["step_time_s"] for l in lines[5:]]  # past the first steps' warm-up
started = re.search(r"started in (\d+) ms", open(run + "/train.log").read())
print(json.dumps({"bench": "huge-pages-cost", "round": rnd, "malloc_hugetlb": thp,
                  "steps": len(lines), "started_ms": int(started.group(1)) if started else None,
                  "first_step_ms": round(1000 * lines[0]["step_time_s"], 1),
                  "step_time_ms_median": round(1000 * statistics.median(times), 2),
                  "step_time_ms_mean": round(1000 * statistics.mean(times), 2)}))
PY
  done
done
