// PipelineSchedule: the order in which one pipeline stage runs its micro-batches' forward and
// backward passes in a step (docs/architecture.md §5), shared by the CPU and GPU steps.
//   gpipe: every forward, then every backward (m = 0..M-1 each);
//   1f1b:  min(pipeline − stage − 1, M) warm-up forwards, then one forward and one backward
//          alternately, then the remaining backwards (dualpipe runs as 1F1B here);
//   pipeline 1: forward and backward of each micro-batch in turn (nothing to overlap, and
//          only one micro-batch's activations are alive at a time).
// Every micro-batch appears once as a forward and once as a backward, its forward first, and
// backwards come in micro-batch order on every stage, so neighbouring stages' sends and
// receives pair up in the same order.
#pragma once

#include <cstdint>
#include <vector>

#include "common/job_spec.h"

namespace moerun::trainer {

struct PipelineOp {
  bool forward = true;
  int64_t micro = 0;  // micro-batch within the replica's step, 0..M-1
  bool operator==(const PipelineOp&) const = default;
};

// The ops of `stage` (0..pipeline-1) for `micro` micro-batches.
std::vector<PipelineOp> PipelineOps(PipelineSchedule schedule, int64_t pipeline, int64_t stage,
                                    int64_t micro);

// The most micro-batches whose forward has run and whose backward has not, at any point.
int64_t MicroBatchesInFlight(const std::vector<PipelineOp>& ops);

// Point-to-point tags between neighbouring stages: micro-batch m's activations, their
// gradients, and evaluation batch q's activations (kEvalTagBase + ForwardTag(q)).
inline uint32_t ForwardTag(int64_t m) { return uint32_t(m * 2); }
inline uint32_t BackwardTag(int64_t m) { return uint32_t(m * 2 + 1); }
inline constexpr uint32_t kEvalTagBase = 1u << 24;

}  // namespace moerun::trainer
