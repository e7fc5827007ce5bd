#!/usr/bin/env bash
# All tests: install, build with warnings as errors, fuzz the spec loader with libFuzzer for
# MOERUN_FUZZ_SECONDS (default 60; 0 skips it), then run CTest (unit, CLI, fuzz-corpus
# replay; GPU tests report "Skipped" without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DMOERUN_WERROR=ON

# Formatting is part of the build: .clang-format (Google base) over every C++/CUDA source.
git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

fuzz_seconds=${MOERUN_FUZZ_SECONDS:-60}
if [[ "$fuzz_seconds" -gt 0 ]]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DMOERUN_FUZZ=ON \
    -DMOERUN_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz -j "${MOERUN_JOBS:-2}" --target spec_loader_fuzz
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  cp tests/fuzz/corpus/* configs/*.yaml "$corpus"/
  # New crashes land in build-fuzz/ as crash-*/timeout-* files; add them to the corpus.
  (cd build-fuzz && ./bin/spec_loader_fuzz -max_total_time="$fuzz_seconds" -max_len=4096 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12)
  echo "fuzz: spec loader survived ${fuzz_seconds}s of libFuzzer"
fi

(cd build && ctest --output-on-failure --timeout 300 -j "${MOERUN_JOBS:-2}")
