// Multi-token prediction on the GPU against the CPU: tests/configs/mla-mtp.yaml (MLA, two MTP
// modules with MoE blocks) as one stage — the main and MTP losses, the balance loss and every
// gradient, the shared embedding's and head's included — then with the modules switched off
// (evaluation): the main loss alone, no MTP expert counts. Each check adds a row to the table.
#include <doctest/doctest.h>

#include <cmath>

#include "common/spec_loader.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/model_fixture.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/model_stage.h"

TEST_CASE("MTP on the GPU: the CPU's losses and every gradient; evaluation runs without it") {
  auto loaded =
      moerun::LoadJobSpecFile(moerun::gpu_testing::SourceDir() + "/tests/configs/mla-mtp.yaml");
  REQUIRE(loaded.ok());
  REQUIRE(loaded.spec.model.mtp.depth == 2);
  moerun::gpu_testing::CpuGpuRun run(loaded.spec.model);
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
  auto loaded =
      moerun::LoadJobSpecFile(moerun::gpu_testing::SourceDir() + "/tests/configs/mla-mtp.yaml");
  REQUIRE(loaded.ok());
  const char* what = "1-GPU MLA + MTP training loss ratio";
  moerun::gpu_testing::CheckTrainsOnOneGpu<float>(loaded.spec.model, what, "fp32");
  moerun::gpu_testing::CheckTrainsOnOneGpu<__nv_bfloat16>(loaded.spec.model, what, "bf16");
}
