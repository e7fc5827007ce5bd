#include "worker/trainer/hf_export.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace moerun::trainer {

namespace fs = std::filesystem;

namespace {

// One tensor of the file: its name there and the checkpoint entry holding its values.
struct ExportedTensor {
  std::string name;
  const checkpoint::Entry* entry;
};

// The weights under their Hugging Face names; MTP module k (layer n_layers + k - 1) also gets
// the copies the published DeepSeek-V3 checkpoint keeps of what it shares with the main
// model: embed_tokens and shared_head.head (lm_head).
Result<std::vector<ExportedTensor>> ExportedTensors(const ModelSpec& m,
                                                    const std::vector<checkpoint::Entry>& entries,
                                                    int64_t step) {
  std::vector<ExportedTensor> out;
  const checkpoint::Entry *embed = nullptr, *head = nullptr;
  for (const auto& e : entries) {
    if (e.name.rfind("param/", 0) != 0 || e.dtype != checkpoint::DType::kF32) continue;
    out.push_back({e.name.substr(6), &e});
    if (out.back().name == "model.embed_tokens.weight") embed = &e;
    if (out.back().name == "lm_head.weight") head = &e;
  }
  if (out.empty())
    return Status::NotFound("checkpoint step " + std::to_string(step) + " holds no weights");
  for (int64_t k = 1; k <= m.mtp.depth; ++k) {
    if (embed == nullptr || head == nullptr)
      return Status::Corruption("checkpoint step " + std::to_string(step) +
                                " lacks the embedding or the head its MTP modules share");
    const std::string layer = "model.layers." + std::to_string(m.n_layers + k - 1) + ".";
    out.push_back({layer + "embed_tokens.weight", embed});
    out.push_back({layer + "shared_head.head.weight", head});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

}  // namespace

Status ExportHuggingFace(const JobSpec& spec, const std::vector<checkpoint::Entry>& entries,
                         int64_t step, const std::string& out_dir) {
  auto tensors = ExportedTensors(spec.model, entries, step);
  if (!tensors.ok()) return tensors.status();
  nlohmann::ordered_json header;
  header["__metadata__"] = {
      {"format", "pt"}, {"moerun_step", std::to_string(step)}, {"job", spec.name}};
  uint64_t offset = 0;
  for (const auto& t : tensors.value()) {
    const size_t bytes = t.entry->bytes.size();
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.entry->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
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
  for (const auto& t : tensors.value()) {
    out.write(reinterpret_cast<const char*>(t.entry->bytes.data()),
              std::streamsize(t.entry->bytes.size()));
  }
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
      // Without MoE layers the MTP blocks are dense too (ModelSpec::dense_layer).
      {"first_k_dense_replace", m.moe_layers() > 0 ? m.dense_layers : m.n_layers + m.mtp.depth},
      {"moe_layer_freq", 1},
      {"ep_size", 1},
      {"scoring_func", m.moe.score_func == ScoreFunc::kSigmoid ? "sigmoid" : "softmax"},
      {"norm_topk_prob", m.moe.score_func == ScoreFunc::kSigmoid},
      {"topk_method", "noaux_tc"},
      {"seq_aux", m.moe.balance.seq_aux_alpha > 0},
      {"aux_loss_alpha", m.moe.balance.seq_aux_alpha},
      // Module k of multi-token prediction is layer num_hidden_layers + k - 1.
      {"num_nextn_predict_layers", m.mtp.depth},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", nullptr},
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
    cfg["qk_head_dim"] = m.qk_nope_head_dim + m.qk_rope_head_dim;
    cfg["head_dim"] = m.qk_rope_head_dim;  // what transformers' DeepseekV3 rotary sizes itself by
    cfg["rope_interleave"] = true;         // RoPE pairs (2i, 2i+1), as DeepSeek's weights expect
  } else {
    cfg["head_dim"] = m.d_model / m.n_heads;
  }
  std::ofstream(out_dir + "/config.json") << cfg.dump(2) << "\n";
  return Status::OK();
}

}  // namespace moerun::trainer
