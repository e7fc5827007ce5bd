#include "common/placement.h"

#include <algorithm>

namespace moerun {
namespace {

// Blocks (decoder layers and MTP modules) of the last stage: the even share, plus one when the
// leftovers, which go to stages 1, 2, ..., reach it.
int64_t LastStageShare(int64_t blocks, int64_t pipeline) {
  const int64_t base = blocks / pipeline, extra = blocks % pipeline;
  return base + (pipeline > 1 && pipeline - 1 <= extra ? 1 : 0);
}

}  // namespace

bool LastStageHoldsLayer(int64_t n_layers, int64_t pipeline, int64_t mtp_depth) {
  return pipeline == 1 || LastStageShare(n_layers + mtp_depth, pipeline) > mtp_depth;
}

std::vector<StageLayout> SplitLayers(int64_t n_layers, int64_t pipeline, int64_t mtp_depth) {
  std::vector<StageLayout> stages;
  const int64_t blocks = n_layers + mtp_depth;
  const int64_t base = blocks / pipeline, extra = blocks % pipeline;
  // The last stage's decoder layers: its share less the MTP modules, at least one (a job
  // where that is not so is refused by the rules; the layout stays well formed).
  const int64_t last_layers =
      pipeline == 1 ? n_layers : std::max<int64_t>(1, LastStageShare(blocks, pipeline) - mtp_depth);
  const int64_t first_layers = n_layers - last_layers;  // over stages 0 .. pipeline-2
  int64_t next = 0;
  for (int64_t s = 0; s < pipeline; ++s) {
    int64_t count = last_layers;
    if (s < pipeline - 1) {
      // Stages 1..extra take one more block (extra < pipeline, so stage 0 never does).
      count = std::min(base + (s >= 1 && s <= extra ? 1 : 0), first_layers - next);
      count = std::max<int64_t>(count, 0);
    }
    const bool last = s == pipeline - 1;
    stages.push_back({s, next, last ? n_layers : next + count, s == 0, last, last ? mtp_depth : 0});
    next += count;
  }
  return stages;
}

std::vector<StageLayout> Placement::Stages(const JobSpec& spec) {
  return SplitLayers(spec.model.n_layers, spec.parallel.pipeline, spec.model.mtp.depth);
}

Placement::Placement(const JobSpec& spec)
    : pipeline_(spec.parallel.pipeline),
      data_(spec.parallel.data),
      expert_(spec.parallel.expert),
      devices_per_worker_(spec.resources.devices_per_worker),
      experts_per_rank_(spec.model.moe_layers() > 0 ? spec.model.moe.routed_experts / expert_ : 0),
      stages_(Stages(spec)) {}

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
