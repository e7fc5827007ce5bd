// Topology: where one trainer rank sits (docs/architecture.md §5) and the communicators it trains
// with.
//   rank = stage · data + d;  expert group = d / expert;  place in it = d % expert.
//   data group:           the stage's `data` replicas — dense gradients are summed here,
//                         and expert token counts (so every replica updates its biases alike);
//   expert group:         the `expert` ranks that hold every expert once — tokens travel here;
//   expert replica group: the data/expert ranks holding the same experts — their gradients;
//   world:                global norms and the step's metrics;
//   embedding group:      replica d of the first and the last stage, whose two copies of the
//                         embedding (multi-token prediction) get one summed gradient.
// A run of one process (world 1) uses a SoloCommunicator and runs data × micro_batches
// micro-batches itself, so it computes the same sums as the parallel job.
#pragma once

#include <cstdint>
#include <memory>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/comm/communicator.h"
#include "worker/model/model_stage.h"

namespace moerun::trainer {

struct Topology {
  int rank = 0, world = 1;
  int64_t pipeline = 1, data = 1, expert = 1;  // as run: 1, 1, 1 for a world of one
  int64_t stage = 0, d = 0;
  int64_t micro_batches = 1;  // per replica per step
  int prev = -1, next = -1;   // world ranks of the neighbouring stages' replica d, or -1
  model::StageRange range;    // layers, embedding/head, experts held
  std::unique_ptr<comm::Communicator> world_comm, data_group, expert_group, replica_group;
  // Replica d of the first and the last stage, when the last keeps a copy of the embedding
  // (model.mtp.depth > 0 and pipeline > 1); null elsewhere.
  std::unique_ptr<comm::Communicator> embedding_group;

  bool first_stage() const { return stage == 0; }
  bool last_stage() const { return stage == pipeline - 1; }
  // Whether this rank writes its checkpoint shard (the first expert group covers the stage).
  bool writes_checkpoint() const { return d < expert; }
  // The shard this rank writes or restores: stage-S/dp-(d mod expert).
  std::string ShardName() const;
};

// world_comm: the world communicator (size 1 for a single process, else pipeline × data).
Result<Topology> MakeTopology(const JobSpec& spec, std::unique_ptr<comm::Communicator> world_comm);

}  // namespace moerun::trainer
