// The whole model's gradient against finite differences in double precision: every
// parameter of a small MoE transformer (dense + MoE layers, shared experts, group-limited
// routing, balance loss), and the same gradients when the model is cut into two stages;
// failures come back as Status values.
#include <doctest/doctest.h>

#include "tests/unit/grad_check.h"
#include "worker/comm/solo_communicator.h"
#include "worker/model/model_stage.h"

using moerun::ModelSpec;
using moerun::model::ModelStage;
using moerun::model::Parameters;
using moerun::model::StageActivations;
using moerun::model::StageRange;
using moerun::model::StageTensors;

namespace {

ModelSpec TinySpec() {
  ModelSpec m;
  m.vocab_size = 11;
  m.seq_len = 5;
  m.d_model = 8;
  m.n_layers = 3;
  m.n_heads = 2;
  m.dense_layers = 1;
  m.ffn_hidden = 12;
  m.rope_theta = 10000.0;
  m.init_std = 0.5;
  m.has_moe_section = true;
  m.moe.routed_experts = 4;
  m.moe.shared_experts = 1;
  m.moe.top_k = 2;
  m.moe.expert_hidden = 6;
  m.moe.route_scale = 1.5;
  m.moe.n_groups = 2;
  m.moe.topk_groups = 2;
  m.moe.balance.seq_aux_alpha = 0.05;
  return m;
}

// TinySpec with multi-head latent attention; q_lora_rank 0 projects queries directly.
ModelSpec TinyMlaSpec(int64_t q_lora_rank) {
  ModelSpec m = TinySpec();
  m.attention = moerun::AttentionKind::kMla;
  m.q_lora_rank = q_lora_rank;
  m.kv_lora_rank = 3;
  m.qk_nope_head_dim = 2;
  m.qk_rope_head_dim = 2;
  m.v_head_dim = 3;
  return m;
}

const std::vector<int32_t> kIds = {1, 4, 2, 9, 0, 3, 3, 7, 10, 5};
const std::vector<int32_t> kTargets = {4, 2, 9, 0, 6, 3, 7, 10, 5, 1};

}  // namespace

TEST_CASE("model: every parameter's gradient matches finite differences") {
  for (bool softmax : {false, true}) {
    CAPTURE(softmax);
    ModelSpec spec = TinySpec();
    spec.moe.score_func = softmax ? moerun::ScoreFunc::kSoftmax : moerun::ScoreFunc::kSigmoid;
    StageRange all{0, spec.n_layers, true, true};
    Parameters<double> params(StageTensors(spec, all));
    params.Initialize(7, spec.init_std);
    // Nonzero balancing biases so selection uses s + b.
    double* bias = params.Find("model.layers.2.mlp.gate.e_score_correction_bias");
    bias[1] = 0.1;
    ModelStage<double> stage(spec, all, &params);
    StageActivations<double> acts;
    auto loss = [&] {
      REQUIRE(stage.Forward(acts, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr).ok());
      return acts.loss + acts.balance_loss;
    };
    loss();
    CHECK(acts.balance_loss > 0);
    params.ZeroGrads();
    REQUIRE(stage.Backward(acts, 1.0, nullptr, nullptr).ok());
    std::vector<double> analytic = params.grads();
    // The balancing bias is not trained: its gradient stays zero.
    for (const auto& v : params.views()) {
      if (v.info.role == moerun::TensorRole::kRouterBias) {
        for (int64_t i = 0; i < v.info.numel(); ++i) CHECK(analytic[v.offset + i] == 0.0);
      }
    }
    moerun::testing::CheckGradient("whole model", params.values(), analytic, loss, 1e-5, 1e-6);
  }
}

TEST_CASE("model with MLA: every parameter's gradient matches finite differences") {
  for (int64_t q_lora : {4, 0}) {
    CAPTURE(q_lora);
    ModelSpec spec = TinyMlaSpec(q_lora);
    StageRange all{0, spec.n_layers, true, true};
    Parameters<double> params(StageTensors(spec, all));
    params.Initialize(5, spec.init_std);
    CHECK((params.Find("model.layers.0.self_attn.q_a_proj.weight") != nullptr) == (q_lora > 0));
    CHECK((params.Find("model.layers.0.self_attn.q_proj.weight") != nullptr) == (q_lora == 0));
    // Norm scales away from 1, so their gradients are checked at a general point.
    for (const auto& v : params.views()) {
      if (v.info.role != moerun::TensorRole::kNorm) continue;
      for (int64_t i = 0; i < v.info.numel(); ++i)
        params.values()[size_t(v.offset + i)] = 1.0 + 0.1 * double((i * 7 + v.offset) % 5);
    }
    ModelStage<double> stage(spec, all, &params);
    REQUIRE(stage.status().ok());
    StageActivations<double> acts;
    auto loss = [&] {
      REQUIRE(stage.Forward(acts, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr).ok());
      return acts.loss + acts.balance_loss;
    };
    loss();
    params.ZeroGrads();
    REQUIRE(stage.Backward(acts, 1.0, nullptr, nullptr).ok());
    std::vector<double> analytic = params.grads();
    moerun::testing::CheckGradient("whole MLA model", params.values(), analytic, loss, 1e-5, 1e-6);
  }
}

