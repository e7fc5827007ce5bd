// The example configs load, and `plan`'s numbers hold: exact parameter counts for small
// models, DeepSeek-V3's published totals, placement rules and FLOP formulas.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "common/job_plan.h"
#include "common/model_tensors.h"
#include "common/placement.h"
#include "common/plan_report.h"
#include "common/spec_loader.h"

#ifndef MOERUN_SOURCE_DIR
#error "MOERUN_SOURCE_DIR must point at the source tree"
#endif

namespace {

moerun::JobSpec LoadConfig(const std::string& name) {
  auto loaded = moerun::LoadJobSpecFile(std::string(MOERUN_SOURCE_DIR) + "/configs/" + name);
  INFO(loaded.Report());
  REQUIRE(loaded.ok());
  return loaded.spec;
}

}  // namespace

TEST_CASE("every example config is valid") {
  for (const char* f : {"tiny-cpu.yaml", "deepseek-v3.yaml", "deepseek-v3-mini.yaml", "gpu-8x.yaml",
                        "multi-host-cpu.yaml", "single-gpu.yaml"}) {
    CAPTURE(f);
    LoadConfig(f);
  }
}

TEST_CASE("DeepSeek-V3: ~671B total, ~37B active parameters") {
  moerun::JobSpec spec = LoadConfig("deepseek-v3.yaml");
  moerun::ParameterCounts c = moerun::CountParameters(spec.model);
  CHECK(std::fabs(double(c.total) / 671e9 - 1.0) < 0.01);
  CHECK(std::fabs(double(c.active_per_token) / 37e9 - 1.0) < 0.02);
  // The published shape, piece by piece (config_671B.json).
  CHECK(c.embedding == 129280LL * 7168);
  CHECK(c.routed_experts == 58LL * 256 * 3 * 7168 * 2048);
  CHECK(c.shared_experts == 58LL * 3 * 7168 * 2048);
  CHECK(c.dense_mlp == 3LL * 3 * 7168 * 18432);
  const long long mla = 7168LL * 1536 + 1536LL * 128 * 192 + 7168LL * (512 + 64) +
                        512LL * 128 * (128 + 128) + 128LL * 128 * 7168;
  CHECK(c.attention == 61 * mla);
  // The multi-token prediction module is counted apart: one decoder block (MoE) with eh_proj
  // and three norms; with its copies of embedding and head, the 685B the checkpoint holds.
  REQUIRE(spec.model.mtp.depth == 1);
  const long long block = mla + 256LL * 3 * 7168 * 2048 + 3LL * 7168 * 2048 + 256LL * 7168 + 256 +
                          2 * 7168 + 1536 +
                          512;  // with the layer norms, q_a_layernorm and kv_a_layernorm
  CHECK(c.mtp == block + 2LL * 7168 * 7168 + 3 * 7168);
  CHECK(c.mtp_active_per_token == c.mtp - (256LL - 8) * 3 * 7168 * 2048);
  CHECK(std::fabs(double(c.total + c.mtp + c.embedding + c.head) / 685e9 - 1.0) < 0.005);
  moerun::JobSpec no_mtp = spec;
  no_mtp.model.mtp.depth = 0;
  CHECK(moerun::CountParameters(no_mtp.model).total == c.total);
}

TEST_CASE(
    "MTP modules: named as the published checkpoint's layer n_layers + k - 1, on the last stage") {
  moerun::JobSpec spec = LoadConfig("deepseek-v3-mini.yaml");
  const auto& m = spec.model;
  std::set<std::string> names;
  for (const auto& t : moerun::ModelTensors(m)) {
    names.insert(t.name);
    CHECK((t.mtp_module > 0) == (t.layer >= m.n_layers));
  }
  for (const char* n : {"model.layers.4.enorm.weight", "model.layers.4.hnorm.weight",
                        "model.layers.4.eh_proj.weight", "model.layers.4.shared_head.norm.weight",
                        "model.layers.4.self_attn.kv_a_proj_with_mqa.weight",
                        "model.layers.4.mlp.experts.15.down_proj.weight",
                        "model.layers.4.mlp.gate.e_score_correction_bias"}) {
    CHECK(names.count(n) == 1);
  }
  CHECK(names.count("model.layers.5.enorm.weight") == 0);
  // 4 layers + 1 module over 2 stages: 2 + (2 + the module); the last stage keeps the embedding.
  auto stages = moerun::Placement::Stages(spec);
  CHECK(stages[0].layer_end == 2);
  CHECK(stages[1].layer_begin == 2);
  CHECK(stages[1].layer_end == 4);
  CHECK(stages[1].mtp_modules == 1);
  const auto plan = moerun::MakeJobPlan(spec);
  CHECK(plan.mtp_flops_per_token > 0);
  CHECK(plan.stages[1].params_per_rank > plan.stages[0].params_per_rank);
}

