#include "common/placement.h"

namespace moerun {

std::vector<StageLayout> SplitLayers(int64_t n_layers, int64_t pipeline) {
  std::vector<StageLayout> stages;
  const int64_t base = n_layers / pipeline, extra = n_layers % pipeline;
  int64_t next = 0;
  for (int64_t s = 0; s < pipeline; ++s) {
    // Stages 1..extra take one more layer (extra < pipeline, so stage 0 never does).
    const int64_t count = base + (s >= 1 && s <= extra ? 1 : 0);
    stages.push_back({s, next, next + count, s == 0, s == pipeline - 1});
    next += count;
  }
  return stages;
}

Placement::Placement(const JobSpec& spec)
    : pipeline_(spec.parallel.pipeline),
      data_(spec.parallel.data),
      expert_(spec.parallel.expert),
      devices_per_worker_(spec.resources.devices_per_worker),
      experts_per_rank_(spec.model.moe_layers() > 0 ? spec.model.moe.routed_experts / expert_ : 0),
      stages_(SplitLayers(spec.model.n_layers, spec.parallel.pipeline)) {}

RankPlacement Placement::Rank(int64_t rank) const {
  RankPlacement p;
  p.rank = rank;
  p.stage = rank / data_;
  p.data_index = rank % data_;
  p.expert_group = p.data_index / expert_;
  p.expert_rank = p.data_index % expert_;
  p.expert_begin = p.expert_rank * experts_per_rank_;
  p.expert_end = p.expert_begin + experts_per_rank_;
  p.worker = rank / devices_per_worker_;
  p.device = rank % devices_per_worker_;
  return p;
}

}  // namespace moerun
