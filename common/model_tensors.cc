#include "common/model_tensors.h"

namespace moerun {
namespace {

void AddMlp(std::vector<TensorInfo>* out, const std::string& prefix, int64_t d, int64_t hidden,
            int64_t layer, int64_t expert, TensorRole role) {
  out->push_back({prefix + ".gate_proj.weight", {hidden, d}, layer, expert, role});
  out->push_back({prefix + ".up_proj.weight", {hidden, d}, layer, expert, role});
  out->push_back({prefix + ".down_proj.weight", {d, hidden}, layer, expert, role});
}

void AddAttention(std::vector<TensorInfo>* out, const ModelSpec& m, const std::string& p,
                  int64_t layer) {
  const int64_t d = m.d_model, h = m.n_heads;
  const auto A = TensorRole::kAttention;
  if (m.attention == AttentionKind::kMha) {
    const int64_t hd = h * (d / h);
    out->push_back({p + "q_proj.weight", {hd, d}, layer, -1, A});
    out->push_back({p + "k_proj.weight", {hd, d}, layer, -1, A});
    out->push_back({p + "v_proj.weight", {hd, d}, layer, -1, A});
    out->push_back({p + "o_proj.weight", {d, hd}, layer, -1, A});
    return;
  }
  const int64_t qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
  if (m.q_lora_rank > 0) {
    out->push_back({p + "q_a_proj.weight", {m.q_lora_rank, d}, layer, -1, A});
    out->push_back({p + "q_a_layernorm.weight", {m.q_lora_rank}, layer, -1, TensorRole::kNorm});
    out->push_back({p + "q_b_proj.weight", {h * qk, m.q_lora_rank}, layer, -1, A});
  } else {
    out->push_back({p + "q_proj.weight", {h * qk, d}, layer, -1, A});
  }
  out->push_back(
      {p + "kv_a_proj_with_mqa.weight", {m.kv_lora_rank + m.qk_rope_head_dim, d}, layer, -1, A});
  out->push_back({p + "kv_a_layernorm.weight", {m.kv_lora_rank}, layer, -1, TensorRole::kNorm});
  out->push_back({p + "kv_b_proj.weight",
                  {h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank},
                  layer,
                  -1,
                  A});
  out->push_back({p + "o_proj.weight", {d, h * m.v_head_dim}, layer, -1, A});
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<TensorInfo> LayerTensors(const ModelSpec& m, int64_t i) {
  std::vector<TensorInfo> out;
  const std::string p = "model.layers." + std::to_string(i) + ".";
  const int64_t d = m.d_model;
  out.push_back({p + "input_layernorm.weight", {d}, i, -1, TensorRole::kNorm});
  AddAttention(&out, m, p + "self_attn.", i);
  out.push_back({p + "post_attention_layernorm.weight", {d}, i, -1, TensorRole::kNorm});
  if (m.dense_layer(i)) {
    AddMlp(&out, p + "mlp", d, m.ffn_hidden, i, -1, TensorRole::kDenseMlp);
    return out;
  }
  const MoeSpec& e = m.moe;
  out.push_back({p + "mlp.gate.weight", {e.routed_experts, d}, i, -1, TensorRole::kRouter});
  out.push_back(
      {p + "mlp.gate.e_score_correction_bias", {e.routed_experts}, i, -1, TensorRole::kRouterBias});
  for (int64_t x = 0; x < e.routed_experts; ++x) {
    AddMlp(&out, p + "mlp.experts." + std::to_string(x), d, e.expert_hidden, i, x,
           TensorRole::kRoutedExpert);
  }
  if (e.shared_experts > 0) {
    // Several shared experts are one MLP of concatenated hidden units (same math, as in HF).
    AddMlp(&out, p + "mlp.shared_experts", d, e.expert_hidden * e.shared_experts, i, -1,
           TensorRole::kSharedExpert);
  }
  return out;
}

std::vector<TensorInfo> MtpModuleTensors(const ModelSpec& m, int64_t k) {
  const int64_t l = m.n_layers + k - 1, d = m.d_model;
  const std::string p = "model.layers." + std::to_string(l) + ".";
  std::vector<TensorInfo> out;
  out.push_back({p + "enorm.weight", {d}, l, -1, TensorRole::kNorm});
  out.push_back({p + "hnorm.weight", {d}, l, -1, TensorRole::kNorm});
  out.push_back({p + "eh_proj.weight", {d, 2 * d}, l, -1, TensorRole::kMtpProjection});
  auto block = LayerTensors(m, l);
  out.insert(out.end(), std::make_move_iterator(block.begin()),
             std::make_move_iterator(block.end()));
  out.push_back({p + "shared_head.norm.weight", {d}, l, -1, TensorRole::kNorm});
  for (TensorInfo& t : out) t.mtp_module = k;
  return out;
}

bool StageHolds(const ModelSpec& m, const TensorInfo& t, int64_t layer_begin, int64_t layer_end,
                bool has_embedding, bool has_head) {
  if (t.mtp_module > 0) return has_head;
  if (t.layer >= 0) return t.layer >= layer_begin && t.layer < layer_end;
  if (t.role == TensorRole::kEmbedding) return has_embedding || (has_head && m.mtp.depth > 0);
  return has_head;
}

std::vector<TensorInfo> ModelTensors(const ModelSpec& m) {
  std::vector<TensorInfo> out;
  auto append = [&out](std::vector<TensorInfo> more) {
    out.insert(out.end(), std::make_move_iterator(more.begin()),
               std::make_move_iterator(more.end()));
  };
  out.push_back(
      {"model.embed_tokens.weight", {m.vocab_size, m.d_model}, -1, -1, TensorRole::kEmbedding});
  for (int64_t i = 0; i < m.n_layers; ++i) append(LayerTensors(m, i));
  for (int64_t k = 1; k <= m.mtp.depth; ++k) append(MtpModuleTensors(m, k));
  out.push_back({"model.norm.weight", {m.d_model}, -1, -1, TensorRole::kNorm});
  out.push_back({"lm_head.weight", {m.vocab_size, m.d_model}, -1, -1, TensorRole::kHead});
  return out;
}

std::vector<ModelShapeField> ModelShapeFields(const ModelSpec& m) {
  std::vector<ModelShapeField> f = {
      {"model.vocab_size", m.vocab_size},
      {"model.d_model", m.d_model},
      {"model.n_layers", m.n_layers},
      {"model.n_heads", m.n_heads},
      {"model.dense_layers", m.dense_layers},
      {"model.ffn_hidden", m.dense_layers > 0 ? m.ffn_hidden : 0},
      {"model.attention", m.attention == AttentionKind::kMla ? 1 : 0},
      {"model.q_lora_rank", m.q_lora_rank},
      {"model.kv_lora_rank", m.kv_lora_rank},
      {"model.qk_nope_head_dim", m.qk_nope_head_dim},
      {"model.qk_rope_head_dim", m.qk_rope_head_dim},
      {"model.v_head_dim", m.v_head_dim},
      {"model.mtp.depth", m.mtp.depth},
  };
  if (m.moe_layers() > 0) {
    f.push_back({"model.moe.routed_experts", m.moe.routed_experts});
    f.push_back({"model.moe.shared_experts", m.moe.shared_experts});
    f.push_back({"model.moe.expert_hidden", m.moe.expert_hidden});
  }
  return f;
}

std::string ModelShapeText(const std::string& field, int64_t value) {
  if (field == "model.attention") return value == 1 ? "mla" : "mha";
  return std::to_string(value);
}

int64_t RoutedExpertParameters(const ModelSpec& m) { return 3 * m.d_model * m.moe.expert_hidden; }

ParameterCounts CountParameters(const ModelSpec& m) { return CountParameters(m, ModelTensors(m)); }

ParameterCounts CountParameters(const ModelSpec& m, const std::vector<TensorInfo>& tensors) {
  ParameterCounts c;
  for (const TensorInfo& t : tensors) {
    const int64_t n = t.numel();
    if (t.mtp_module > 0) {
      c.mtp += n;
      continue;
    }
    c.total += n;
    switch (t.role) {
      case TensorRole::kEmbedding:
        c.embedding += n;
        break;
      case TensorRole::kHead:
        c.head += n;
        break;
      case TensorRole::kAttention:
        c.attention += n;
        break;
      case TensorRole::kDenseMlp:
        c.dense_mlp += n;
        break;
      case TensorRole::kRoutedExpert:
        c.routed_experts += n;
        break;
      case TensorRole::kSharedExpert:
        c.shared_experts += n;
        break;
      case TensorRole::kRouter:
      case TensorRole::kRouterBias:
        c.router += n;
        break;
      case TensorRole::kNorm:
      case TensorRole::kMtpProjection:  // only in MTP modules, counted above
        c.norms += n;
        break;
    }
  }
  // A token runs through top_k of the routed experts in each MoE layer.
  const int64_t unused_per_layer =
      m.moe_layers() > 0 ? (m.moe.routed_experts - m.moe.top_k) * RoutedExpertParameters(m) : 0;
  c.active_per_token = c.total - m.moe_layers() * unused_per_layer;
  c.mtp_active_per_token = c.mtp - (m.dense_layer(m.n_layers) ? 0 : m.mtp.depth * unused_per_layer);
  return c;
}

}  // namespace moerun