TEST_CASE("model with MTP: every gradient, the shared embedding and head included, matches") {
  for (int64_t depth : {1, 2}) {
    for (bool mla : {false, true}) {
      CAPTURE(depth);
      CAPTURE(mla);
      ModelSpec spec = mla ? TinyMlaSpec(4) : TinySpec();
      spec.mtp.depth = depth;
      spec.mtp.loss_weight = 0.4;
      StageRange all{0, spec.n_layers, true, true};
      Parameters<double> params(StageTensors(spec, all));
      params.Initialize(9, spec.init_std);
      REQUIRE(params.Find("model.layers.3.eh_proj.weight") != nullptr);
      CHECK((params.Find("model.layers.4.shared_head.norm.weight") != nullptr) == (depth == 2));
      ModelStage<double> stage(spec, all, &params);
      REQUIRE(stage.status().ok());
      CHECK(stage.mtp_depth() == depth);
      // The MTP blocks are MoE layers after the main ones.
      CHECK(stage.moe_layers().back() == spec.n_layers + depth - 1);
      StageActivations<double> acts;
      auto loss = [&] {
        REQUIRE(stage.Forward(acts, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr).ok());
        return acts.loss + spec.mtp.loss_weight * acts.mtp_loss + acts.balance_loss;
      };
      loss();
      CHECK(acts.mtp_loss > 0);
      params.ZeroGrads();
      REQUIRE(stage.Backward(acts, 1.0, nullptr, nullptr).ok());
      std::vector<double> analytic = params.grads();
      moerun::testing::CheckGradient("model with MTP", params.values(), analytic, loss, 1e-5, 1e-6);
      // Evaluation measures the main model alone: the same loss, no MTP, no MTP expert counts.
      loss();  // at the unperturbed weights again
      const double main_loss = acts.loss;
      stage.set_mtp_enabled(false);
      REQUIRE(stage.Forward(acts, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr).ok());
      CHECK(acts.loss == main_loss);
      CHECK(acts.mtp_loss == 0);
      CHECK(acts.mtp.empty());
      for (int64_t c : stage.expert_counts().back()) CHECK(c == 0);
    }
  }
}

TEST_CASE("model with MTP over two stages: the last keeps a copy of the embedding") {
  ModelSpec spec = TinySpec();
  spec.mtp.depth = 1;
  StageRange all{0, 3, true, true}, first{0, 2, true, false}, second{2, 3, false, true};
  Parameters<double> whole(StageTensors(spec, all)), p0(StageTensors(spec, first)),
      p1(StageTensors(spec, second));
  for (auto* p : {&whole, &p0, &p1}) p->Initialize(3, spec.init_std);
  const std::string emb = "model.embed_tokens.weight";
  REQUIRE(p1.Find(emb) != nullptr);
  const int64_t table = spec.vocab_size * spec.d_model;
  CHECK(std::equal(p0.Find(emb), p0.Find(emb) + table, p1.Find(emb)));
  CHECK(p0.size() + p1.size() == whole.size() + table);
  ModelStage<double> s_all(spec, all, &whole), s0(spec, first, &p0), s1(spec, second, &p1);
  CHECK(s0.mtp_depth() == 0);
  CHECK(s1.mtp_depth() == 1);
  StageActivations<double> a_all, a0, a1;
  REQUIRE(s_all.Forward(a_all, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr).ok());
  std::vector<double> hidden(10 * 8), dhidden(10 * 8);
  REQUIRE(s0.Forward(a0, kIds.data(), nullptr, nullptr, 2, 5, hidden.data()).ok());
  REQUIRE(s1.Forward(a1, nullptr, hidden.data(), kTargets.data(), 2, 5, nullptr).ok());
  CHECK(a1.mtp_loss == a_all.mtp_loss);
  REQUIRE(s_all.Backward(a_all, 1.0, nullptr, nullptr).ok());
  REQUIRE(s1.Backward(a1, 1.0, nullptr, dhidden.data()).ok());
  REQUIRE(s0.Backward(a0, 1.0, dhidden.data(), nullptr).ok());
  // The two copies' gradients sum to the one embedding's (what the trainer all-reduces).
  for (int64_t i = 0; i < table; ++i)
    CHECK(p0.Grad(emb)[i] + p1.Grad(emb)[i] == doctest::Approx(whole.Grad(emb)[i]).epsilon(1e-12));
  for (const auto& v : whole.views()) {
    if (v.info.name == emb) continue;
    double* part = p0.Grad(v.info.name) ? p0.Grad(v.info.name) : p1.Grad(v.info.name);
    REQUIRE(part != nullptr);
    for (int64_t i = 0; i < v.info.numel(); ++i) CHECK(part[i] == whole.grads()[v.offset + i]);
  }
}

