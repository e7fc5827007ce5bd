// What this version's trainers can train, judged from the job spec alone (no CUDA, no
// device): the trainer asks before it starts, and the CLI asks before a job is launched or
// submitted, so a job every trainer would refuse is refused at once, not after placement.
#pragma once

#include "common/job_spec.h"
#include "common/status.h"

namespace moerun::trainer {

// OK, or Unimplemented naming what is missing and what to use instead: for
// resources.backend: cuda what GpuStepSupport refuses.
Status TrainerSupport(const JobSpec& spec);

// For a cuda job, what the GPU step (worker/trainer/gpu_stage.h) lacks: MLA attention, fp8
// sizes cuBLASLt cannot take. OK for a cpu job.
Status GpuStepSupport(const JobSpec& spec);

}  // namespace moerun::trainer
