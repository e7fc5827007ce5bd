#include "bench/mla_bench.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/bench_timing.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "worker/model/model_stage.h"

namespace moerun::bench {

namespace cpu = kernels::cpu;

void AddMlaBenchOptions(CLI::App* app, MlaBenchArgs* a) {
  app->add_option("--tokens", a->tokens)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--seq", a->seq, "tokens per sequence; divides --tokens")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--d-model", a->d_model)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--heads", a->heads)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--q-lora", a->q_lora, "0: one q_proj")->capture_default_str();
  app->add_option("--kv-lora", a->kv_lora)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--nope", a->nope)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--rope", a->rope, "even")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--v", a->v)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--threads", a->threads)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--reps", a->reps)->capture_default_str()->check(CLI::PositiveNumber);
}

void RunMlaBench(const MlaBenchArgs& a) {
  cpu::SetBlasThreads(a.threads);
  ModelSpec spec;
  spec.attention = AttentionKind::kMla;
  spec.d_model = a.d_model;
  spec.n_heads = a.heads;
  spec.q_lora_rank = a.q_lora;
  spec.kv_lora_rank = a.kv_lora;
  spec.qk_nope_head_dim = a.nope;
  spec.qk_rope_head_dim = a.rope;
  spec.v_head_dim = a.v;
  const model::MlaShape m = model::MlaShapeFor(spec, model::GemmPrecision::kFp32);
  const int64_t n = a.tokens, d = a.d_model, h = a.heads, b = a.tokens / a.seq;
  const int64_t qk = a.nope + a.rope, qr = a.q_lora, kr = a.kv_lora;
  struct Tensor {
    std::vector<float> value, grad;
  };
  auto matrix = [](int64_t rows, int64_t cols, uint32_t seed) {
    return Tensor{RandomNormal(size_t(rows * cols), seed, 0.02f),
                  std::vector<float>(size_t(rows * cols))};
  };
  auto ones = [](int64_t len) {
    return Tensor{std::vector<float>(size_t(len), 1.0f), std::vector<float>(size_t(len))};
  };
  Tensor norm = ones(d), qa = matrix(qr, d, 1), qa_norm = ones(qr), qb = matrix(h * qk, qr, 2),
         q = matrix(h * qk, d, 3), kva = matrix(kr + a.rope, d, 4), kva_norm = ones(kr),
         kvb = matrix(h * (a.nope + a.v), kr, 5), o = matrix(d, h * a.v, 6);
  model::MlaWeights<float> w;
  if (qr > 0) {
    w.q_a = qa.value.data(), w.dq_a = qa.grad.data();
    w.q_a_norm = qa_norm.value.data(), w.dq_a_norm = qa_norm.grad.data();
    w.q_b = qb.value.data(), w.dq_b = qb.grad.data();
  } else {
    w.q = q.value.data(), w.dq = q.grad.data();
  }
  w.kv_a = kva.value.data(), w.dkv_a = kva.grad.data();
  w.kv_a_norm = kva_norm.value.data(), w.dkv_a_norm = kva_norm.grad.data();
  w.kv_b = kvb.value.data(), w.dkv_b = kvb.grad.data();
  w.o = o.value.data(), w.d_o = o.grad.data();

  const auto x = RandomNormal(size_t(n * d), 7, 1.0f), dy = RandomNormal(size_t(n * d), 8, 1.0f);
  std::vector<float> n1(x.size()), rstd(static_cast<size_t>(n)), y(x.size()), dn1(x.size()),
      dx(x.size());
  model::MlaActivations<float> act;
  const double s = MedianSeconds(a.reps, [&] {
    // y = x + MLA(RMSNorm(x)); dx = dy + RMSNorm'ᵀ(MLA'ᵀ dy).
    cpu::RmsNormForward(x.data(), norm.value.data(), n1.data(), rstd.data(), n, d);
    y = x;
    model::MlaForward(n1.data(), b, a.seq, m, w, act, y.data(), true);
    model::MlaBackward(dy.data(), n1.data(), b, a.seq, m, w, act, dn1.data(), false);
    cpu::RmsNormBackward(dn1.data(), x.data(), norm.value.data(), rstd.data(), dx.data(),
                         norm.grad.data(), n, d);
    for (size_t i = 0; i < dx.size(); ++i) dx[i] += dy[i];
  });
  // GEMM multiply-adds per token: the projections, then the causal scores and values.
  const double proj = qr > 0 ? double(d * qr + qr * h * qk) : double(d * h * qk);
  const double macs_proj = proj + double(d * (kr + a.rope) + kr * h * (a.nope + a.v) + h * a.v * d);
  const double keys_per_token = double(a.seq + 1) / 2.0;
  const double macs_att = keys_per_token * double(h * (qk + a.v));
  const double flops = 2.0 * 3.0 * double(n) * (macs_proj + macs_att);  // forward + 2x backward
  nlohmann::json j = {{"bench", "mla"},
                      {"impl", "moerun"},
                      {"tokens", a.tokens},
                      {"seq", a.seq},
                      {"d_model", a.d_model},
                      {"heads", a.heads},
                      {"q_lora", a.q_lora},
                      {"kv_lora", a.kv_lora},
                      {"nope", a.nope},
                      {"rope", a.rope},
                      {"v", a.v},
                      {"threads", a.threads},
                      {"median_s", s},
                      {"tokens_per_s", double(n) / s},
                      {"causal_gflops", flops / s / 1e9}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace moerun::bench
