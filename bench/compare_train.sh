#!/usr/bin/env bash
# A job's model trained at world 1 side by side, in one run: `moerun train` in fp32, bf16 and
# fp8 (the job with train.precision replaced; --profile-ops adds its CPU time by operation), and
# the same model trained eagerly in PyTorch (bench/torch_train_model.py) in fp32 and under bf16
# autocast. One thread each. JSON lines on stdout; tokens/s over the steps after the first 5.
# Usage: bench/compare_train.sh [JOB.yaml] [STEPS] [ROUNDS]   (default: the default job, 40, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-configs/tiny-cpu.yaml} steps=${2:-40} rounds=${3:-1}
bin=${MOERUN_BUILD_DIR:-build}/bin/moerun
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for p in fp32 bf16 fp8; do
  sed -E "s/^(  precision: )[a-z0-9]+/\1$p/" "$job" > "$work/job-$p.yaml"
  grep -q "^  precision: $p" "$work/job-$p.yaml" || { echo "no train.precision line in $job" >&2; exit 2; }
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
for _ in $(seq 1 "$rounds"); do
  for p in fp32 bf16 fp8; do
    dir="$work/run-$p"
    rm -rf "$dir"
    "$bin" train "$work/job-$p.yaml" --run-dir "$dir" --steps "$steps" --no-progress --profile-ops \
      >/dev/null 2>&1
    python3 - "$dir" "$p" "$cpu" <<'PY'
import json, sys
run, precision, cpu = sys.argv[1:]
rows = [json.loads(l) for l in open(run + "/metrics.jsonl") if l.strip()][5:]
tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
seconds = sum(r["step_time_s"] for r in rows)
ops = json.load(open(run + "/op_profile.json"))["ops"]
print(json.dumps({"bench": "train", "impl": "moerun", "precision": precision, "steps": len(rows),
                  "tokens_per_s": round(tokens / seconds, 1), "final_loss": rows[-1]["loss"],
                  "profile_s": {k: round(v["seconds"], 3) for k, v in
                                sorted(ops.items(), key=lambda kv: -kv[1]["seconds"])},
                  "cpu": cpu}))
PY
  done
  for p in fp32 bf16; do
    /usr/bin/python3 bench/torch_train_model.py "$job" --steps "$steps" --precision "$p"
  done
done
