#!/usr/bin/env bash
# The default job end to end on this machine: install, build, check and plan
# configs/tiny-cpu.yaml, then run it through `moerun local` (a coordinator and worker daemons
# on this machine, one trainer process per rank) into runs/<job>/, and list and fingerprint its
# checkpoints. Usage: scripts/run-default-job.sh [JOB.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
job=${1:-configs/tiny-cpu.yaml}
name=$(basename "$job" .yaml)
build/bin/moerun validate "$job"
build/bin/moerun plan "$job"
# A second run of this script continues (or finds complete) the first one's run.
build/bin/moerun local "$job" --run-dir "runs/$name"
build/bin/moerun checkpoint list --run-dir "runs/$name"
build/bin/moerun checkpoint digest --run-dir "runs/$name"
