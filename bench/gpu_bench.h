// GPU measurements (builds with CUDA; on a machine without a GPU they print why and exit 77).
//   moerun-bench gemm-gpu [--m M --n N --k K] [--precision bf16|fp32|fp8] [--reps R]
//       cuBLAS GEMM, fp32 compute: the measured peak the MoE layer is compared against.
//       fp8: cuBLASLt's block-scaled E4M3 GEMM (1x128 activation tiles, 128x128 weight
//       blocks; kernels/cuda/fp8_gemm.cuh) with and without quantizing the activations, next
//       to bf16's cuBLAS GEMM at the same shape in the same run.
//   moerun-bench moe-layer-gpu [--tokens T --d-model D --experts E --top-k K
//       --expert-hidden H --shared S] [--precision bf16|fp32|fp8] [--reps R]
//       One MoE layer forward + backward on the GPU (worker/model/cuda/moe_layer_cuda.h) at
//       DeepSeek-like shapes by default (D=7168, expert hidden 2048, 32 local experts, top-8,
//       8192 tokens), and its GEMM TFLOP/s as a fraction of gemm-gpu's peak at the same
//       precision, measured in the same run (fp8: the experts in fp8, against bf16's peak).
// Times are medians of --reps runs after one warm-up, by CUDA events.
#pragma once

#include <cstdint>
#include <string>

namespace moerun::bench {

struct GemmGpuArgs {
  int64_t m = 8192, n = 8192, k = 8192;
  std::string precision = "bf16";
  int reps = 10;
};

struct MoeGpuArgs {
  int64_t tokens = 8192, d = 7168, experts = 32, top_k = 8, hidden = 2048, shared = 0;
  std::string precision = "bf16";
  int reps = 10;
};

int RunGemmGpu(const GemmGpuArgs& a);
int RunMoeLayerGpu(const MoeGpuArgs& a);

}  // namespace moerun::bench
