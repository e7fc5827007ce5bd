#include "common/spec_rules.h"

#include <initializer_list>
#include <string>

#include "common/placement.h"

namespace moerun {
namespace {

constexpr int64_t kMaxWorldSize = int64_t{1} << 20;
constexpr std::size_t kMaxJobNameChars = 64;
constexpr int64_t kTextVocabMin = 256;  // text data is bytes: tokens 0..255

std::string S(int64_t v) { return std::to_string(v); }

// True when `divisor` divides `n`; false for a zero divisor (never a division by zero).
bool Divides(int64_t divisor, int64_t n) { return divisor > 0 && n % divisor == 0; }

class RuleChecker {
 public:
  RuleChecker(const SourceMap& sources, DiagnosticSink* sink) : sources_(sources), sink_(sink) {}

  // Reports `message` at `field` unless `ok`. Skipped when `field` or any of `reads` already
  // has an error, so one typo does not cascade into many messages.
  void Require(bool ok, const std::string& field, std::initializer_list<const char*> reads,
               const std::string& message) {
    if (ok || sink_->HasErrorUnder(field)) return;
    for (const char* r : reads)
      if (sink_->HasErrorUnder(r)) return;
    std::string msg = message;
    if (!sources_.Has(field)) msg += " (" + field + " is not set: this is its default)";
    sink_->Error(sources_.Locate(field), field, msg);
  }

