#include "worker/trainer/step_metrics.h"

#include <algorithm>

namespace moerun::trainer {

Status GatherStepMetrics(const JobSpec& spec, const Topology& t, const LossSums& sums,
                         const std::vector<double>& stage_counts, int64_t first_moe,
                         StepResult* r) {
  // [loss, balance, mtp, counts of every MoE layer of the model]
  constexpr size_t kHead = 3;
  const int64_t experts = std::max<int64_t>(spec.model.moe.routed_experts, 0);
  const int64_t moe_layers = spec.model.moe_layers_with_mtp();
  std::vector<double> m(kHead + size_t(moe_layers * experts), 0.0);
  m[0] = t.last_stage() ? sums.loss : 0.0;
  m[1] = sums.balance;
  m[2] = t.last_stage() ? sums.mtp : 0.0;
  if (t.d == 0 && !stage_counts.empty()) {
    if (first_moe * experts + int64_t(stage_counts.size()) > moe_layers * experts)
      return Status::Internal("step metrics: the stage's expert counts overrun the model's");
    std::copy(stage_counts.begin(), stage_counts.end(), m.begin() + kHead + first_moe * experts);
  }
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(m.data(), m.size()));
  const double micro_total = double(spec.parallel.data * spec.parallel.micro_batches);
  r->loss = m[0] / micro_total;
  r->balance_loss = m[1] / micro_total;
  r->mtp_loss = m[2] / micro_total;
  r->expert_load.assign(static_cast<size_t>(moe_layers), {});
  for (int64_t l = 0; l < moe_layers; ++l)
    for (int64_t e = 0; e < experts; ++e)
      r->expert_load[size_t(l)].push_back(int64_t(m[kHead + size_t(l * experts + e)]));
  return Status::OK();
}

nlohmann::json StepLine(const JobSpec& spec, int64_t step, const StepResult& r, double seconds,
                        const comm::DataPlaneWait& waited) {
  const ModelSpec& m = spec.model;
  nlohmann::json load = nlohmann::json::object();
  double imbalance = 0;
  for (size_t l = 0; l < r.expert_load.size(); ++l) {
    const auto& c = r.expert_load[l];
    // Every routed token counts top_k times; an MTP block sees seq_len - k of seq_len.
    double routed = 0;
    for (int64_t x : c) routed += double(x);
    const double mean = std::max(1.0, routed) / double(std::max<size_t>(1, c.size()));
    imbalance +=
        double(*std::max_element(c.begin(), c.end())) / mean / double(r.expert_load.size());
    load[std::to_string(m.dense_layers + int64_t(l))] = c;
  }
  const int64_t tokens = spec.train.global_batch * m.seq_len;
  const double bubble = waited.pipeline_s, data_wait = waited.collective_s;
  nlohmann::json line = {{"step", step},
                         {"loss", r.loss},
                         {"balance_loss", r.balance_loss},
                         {"lr", r.lr},
                         {"grad_norm", r.grad_norm},
                         {"step_time_s", seconds},
                         {"compute_s", std::max(0.0, seconds - bubble - data_wait)},
                         {"data_wait_s", data_wait},
                         {"bubble_s", bubble},
                         {"tokens_per_s", double(tokens) / seconds},
                         {"max_over_mean_load", imbalance},
                         {"expert_load", load}};
  if (m.mtp.depth > 0) line["mtp_loss"] = r.mtp_loss;
  return line;
}

}  // namespace moerun::trainer
