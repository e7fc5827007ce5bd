#!/usr/bin/env bash
# Fault recovery side by side in one run (issue 18's targets): moerun's default job under
# `moerun local` (`moerun-bench recovery`) and torchrun over a 4-process gloo job
# (bench/torchrun_recovery.py), each with one trainer SIGKILLed, then SIGSTOPped, at step 60
# of 120. Prints both benches' JSON lines; the medians are the lines with "_median" fields.
# torchrun never recovers from a stopped worker (no watchdog: gloo waits 30 min), so its stop
# trial is run once, capped at 90 s.
# Usage: bench/compare_recovery.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-3}
lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print "{\"cpu\": \"" $2 "\"}"}'
build/bin/moerun-bench recovery --trials "$trials" --faults kill,stop
/usr/bin/python3 bench/torchrun_recovery.py --fault kill --trials "$trials"
/usr/bin/python3 bench/torchrun_recovery.py --fault stop --trials 1
