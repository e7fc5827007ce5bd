// moerun-bench mla: the attention half of one decoder layer with multi-head latent attention
// (input RMSNorm, MLA as worker/model/mla_block.h computes it, the residual), forward and
// backward on the CPU kernels, in fp32. bench/torch_mla_layer.py is the same layer in PyTorch,
// with the same flags and the same JSON keys; bench/compare_mla.sh runs both side by side.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>

namespace moerun::bench {

struct MlaBenchArgs {
  int64_t tokens = 2048, seq = 512, d_model = 1024, heads = 16;
  int64_t q_lora = 384, kv_lora = 128, nope = 64, rope = 32, v = 64;
  int threads = 1, reps = 5;
};

void AddMlaBenchOptions(CLI::App* app, MlaBenchArgs* args);

// Prints one JSON line: median seconds of forward + backward, tokens/s, and the GEMM work
// done per second (causal attention counts the T(T+1)/2 scores it needs).
void RunMlaBench(const MlaBenchArgs& args);

}  // namespace moerun::bench