 private:
  const SourceMap& sources_;
  DiagnosticSink* sink_;
};

bool ValidJobName(const std::string& name) {
  if (name.empty() || name.size() > kMaxJobNameChars) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return false;
  for (char c : name)
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

void CheckModel(const ModelSpec& m, RuleChecker& r) {
  r.Require(m.dense_layers <= m.n_layers, "model.dense_layers", {"model.n_layers"},
            "must be at most model.n_layers (" + S(m.n_layers) + "), got " + S(m.dense_layers));
  if (m.attention == AttentionKind::kMha) {
    r.Require(Divides(m.n_heads, m.d_model), "model.n_heads", {"model.d_model"},
              "must divide model.d_model (" + S(m.d_model) + "), got " + S(m.n_heads));
    if (Divides(m.n_heads, m.d_model)) {
      r.Require((m.d_model / m.n_heads) % 2 == 0, "model.n_heads", {"model.d_model"},
                "head dimension d_model / n_heads = " + S(m.d_model / m.n_heads) +
                    " must be even (RoPE rotates pairs of dimensions)");
    }
  } else {
    r.Require(m.qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim", {},
              "must be even (RoPE rotates pairs of dimensions), got " + S(m.qk_rope_head_dim));
  }
  r.Require(m.mtp.depth < m.seq_len, "model.mtp.depth", {"model.seq_len"},
            "must be less than model.seq_len (" + S(m.seq_len) + "): module k predicts the token " +
                "k+1 positions ahead, so a window keeps seq_len - k positions to learn from, got " +
                S(m.mtp.depth));
  const bool has_moe_layers = m.n_layers > m.dense_layers;
  if (!has_moe_layers) {
    r.Require(!m.has_moe_section, "model.moe", {"model.n_layers", "model.dense_layers"},
              "the model has no MoE layers (dense_layers == n_layers == " + S(m.n_layers) +
                  "); remove model.moe or lower model.dense_layers");
    return;
  }
  if (!m.has_moe_section) return;  // the loader already reported the missing section
  const MoeSpec& e = m.moe;
  r.Require(
      e.top_k <= e.routed_experts, "model.moe.top_k", {"model.moe.routed_experts"},
      "must be at most model.moe.routed_experts (" + S(e.routed_experts) + "), got " + S(e.top_k));
  r.Require(
      Divides(e.n_groups, e.routed_experts), "model.moe.n_groups", {"model.moe.routed_experts"},
      "must divide model.moe.routed_experts (" + S(e.routed_experts) + "), got " + S(e.n_groups));
  r.Require(e.topk_groups <= e.n_groups, "model.moe.topk_groups", {"model.moe.n_groups"},
            "must be at most model.moe.n_groups (" + S(e.n_groups) + "), got " + S(e.topk_groups));
  if (e.n_groups > 1 && Divides(e.n_groups, e.routed_experts) && e.topk_groups <= e.n_groups) {
    const int64_t per_group = e.routed_experts / e.n_groups;
    r.Require(per_group >= 2, "model.moe.n_groups", {"model.moe.routed_experts"},
              "leaves " + S(per_group) +
                  " expert per group; group scores sum each group's top-2 experts, so each "
                  "group needs at least 2 (use fewer groups)");
    r.Require(e.top_k <= e.topk_groups * per_group, "model.moe.top_k",
              {"model.moe.topk_groups", "model.moe.n_groups", "model.moe.routed_experts"},
              "must be at most topk_groups x experts per group (" + S(e.topk_groups) + " x " +
                  S(per_group) + " = " + S(e.topk_groups * per_group) + "), got " + S(e.top_k));
  }
}

void CheckParallel(const JobSpec& s, RuleChecker& r) {
  const ParallelSpec& p = s.parallel;
  const ModelSpec& m = s.model;
  r.Require(p.pipeline <= m.n_layers, "parallel.pipeline", {"model.n_layers"},
            "must be at most model.n_layers (" + S(m.n_layers) +
                ") so every stage holds a layer, got " + S(p.pipeline));
  if (m.mtp.depth > 0 && p.pipeline > 1 && p.pipeline <= m.n_layers) {
    // The MTP modules count as layers of the split and sit on the last stage with the head.
    auto fits = [&](int64_t stages) {
      return LastStageHoldsLayer(m.n_layers, stages, m.mtp.depth);
    };
    int64_t most = p.pipeline;
    while (most > 1 && !fits(most)) --most;
    r.Require(fits(p.pipeline), "parallel.pipeline", {"model.n_layers", "model.mtp.depth"},
              S(p.pipeline) + " stages cannot hold model.mtp.depth " + S(m.mtp.depth) +
                  ": the MTP modules count as layers of the split and sit on the last stage, "
                  "whose share of the " +
                  S(m.n_layers) + " layers + " + S(m.mtp.depth) +
                  " modules leaves it no decoder layer; use at most " + S(most) + " stage" +
                  (most == 1 ? "" : "s") + " or a smaller mtp.depth");
  }
  r.Require(Divides(p.expert, p.data), "parallel.expert", {"parallel.data"},
            "must divide parallel.data (" + S(p.data) + "), got " + S(p.expert));
  const bool has_moe = m.n_layers > m.dense_layers && m.has_moe_section;
  if (has_moe) {
    r.Require(Divides(p.expert, m.moe.routed_experts), "parallel.expert",
              {"model.moe.routed_experts"},
              "must divide model.moe.routed_experts (" + S(m.moe.routed_experts) + "), got " +
                  S(p.expert));
  } else {
    r.Require(p.expert == 1, "parallel.expert",
              {"model.n_layers", "model.dense_layers", "model.moe"},
              "must be 1 for a model without MoE layers, got " + S(p.expert));
  }
  r.Require(
      p.pipeline * p.data <= kMaxWorldSize, "parallel.data", {"parallel.pipeline"},
      "world size pipeline x data = " + S(p.pipeline * p.data) + " exceeds " + S(kMaxWorldSize));
  const int64_t per_step = p.data * p.micro_batches;
  r.Require(Divides(per_step, s.train.global_batch), "train.global_batch",
            {"parallel.data", "parallel.micro_batches"},
            "must be divisible by parallel.data x parallel.micro_batches (" + S(p.data) + " x " +
                S(p.micro_batches) + " = " + S(per_step) + "), got " + S(s.train.global_batch));
  if (p.schedule == PipelineSchedule::kOneFOneB) {
    r.Require(p.micro_batches >= p.pipeline, "parallel.micro_batches",
              {"parallel.pipeline", "parallel.schedule"},
              "must be at least parallel.pipeline (" + S(p.pipeline) +
                  ") for the 1f1b schedule, got " + S(p.micro_batches));
  } else if (p.schedule == PipelineSchedule::kDualPipe) {
    r.Require(p.pipeline % 2 == 0, "parallel.pipeline", {"parallel.schedule"},
              "must be even for the dualpipe schedule (stages pair up from both ends), got " +
                  S(p.pipeline));
    r.Require(p.micro_batches >= 2 * p.pipeline, "parallel.micro_batches",
              {"parallel.pipeline", "parallel.schedule"},
              "must be at least 2 x parallel.pipeline (" + S(2 * p.pipeline) +
                  ") for the dualpipe schedule, got " + S(p.micro_batches));
  }
}

}  // namespace

void CheckJobSpecRules(const JobSpec& s, const SourceMap& sources, DiagnosticSink* sink) {
  RuleChecker r(sources, sink);
  if (sources.Has("job.name")) {
    r.Require(ValidJobName(s.name), "job.name", {},
              "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a "
              "letter or digit (it names directories and URLs), got '" +
                  s.name + "'");
  }
  CheckModel(s.model, r);
  CheckParallel(s, r);

  const OptimizerSpec& o = s.train.optimizer;
  r.Require(o.warmup_steps <= s.train.steps, "train.optimizer.warmup_steps", {"train.steps"},
            "must be at most train.steps (" + S(s.train.steps) + "), got " + S(o.warmup_steps));
  r.Require(o.min_lr <= o.lr, "train.optimizer.min_lr", {"train.optimizer.lr"},
            "must be at most train.optimizer.lr (" + std::to_string(o.lr) + "), got " +
                std::to_string(o.min_lr));

  if (s.data.format == DataFormat::kText) {
    r.Require(s.model.vocab_size >= kTextVocabMin, "model.vocab_size", {"data.format"},
              "must be at least 256 for data.format: text (tokens are bytes), got " +
                  S(s.model.vocab_size));
  }

  const FaultToleranceSpec& f = s.fault_tolerance;
  r.Require(f.heartbeat_timeout_ms >= 2 * f.heartbeat_interval_ms,
            "fault_tolerance.heartbeat_timeout_ms", {"fault_tolerance.heartbeat_interval_ms"},
            "must be at least 2 x heartbeat_interval_ms (" + S(2 * f.heartbeat_interval_ms) +
                ") so one late heartbeat does not declare a daemon dead, got " +
                S(f.heartbeat_timeout_ms));
  r.Require(f.restart_backoff_max_ms >= f.restart_backoff_ms,
            "fault_tolerance.restart_backoff_max_ms", {"fault_tolerance.restart_backoff_ms"},
            "must be at least restart_backoff_ms (" + S(f.restart_backoff_ms) + "), got " +
                S(f.restart_backoff_max_ms));

  const ResourcesSpec& res = s.resources;
  const int64_t slots = res.workers * res.devices_per_worker;
  r.Require(slots == s.parallel.world_size(), "resources.workers",
            {"resources.devices_per_worker", "parallel.pipeline", "parallel.data"},
            "workers x devices_per_worker (" + S(res.workers) + " x " + S(res.devices_per_worker) +
                " = " + S(slots) +
                ") must equal the world size parallel.pipeline x parallel.data (" +
                S(s.parallel.pipeline) + " x " + S(s.parallel.data) + " = " +
                S(s.parallel.world_size()) + ")");
}

}  // namespace moerun
