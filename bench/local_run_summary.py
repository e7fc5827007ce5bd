#!/usr/bin/python3
"""One JSON line for a finished `moerun local` run, for the benches that compare such runs
(bench/memory_snapshot_cost.sh, bench/huge_pages_cost.sh): the median and mean step time past
the first 5 steps' warm-up, the median tokens/s, the first step, what rank 0's start cost
("started in N ms" in its train.log) and, when it wrote memory snapshots, what each cost it
("memory snapshots: N written, X ms each").

Usage: bench/local_run_summary.py RUN_DIR BENCH [KEY=INTEGER ...]   (the keys label the line)
"""
import json
import re
import statistics
import sys

run, bench = sys.argv[1], sys.argv[2]
line = {"bench": bench}
for label in sys.argv[3:]:
    key, value = label.split("=", 1)
    line[key] = int(value)
rows = [json.loads(l) for l in open(run + "/metrics.jsonl") if l.strip()]
times = [r["step_time_s"] for r in rows[5:]]  # past the first steps' warm-up
log = open(run + "/train.log").read()
started = re.search(r"started in (\d+) ms", log)
snapshots = re.search(r"memory snapshots: \d+ written, ([\d.]+) ms each", log)
line.update({"steps": len(rows),
             "started_ms": int(started.group(1)) if started else None,
             "first_step_ms": round(1000 * rows[0]["step_time_s"], 1),
             "step_time_ms_median": round(1000 * statistics.median(times), 2),
             "step_time_ms_mean": round(1000 * statistics.mean(times), 2),
             "tokens_per_s_median": round(statistics.median(r["tokens_per_s"] for r in rows[5:])),
             "memory_snapshot_ms": float(snapshots.group(1)) if snapshots else None})
print(json.dumps(line))
