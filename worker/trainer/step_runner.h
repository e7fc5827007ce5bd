// StepRunner: one optimizer step of one rank, whatever the layout (DESIGN.md §5).
//  1. Its replica's micro-batches through its pipeline stage, in the job's schedule
//     (worker/trainer/pipeline_schedule.h). Activations and their gradients travel between
//     neighbouring stages; tokens travel to their experts inside the MoE layers.
//  2. Expert token counts summed over the stage's replicas; every replica updates its
//     balancing biases from the same global counts.
//  3. Gradients summed: dense ones over the data group, expert ones over the replica group.
//  4. Global gradient norm over every parameter once, clipping, AdamW.
// Every rank of the world calls Run() for the same step. Not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "common/job_spec.h"
#include "worker/data/corpus.h"
#include "worker/model/model_stage.h"
#include "worker/trainer/stage_link.h"
#include "worker/trainer/step_engine.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"

namespace moerun::trainer {

class StepRunner : public StepEngine {
 public:
  StepRunner(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
             model::ModelStage<float>* stage, OptimizerState* opt, const data::Corpus* corpus);

  // Step `step` (1-based) of `total_steps`. Every rank gets the same result.
  Result<StepResult> Run(int64_t step, int64_t total_steps) override;

  // Mean cross-entropy over the first `windows` validation windows (all ranks get it).
  Result<double> Evaluate(int64_t windows) override;

  // True when any rank asks to stop (its `local` is true): all ranks agree.
  Result<bool> AnyRank(bool local) override;

  std::string Describe() const override;

 private:
  Status Forward(int64_t m, int64_t global_micro, int64_t batch, bool eval, const int64_t* windows);
  Status Backward(int64_t m, double dloss);
  Status SyncGradients();

  const JobSpec& spec_;
  Topology* topo_;
  model::Parameters<float>* params_;
  model::ModelStage<float>* stage_;
  OptimizerState* opt_;
  const data::Corpus* corpus_;
  StageLink link_;  // activations and gradients to and from the neighbouring stages
  int64_t seq_ = 0, micro_seqs_ = 0;
  std::vector<model::StageActivations<float>> acts_;
  std::vector<int32_t> inputs_, targets_;
  std::vector<float> hidden_in_, hidden_out_, grad_in_, grad_out_, pack_;
  std::vector<double> counts_;  // this stage's MoE layers x experts, this step
  double loss_sum_ = 0, balance_sum_ = 0;
  int64_t cur_step_ = 0;
};

}  // namespace moerun::trainer
