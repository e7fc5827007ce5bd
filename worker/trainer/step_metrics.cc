#include "worker/trainer/step_metrics.h"

#include <algorithm>

namespace moerun::trainer {

Status GatherStepMetrics(const JobSpec& spec, const Topology& t, double loss_sum,
                         double balance_sum, const std::vector<double>& stage_counts,
                         int64_t first_moe, StepResult* r) {
  // [loss, balance, counts of every MoE layer of the model]
  const int64_t experts = std::max<int64_t>(spec.model.moe.routed_experts, 0);
  const int64_t moe_layers = spec.model.moe_layers();
  std::vector<double> m(2 + size_t(moe_layers * experts), 0.0);
  m[0] = t.last_stage() ? loss_sum : 0.0;
  m[1] = balance_sum;
  if (t.d == 0 && !stage_counts.empty())
    std::copy(stage_counts.begin(), stage_counts.end(), m.begin() + 2 + first_moe * experts);
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(m.data(), m.size()));
  const double micro_total = double(spec.parallel.data * spec.parallel.micro_batches);
  r->loss = m[0] / micro_total;
  r->balance_loss = m[1] / micro_total;
  r->expert_load.assign(static_cast<size_t>(moe_layers), {});
  for (int64_t l = 0; l < moe_layers; ++l)
    for (int64_t e = 0; e < experts; ++e)
      r->expert_load[size_t(l)].push_back(int64_t(m[size_t(2 + l * experts + e)]));
  return Status::OK();
}

}  // namespace moerun::trainer
