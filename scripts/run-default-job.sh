#!/usr/bin/env bash
# The default job end to end on this machine: install, build, then check and plan
# configs/tiny-cpu.yaml. (Training arrives with the trainer; this script will run it then.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
job=${1:-configs/tiny-cpu.yaml}
build/bin/moerun validate "$job"
build/bin/moerun plan "$job"
