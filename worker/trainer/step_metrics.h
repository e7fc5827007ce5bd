// The metrics a step reports, the same on every rank, for the CPU and GPU steps alike.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/comm/timed_communicator.h"
#include "worker/trainer/step_result.h"
#include "worker/trainer/topology.h"

namespace moerun::trainer {

// This rank's sums over its micro-batches: the last stage's cross-entropy and MTP loss, every
// stage's balance loss.
struct LossSums {
  double loss = 0, balance = 0, mtp = 0;
};

// Fills r->loss, r->balance_loss, r->mtp_loss and r->expert_load from this rank's share, with
// one sum over the world: the loss sums and replica 0's expert token counts of its stage's
// MoE layers (`stage_counts`: layers × experts, already summed over the data group; the
// stage's first MoE layer is MoE layer `first_moe` of the model, the MTP modules' blocks
// numbered after the main ones). Losses are means over the step's data × micro_batches
// micro-batches.
// One step's metrics line (metrics.jsonl, the coordinator's step report): loss, balance loss,
// lr, norm, the MTP loss (model.mtp.depth > 0), the step's time split into compute, data-plane wait
// and pipeline bubble (`waited`: this step's share of DataPlaneWait), tokens/s, and the expert load
// per MoE layer (keyed by global layer index) with its max/mean.
nlohmann::json StepLine(const JobSpec& spec, int64_t step, const StepResult& r, double seconds,
                        const comm::DataPlaneWait& waited);

Status GatherStepMetrics(const JobSpec& spec, const Topology& t, const LossSums& sums,
                         const std::vector<double>& stage_counts, int64_t first_moe, StepResult* r);

}  // namespace moerun::trainer
