// What a checkpoint records and how a restore judges it: another model's checkpoint is
// refused (InvalidArgument, exit 2) naming the first field that differs, or by fingerprint
// when it predates recorded fields; the same model restores every tensor.
#include <doctest/doctest.h>

#include "worker/model/model_stage.h"
#include "worker/trainer/train_state.h"

namespace {

moerun::ModelSpec Small() {
  moerun::ModelSpec m;
  m.vocab_size = 16;
  m.seq_len = 8;
  m.d_model = 8;
  m.n_layers = 2;
  m.n_heads = 2;
  m.dense_layers = 1;
  m.ffn_hidden = 12;
  m.has_moe_section = true;
  m.moe.routed_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_hidden = 6;
  return m;
}

std::vector<moerun::checkpoint::Entry> Snapshot(const moerun::ModelSpec& m) {
  moerun::model::Parameters<float> p(moerun::model::StageTensors(m, {0, m.n_layers, true, true}));
  p.Initialize(5, 0.02);
  moerun::trainer::OptimizerState opt{std::vector<float>(p.values().size()),
                                      std::vector<float>(p.values().size())};
  return moerun::trainer::SnapshotState(p, opt, 7, 1, m);
}

}  // namespace

TEST_CASE("restore: the same model, another model named by its field, an old checkpoint") {
  const moerun::ModelSpec mha = Small();
  moerun::ModelSpec mla = mha;
  mla.attention = moerun::AttentionKind::kMla;
  mla.kv_lora_rank = 4;
  mla.qk_nope_head_dim = 4;
  mla.qk_rope_head_dim = 2;
  mla.v_head_dim = 4;
  const auto entries = Snapshot(mha);
  moerun::model::Parameters<float> same(
      moerun::model::StageTensors(mha, {0, mha.n_layers, true, true}));
  int64_t step = 0;
  REQUIRE(moerun::trainer::RestoreState(entries, &same, nullptr, &step, mha).ok());
  CHECK(step == 7);

  moerun::model::Parameters<float> other(
      moerun::model::StageTensors(mla, {0, mla.n_layers, true, true}));
  moerun::Status s = moerun::trainer::RestoreState(entries, &other, nullptr, &step, mla);
  CHECK(s.code() == moerun::Status::Code::kInvalidArgument);
  CHECK(s.message() ==
        "it is another model's checkpoint: trained with model.attention: mha, but the job has "
        "model.attention: mla");
  // Multi-token prediction changes the tensors too.
  moerun::ModelSpec mtp = mha;
  mtp.mtp.depth = 1;
  s = moerun::trainer::RestoreState(entries, &same, nullptr, &step, mtp);
  CHECK(s.message().find("model.mtp.depth: 0, but the job has model.mtp.depth: 1") !=
        std::string::npos);
  // Every tensor shape alike, another head split: the recorded field names it.
  moerun::ModelSpec heads = mha;
  heads.n_heads = 4;
  s = moerun::trainer::RestoreState(entries, &same, nullptr, &step, heads);
  CHECK(s.code() == moerun::Status::Code::kInvalidArgument);
  CHECK(s.message().find("model.n_heads: 2, but the job has model.n_heads: 4") !=
        std::string::npos);
  // A checkpoint from before the fields were recorded: refused by its fingerprint alone.
  std::vector<moerun::checkpoint::Entry> old;
  for (const auto& e : entries)
    if (e.name.rfind("meta/model.", 0) != 0) old.push_back(e);
  s = moerun::trainer::RestoreState(old, &other, nullptr, &step, mla);
  CHECK(s.code() == moerun::Status::Code::kInvalidArgument);
  CHECK(s.message().find("tensor names or shapes differ") != std::string::npos);
}
