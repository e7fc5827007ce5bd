#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU (Hopper: sm_90): build
# with CUDA for sm_90 only, then run every GPU test (CUDA kernels against their CPU twins,
# the NCCL communicator). Prints CTest's table; exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOERUN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-gpu -j "$(nproc)" --target gpu_tests nccl_tests
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
(cd build-gpu && ctest --output-on-failure -R 'gpu_tests|nccl_tests')
