#include "worker/model/fp8_shape_support.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "worker/model/model_stage.h"

namespace moerun::model {

int64_t AttentionWidth(const ModelSpec& s) {
  if (s.attention == AttentionKind::kMha) return s.n_heads * (s.d_model / s.n_heads);
  return std::max({s.q_lora_rank, s.kv_lora_rank + s.qk_rope_head_dim,
                   s.n_heads * (s.qk_nope_head_dim + s.qk_rope_head_dim),
                   s.n_heads * (s.qk_nope_head_dim + s.v_head_dim), s.n_heads * s.v_head_dim});
}

Status Fp8ShapeSupport(const ModelSpec& spec, int64_t tokens) {
  const MoeShape shape = MoeShapeFor(spec);
  const int64_t hh = spec.n_heads * (spec.d_model / spec.n_heads);
  std::vector<std::pair<const char*, int64_t>> sizes = {
      {"tokens per micro-batch", tokens},
      {"model.d_model", spec.d_model},
      {"model.ffn_hidden", spec.dense_layers > 0 ? spec.ffn_hidden : 16},
      {"model.moe.expert_hidden", spec.moe_layers() > 0 ? shape.expert_hidden : 16},
      {"shared_experts x expert_hidden", shape.shared_hidden}};
  if (spec.attention == AttentionKind::kMha) {
    sizes.push_back({"n_heads x head dim", hh});
  } else {
    // MLA's projections, and its norms' sizes (they shift the flat buffer's later tensors).
    const int64_t h = spec.n_heads;
    sizes.push_back({"model.q_lora_rank", spec.q_lora_rank > 0 ? spec.q_lora_rank : 16});
    sizes.push_back({"model.kv_lora_rank", spec.kv_lora_rank});
    sizes.push_back({"kv_lora_rank + qk_rope_head_dim", spec.kv_lora_rank + spec.qk_rope_head_dim});
    sizes.push_back({"n_heads x (qk_nope_head_dim + qk_rope_head_dim)",
                     h * (spec.qk_nope_head_dim + spec.qk_rope_head_dim)});
    sizes.push_back({"n_heads x (qk_nope_head_dim + v_head_dim)",
                     h * (spec.qk_nope_head_dim + spec.v_head_dim)});
    sizes.push_back({"n_heads x v_head_dim", h * spec.v_head_dim});
  }
  // Multi-token prediction module k runs seq_len − k positions of each sequence.
  for (int64_t k = 1; k <= spec.mtp.depth && spec.seq_len > 0; ++k) {
    sizes.push_back({"tokens of an MTP module (sequences x (seq_len - k))",
                     tokens / spec.seq_len * (spec.seq_len - k)});
  }
  std::string bad;
  for (auto [what, size] : sizes) {
    if (size % 16 != 0) {
      bad += (bad.empty() ? "" : ", ") + std::string(what) + " " + std::to_string(size);
    }
  }
  // Each MoE layer's [E] router bias sits before its experts in the flat fp32 gradient
  // buffer: the tensors after it stay 16-byte aligned (as cuBLASLt needs) only if 4 divides E.
  if (spec.moe_layers() > 0 && spec.moe.routed_experts % 4 != 0) {
    bad += (bad.empty() ? "" : ", ") + std::string("model.moe.routed_experts ") +
           std::to_string(spec.moe.routed_experts) + " (a multiple of 4 here)";
  }
  if (bad.empty()) return Status::OK();
  return Status::Unimplemented("fp8 on the GPU needs multiples of 16 (cuBLASLt's fp8 GEMMs), not " +
                               bad);
}

}  // namespace moerun::model