TEST_CASE("model: two pipeline stages give the single stage's loss and gradients") {
  for (bool mla : {false, true}) {
    CAPTURE(mla);
    ModelSpec spec = mla ? TinyMlaSpec(4) : TinySpec();
    StageRange all{0, 3, true, true}, first{0, 2, true, false}, second{2, 3, false, true};
    Parameters<double> whole(StageTensors(spec, all)), p0(StageTensors(spec, first)),
        p1(StageTensors(spec, second));
    for (auto* p : {&whole, &p0, &p1}) p->Initialize(3, spec.init_std);
    CHECK(p0.size() + p1.size() == whole.size());
    ModelStage<double> s_all(spec, all, &whole), s0(spec, first, &p0), s1(spec, second, &p1);
    StageActivations<double> a_all, a0, a1;
    auto l_all = s_all.Forward(a_all, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr);
    std::vector<double> hidden(10 * 8), dhidden(10 * 8);
    REQUIRE(s0.Forward(a0, kIds.data(), nullptr, nullptr, 2, 5, hidden.data()).ok());
    auto l_split = s1.Forward(a1, nullptr, hidden.data(), kTargets.data(), 2, 5, nullptr);
    REQUIRE(l_all.ok());
    REQUIRE(l_split.ok());
    CHECK(l_split.value() == l_all.value());
    REQUIRE(s_all.Backward(a_all, 1.0, nullptr, nullptr).ok());
    REQUIRE(s1.Backward(a1, 1.0, nullptr, dhidden.data()).ok());
    REQUIRE(s0.Backward(a0, 1.0, dhidden.data(), nullptr).ok());
    for (const auto& v : whole.views()) {
      double* part = p0.Grad(v.info.name) ? p0.Grad(v.info.name) : p1.Grad(v.info.name);
      REQUIRE(part != nullptr);
      for (int64_t i = 0; i < v.info.numel(); ++i) CHECK(part[i] == whole.grads()[v.offset + i]);
    }
  }
}

TEST_CASE("initialization depends only on seed and tensor name") {
  ModelSpec spec = TinySpec();
  Parameters<float> a(StageTensors(spec, {0, 3, true, true}));
  Parameters<float> b(StageTensors(spec, {2, 3, false, true}));
  a.Initialize(11, 0.02);
  b.Initialize(11, 0.02);
  const std::string name = "model.layers.2.mlp.experts.3.up_proj.weight";
  CHECK(std::equal(b.Find(name), b.Find(name) + 6 * 8, a.Find(name)));
  CHECK(a.Find("model.norm.weight")[0] == 1.0f);
  Parameters<float> c(StageTensors(spec, {0, 3, true, true}));
  c.Initialize(12, 0.02);
  CHECK_FALSE(std::equal(c.Find(name), c.Find(name) + 48, a.Find(name)));
}

TEST_CASE("aux-loss-free bias: overloaded experts go down, underloaded up") {
  ModelSpec spec = TinySpec();
  StageRange all{0, 3, true, true};
  Parameters<float> params(StageTensors(spec, all));
  params.Initialize(1, 0.02);
  ModelStage<float> stage(spec, all, &params);
  const int64_t counts[4] = {10, 2, 4, 4};  // mean 5
  stage.UpdateBalanceBias(1, counts, 0.001);
  const float* b = params.Find("model.layers.1.mlp.gate.e_score_correction_bias");
  CHECK(b[0] == doctest::Approx(-0.001));
  CHECK(b[1] == doctest::Approx(0.001));
  CHECK(b[2] == doctest::Approx(0.001));
}

TEST_CASE("model: what cannot run, or fails underneath, comes back as a Status, never thrown") {
  ModelSpec spec = TinySpec();
  StageRange all{0, spec.n_layers, true, true};
  Parameters<float> params(StageTensors(spec, all));
  params.Initialize(3, spec.init_std);
  StageActivations<float> acts;
  // The expert group's exchange fails: the data plane's own code and reason, named.
  moerun::comm::SoloCommunicator group;
  group.Abort("peer rank 3 is gone");
  ModelStage<float> split(spec, all, &params, moerun::Precision::kFp32, {&group, 4});
  auto r = split.Forward(acts, kIds.data(), nullptr, kTargets.data(), 2, 5, nullptr);
  CHECK(r.status().code() == moerun::Status::Code::kAborted);
  CHECK(r.status().message() == "expert counts: peer rank 3 is gone");
  // Parameters that do not cover the range: the missing tensor is named.
  Parameters<float> half(StageTensors(spec, {0, 1, true, false}));
  ModelStage<float> wrong(spec, all, &half);
  CHECK(wrong.status().code() == moerun::Status::Code::kInternal);
  CHECK(wrong.status().message().find("model.layers.1.") != std::string::npos);
  CHECK_FALSE(wrong.Backward(acts, 1.0, nullptr, nullptr).ok());
}
