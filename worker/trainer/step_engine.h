// StepEngine: what the trainer's loop asks of whatever runs its steps — the CPU StepRunner
// (worker/trainer/step_runner.h) or the GPU one (worker/trainer/gpu_step_runner.h). Every
// rank of the world calls the same methods in the same order; all ranks get the same
// results. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace moerun::trainer {

struct StepResult {
  double loss = 0;          // mean cross-entropy over the step's sequences
  double balance_loss = 0;  // mean sequence-wise balance loss, summed over MoE layers
  double grad_norm = 0;     // before clipping
  double lr = 0;
  // Tokens per expert in every MoE layer of the model (not only this stage's), by layer.
  std::vector<std::vector<int64_t>> expert_load;
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;

  // Step `step` (1-based) of `total_steps`.
  virtual Result<StepResult> Run(int64_t step, int64_t total_steps) = 0;

  // Mean cross-entropy over the first `windows` validation windows.
  virtual Result<double> Evaluate(int64_t windows) = 0;

  // True when any rank asks to stop (its `local` is true).
  virtual Result<bool> AnyRank(bool local) = 0;

  // Brings the host's weights and optimizer state (what a checkpoint saves) up to date with
  // the engine's; a no-op where they are the same memory.
  virtual Status SyncHost() { return Status::OK(); }

  // Where the steps run, for the log ("GPU 0: NVIDIA H200, bf16").
  virtual std::string Describe() const = 0;

  // After a failure: fails the engine's own data-plane calls (those not over the topology's
  // communicators, which the trainer aborts itself) so nothing waits for peers that are gone.
  // Thread-safe; idempotent.
  virtual void Abort(const std::string& /*reason*/) {}
};

}  // namespace moerun::trainer
