#include "common/plan_report.h"

#include <cstdio>
#include <sstream>

namespace moerun {
namespace {

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string Range(int64_t begin, int64_t end) {  // [begin, end) as "b-e" or "b"
  if (end - begin <= 1) return std::to_string(begin);
  return std::to_string(begin) + "-" + std::to_string(end - 1);
}

}  // namespace

std::string HumanCount(double n) {
  const char* units[] = {"", "K", "M", "B", "T"};
  int u = 0;
  while (n >= 1000.0 && u < 4) n /= 1000.0, ++u;
  return u == 0 ? Fmt("%.0f", n) : Fmt("%.2f", n) + units[u];
}

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
  return (u == 0 ? Fmt("%.0f", b) : Fmt("%.2f", b)) + " " + units[u];
}

std::string PlanText(const JobSpec& spec, const JobPlan& plan, const PlanReportOptions& opts) {
  const ModelSpec& m = spec.model;
  const ParallelSpec& par = spec.parallel;
  Placement placement(spec);
  std::ostringstream o;
  o << "job " << spec.name << ": " << m.n_layers << " layers (" << m.dense_layers << " dense, "
    << m.moe_layers() << " MoE), d_model " << m.d_model << ", " << ToString(m.attention)
    << " attention, " << ToString(spec.train.precision) << " on "
    << ToString(spec.resources.backend) << "\n";
  o << "world size " << plan.world_size << " = pipeline " << par.pipeline << " x data " << par.data
    << " (expert " << par.expert << "; each expert held by " << placement.expert_replicas()
    << " rank" << (placement.expert_replicas() == 1 ? "" : "s") << " per stage), "
    << ToString(par.schedule) << " with " << par.micro_batches << " micro-batches of "
    << plan.micro_batch_sequences << " sequences\n";
  o << "workers " << spec.resources.workers << " x " << spec.resources.devices_per_worker
    << " devices\n\n";

  const ParameterCounts& c = plan.params;
  o << "parameters\n";
  o << "  total               " << HumanCount(double(c.total)) << "  (" << c.total << ")\n";
  o << "  active per token    " << HumanCount(double(c.active_per_token)) << "  ("
    << c.active_per_token << ")\n";
  o << "  embedding + head    " << HumanCount(double(c.embedding + c.head)) << "\n";
  o << "  attention           " << HumanCount(double(c.attention)) << "\n";
  o << "  dense MLPs          " << HumanCount(double(c.dense_mlp)) << "\n";
  o << "  routed experts      " << HumanCount(double(c.routed_experts)) << "\n";
  o << "  shared experts      " << HumanCount(double(c.shared_experts)) << "\n";
  o << "  routers and norms   " << HumanCount(double(c.router + c.norms)) << "\n";
  if (m.mtp.depth > 0) {
    // Training only, apart from the main model's total (the published DeepSeek-V3 checkpoint
    // holds 685B with it: 671B + the module with its copies of the embedding and head).
    o << "  MTP modules         " << HumanCount(double(c.mtp)) << "  (" << m.mtp.depth << " module"
      << (m.mtp.depth == 1 ? "" : "s") << ", " << HumanCount(double(c.mtp_active_per_token))
      << " active per token; not in the total, embedding and head shared)\n";
    o << "  with MTP            " << HumanCount(double(c.total + c.mtp)) << " total, "
      << HumanCount(double(c.total + c.mtp + m.mtp.depth * (c.embedding + c.head)))
      << " as the checkpoint stores it (each module keeps copies of embedding and head)\n";
  }
  o << "\n";

  o << "placement\n";
  if (opts.every_rank) {
    o << "  rank  stage  layers     data  egroup  experts    worker:device\n";
    for (int64_t r = 0; r < plan.world_size; ++r) {
      RankPlacement p = placement.Rank(r);
      const StageLayout& st = placement.stages()[p.stage];
      char line[160];
      std::snprintf(
          line, sizeof line, "  %-5lld %-6lld %-10s %-5lld %-7lld %-10s %lld:%lld\n", (long long)r,
          (long long)p.stage, Range(st.layer_begin, st.layer_end).c_str(), (long long)p.data_index,
          (long long)p.expert_group,
          p.expert_end > p.expert_begin ? Range(p.expert_begin, p.expert_end).c_str() : "-",
          (long long)p.worker, (long long)p.device);
      o << line;
    }
  } else {
    for (const StagePlan& sp : plan.stages) {
      const StageLayout& st = sp.layout;
      const int64_t first = st.stage * par.data;
      o << "  stage " << st.stage << ": ranks " << Range(first, first + par.data) << ", layers "
        << Range(st.layer_begin, st.layer_end);
      if (st.has_embedding) o << " + embedding";
      if (st.has_head) o << " + final norm and head";
      if (st.mtp_modules > 0) {
        o << " + " << st.mtp_modules << " MTP module" << (st.mtp_modules == 1 ? "" : "s")
          << " (layer" << (st.mtp_modules == 1 ? " " : "s ")
          << Range(m.n_layers, m.n_layers + st.mtp_modules) << ")";
        if (!st.has_embedding) o << " and a copy of the embedding";
      }
      o << "; " << par.data / par.expert << " expert group"
        << (par.data / par.expert == 1 ? "" : "s") << " of " << par.expert << " ranks";
      if (placement.experts_per_rank() > 0)
        o << ", " << placement.experts_per_rank() << " experts per rank per MoE layer";
      o << "\n";
    }
    o << "  (--ranks lists every rank)\n";
  }
  o << "\nmemory per device (estimate; docs/plan.md gives the formulas)\n";
  o << "  stage  params/rank  weights     grads       optimizer   activations  total\n";
  for (const StagePlan& sp : plan.stages) {
    char line[200];
    std::snprintf(line, sizeof line, "  %-6lld %-12s %-11s %-11s %-11s %-12s %s\n",
                  (long long)sp.layout.stage, HumanCount(double(sp.params_per_rank)).c_str(),
                  HumanBytes(sp.memory.weights_bytes).c_str(),
                  HumanBytes(sp.memory.grads_bytes).c_str(),
                  HumanBytes(sp.memory.optimizer_bytes).c_str(),
                  HumanBytes(sp.memory.activation_bytes).c_str(),
                  HumanBytes(sp.memory.total_bytes()).c_str());
    o << line;
  }
  o << "\ncompute (training, forward + backward)\n";
  o << "  FLOPs per token     " << Fmt("%.4g", plan.flops_per_token())
    << "  (6 x active non-embedding " << Fmt("%.4g", plan.dense_flops_per_token) << " + attention "
    << Fmt("%.4g", plan.attention_flops_per_token);
  if (plan.mtp_flops_per_token > 0) o << " + MTP " << Fmt("%.4g", plan.mtp_flops_per_token);
  o << ")\n";
  o << "  tokens per step     " << plan.tokens_per_step << "\n";
  o << "  FLOPs per step      " << Fmt("%.4g", plan.flops_per_step()) << "\n";
  // bf16, as an inference server would hold it.
  o << "\ninference KV cache per token (bf16, all layers)\n";
  char label[32];
  std::snprintf(label, sizeof label, "  %-20s", std::string(ToString(m.attention)).c_str());
  o << label << HumanBytes(2.0 * double(plan.kv_cache_values_per_token)) << "  ("
    << plan.kv_cache_values_per_token << " values)\n";
  if (m.attention == AttentionKind::kMla) {
    o << "  MHA, same shape     " << HumanBytes(2.0 * double(plan.mha_kv_cache_values_per_token))
      << "  ("
      << Fmt("%.1f",
             double(plan.mha_kv_cache_values_per_token) / double(plan.kv_cache_values_per_token))
      << "x MLA's)\n";
  }
  if (opts.cost) {
    o << "\nrun cost for " << Fmt("%.4g", opts.tokens) << " tokens at "
      << Fmt("%.3g", opts.mfu * 100) << "% MFU of " << Fmt("%.4g", opts.peak_tflops)
      << " TFLOP/s per device\n";
    o << "  total FLOPs         " << Fmt("%.4g", opts.cost->total_flops) << "\n";
    o << "  GPU-hours           " << Fmt("%.4g", opts.cost->gpu_hours) << "\n";
    o << "  days on " << plan.world_size << " devices  " << Fmt("%.3g", opts.cost->days) << "\n";
  }
  return o.str();
}

