// Multi-token prediction on the GPU against the CPU: tests/configs/mla-mtp.yaml (MLA, two MTP
// modules with MoE blocks) as one stage — the main and MTP losses, the balance loss and every
// gradient, the shared embedding's and head's included — then with the modules switched off
// (evaluation): the main loss alone, no MTP expert counts; cut into two pipeline stages, the
// last with its copy of the embedding (the copies' gradients sum to the whole model's, the copy
// stays out of the stage's norm); in fp8 against the CPU's fp8 emulation; and a falling loss
// on one GPU. Each check adds a row to the table.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/model_fixture.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/model_stage.h"

using moerun::gpu_testing::MaxRelError;

namespace {

moerun::ModelSpec MlaMtpModel() { return moerun::gpu_testing::TestConfig("mla-mtp.yaml").model; }

}  // namespace

TEST_CASE("MTP on the GPU: the CPU's losses and every gradient; evaluation runs without it") {
  const moerun::ModelSpec model = MlaMtpModel();
  REQUIRE(model.mtp.depth == 2);
  moerun::gpu_testing::CpuGpuRun run(model);
  const moerun::ModelSpec& spec = run.spec;
  auto& m = run.gpu_model;
  const double mtp_err = std::fabs(m->mtp_loss() - run.acts.mtp_loss) / run.acts.mtp_loss;
  moerun::gpu_testing::Record({"MTP loss", "fp32", mtp_err, 1e-4, 0, 0, 0});
  CHECK(std::fabs(run.gpu_loss - run.cpu_loss) <= 1e-4 * std::fabs(run.cpu_loss));
  CHECK(mtp_err <= 1e-4);
  CHECK(std::fabs(m->balance_loss() - run.acts.balance_loss) <=
        1e-4 * std::fabs(run.acts.balance_loss) + 1e-12);
  // The MTP blocks' expert counts follow the main layers', as on the CPU (from the forward
  // before the backward; the counts stay until the next forward).
  REQUIRE(m->moe_layers() == int64_t(run.stage->moe_layers().size()));
  for (int64_t j = 0; j < m->moe_layers(); ++j) {
    const int64_t* c = m->expert_counts(j);
    CHECK(std::vector<int64_t>(c, c + spec.moe.routed_experts) ==
          run.stage->expert_counts()[size_t(j)]);
  }
  moerun::gpu_testing::CheckGradients(run.gpu_grads, run.params, "MTP model loss + all gradients");

  // Evaluation: no MTP module runs; the main loss is the same.
  m->set_mtp_enabled(false);
  auto eval = m->Forward(run.ids.data(), run.targets.data());
  REQUIRE(eval.ok());
  CHECK(eval.value() == run.gpu_loss);
  CHECK(m->mtp_loss() == 0.0);
  const int64_t* none = m->expert_counts(m->moe_layers() - 1);
  for (int64_t e = 0; e < spec.moe.routed_experts; ++e) CHECK(none[e] == 0);
}

TEST_CASE("1-GPU training with MTP: the loss falls, fp32 and bf16") {
  const char* what = "1-GPU MLA + MTP training loss ratio";
  moerun::gpu_testing::CheckTrainsOnOneGpu<float>(MlaMtpModel(), what, "fp32");
  moerun::gpu_testing::CheckTrainsOnOneGpu<__nv_bfloat16>(MlaMtpModel(), what, "bf16");
}