TEST_CASE("tiny model: counts match a hand count") {
  moerun::JobSpec spec = LoadConfig("tiny-cpu.yaml");
  const auto& m = spec.model;
  const int64_t d = m.d_model, v = m.vocab_size;
  const int64_t attn = 4 * d * d, dense = 3 * d * m.ffn_hidden;
  const int64_t expert = 3 * d * m.moe.expert_hidden, e = m.moe.routed_experts;
  const int64_t moe_layer =
      attn + e * expert + expert /*shared*/ + e * d /*gate*/ + e /*bias*/ + 2 * d;
  const int64_t dense_layer = attn + dense + 2 * d;
  const int64_t total = 2 * v * d + d + dense_layer + 3 * moe_layer;
  auto c = moerun::CountParameters(m);
  CHECK(c.total == total);
  CHECK(c.active_per_token == total - 3 * (e - m.moe.top_k) * expert);
  // Names follow Hugging Face's DeepSeek-V3 layout and are unique.
  auto tensors = moerun::ModelTensors(m);
  std::set<std::string> names;
  for (const auto& t : tensors) names.insert(t.name);
  CHECK(names.size() == tensors.size());
  CHECK(names.count("model.layers.0.mlp.gate_proj.weight") == 1);
  CHECK(names.count("model.layers.1.mlp.experts.7.down_proj.weight") == 1);
  CHECK(names.count("model.layers.3.mlp.gate.e_score_correction_bias") == 1);
  CHECK(names.count("model.layers.2.mlp.shared_experts.up_proj.weight") == 1);
  CHECK(names.count("lm_head.weight") == 1);
}

TEST_CASE("layer split: contiguous, balanced, stage 0 never heavier") {
  for (int64_t layers = 1; layers <= 64; ++layers) {
    for (int64_t p = 1; p <= layers && p <= 16; ++p) {
      auto stages = moerun::SplitLayers(layers, p, 0);
      REQUIRE(stages.size() == size_t(p));
      int64_t next = 0, lo = layers, hi = 0;
      for (const auto& s : stages) {
        CHECK(s.layer_begin == next);
        next = s.layer_end;
        lo = std::min(lo, s.layers());
        hi = std::max(hi, s.layers());
      }
      CHECK(next == layers);
      CHECK(hi - lo <= 1);
      CHECK(stages[0].layers() == lo);
      CHECK(stages.front().has_embedding);
      CHECK(stages.back().has_head);
    }
  }
}

TEST_CASE("layer split with MTP modules: they count as layers of the last stage") {
  for (int64_t depth = 1; depth <= 3; ++depth) {
    for (int64_t layers = 1; layers <= 40; ++layers) {
      for (int64_t p = 1; p <= layers && p <= 12; ++p) {
        CAPTURE(depth);
        CAPTURE(layers);
        CAPTURE(p);
        auto stages = moerun::SplitLayers(layers, p, depth);
        REQUIRE(stages.size() == size_t(p));
        CHECK(stages.back().mtp_modules == depth);
        CHECK(stages.back().layer_end == layers);
        int64_t next = 0;
        for (const auto& s : stages) {
          CHECK(s.layer_begin == next);
          CHECK(s.layers() >= 0);
          next = s.layer_end;
        }
        // A layout the rules accept (the last stage's share exceeds the modules) keeps a
        // decoder layer on every stage, and blocks (modules counted) differ by at most one.
        const int64_t blocks = layers + depth;
        const int64_t last_share = blocks / p + (p > 1 && blocks % p == p - 1 ? 1 : 0);
        if (p > 1 && last_share <= depth) continue;
        int64_t lo = 1 << 20, hi = 0;
        for (const auto& s : stages) {
          CHECK(s.layers() >= 1);
          lo = std::min(lo, s.layers() + s.mtp_modules);
          hi = std::max(hi, s.layers() + s.mtp_modules);
        }
        CHECK(hi - lo <= 1);
      }
    }
  }
}

