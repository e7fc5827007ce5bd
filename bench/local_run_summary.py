#!/usr/bin/python3
"""One JSON line for a finished `moerun local` run, for the benches that compare such runs
(bench/memory_snapshot_cost.sh, bench/huge_pages_cost.sh): the median and mean step time past
the first 5 steps' warm-up (a step's time excludes the snapshots written after it), the median
tokens/s, rank 0's tokens/s over its whole run (wall time, snapshots included), the first step, what rank 0's start cost
("started in N ms" in its train.log) and, when it wrote memory snapshots, what each cost it
("memory snapshots: N written, X ms each"), and each pinned snapshot with its copy to another
host ("pinned and copied to rank R: N steps, X ms each").

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
done = re.search(r"done: step \d+ .*?([\d.]+) tok/s", log)
replicas = re.search(r"pinned and copied to rank \d+: (\d+) steps, ([\d.]+) ms each", log)
line.update({"steps": len(rows),
             "started_ms": int(started.group(1)) if started else None,
             "first_step_ms": round(1000 * rows[0]["step_time_s"], 1),
             "step_time_ms_median": round(1000 * statistics.median(times), 2),
             "step_time_ms_mean": round(1000 * statistics.mean(times), 2),
             "tokens_per_s_median": round(statistics.median(r["tokens_per_s"] for r in rows[5:])),
             # over the whole run, wall time: what snapshots and copies between steps cost too
             "run_tokens_per_s": float(done.group(1)) if done else None,
             "memory_snapshot_ms": float(snapshots.group(1)) if snapshots else None,
             "replica_exchanges": int(replicas.group(1)) if replicas else 0,
             "replica_exchange_ms": float(replicas.group(2)) if replicas else None})
print(json.dumps(line))
