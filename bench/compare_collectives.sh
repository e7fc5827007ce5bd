#!/usr/bin/env bash
# The CPU data plane side by side with torch.distributed's gloo backend, in one run: over
# IPC, TCP, and TCP with CURVE (what daemon-started trainers use unless the coordinator runs
# with --insecure-data-plane).
# Usage: bench/compare_collectives.sh [NPROC] [BYTES]   (defaults: 2, 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOERUN_BUILD_DIR:-build}/bin/moerun-bench
n=${1:-2}
bytes=${2:-67108864}
for op in allreduce alltoall; do
  "$bin" "$op" --nproc "$n" --bytes "$bytes" --transport ipc
  "$bin" "$op" --nproc "$n" --bytes "$bytes" --transport tcp
  "$bin" "$op" --nproc "$n" --bytes "$bytes" --transport tcp --curve
  /usr/bin/python3 bench/torch_allreduce_gloo.py "$op" --nproc "$n" --bytes "$bytes"
done
