#include "common/job_plan.h"

#include <algorithm>

namespace moerun {
namespace {

// Bytes of the low-precision working copy of a weight, beside its fp32 master.
double WorkingCopyBytes(Precision p, const TensorInfo& t) {
  switch (p) {
    case Precision::kFp32:
      return 0;
    case Precision::kBf16:
      return 2;
    case Precision::kFp8: {
      // DeepSeek-V3 recipe: linear layers in fp8; embedding, head, gating and norms in bf16.
      const bool fp8_gemm = t.is_matrix() && t.role != TensorRole::kEmbedding &&
                            t.role != TensorRole::kHead && t.role != TensorRole::kRouter;
      return fp8_gemm ? 1 : 2;
    }
  }
  return 0;
}

// Activation elements one decoder layer keeps per token for its backward pass.
double LayerActivationElements(const ModelSpec& m, Backend backend, int64_t layer) {
  const double d = static_cast<double>(m.d_model), h = static_cast<double>(m.n_heads);
  const double qk = static_cast<double>(m.qk_head_dim()),
               v = static_cast<double>(m.v_head_dim_effective());
  const double t = static_cast<double>(m.seq_len);
  // Attention: residual input, normed input, q, k, v, output, and per head either the
  // whole softmax row (CPU: materialized) or one log-sum-exp (CUDA: fused attention).
  double e = 2 * d + h * (2 * qk + 2 * v) + h * (backend == Backend::kCpu ? t : 1.0);
  if (m.attention == AttentionKind::kMla) {
    e += static_cast<double>(m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim);
  }
  // FFN: residual input, normed input, then per MLP gate, up and silu(gate)*up.
  e += 2 * d;
  if (m.dense_layer(layer)) {
    e += 3 * static_cast<double>(m.ffn_hidden);
  } else {
    const MoeSpec& x = m.moe;
    const double eh = static_cast<double>(x.expert_hidden);
    e += static_cast<double>(x.routed_experts);           // router scores
    e += static_cast<double>(x.top_k) * (d + 3 * eh);     // dispatched input + expert
    e += 3 * eh * static_cast<double>(x.shared_experts);  // shared experts
  }
  return e;
}

}  // namespace

double JobPlan::max_device_bytes() const {
  double m = 0;
  for (const auto& s : stages) m = std::max(m, s.memory.total_bytes());
  return m;
}

JobPlan MakeJobPlan(const JobSpec& spec) {
  const ModelSpec& m = spec.model;
  const ParallelSpec& par = spec.parallel;
  Placement placement(spec);
  JobPlan plan;
  plan.world_size = placement.world_size();
  plan.micro_batch_sequences = spec.train.global_batch / (par.data * par.micro_batches);
  plan.tokens_per_step = spec.train.global_batch * m.seq_len;
  const std::vector<TensorInfo> tensors = ModelTensors(m);
  plan.params = CountParameters(m, tensors);
  const Precision prec = spec.train.precision;
  const double act_bytes = prec == Precision::kFp32 ? 4.0 : 2.0;
  const double expert_share = m.moe_layers() > 0
                                  ? static_cast<double>(placement.experts_per_rank()) /
                                        static_cast<double>(m.moe.routed_experts)
                                  : 0.0;
  const double tokens_per_micro_batch = static_cast<double>(plan.micro_batch_sequences * m.seq_len);
  plan.mha_kv_cache_values_per_token =
      m.n_layers * m.n_heads * (m.qk_head_dim() + m.v_head_dim_effective());
  plan.kv_cache_values_per_token = m.attention == AttentionKind::kMla
                                       ? m.n_layers * (m.kv_lora_rank + m.qk_rope_head_dim)
                                       : plan.mha_kv_cache_values_per_token;

  for (const StageLayout& st : placement.stages()) {
    StagePlan sp;
    sp.layout = st;
    double params = 0, copy_bytes = 0;
    for (const TensorInfo& t : tensors) {
      if (!StageHolds(m, t, st.layer_begin, st.layer_end, st.has_embedding, st.has_head)) continue;
      // Each rank holds its share of the routed experts; sums over all experts divide evenly.
      const double share = t.role == TensorRole::kRoutedExpert ? expert_share : 1.0;
      const double n = static_cast<double>(t.numel()) * share;
      params += n;
      copy_bytes += n * WorkingCopyBytes(prec, t);
    }
    sp.params_per_rank = static_cast<int64_t>(params + 0.5);
    switch (par.schedule) {
      case PipelineSchedule::kGpipe:
        sp.micro_batches_in_flight = par.micro_batches;
        break;
      case PipelineSchedule::kOneFOneB:
        sp.micro_batches_in_flight = std::min(par.micro_batches, par.pipeline - st.stage);
        break;
      case PipelineSchedule::kDualPipe:
        sp.micro_batches_in_flight = std::min(par.micro_batches, par.pipeline + 1);
        break;
    }
    double act_elems = 0;
    for (int64_t l = st.layer_begin; l < st.layer_end; ++l)
      act_elems += LayerActivationElements(m, spec.resources.backend, l);
    if (st.has_embedding) act_elems += static_cast<double>(m.d_model);
    if (st.has_head)
      act_elems += 2.0 * static_cast<double>(m.d_model) + static_cast<double>(m.vocab_size);
    // Each MTP module (with the head): its block, the embedding and hidden rows before and
    // after their norms, the concatenation, the block's output, its norm and logits.
    for (int64_t k = 1; k <= st.mtp_modules; ++k) {
      act_elems += LayerActivationElements(m, spec.resources.backend, m.n_layers + k - 1) +
                   10.0 * static_cast<double>(m.d_model) + static_cast<double>(m.vocab_size);
    }
    sp.memory.weights_bytes = 4 * params + copy_bytes;
    sp.memory.grads_bytes = 4 * params;
    sp.memory.optimizer_bytes = 8 * params;
    sp.memory.activation_bytes = act_elems * act_bytes * tokens_per_micro_batch *
                                 static_cast<double>(sp.micro_batches_in_flight);
    plan.stages.push_back(sp);
  }

  plan.dense_flops_per_token =
      6.0 * static_cast<double>(plan.params.active_per_token - plan.params.embedding);
  plan.attention_flops_per_token = 3.0 * static_cast<double>(m.n_layers) *
                                   static_cast<double>(m.n_heads) * static_cast<double>(m.seq_len) *
                                   static_cast<double>(m.qk_head_dim() + m.v_head_dim_effective());
  // Each MTP module runs its own tensors, one more block's attention and the shared head
  // (nearly every position: seq_len - k of seq_len).
  if (m.mtp.depth > 0) {
    plan.mtp_flops_per_token = 6.0 * static_cast<double>(plan.params.mtp_active_per_token +
                                                         m.mtp.depth * plan.params.head) +
                               plan.attention_flops_per_token / static_cast<double>(m.n_layers) *
                                   static_cast<double>(m.mtp.depth);
  }
  return plan;
}

RunCost EstimateRunCost(const JobPlan& plan, double peak_tflops, double mfu, double tokens) {
  RunCost c;
  c.total_flops = plan.flops_per_token() * tokens;
  const double gpu_seconds = c.total_flops / (peak_tflops * 1e12 * mfu);
  c.gpu_hours = gpu_seconds / 3600.0;
  c.days = c.gpu_hours / static_cast<double>(plan.world_size) / 24.0;
  return c;
}

}  // namespace moerun
