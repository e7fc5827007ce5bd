// Placement: where every trainer rank sits in the parallel layout (docs/architecture.md §5).
//
//   world = pipeline x data;  rank = stage * data + d
//   expert group of a rank = d / expert; its position in the group = d % expert, and it
//   holds routed experts [pos * E/expert, (pos+1) * E/expert) of every MoE layer in its stage.
//
// Layers split into contiguous stages as evenly as possible; when they do not divide, the
// extra layers go to stages 1, 2, ... so stage 0 (which also holds the embedding) is never
// the heaviest. Multi-token prediction modules (model.mtp.depth) sit on the last stage, with
// the head they share, and count as layers of the split: the last stage holds that many
// fewer decoder layers. Ranks fill workers in rank order, devices_per_worker at a time, so the
// ranks of an expert group (consecutive d) share a host whenever the group fits on one.
// Pure functions of the spec; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "common/job_spec.h"

namespace moerun {

struct StageLayout {
  int64_t stage = 0;
  int64_t layer_begin = 0;  // first layer, inclusive
  int64_t layer_end = 0;    // one past the last layer
  bool has_embedding = false;
  bool has_head = false;    // also the final norm
  int64_t mtp_modules = 0;  // multi-token prediction modules (the last stage only)
  int64_t layers() const { return layer_end - layer_begin; }
};

struct RankPlacement {
  int64_t rank = 0;
  int64_t stage = 0;
  int64_t data_index = 0;    // d: the data-parallel replica
  int64_t expert_group = 0;  // d / expert
  int64_t expert_rank = 0;   // d % expert: position inside the expert group
  int64_t expert_begin = 0;  // routed experts held, [begin, end); empty without MoE layers
  int64_t expert_end = 0;
  int64_t worker = 0;  // worker daemon index (rank / devices_per_worker)
  int64_t device = 0;  // device on that worker
};

// n_layers decoder layers and mtp_depth MTP modules over `pipeline` stages. When the last
// stage's share is not more than mtp_depth (spec_rules refuses such a job), it keeps one
// decoder layer and the others keep the rest.
std::vector<StageLayout> SplitLayers(int64_t n_layers, int64_t pipeline, int64_t mtp_depth);

// Whether that split leaves the last stage a decoder layer beside its mtp_depth MTP modules
// (its share of the n_layers + mtp_depth blocks exceeds them); always true for one stage.
bool LastStageHoldsLayer(int64_t n_layers, int64_t pipeline, int64_t mtp_depth);

class Placement {
 public:
  explicit Placement(const JobSpec& spec);
  // The stage layout of `spec` (SplitLayers of its model and pipeline).
  static std::vector<StageLayout> Stages(const JobSpec& spec);

  int64_t world_size() const { return pipeline_ * data_; }
  const std::vector<StageLayout>& stages() const { return stages_; }
  RankPlacement Rank(int64_t rank) const;
  // Experts each rank holds per MoE layer (0 without MoE layers).
  int64_t experts_per_rank() const { return experts_per_rank_; }
  // Copies of each expert in a stage: the data/expert ranks whose expert gradients all-reduce.
  int64_t expert_replicas() const { return data_ / expert_; }

 private:
  int64_t pipeline_, data_, expert_, devices_per_worker_, experts_per_rank_;
  std::vector<StageLayout> stages_;
};

}  // namespace moerun
