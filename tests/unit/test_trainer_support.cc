// What the trainers can run, judged from the spec (worker/trainer/trainer_support.h): every
// example config gets the verdict its layout deserves, and fp8 on GPUs names every size that
// breaks cuBLASLt's multiples of 16 and the 16-byte alignment of gradients.
#include <doctest/doctest.h>

#include "common/spec_loader.h"
#include "worker/model/fp8_shape_support.h"
#include "worker/trainer/trainer_support.h"

namespace {

moerun::JobSpec Config(const std::string& name) {
  auto loaded = moerun::LoadJobSpecFile(std::string(MOERUN_SOURCE_DIR) + "/configs/" + name);
  REQUIRE(loaded.ok());
  return loaded.spec;
}

}  // namespace

TEST_CASE("the example configs: what this version's trainers can run") {
  CHECK(moerun::trainer::TrainerSupport(Config("tiny-cpu.yaml")).ok());
  CHECK(moerun::trainer::TrainerSupport(Config("multi-host-cpu.yaml")).ok());
  CHECK(moerun::trainer::TrainerSupport(Config("single-gpu.yaml")).ok());
  // MLA trains on the CPU; the GPU trainer refuses it by name.
  for (const char* mla : {"gpu-8x.yaml", "deepseek-v3.yaml"}) {
    moerun::JobSpec spec = Config(mla);
    const moerun::Status s = moerun::trainer::TrainerSupport(spec);
    CHECK(s.code() == moerun::Status::Code::kUnimplemented);
    CHECK(s.message().find("model.attention: mla") != std::string::npos);
    CHECK((s.message().find("model.mtp.depth") != std::string::npos) == (spec.model.mtp.depth > 0));
    spec.resources.backend = moerun::Backend::kCpu;
    CHECK(moerun::trainer::TrainerSupport(spec).ok());
  }
}

TEST_CASE("GPU jobs: data, pipeline and expert parallelism are all accepted") {
  moerun::JobSpec s = Config("single-gpu.yaml");
  s.parallel.data = 4;
  CHECK(moerun::trainer::GpuStepSupport(s).ok());
  s.parallel.pipeline = 3;
  CHECK(moerun::trainer::GpuStepSupport(s).ok());
  s.parallel.expert = 2;
  CHECK(moerun::trainer::GpuStepSupport(s).ok());
  s.parallel.expert = 4;
  s.train.precision = moerun::Precision::kFp8;  // 16 experts, 4 per rank
  CHECK(moerun::trainer::GpuStepSupport(s).ok());
}

TEST_CASE("fp8 on GPUs: every size that is not a multiple of 16 is named, and E % 4") {
  moerun::JobSpec s = Config("single-gpu.yaml");
  s.train.precision = moerun::Precision::kFp8;
  CHECK(moerun::trainer::GpuStepSupport(s).ok());  // 32 x 256 tokens, 512, 1536, 256
  s.model.moe.expert_hidden = 200;
  s.model.moe.routed_experts = 18;
  s.train.global_batch = 3;  // 3 x 256 tokens: still a multiple of 16
  const moerun::Status bad = moerun::trainer::GpuStepSupport(s);
  CHECK(bad.code() == moerun::Status::Code::kUnimplemented);
  CHECK(bad.message().find("model.moe.expert_hidden 200") != std::string::npos);
  CHECK(bad.message().find("shared_experts x expert_hidden 200") != std::string::npos);
  CHECK(bad.message().find("model.moe.routed_experts 18 (a multiple of 4 here)") !=
        std::string::npos);
  CHECK(bad.message().find("tokens per micro-batch") == std::string::npos);
  // The token count is checked per forward.
  CHECK(!moerun::model::Fp8ShapeSupport(Config("single-gpu.yaml").model, 100).ok());
  CHECK(moerun::model::Fp8ShapeSupport(Config("single-gpu.yaml").model, 112).ok());
}
