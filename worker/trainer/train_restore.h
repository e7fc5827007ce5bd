// Where a rank's run starts (docs/architecture.md §7): from the seed, from the committed
// checkpoint step the coordinator names (a restart after a failure), or with --resume from
// the newest step every shard holds and verifies. Every rank opens its shard first, then
// all read the same set of shards, so they agree on the step; nobody writes before all have
// read.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/checkpoint/shard_store.h"
#include "worker/model/parameters.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {

// The state a rank trains from: its stage's weights and AdamW moments, and the last step
// done (0: none).
struct TrainState {
  // Weights initialized from train.seed (or zero when `initialize` is false: a restore of a
  // committed step overwrites every one, or fails the rank), moments zero.
  TrainState(const JobSpec& spec, const model::StageRange& range, bool initialize = true);
  model::Parameters<float> params;
  OptimizerState opt;
  int64_t step = 0;
  ModelSpec model;  // the job's whole model, which a checkpoint must be of
};

// This rank's checkpoint shard, created if missing; null when the rank writes none (only
// the first expert group does).
Result<std::unique_ptr<checkpoint::ShardStore>> OpenShardStore(const JobSpec& spec,
                                                               const TrainOptions& opts,
                                                               const Topology& topo);

// Fills `state` as TrainOptions asks (restore_step, resume), in step with every rank.
// Corruption when the committed step to restore is unreadable (the coordinator then drops
// it); InvalidArgument when checkpoints exist and neither was asked for.
Status RestoreOrResume(const JobSpec& spec, const TrainOptions& opts, const Topology& topo,
                       checkpoint::ShardStore* store, TrainState* state, spdlog::logger& log);

}  // namespace moerun::trainer