TEST_CASE("rank placement follows rank = stage * data + d") {
  moerun::JobSpec spec = LoadConfig("deepseek-v3.yaml");
  moerun::Placement p(spec);
  CHECK(p.world_size() == 2048);
  CHECK(p.experts_per_rank() == 4);
  CHECK(p.expert_replicas() == 2);
  auto r = p.Rank(128 * 3 + 70);
  CHECK(r.stage == 3);
  CHECK(r.data_index == 70);
  CHECK(r.expert_group == 1);
  CHECK(r.expert_rank == 6);
  CHECK(r.expert_begin == 24);
  CHECK(r.expert_end == 28);
  CHECK(r.worker == (128 * 3 + 70) / 8);
  // Every stage's expert group holds every expert exactly once.
  std::vector<int> held(256, 0);
  for (int64_t d = 0; d < 64; ++d) {
    auto q = p.Rank(d);
    for (int64_t x = q.expert_begin; x < q.expert_end; ++x) ++held[x];
  }
  for (int h : held) CHECK(h == 1);
}

TEST_CASE("FLOPs: 6 x active non-embedding plus causal attention") {
  moerun::JobSpec spec = LoadConfig("tiny-cpu.yaml");
  auto plan = moerun::MakeJobPlan(spec);
  const auto& m = spec.model;
  CHECK(plan.dense_flops_per_token ==
        doctest::Approx(6.0 * double(plan.params.active_per_token - plan.params.embedding)));
  CHECK(plan.attention_flops_per_token ==
        doctest::Approx(3.0 * m.n_layers * m.n_heads * m.seq_len * (2.0 * m.d_model / m.n_heads)));
  CHECK(plan.tokens_per_step == spec.train.global_batch * m.seq_len);
  CHECK(plan.flops_per_step() ==
        doctest::Approx(plan.flops_per_token() * double(plan.tokens_per_step)));
  // A run's GPU-hours invert the FLOP count.
  auto cost = moerun::EstimateRunCost(plan, 100.0, 0.5, 1e9);
  CHECK(cost.gpu_hours == doctest::Approx(plan.flops_per_token() * 1e9 / (50e12) / 3600.0));
  CHECK(cost.days == doctest::Approx(cost.gpu_hours / 4 / 24));
}

TEST_CASE("memory: per-parameter bytes by precision") {
  moerun::JobSpec spec = LoadConfig("tiny-cpu.yaml");
  auto fp32 = moerun::MakeJobPlan(spec);
  spec.train.precision = moerun::Precision::kBf16;
  auto bf16 = moerun::MakeJobPlan(spec);
  for (size_t s = 0; s < fp32.stages.size(); ++s) {
    const double n = double(fp32.stages[s].params_per_rank);
    CHECK(fp32.stages[s].memory.weights_bytes == doctest::Approx(4 * n));
    CHECK(bf16.stages[s].memory.weights_bytes == doctest::Approx(6 * n));
    CHECK(fp32.stages[s].memory.optimizer_bytes == doctest::Approx(8 * n));
    // bf16 activations take half the bytes of fp32 ones.
    CHECK(bf16.stages[s].memory.activation_bytes ==
          doctest::Approx(fp32.stages[s].memory.activation_bytes / 2));
  }
  // 1f1b keeps pipeline - stage micro-batches in flight.
  CHECK(fp32.stages[0].micro_batches_in_flight == 2);
  CHECK(fp32.stages[1].micro_batches_in_flight == 1);
}

TEST_CASE("KV cache per token: MLA's latent and shared RoPE key against MHA of the same shape") {
  auto loaded =
      moerun::LoadJobSpecFile(std::string(MOERUN_SOURCE_DIR) + "/configs/deepseek-v3.yaml");
  REQUIRE(loaded.ok());
  const moerun::JobPlan plan = moerun::MakeJobPlan(loaded.spec);
  // 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64); MHA: 61 x 128 heads x (192 + 128).
  CHECK(plan.kv_cache_values_per_token == 61 * (512 + 64));
  CHECK(plan.mha_kv_cache_values_per_token == 61 * 128 * (128 + 64 + 128));
  const std::string text = moerun::PlanText(loaded.spec, plan, {});
  CHECK(text.find("inference KV cache per token (bf16, all layers)") != std::string::npos);
  CHECK(text.find("MHA, same shape     4.77 MiB  (71.1x MLA's)") != std::string::npos);
  // An MHA job caches every head's key and value: the two figures agree.
  auto tiny = moerun::LoadJobSpecFile(std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml");
  REQUIRE(tiny.ok());
  const moerun::JobPlan t = moerun::MakeJobPlan(tiny.spec);
  CHECK(t.kv_cache_values_per_token == 4 * 2 * 128);
  CHECK(t.mha_kv_cache_values_per_token == t.kv_cache_values_per_token);
}
