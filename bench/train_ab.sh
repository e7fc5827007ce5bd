#!/usr/bin/env bash
# Step time of two `moerun` builds side by side: `moerun train` of one job at world 1,
# alternating A and B runs so both see the same machine state, one JSON line per run and a
# summary line per build (median tokens/s over the runs; each run's figure is its steps'
# tokens over their wall time, the first `warmup` steps left out).
# Usage: bench/train_ab.sh A_BIN_DIR B_BIN_DIR [JOB.yaml] [STEPS] [RUNS]
set -euo pipefail
a=$1 b=$2 job=${3:-configs/tiny-cpu.yaml} steps=${4:-60} runs=${5:-3}
warmup=5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run_one() {  # label bin_dir index
  local dir="$work/$1-$3"
  "$2/moerun" train "$job" --run-dir "$dir" --steps "$steps" --no-progress >/dev/null 2>&1
  python3 - "$dir/metrics.jsonl" "$1" "$warmup" "$(cat /proc/cpuinfo | grep -m1 'model name' | cut -d: -f2 | xargs)" <<'PY'
import json, sys
path, label, warmup, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.strip()]
kept = rows[warmup:]
tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in kept)
seconds = sum(r["step_time_s"] for r in kept)
print(json.dumps({"bench": "train_ab", "build": label, "steps": len(kept),
                  "tokens_per_s": round(tokens / seconds, 1), "final_loss": rows[-1]["loss"],
                  "cpu": cpu}))
PY
}
for i in $(seq 1 "$runs"); do
  run_one A "$a" "$i"
  run_one B "$b" "$i"
done | tee "$work/lines"
python3 - "$work/lines" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for label in ("A", "B"):
    tps = [r["tokens_per_s"] for r in rows if r["build"] == label]
    print(json.dumps({"bench": "train_ab_summary", "build": label, "runs": len(tps),
                      "median_tokens_per_s": statistics.median(tps), "min": min(tps),
                      "max": max(tps)}))
PY