nlohmann::json PlanJson(const JobSpec& spec, const JobPlan& plan, const PlanReportOptions& opts) {
  using nlohmann::json;
  const ParallelSpec& par = spec.parallel;
  Placement placement(spec);
  const ParameterCounts& c = plan.params;
  json j;
  j["job"] = spec.name;
  j["world_size"] = plan.world_size;
  j["parallel"] = {{"pipeline", par.pipeline},
                   {"data", par.data},
                   {"expert", par.expert},
                   {"micro_batches", par.micro_batches},
                   {"schedule", ToString(par.schedule)},
                   {"micro_batch_sequences", plan.micro_batch_sequences},
                   {"expert_replicas", placement.expert_replicas()},
                   {"experts_per_rank", placement.experts_per_rank()}};
  j["parameters"] = {{"total", c.total},
                     {"active_per_token", c.active_per_token},
                     {"embedding", c.embedding},
                     {"head", c.head},
                     {"attention", c.attention},
                     {"dense_mlp", c.dense_mlp},
                     {"routed_experts", c.routed_experts},
                     {"shared_experts", c.shared_experts},
                     {"router", c.router},
                     {"norms", c.norms},
                     {"mtp", c.mtp},
                     {"mtp_active_per_token", c.mtp_active_per_token}};
  json stages = json::array();
  for (const StagePlan& sp : plan.stages) {
    stages.push_back({{"stage", sp.layout.stage},
                      {"layer_begin", sp.layout.layer_begin},
                      {"layer_end", sp.layout.layer_end},
                      {"has_embedding", sp.layout.has_embedding},
                      {"has_head", sp.layout.has_head},
                      {"mtp_modules", sp.layout.mtp_modules},
                      {"params_per_rank", sp.params_per_rank},
                      {"micro_batches_in_flight", sp.micro_batches_in_flight},
                      {"memory_bytes",
                       {{"weights", sp.memory.weights_bytes},
                        {"grads", sp.memory.grads_bytes},
                        {"optimizer", sp.memory.optimizer_bytes},
                        {"activations", sp.memory.activation_bytes},
                        {"total", sp.memory.total_bytes()}}}});
  }
  j["stages"] = stages;
  json ranks = json::array();
  for (int64_t r = 0; r < plan.world_size; ++r) {
    RankPlacement p = placement.Rank(r);
    ranks.push_back({{"rank", r},
                     {"stage", p.stage},
                     {"data_index", p.data_index},
                     {"expert_group", p.expert_group},
                     {"expert_rank", p.expert_rank},
                     {"expert_begin", p.expert_begin},
                     {"expert_end", p.expert_end},
                     {"worker", p.worker},
                     {"device", p.device}});
  }
  j["ranks"] = ranks;
  j["memory_per_device_max_bytes"] = plan.max_device_bytes();
  j["kv_cache_per_token"] = {{"values", plan.kv_cache_values_per_token},
                             {"mha_values", plan.mha_kv_cache_values_per_token},
                             {"bf16_bytes", 2 * plan.kv_cache_values_per_token}};
  j["flops"] = {{"per_token", plan.flops_per_token()},
                {"per_token_dense", plan.dense_flops_per_token},
                {"per_token_attention", plan.attention_flops_per_token},
                {"per_token_mtp", plan.mtp_flops_per_token},
                {"tokens_per_step", plan.tokens_per_step},
                {"per_step", plan.flops_per_step()}};
  if (opts.cost) {
    j["run_cost"] = {{"tokens", opts.tokens},
                     {"gpu_peak_tflops", opts.peak_tflops},
                     {"mfu", opts.mfu},
                     {"total_flops", opts.cost->total_flops},
                     {"gpu_hours", opts.cost->gpu_hours},
                     {"days", opts.cost->days}};
  }
  return j;
}

}  // namespace moerun
