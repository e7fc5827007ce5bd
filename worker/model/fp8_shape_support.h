// Whether a model's fp8 GEMMs fit cuBLASLt's block-scaled fp8 kernels on the GPU
// (docs/architecture.md §4): every token count and feature size a multiple of 16, and
// routed_experts a multiple of 4 so that the fp32 gradients after each router bias stay 16-byte
// aligned. Host code, no CUDA: the trainer, the GPU model and the CLI (before a job is submitted)
// ask the same question.
#pragma once

#include <cstdint>

#include "common/job_spec.h"
#include "common/status.h"

namespace moerun::model {

// OK, or Unimplemented naming every size that breaks the rule; `tokens` per forward.
Status Fp8ShapeSupport(const ModelSpec& spec, int64_t tokens);

// The widest input or output of the attention projections: heads x head dim for MHA; for MLA
// the largest of q_lora_rank, kv_lora_rank + qk_rope_head_dim and the heads' q, kv and output
// widths.
int64_t AttentionWidth(const ModelSpec& spec);

}  // namespace moerun::model
