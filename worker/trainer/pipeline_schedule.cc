#include "worker/trainer/pipeline_schedule.h"

#include <algorithm>

namespace moerun::trainer {

std::vector<PipelineOp> PipelineOps(PipelineSchedule schedule, int64_t pipeline, int64_t stage,
                                    int64_t micro) {
  std::vector<PipelineOp> ops;
  ops.reserve(static_cast<size_t>(2 * std::max<int64_t>(micro, 0)));
  if (pipeline <= 1) {
    for (int64_t m = 0; m < micro; ++m) {
      ops.push_back({true, m});
      ops.push_back({false, m});
    }
  } else if (schedule == PipelineSchedule::kGpipe) {
    for (int64_t m = 0; m < micro; ++m) ops.push_back({true, m});
    for (int64_t m = 0; m < micro; ++m) ops.push_back({false, m});
  } else {
    const int64_t warmup = std::clamp<int64_t>(pipeline - stage - 1, 0, micro);
    int64_t f = 0, b = 0;
    for (; f < warmup; ++f) ops.push_back({true, f});
    for (; f < micro; ++f, ++b) {
      ops.push_back({true, f});
      ops.push_back({false, b});
    }
    for (; b < micro; ++b) ops.push_back({false, b});
  }
  return ops;
}

int64_t MicroBatchesInFlight(const std::vector<PipelineOp>& ops) {
  int64_t alive = 0, most = 0;
  for (const PipelineOp& op : ops) {
    alive += op.forward ? 1 : -1;
    most = std::max(most, alive);
  }
  return most;
}

}  // namespace moerun::trainer
