#!/usr/bin/env bash
# One MLA attention half side by side, in one run: the GEMM ceilings (sgemm: OpenBLAS, oneDNN
# fp32 and bf16), moerun's layer (moerun-bench mla) and the same layer in PyTorch (Debian's
# python3-torch), alternating A/B/A/B so drift on a shared machine hits both. JSON lines on stdout.
# Usage: bench/compare_mla.sh [rounds] [mla flags]   (defaults: 2 rounds, the issue's shape,
#        one thread)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOERUN_BUILD_DIR:-build}/bin/moerun-bench
rounds=${1:-2}
shift || true
args=(--tokens 2048 --seq 512 --d-model 1024 --heads 16 --q-lora 384 --kv-lora 128 --nope 64
      --rope 32 --v 64 --threads 1 "$@")
grep -o -m1 'avx512[a-z_0-9]*\|avx2\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' >&2 || true
echo >&2
"$bin" sgemm --m 2048 --n 2048 --k 2048 --threads 1
for ((r = 0; r < rounds; ++r)); do
  "$bin" mla "${args[@]}"
  /usr/bin/python3 bench/torch_mla_layer.py "${args[@]}"
done
