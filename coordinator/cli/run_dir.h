// A finished or running training run as the CLI sees it: the job spec saved in
// <run dir>/job.yaml and the checkpoints it wrote.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/checkpoint/checkpoint_reader.h"

namespace moerun::cli {

struct Run {
  JobSpec spec;
  std::string checkpoint_dir;
};

Result<Run> OpenRun(const std::string& run_dir);

// `step` when given (it must be complete and readable), else the newest readable step;
// steps refused on the way are printed to stderr with their reason.
Result<int64_t> ChooseStep(const checkpoint::RunCheckpoints& ckpts, std::optional<int64_t> step);

// Exit code for a failed command: 2 for bad arguments, 1 otherwise.
int ExitCodeFor(const Status& s);

}  // namespace moerun::cli
