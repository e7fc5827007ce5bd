// StepDriver: one optimizer step of one rank, whatever the layout and the backend
// (docs/architecture.md §5). The rules live here once; the StageBackend
// (worker/trainer/stage_backend.h) computes.
//  1. The replica's micro-batches through its pipeline stage in the job's schedule
//     (worker/trainer/pipeline_schedule.h). Activations and their gradients travel between
//     neighbouring stages through a StageLink (sends paired with the next receive, so 1F1B
//     cannot deadlock on NCCL); tokens travel to their experts inside the MoE layers. A
//     backend that keeps fewer activations than micro-batches in flight runs a micro-batch's
//     forward again before its backward, after letting its held send go.
//  2. Expert token counts summed over the stage's data group; every replica updates its
//     balancing biases from the same global counts.
//  3. Gradients summed: dense ones over the data group, routed experts' over the expert
//     replica group, each packed into one all-reduce; under multi-token prediction over a
//     pipeline, the embedding's two copies (first and last stage) then over their pair, so
//     both stay the same bits.
//  4. The global gradient norm with every parameter counted once — dense ones on replica 0,
//     routed experts on the first expert group — then clipping and AdamW.
// Evaluation: every replica runs the same number of forwards (expert groups exchange tokens
// in each), past the end empty ones, or the last batch again where forwards have a fixed
// size; only real windows are counted.
// The data order (seed, step, global micro-batch, sequence) and the learning-rate schedule
// are the same on every backend, so a job's metrics mean the same on either.
// Every rank of the world calls the same methods in the same order; all get the same
// results. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/data/corpus.h"
#include "worker/trainer/stage_backend.h"
#include "worker/trainer/stage_link.h"
#include "worker/trainer/step_result.h"
#include "worker/trainer/topology.h"

namespace moerun::trainer {

class StepDriver {
 public:
  // `topo` and `corpus` outlive the driver.
  StepDriver(const JobSpec& spec, Topology* topo, const data::Corpus* corpus,
             std::unique_ptr<StageBackend> backend);

  // Step `step` (1-based) of `total_steps`.
  Result<StepResult> Run(int64_t step, int64_t total_steps);

  // Mean cross-entropy over the first `windows` validation windows.
  Result<double> Evaluate(int64_t windows);

  // True when any rank asks to stop (its `local` is true).
  Result<bool> AnyRank(bool local);

  // The host's weights and optimizer state brought up to date (before a checkpoint).
  Status SyncHost() { return backend_->SyncHost(); }
  std::string Describe() const { return backend_->Describe(); }
  // After a failure: fails the backend's own data-plane calls. Thread-safe; idempotent.
  void Abort(const std::string& reason) { backend_->Abort(reason); }

 private:
  // Micro-batch m's input from the previous stage into the backend (or, on the first stage,
  // the held send let go): how every forward op starts.
  Status ReceiveInput(int64_t m, int64_t sequences, uint32_t tag);
  // Micro-batch m's training forward (counted).
  Status Forward(int64_t m, int64_t step, int64_t global_micro);
  Status Backward(int64_t m, double dloss);
  Status SumGradients();
  // Micro-batch m's token buffers (first and last stage), kept for a forward run again.
  int32_t* Ids(int64_t m) { return ids_[size_t(m)].data(); }
  int32_t* Targets(int64_t m) { return targets_[size_t(m)].data(); }

  const JobSpec& spec_;
  Topology* topo_;
  const data::Corpus* corpus_;
  std::unique_ptr<StageBackend> backend_;
  StageLink link_;
  int64_t seq_ = 0, micro_seqs_ = 0;
  std::vector<std::vector<int32_t>> ids_, targets_;  // per micro-batch in the step
  std::vector<double> counts_;  // this stage's MoE layers × experts, this step
  double loss_sum_ = 0, balance_sum_ = 0, mtp_sum_ = 0;
};

}  // namespace moerun::trainer
