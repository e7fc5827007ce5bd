#include "worker/model/fp8_shape_support.h"

#include <string>
#include <utility>

#include "worker/model/model_stage.h"

namespace moerun::model {

Status Fp8ShapeSupport(const ModelSpec& spec, int64_t tokens) {
  const MoeShape shape = MoeShapeFor(spec);
  const int64_t hh = spec.n_heads * (spec.d_model / spec.n_heads);
  std::string bad;
  for (auto [what, size] :
       {std::pair<const char*, int64_t>{"tokens per micro-batch", tokens},
        {"model.d_model", spec.d_model},
        {"n_heads x head dim", hh},
        {"model.ffn_hidden", spec.dense_layers > 0 ? spec.ffn_hidden : 16},
        {"model.moe.expert_hidden", spec.moe_layers() > 0 ? shape.expert_hidden : 16},
        {"shared_experts x expert_hidden", shape.shared_hidden}}) {
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
