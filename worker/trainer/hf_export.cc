#include "worker/trainer/hf_export.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace moerun::trainer {

namespace fs = std::filesystem;

Status ExportHuggingFace(const JobSpec& spec, const std::vector<checkpoint::Entry>& entries,
                         int64_t step, const std::string& out_dir) {
  std::vector<const checkpoint::Entry*> params;
  for (const auto& e : entries)
    if (e.name.rfind("param/", 0) == 0 && e.dtype == checkpoint::DType::kF32) params.push_back(&e);
  if (params.empty())
    return Status::NotFound("checkpoint step " + std::to_string(step) + " holds no weights");
  std::sort(params.begin(), params.end(), [](auto* a, auto* b) { return a->name < b->name; });

  nlohmann::ordered_json header;
  header["__metadata__"] = {
      {"format", "pt"}, {"moerun_step", std::to_string(step)}, {"job", spec.name}};
  uint64_t offset = 0;
  for (const auto* e : params) {
    header[e->name.substr(6)] = {{"dtype", "F32"},
                                 {"shape", e->shape},
                                 {"data_offsets", {offset, offset + e->bytes.size()}}};
    offset += e->bytes.size();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Status::IOError("export: cannot create " + out_dir + ": " + ec.message());
  const std::string st_path = out_dir + "/model.safetensors";
  std::ofstream out(st_path, std::ios::binary | std::ios::trunc);
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), std::streamsize(h.size()));
  for (const auto* e : params)
    out.write(reinterpret_cast<const char*>(e->bytes.data()), std::streamsize(e->bytes.size()));
  out.close();
  if (!out) return Status::IOError("export: writing " + st_path + " failed");

  const ModelSpec& m = spec.model;
  nlohmann::ordered_json cfg = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.d_model},
      {"intermediate_size", m.ffn_hidden},
      {"moe_intermediate_size", m.moe.expert_hidden},
      {"num_hidden_layers", m.n_layers},
      {"num_attention_heads", m.n_heads},
      {"num_key_value_heads", m.n_heads},
      {"n_shared_experts", m.moe.shared_experts},
      {"n_routed_experts", m.moe.routed_experts},
      {"num_experts_per_tok", m.moe.top_k},
      {"routed_scaling_factor", m.moe.route_scale},
      {"n_group", m.moe.n_groups},
      {"topk_group", m.moe.topk_groups},
      {"first_k_dense_replace", m.dense_layers},
      {"scoring_func", m.moe.score_func == ScoreFunc::kSigmoid ? "sigmoid" : "softmax"},
      {"norm_topk_prob", m.moe.score_func == ScoreFunc::kSigmoid},
      {"topk_method", "noaux_tc"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", m.rope_theta},
      {"max_position_embeddings", m.seq_len},
      {"initializer_range", m.init_std},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
      // moerun's MHA models name q/k/v/o like Llama; MLA models use DeepSeek-V3's names.
      {"moerun_attention", m.attention == AttentionKind::kMla ? "mla" : "mha"},
  };
  if (m.attention == AttentionKind::kMla) {
    cfg["q_lora_rank"] =
        m.q_lora_rank > 0 ? nlohmann::ordered_json(m.q_lora_rank) : nlohmann::ordered_json(nullptr);
    cfg["kv_lora_rank"] = m.kv_lora_rank;
    cfg["qk_nope_head_dim"] = m.qk_nope_head_dim;
    cfg["qk_rope_head_dim"] = m.qk_rope_head_dim;
    cfg["v_head_dim"] = m.v_head_dim;
  } else {
    cfg["head_dim"] = m.d_model / m.n_heads;
  }
  std::ofstream(out_dir + "/config.json") << cfg.dump(2) << "\n";
  return Status::OK();
}

}  // namespace moerun::trainer
