#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU (Hopper: sm_90).
#   tests/gpu/run.sh                build here for sm_90 (Debian 12 + CUDA), then check
#   tests/gpu/run.sh --bundle DIR   check with the binaries scripts/gpu-bundle.sh packed into
#                                   DIR/moerun-gpu.tar.xz (a GPU machine without moerun's
#                                   build dependencies)
#   ... --log FILE                  also write everything printed to FILE (the figures for
#                                   docs/performance.md, whole)
# The checks, in order (exit non-zero if any fails; every step runs):
#  1. gpu_tests: every CUDA op against its CPU twin (fp32, bf16; the fp8 quantizers bit for
#     bit and the block-scaled cuBLASLt GEMMs against the CPU's fp8 linear layer), the whole
#     model against the CPU model (MHA; MLA with q_a/q_b and with q_proj; MLA with two MTP
#     modules: both losses and every gradient), 1-GPU training (fixed batch), and `moerun train` on the
#     GPU: loss against the CPU trainer, falling loss, resume from a checkpoint bit for bit.
#     It ends with the table: op, precision, max relative error, bound, ms, GB/s and TFLOP/s,
#     each also as a share of the GPU's peak (theoretical memory bandwidth; cuBLAS's own
#     8192^3 bf16 and 4096^3 fp32 GEMM rates, measured just before).
#  2. nccl_tests: the NCCL communicator (a world of one GPU).
#  3. Benchmarks (JSON lines): cuBLAS GEMM peaks in bf16 and fp32, the fp8 block-scaled GEMM
#     next to bf16, and the MoE layer's forward + backward at DeepSeek-like shapes (bf16, and
#     its experts in fp8) as a fraction of the bf16 peak.
#  4. End to end: `moerun local configs/single-gpu.yaml` (coordinator, daemon, one trainer
#     on the GPU) for 100 steps; the loss must fall.
#  5. Parallel training on the GPU: train-fast's model as pipeline 2, as data 2 x expert 2,
#     and as pipeline 2 x data 2 x expert 2 (`moerun launch`: 2-4 trainers sharing the GPU,
#     4 micro-batches in 1F1B), each against the same job in one process, 30 steps in fp32:
#     every step's loss and both held-out losses within 1e-4.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bundle=""
while (($#)); do
  case "$1" in
    --bundle)
      archive=${2:?--bundle needs the folder scripts/gpu-bundle.sh wrote}/moerun-gpu.tar.xz
      bundle=$(mktemp -d /tmp/moerun-bundle.XXXXXX)
      tar -C "$bundle" -xJf "$archive" || { echo "run.sh: cannot unpack $archive" >&2; exit 1; }
      shift 2
      ;;
    --log)
      exec > >(tee -a "${2:?--log needs a file}") 2>&1
      shift 2
      ;;
    *)
      echo "run.sh: unknown argument $1 (--bundle DIR, --log FILE)" >&2
      exit 2
      ;;
  esac