TEST_CASE("MTP over two stages on the GPU: the whole model's losses; the embedding copies sum") {
  namespace model = moerun::model;
  const moerun::ModelSpec spec = MlaMtpModel();
  const int64_t b = 4, s = spec.seq_len, n = b * s, d = spec.d_model;
  std::vector<int32_t> ids, targets;
  moerun::gpu_testing::Batch(spec, b, &ids, &targets);
  model::Parameters<float> params(moerun::ModelTensors(spec));
  params.Initialize(3, spec.init_std);
  // Layers 0-1 with the embedding; layer 2, the head, the MTP modules and a copy of the
  // embedding on the last stage.
  const model::StageRange r0{0, 2, true, false}, r1{2, spec.n_layers, false, true};
  auto p0 = moerun::gpu_testing::StageParams(spec, r0, params);
  auto p1 = moerun::gpu_testing::StageParams(spec, r1, params);
  REQUIRE(p1.Find("model.embed_tokens.weight") != nullptr);
  moerun::gpu_testing::Gpu gpu;
  auto whole = model::cuda::ModelCuda<float>::Create(spec, params, b, s, gpu.stream, gpu.handle);
  auto s0 = model::cuda::ModelCuda<float>::Create(spec, r0, p0, b, s, gpu.stream, gpu.handle);
  auto s1 = model::cuda::ModelCuda<float>::Create(spec, r1, p1, b, s, gpu.stream, gpu.handle);
  REQUIRE_MESSAGE(whole.ok(), whole.status().message());
  REQUIRE_MESSAGE(s0.ok(), s0.status().message());
  REQUIRE_MESSAGE(s1.ok(), s1.status().message());
  auto loss = whole.value()->Forward(ids.data(), targets.data());
  REQUIRE(loss.ok());
  REQUIRE(whole.value()->Backward(0.5).ok());
  REQUIRE(s0.value()->Forward(ids.data(), nullptr).ok());
  CUDA_OK(cudaMemcpy(s1.value()->stage_input(), s0.value()->stage_output(), n * d * sizeof(float),
                     cudaMemcpyDeviceToDevice));
  auto staged = s1.value()->Forward(nullptr, targets.data());
  REQUIRE(staged.ok());
  CHECK(std::fabs(staged.value() - loss.value()) <= 1e-6 * loss.value());
  CHECK(std::fabs(s1.value()->mtp_loss() - whole.value()->mtp_loss()) <=
        1e-6 * whole.value()->mtp_loss());
  CHECK(s0.value()->mtp_loss() == 0.0);
  REQUIRE(s1.value()->Backward(0.5).ok());
  CUDA_OK(cudaMemcpy(s0.value()->output_grad(), s1.value()->input_grad(), n * d * sizeof(float),
                     cudaMemcpyDeviceToDevice));
  REQUIRE(s0.value()->Backward(0.5).ok());
  std::vector<float> gw, g0, g1;
  REQUIRE(whole.value()->Download(nullptr, &gw).ok());
  REQUIRE(s0.value()->Download(nullptr, &g0).ok());
  REQUIRE(s1.value()->Download(nullptr, &g1).ok());
  const std::string emb = "model.embed_tokens.weight";
  auto grad_of = [&](const model::Parameters<float>& p, const std::vector<float>& g,
                     const std::string& name) {
    for (const auto& v : p.views())
      if (v.info.name == name)
        return std::vector<float>(g.begin() + v.offset, g.begin() + v.offset + v.info.numel());
    return std::vector<float>();
  };
  double worst = 0;
  for (auto [stage_params, grads] : {std::pair{&p0, &g0}, std::pair{&p1, &g1}}) {
    for (const auto& v : stage_params->views()) {
      if (v.info.name == emb) continue;
      const auto got = grad_of(*stage_params, *grads, v.info.name);
      const double e = MaxRelError(got, grad_of(params, gw, v.info.name));
      worst = std::max(worst, e);
      CHECK_MESSAGE(e <= 1e-5, v.info.name << ": " << e);
    }
  }
  // The two copies' gradients sum to the one embedding's (what the embedding pair all-reduces).
  std::vector<float> sum = grad_of(p0, g0, emb);
  const auto copy = grad_of(p1, g1, emb);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += copy[i];
  const double emb_err = MaxRelError(sum, grad_of(params, gw, emb));
  worst = std::max(worst, emb_err);
  CHECK(emb_err <= 1e-5);
  moerun::gpu_testing::Record(
      {"MTP over 2 stages vs whole model: gradients", "fp32", worst, 1e-5, 0, 0, 0});
  // The last stage's norm leaves its copy of the embedding out.
  double host = 0;
  for (const auto& v : p1.views()) {
    if (!v.info.trainable() || v.info.name == emb ||
        v.info.role == moerun::TensorRole::kRoutedExpert)
      continue;
    for (float x : grad_of(p1, g1, v.info.name)) host += double(x) * double(x);
  }
  auto norm = s1.value()->GradSquareSum(false);
  REQUIRE(norm.ok());
  CHECK(std::fabs(norm.value() - host) <= 1e-5 * host);
}

TEST_CASE("MLA + MTP in fp8 on the GPU follows the CPU's fp8 emulation") {
  if (!moerun::gpu_testing::IsHopper()) {
    MESSAGE("skipped: fp8 needs a Hopper GPU (sm_90)");
    return;
  }
  namespace model = moerun::model;
  // Every size a multiple of 16, as cuBLASLt's fp8 GEMMs need: 16 sequences of 32 tokens
  // (and of 31 and 30 in the MTP modules), kv_lora + rope 32, heads' widths 48, 32 and 16.
  moerun::ModelSpec spec = MlaMtpModel();
  spec.kv_lora_rank = 16;
  spec.qk_rope_head_dim = 16;
  const int64_t b = 16, s = spec.seq_len;
  std::vector<int32_t> ids, targets;
  moerun::gpu_testing::Batch(spec, b, &ids, &targets);
  model::Parameters<float> params(moerun::ModelTensors(spec));
  params.Initialize(3, spec.init_std);
  moerun::gpu_testing::Gpu gpu;
  auto m = model::cuda::ModelCuda<__nv_bfloat16>::Create(spec, params, b, s, gpu.stream, gpu.handle,
                                                         true);
  REQUIRE_MESSAGE(m.ok(), m.status().message());
  auto gpu_loss = m.value()->Forward(ids.data(), targets.data());
  REQUIRE_MESSAGE(gpu_loss.ok(), gpu_loss.status().message());
  model::ModelStage<float> stage(spec, model::StageRange{0, spec.n_layers, true, true}, &params,
                                 moerun::Precision::kFp8);
  model::StageActivations<float> acts;
  auto cpu_loss = stage.Forward(acts, ids.data(), nullptr, targets.data(), b, s, nullptr);
  REQUIRE(cpu_loss.ok());
  const double main_err = std::fabs(gpu_loss.value() - cpu_loss.value()) / cpu_loss.value();
  const double mtp_err = std::fabs(m.value()->mtp_loss() - acts.mtp_loss) / acts.mtp_loss;
  MESSAGE("fp8: main loss GPU " << gpu_loss.value() << " CPU " << cpu_loss.value() << "; MTP GPU "
                                << m.value()->mtp_loss() << " CPU " << acts.mtp_loss);
  moerun::gpu_testing::Record({"MLA + MTP fp8: loss vs CPU fp8", "fp8", main_err, 2e-2, 0, 0, 0});
  moerun::gpu_testing::Record(
      {"MLA + MTP fp8: MTP loss vs CPU fp8", "fp8", mtp_err, 2e-2, 0, 0, 0});
  CHECK(main_err <= 2e-2);
  CHECK(mtp_err <= 2e-2);
  REQUIRE(m.value()->Backward(1.0).ok());
}
