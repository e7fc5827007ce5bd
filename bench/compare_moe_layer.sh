#!/usr/bin/env bash
# The MoE layer side by side, in one run: the GEMM ceilings (sgemm: OpenBLAS, oneDNN fp32 and
# bf16), moerun's layer in each precision with its per-operation profile, and the same layer
# in PyTorch (Debian's python3-torch) in fp32 and under bf16 autocast. JSON lines on stdout.
# Usage: bench/compare_moe_layer.sh [--precision fp32|bf16|fp8|all] [--rounds N] [moe-layer flags]
#   (defaults: all precisions, 1 round, the issue's shape, 1 thread). Each round runs every
#   line once, in the same order, so machine noise spreads over all of them alike.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOERUN_BUILD_DIR:-build}/bin/moerun-bench
precision=all rounds=1 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --precision) precision=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$precision" in
  all) moerun=(fp32 bf16 fp8) torch=(fp32 bf16) ;;
  fp32) moerun=(fp32) torch=(fp32) ;;
  bf16) moerun=(fp32 bf16) torch=(fp32 bf16) ;;
  fp8) moerun=(fp32 fp8) torch=(fp32) ;;  # PyTorch 1.13 has no fp8 type
  *) echo "--precision: fp32, bf16, fp8 or all, not '$precision'" >&2; exit 2 ;;
esac
args=(--tokens 4096 --d-model 512 --experts 16 --top-k 4 --expert-hidden 256 --shared 1 --threads 1 "${extra[@]}")
"$bin" sgemm --m 2048 --n 2048 --k 2048 --threads 1
"$bin" sgemm --m 1024 --n 256 --k 512 --threads 1 --trans-b --reps 101   # one expert's forward GEMM
for _ in $(seq 1 "$rounds"); do
  for p in "${moerun[@]}"; do "$bin" moe-layer "${args[@]}" --precision "$p" --profile; done
  for p in "${torch[@]}"; do /usr/bin/python3 bench/torch_moe_layer.py "${args[@]}" --precision "$p"; done
done