done
echo "==== moerun GPU checks, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
corpus=/usr/share/games/fortunes
if [[ -n "$bundle" ]]; then
  bin=$bundle/bin
  corpus=$bundle/corpus/fortunes
  # CUDA's libraries from this machine: the toolkit's, or the ones Python packages carry.
  libs=$bundle/lib
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(find /usr /opt -type f \( -name 'libnccl.so.2*' -o -name 'libcublas.so.13*' \
      -o -name 'libcurand.so.10*' -o -name 'libcudart.so.13*' \) -print 2>/dev/null |
      xargs -r -n1 dirname | sort -u); do
    [[ -d "$d" ]] && libs=$libs:$d
  done
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export MOERUN_SOURCE_DIR=$root MOERUN_TEST_CORPUS=$corpus
  missing=$(for b in "$bin"/*; do ldd "$b" | grep 'not found'; done | sort -u)
  if [[ -n "$missing" ]]; then
    echo "run.sh: libraries not found on this machine:" >&2
    echo "$missing" >&2
    exit 1
  fi
else
  scripts/install-deps.sh
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOERUN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null || exit 1
  cmake --build build-gpu -j "$(nproc)" --target gpu_tests nccl_tests moerun-bench moerun \
    moerun-train-gpu moerun-worker moerun-coordinator || exit 1
  bin=build-gpu/bin
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$bin/moerun-bench" gemm-gpu --m 128 --n 128 --k 128 --reps 1 >/dev/null
if [[ $? -eq 77 ]]; then
  echo "run.sh: no usable GPU on this machine: nothing to check" >&2
  exit 77
fi
status=0
step() {
  echo "==== $*"
  "$@" || { echo "==== FAILED ($?): $*"; status=1; }
}
step "$bin/gpu_tests"
step "$bin/nccl_tests"
for precision in bf16 fp32 fp8; do
  step "$bin/moerun-bench" gemm-gpu --precision "$precision"
done
for precision in bf16 fp8; do
  step "$bin/moerun-bench" moe-layer-gpu --precision "$precision"
done

# End to end through the control plane: the daemon starts a trainer on device 0.
work=$(mktemp -d /tmp/moerun-gpu.XXXXXX)
sed "s#/usr/share/games/fortunes#$corpus#" configs/single-gpu.yaml >"$work/single-gpu.yaml"
step "$bin/moerun" local "$work/single-gpu.yaml" --run-dir "$work/run" --steps 100 --no-progress
loss_fell() {
  python3 - "$1" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
first, last = steps[0]["loss"], steps[-1]["loss"]
print(f"single-gpu: {len(steps)} steps, loss {first:.4f} -> {last:.4f}, "
      f"{steps[-1]['tokens_per_s']:.0f} tokens/s at the end")
sys.exit(0 if len(steps) == 100 and last < 0.7 * first else 1)
PY
}
step loss_fell "$work/run/metrics.jsonl"
# Parallel layouts on the one GPU, each against the same job in one process: the ranks share
# the device, so their groups exchange through host memory (device_communicator.h).
layout_job() {  # name pipeline data expert -> $work/<name>.yaml: train-fast on cuda, 30 steps
  python3 - "$root/tests/configs/train-fast.yaml" "$corpus" "$2" "$3" "$4" >"$work/$1.yaml" <<'PY'
import sys
path, corpus, pipeline, data, expert = sys.argv[1:]
text = open(path).read().replace("/usr/share/games/fortunes", corpus)
for old, new in [("  pipeline: 2\n", f"  pipeline: {pipeline}\n"), ("  data: 2\n", f"  data: {data}\n"),
                 ("  expert: 2\n", f"  expert: {expert}\n"),
                 ("  micro_batches: 2\n", "  micro_batches: 4\n"), ("  steps: 40\n", "  steps: 30\n"),
                 ("resources:\n  workers: 2\n  devices_per_worker: 2\n",
                  f"resources:\n  backend: cuda\n  workers: {int(pipeline) * int(data)}\n"
                  "  devices_per_worker: 1\n")]:
    assert old in text, old
    text = text.replace(old, new)
print(text, end="")
PY
}
same_losses() {  # every step's loss, and the held-out loss where evaluated
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
name = sys.argv[1]
one, many = ([json.loads(l) for l in open(f) if l.strip()] for f in sys.argv[2:4])
pairs = [(a["loss"], b["loss"]) for a, b in zip(one, many)]
pairs += [(a["val_loss"], b["val_loss"]) for a, b in zip(one, many) if "val_loss" in a]
evals = sum("val_loss" in a and "val_loss" in b for a, b in zip(one, many))
worst = max((abs(a - b) / abs(a) for a, b in pairs), default=float("inf"))
print(f"{name} on one GPU vs one process: {len(many)} steps, {evals} evaluations, worst relative "
      f"difference {worst:.2e} (bound 1e-4), loss {many[0]['loss']:.4f} -> {many[-1]['loss']:.4f}")
sys.exit(0 if len(one) == len(many) == 30 and evals == 2 and worst < 1e-4 else 1)
PY
}
for layout in "pipeline2 2 1 1" "expert2 1 2 2" "pipeline2-data2-expert2 2 2 2"; do
  read -r name pipeline data expert <<<"$layout"
  layout_job "$name" "$pipeline" "$data" "$expert"
  step "$bin/moerun" train "$work/$name.yaml" --run-dir "$work/$name-one" --no-progress
  step "$bin/moerun" launch --nproc $((pipeline * data)) "$work/$name.yaml" \
    --run-dir "$work/$name-many" --no-progress --data-plane-timeout-ms 60000
  step same_losses "$name" "$work/$name-one/metrics.jsonl" "$work/$name-many/metrics.jsonl"
done
exit "$status"
