// A finished or running training run as the CLI sees it: the job spec saved in
// <run dir>/job.yaml and the checkpoints it wrote.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/job_spec.h"
#include "common/spec_loader.h"
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

// One verified checkpoint step of a run, with the run's spec.
struct RunStep {
  Run run;
  int64_t step = 0;
  std::vector<checkpoint::Entry> entries;
};
// OpenRun + ChooseStep + reading the step from every shard.
Result<RunStep> OpenRunStep(const std::string& run_dir, std::optional<int64_t> step);

// Before a job trains into `run_dir`: when the run dir holds checkpoints of a job whose model
// differs from `job` (its job.yaml), InvalidArgument as "FILE:LINE:COL: error: FIELD: ..."
// at the job's field that differs, so nothing starts, overwrites job.yaml or mixes another
// model's steps with its checkpoints. OK when the run dir is new or holds the same model.
Status CheckRunDirModel(const LoadedJobSpec& job, const std::string& job_file,
                        const std::string& run_dir);

// Prints "moerun <command>: <message>" to stderr and returns the exit code for `s`:
// 2 for bad arguments, 1 otherwise.
int Fail(const char* command, const Status& s);

}  // namespace moerun::cli
