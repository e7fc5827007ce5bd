// Trainer: one process that trains a whole job by itself (world size 1; `parallel` only sets
// how a step is cut into micro-batches, so the numbers match a parallel run of the job).
//
// Each step: data × micro_batches micro-batches of global_batch / (data × micro_batches)
// sequences, gradients summed with weight 1/micro-batches, global-norm clipping, linear
// warm-up then cosine decay, AdamW, then the aux-loss-free bias update from the step's
// expert token counts. Writes <run dir>/metrics.jsonl (one JSON object per step),
// <run dir>/train.log, and checkpoints under checkpoint.dir (default <run dir>/checkpoints).
// Not thread-safe; one per process.
#pragma once

#include <cstdint>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"

namespace moerun::trainer {

struct TrainOptions {
  std::string run_dir;
  int64_t steps = 0;     // > 0 replaces train.steps (and the schedule's length)
  bool resume = false;   // continue from the newest readable checkpoint, if any
  bool progress = true;  // a progress bar when stderr is a terminal
};

struct TrainSummary {
  int64_t first_step = 0;  // 1-based first step this run trained
  int64_t last_step = 0;
  double final_loss = 0;
  double final_val_loss = -1;  // -1: no evaluation ran
  double tokens_per_s = 0;
};

// Trains; the error names what failed (spec, data, checkpoint) and *exit_code gets the
// process exit code for it (common/exit_codes.h; 130 when interrupted by SIGINT/SIGTERM).
// `spec_yaml` is saved as <run dir>/job.yaml so eval, export and digest can rebuild the
// model from the run dir.
Result<TrainSummary> Train(const JobSpec& spec, const std::string& spec_yaml,
                           const TrainOptions& opts, int* exit_code);

inline constexpr int kExitInterrupted = 130;

// The checkpoint directory of a run: checkpoint.dir or <run dir>/checkpoints.
std::string CheckpointDir(const JobSpec& spec, const std::string& run_dir);
// The shard store path of a single-process run (DESIGN.md §7: stage-S/dp-D).
std::string SingleShardPath(const JobSpec& spec, const std::string& run_dir);

// Learning rate at 1-based `step`: linear warm-up to lr, then cosine to min_lr.
double LearningRate(const OptimizerSpec& o, int64_t step, int64_t total_steps);

}  // namespace moerun::trainer
