#!/usr/bin/env bash
# Installs missing Debian packages, then configures and builds moerun into build/ (binaries
# in build/bin/). Environment: MOERUN_JOBS (default 2), MOERUN_BUILD_DIR (default build),
# extra CMake arguments as script arguments, e.g. scripts/build.sh -DMOERUN_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build_dir=${MOERUN_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build_dir" -j "${MOERUN_JOBS:-2}"
