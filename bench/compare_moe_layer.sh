#!/usr/bin/env bash
# The MoE layer side by side, in one run: the GEMM ceilings (sgemm: OpenBLAS, oneDNN fp32 and
# bf16), moerun's layer, and the same layer in PyTorch (Debian's python3-torch). JSON lines on
# stdout.
# Usage: bench/compare_moe_layer.sh [moe-layer flags]   (defaults: the issue's shape, 1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOERUN_BUILD_DIR:-build}/bin/moerun-bench
args=(--tokens 4096 --d-model 512 --experts 16 --top-k 4 --expert-hidden 256 --shared 1 --threads 1 "$@")
"$bin" sgemm --m 2048 --n 2048 --k 2048 --threads 1
"$bin" sgemm --m 1024 --n 256 --k 512 --threads 1   # one expert's GEMM at this shape
"$bin" moe-layer "${args[@]}"
/usr/bin/python3 bench/torch_moe_layer.py "${args[@]}"
