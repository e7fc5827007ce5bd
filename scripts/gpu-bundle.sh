#!/usr/bin/env bash
# Packs the GPU checks into one folder for a GPU machine that cannot build moerun (no Debian
# packages, no network): the test, benchmark and moerun binaries from a CUDA build (Hopper
# code included), stripped; the shared libraries they load that are neither the C runtime's
# nor CUDA's (the GPU machine has its own cudart, cuBLAS and NCCL, matching its driver);
# and the corpus the training checks read, as OUT_DIR/moerun-gpu.tar.xz (about 16 MB).
# `tests/gpu/run.sh --bundle OUT_DIR` runs it there.
# Usage: scripts/gpu-bundle.sh [BUILD_DIR] [OUT_DIR]   (defaults: build, .gpu-bundle)
# BUILD_DIR is configured with MOERUN_CUDA=ON when it has no build yet.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-.gpu-bundle}
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOERUN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
fi
grep -q 'CMAKE_CUDA_ARCHITECTURES:STRING=.*90' "$build/CMakeCache.txt" || {
  echo "gpu-bundle: $build is not a CUDA build for sm_90 (configure it with -DMOERUN_CUDA=ON)" >&2
  exit 2
}
binaries=(gpu_tests nccl_tests moerun-bench moerun moerun-train-gpu moerun-worker
  moerun-coordinator)
cmake --build "$build" -j "$(nproc)" --target "${binaries[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/corpus"
for b in "${binaries[@]}"; do strip --strip-debug -o "$stage/bin/$b" "$build/bin/$b"; done
# The C runtime and CUDA's libraries come from the GPU machine.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libresolv\.|libgcc_s\.|libstdc\+\+\.|libcuda\.|libcudart\.|libcublas|libcurand\.|libnccl\.)'
for b in "$stage"/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ $name =~ $skip ]] || cp -L "$path" "$stage/lib/$name"
  done
cp -r /usr/share/games/fortunes "$stage/corpus/"
# One compressed file: OpenBLAS alone is 36 MB unpacked.
rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" -cJf "$out/moerun-gpu.tar.xz" bin lib corpus
echo "gpu-bundle: $out/moerun-gpu.tar.xz, $(du -h "$out/moerun-gpu.tar.xz" | cut -f1)" \
  "($(ls "$stage/bin" | wc -l) programs, $(ls "$stage/lib" | wc -l) libraries, the fortunes corpus)"
