// JobPlan: what a job will cost before it runs — `moerun plan`.
//
// Parameter counts are exact (from model_tensors.h). Memory and FLOPs are estimates whose
// formulas docs/plan.md states:
//  * weights: fp32 master copy (4 B/param) plus a working copy in the GEMM precision
//    (bf16: 2 B; fp8: 1 B for the decoder's linear weights, 2 B for everything else);
//    gradients fp32 (4 B); AdamW moments fp32 (8 B).
//  * activations: the tensors a layer keeps for backward, per token (docs/plan.md lists
//    them; no recomputation), with the attention matrix materialized on the CPU backend and
//    fused on CUDA, in fp32 (fp32 mode) or bf16 (bf16/fp8 modes), times the micro-batches in flight
//    on that stage (gpipe: all; 1f1b: pipeline - stage; dualpipe: pipeline + 1).
//  * training FLOPs per token: 6 x (active parameters - embedding) plus causal attention
//    3 x layers x heads x seq_len x (qk_head_dim + v_head_dim); with multi-token prediction,
//    per module 6 x (its active parameters + the head it shares) plus one layer's attention.
//  * inference KV cache per token, over all layers: MHA keeps every head's key and value,
//    heads x (qk_head_dim + v_head_dim); MLA keeps the compressed latent and the one shared
//    RoPE key, kv_lora_rank + qk_rope_head_dim (the up-projections are applied on reading).
// Pure functions of a valid spec; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "common/job_spec.h"
#include "common/model_tensors.h"
#include "common/placement.h"

namespace moerun {

struct MemoryEstimate {
  double weights_bytes = 0;
  double grads_bytes = 0;
  double optimizer_bytes = 0;
  double activation_bytes = 0;
  double total_bytes() const {
    return weights_bytes + grads_bytes + optimizer_bytes + activation_bytes;
  }
};

struct StagePlan {
  StageLayout layout;
  int64_t params_per_rank = 0;  // parameters one rank of this stage holds
  int64_t micro_batches_in_flight = 0;
  MemoryEstimate memory;  // per rank (device) of this stage
};

struct JobPlan {
  int64_t world_size = 0;
  int64_t micro_batch_sequences = 0;  // sequences per micro-batch on one replica
  int64_t tokens_per_step = 0;        // global_batch x seq_len
  ParameterCounts params;
  std::vector<StagePlan> stages;
  // Values cached per token for inference, all layers: this attention's, and what MHA of the
  // same heads and head sizes would need (equal for an MHA job).
  int64_t kv_cache_values_per_token = 0;
  int64_t mha_kv_cache_values_per_token = 0;
  double dense_flops_per_token = 0;      // 6 x (active - embedding)
  double attention_flops_per_token = 0;  // causal score and value products, fwd + bwd
  double mtp_flops_per_token = 0;        // the multi-token prediction modules, fwd + bwd
  double flops_per_token() const {
    return dense_flops_per_token + attention_flops_per_token + mtp_flops_per_token;
  }
  double flops_per_step() const { return flops_per_token() * static_cast<double>(tokens_per_step); }
  double max_device_bytes() const;
};

JobPlan MakeJobPlan(const JobSpec& spec);

struct RunCost {
  double total_flops = 0;
  double gpu_hours = 0;
  double days = 0;  // wall-clock on world_size devices
};

// Cost of training on `tokens` tokens at `mfu` of `peak_tflops` per device.
RunCost EstimateRunCost(const JobPlan& plan, double peak_tflops, double mfu, double tokens);

}  // namespace moerun
