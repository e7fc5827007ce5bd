#!/usr/bin/env bash
# All tests: install, build with warnings as errors, check formatting, fuzz the spec loader
# for MOERUN_FUZZ_SECONDS (default 60; 0 skips it), the message decoder and the HTTP request
# path for half that each,
# then run CTest (unit, CLI, training, data plane, parallel, control plane, chaos, the
# dashboard in chromium, a Prometheus scrape, `status --watch` in tmux, fuzz-corpus replays;
# GPU tests report "Skipped" without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --for-tests
# MOERUN_CUDA=ON (CI) makes a missing nvcc, or a CUDA source that does not compile, fail the
# build; the default AUTO builds the kernels wherever nvcc exists.
scripts/build.sh -DMOERUN_WERROR=ON -DMOERUN_CUDA="${MOERUN_CUDA:-AUTO}"

# Formatting is part of the build: .clang-format (Google base) over every C++/CUDA source.
git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

fuzz_seconds=${MOERUN_FUZZ_SECONDS:-60}
if [[ "$fuzz_seconds" -gt 0 ]]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DMOERUN_FUZZ=ON \
    -DMOERUN_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz -j "${MOERUN_JOBS:-2}" --target spec_loader_fuzz message_decoder_fuzz \
    http_request_fuzz
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  # New crashes land in build-fuzz/ as crash-*/timeout-* files; add them to the corpus.
  fuzz() {  # target, seconds, seed files...
    local target=$1 seconds=$2
    shift 2
    rm -rf "${corpus:?}"/*
    cp "$@" "$corpus"/
    (cd build-fuzz && ./bin/"$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12)
    echo "fuzz: $target survived ${seconds}s of libFuzzer"
  }
  fuzz spec_loader_fuzz "$fuzz_seconds" tests/fuzz/corpus/* configs/*.yaml
  fuzz message_decoder_fuzz "$((fuzz_seconds / 2))" tests/fuzz/messages/*
  fuzz http_request_fuzz "$((fuzz_seconds / 2))" tests/fuzz/http/*
fi

(cd build && ctest --output-on-failure --timeout 300 -j "${MOERUN_JOBS:-2}")
