#include "worker/trainer/trainer_support.h"

#include <string>

#include "worker/model/fp8_shape_support.h"
#include "worker/trainer/gpu_stage.h"

namespace moerun::trainer {

Status TrainerSupport(const JobSpec& spec) { return GpuStepSupport(spec); }

Status GpuStepSupport(const JobSpec& spec) {
  if (spec.resources.backend != Backend::kCuda) return Status::OK();
  const std::string prefix = "resources.backend: cuda: ";
  if (spec.model.mtp.depth > 0) {
    return Status::Unimplemented(prefix +
                                 "model.mtp.depth: multi-token prediction is not implemented by "
                                 "the GPU trainer yet; train it with resources.backend: cpu, or "
                                 "set mtp.depth: 0");
  }
  if (spec.model.attention == AttentionKind::kMla) {
    return Status::Unimplemented(prefix +
                                 "model.attention: mla is not implemented by the GPU trainer yet; "
                                 "train it with resources.backend: cpu, or use attention: mha");
  }
  if (spec.train.precision == Precision::kFp8) {
    const int64_t micro_tokens = spec.train.global_batch /
                                 (spec.parallel.data * spec.parallel.micro_batches) *
                                 spec.model.seq_len;
    Status fp8 = model::Fp8ShapeSupport(spec.model, micro_tokens);
    if (!fp8.ok()) return Status::Unimplemented(prefix + fp8.message());
  }
  return Status::OK();
}

namespace {
GpuStepHooks& Hooks() {
  static GpuStepHooks hooks;
  return hooks;
}
}  // namespace

const GpuStepHooks& LinkedGpuStep() { return Hooks(); }
void SetLinkedGpuStep(const GpuStepHooks& hooks) { Hooks() = hooks; }

}  // namespace moerun::trainer
