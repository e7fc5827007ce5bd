#include "worker/trainer/trainer_support.h"

#include <string>
#include <vector>

#include "worker/model/fp8_shape_support.h"
#include "worker/trainer/gpu_stage.h"

namespace moerun::trainer {

Status TrainerSupport(const JobSpec& spec) { return GpuStepSupport(spec); }

Status GpuStepSupport(const JobSpec& spec) {
  if (spec.resources.backend != Backend::kCuda) return Status::OK();
  const std::string prefix = "resources.backend: cuda: ";
  // What the GPU model lacks, named together so one edit of the spec answers it all.
  std::vector<std::string> missing, instead;
  if (spec.model.attention == AttentionKind::kMla) {
    missing.push_back("model.attention: mla");
    instead.push_back("attention: mha");
  }
  if (spec.model.mtp.depth > 0) {
    missing.push_back("model.mtp.depth > 0 (multi-token prediction)");
    instead.push_back("mtp.depth: 0");
  }
  if (!missing.empty()) {
    const bool both = missing.size() > 1;
    return Status::Unimplemented(prefix + missing[0] + (both ? " and " + missing[1] : "") +
                                 (both ? " are" : " is") +
                                 " not implemented by the GPU trainer yet; train with "
                                 "resources.backend: cpu, or use " +
                                 instead[0] + (both ? " and " + instead[1] : ""));
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
