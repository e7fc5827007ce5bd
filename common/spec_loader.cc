#include "common/spec_loader.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "common/limits.h"
#include "common/spec_expansion.h"
#include "common/spec_mapping.h"
#include "common/spec_rules.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr double kRealMax = std::numeric_limits<double>::max();

// Single-field ranges. The upper bounds keep parameter and FLOP arithmetic on validated
// specs far from int64 overflow while admitting every real model (DeepSeek-V3 included).
constexpr IntRange kVocab{2, 1 << 22};
constexpr IntRange kSeqLen{1, 1 << 21};
constexpr IntRange kDModel{1, 1 << 16};
constexpr IntRange kLayers{1, 1024};
constexpr IntRange kDenseLayers{0, 1024};
constexpr IntRange kHeads{1, 4096};
constexpr IntRange kHidden{1, 1 << 18};
constexpr IntRange kLoraRankOptional{0, 1 << 14};
constexpr IntRange kLoraRank{1, 1 << 14};
constexpr IntRange kHeadDimOptional{0, 1 << 14};
constexpr IntRange kHeadDim{1, 1 << 14};
constexpr IntRange kExperts{1, 8192};
constexpr IntRange kMtpDepth{0, 16};
constexpr IntRange kSharedExperts{0, 64};
constexpr IntRange kParallelDegree{1, 1 << 20};
constexpr IntRange kStages{1, 1024};
constexpr IntRange kSteps{1, int64_t{1} << 40};
constexpr IntRange kStepsOptional{0, int64_t{1} << 40};
constexpr IntRange kBatch{1, 1 << 30};
constexpr IntRange kSeed{0, kInt64Max};
constexpr IntRange kKeep{1, kMaxCheckpointKeep};
constexpr IntRange kHeartbeatIntervalMs{10, 3'600'000};
constexpr IntRange kTimeoutMs{20, 86'400'000};
constexpr IntRange kBackoffMs{0, 86'400'000};
constexpr IntRange kRestarts{0, 1'000'000};
constexpr IntRange kSpares{0, 1 << 20};
constexpr IntRange kCapacityTimeoutMs{0, 7 * 86'400'000LL};  // 0: wait for ever
constexpr IntRange kStragglerSteps{0, 1'000'000};            // 0: no detection
constexpr RealRange kStragglerFactor{1.0, 1000.0, true};
constexpr RealRange kPreflightRatio{0.0, 1.0, false, true};
constexpr IntRange kDevicesPerWorker{1, 64};
constexpr IntRange kThreads{1, 1024};

void ReadMoe(SpecMapping& m, MoeSpec* moe, bool has_moe_layers) {
  m.Int("routed_experts", &moe->routed_experts, kExperts, has_moe_layers);
  m.Int("shared_experts", &moe->shared_experts, kSharedExperts);
  m.Int("top_k", &moe->top_k, kExperts, has_moe_layers);
  m.Int("expert_hidden", &moe->expert_hidden, kHidden, has_moe_layers);
  m.Enum("score_func", &moe->score_func,
         {{"sigmoid", ScoreFunc::kSigmoid}, {"softmax", ScoreFunc::kSoftmax}});
  m.Real("route_scale", &moe->route_scale, {0.0, 1000.0, true});
  m.Int("n_groups", &moe->n_groups, kExperts);
  m.Int("topk_groups", &moe->topk_groups, kExperts);
  SpecMapping balance = m.Child("balance");
  balance.Real("bias_update_speed", &moe->balance.bias_update_speed, {0.0, 1.0});
  balance.Real("seq_aux_alpha", &moe->balance.seq_aux_alpha, {0.0, 1.0});
  balance.RejectUnknownKeys();
  m.RejectUnknownKeys();
}

void ReadMtp(SpecMapping& m, MtpSpec* mtp) {
  m.Int("depth", &mtp->depth, kMtpDepth);
  m.Real("loss_weight", &mtp->loss_weight, {0.0, 100.0});
  m.RejectUnknownKeys();
}

void ReadModel(SpecMapping& m, ModelSpec* model, DiagnosticSink* sink) {
  m.Int("vocab_size", &model->vocab_size, kVocab, true);
  m.Int("seq_len", &model->seq_len, kSeqLen, true);
  m.Int("d_model", &model->d_model, kDModel, true);
  m.Int("n_layers", &model->n_layers, kLayers, true);
  m.Int("n_heads", &model->n_heads, kHeads, true);
  m.Int("dense_layers", &model->dense_layers, kDenseLayers);
  bool needs_ffn = model->dense_layers > 0;
  if (!m.Int("ffn_hidden", &model->ffn_hidden, kHidden) && needs_ffn && !m.Has("ffn_hidden")) {
    sink->Error(m.pos(), "model.ffn_hidden",
                "required when model.dense_layers > 0 (the dense MLP's hidden size)");
  }
  m.Enum("attention", &model->attention,
         {{"mha", AttentionKind::kMha}, {"mla", AttentionKind::kMla}});
  bool mla = model->attention == AttentionKind::kMla;
  struct MlaKey {
    const char* key;
    int64_t* out;
    IntRange range;
    bool required;
  } mla_keys[] = {
      {"q_lora_rank", &model->q_lora_rank, kLoraRankOptional, false},
      {"kv_lora_rank", &model->kv_lora_rank, kLoraRank, true},
      {"qk_nope_head_dim", &model->qk_nope_head_dim, kHeadDimOptional, true},
      {"qk_rope_head_dim", &model->qk_rope_head_dim, kHeadDim, true},
      {"v_head_dim", &model->v_head_dim, kHeadDim, true},
  };
  for (const auto& k : mla_keys) {
    if (mla) {
      m.Int(k.key, k.out, k.range, k.required);
    } else if (m.Has(k.key)) {
      int64_t ignored = 0;
      m.Int(k.key, &ignored, {std::numeric_limits<int64_t>::min(), kInt64Max});
      sink->Error(m.KeyPos(k.key), "model." + std::string(k.key),
                  "only valid with model.attention: mla (attention is mha); remove it or set "
                  "attention: mla");
    }
  }
  m.Real("rope_theta", &model->rope_theta, {0.0, kRealMax, true});
  m.Real("init_std", &model->init_std, {0.0, 1.0, true});
  SpecMapping mtp = m.Child("mtp");
  ReadMtp(mtp, &model->mtp);
  bool has_moe_layers = model->n_layers > model->dense_layers;
  if (m.Has("moe")) {
    model->has_moe_section = true;
    SpecMapping moe = m.Child("moe");
    ReadMoe(moe, &model->moe, has_moe_layers);
  } else if (has_moe_layers && model->n_layers > 0) {
    sink->Error(m.pos(), "model.moe",
                "required section is missing: the model has " +
                    std::to_string(model->n_layers - model->dense_layers) +
                    " MoE layers (n_layers " + std::to_string(model->n_layers) +
                    " - dense_layers " + std::to_string(model->dense_layers) + ")");
  }
  m.RejectUnknownKeys();
}

void ReadSpec(SpecMapping& root, JobSpec* spec, DiagnosticSink* sink) {
  SpecMapping job = root.Child("job", true);
  job.String("name", &spec->name, job.present());
  job.RejectUnknownKeys();

  SpecMapping model = root.Child("model", true);
  if (model.present()) ReadModel(model, &spec->model, sink);

  SpecMapping par = root.Child("parallel");
  par.Int("pipeline", &spec->parallel.pipeline, kStages);
  par.Int("data", &spec->parallel.data, kParallelDegree);
  par.Int("expert", &spec->parallel.expert, kParallelDegree);
  par.Int("micro_batches", &spec->parallel.micro_batches, kParallelDegree);
  par.Enum("schedule", &spec->parallel.schedule,
           {{"gpipe", PipelineSchedule::kGpipe},
            {"1f1b", PipelineSchedule::kOneFOneB},
            {"dualpipe", PipelineSchedule::kDualPipe}});
  par.RejectUnknownKeys();

  SpecMapping train = root.Child("train", true);
  TrainSpec& t = spec->train;
  bool train_present = train.present();
  train.Int("steps", &t.steps, kSteps, train_present);
  train.Int("global_batch", &t.global_batch, kBatch, train_present);
  train.Enum("precision", &t.precision,
             {{"fp32", Precision::kFp32}, {"bf16", Precision::kBf16}, {"fp8", Precision::kFp8}});
  int64_t seed = static_cast<int64_t>(t.seed);
  if (train.Int("seed", &seed, kSeed)) t.seed = static_cast<uint64_t>(seed);
  train.Int("eval_interval", &t.eval_interval, kStepsOptional);
  SpecMapping opt = train.Child("optimizer");
  OptimizerSpec& o = t.optimizer;
  opt.Real("lr", &o.lr, {0.0, 10.0, true});
  opt.Real("min_lr", &o.min_lr, {0.0, 10.0});
  opt.Int("warmup_steps", &o.warmup_steps, kStepsOptional);
  opt.Real("weight_decay", &o.weight_decay, {0.0, 10.0});
  opt.Real("beta1", &o.beta1, {0.0, 1.0, false, true});
  opt.Real("beta2", &o.beta2, {0.0, 1.0, false, true});
  opt.Real("eps", &o.eps, {0.0, 1.0, true});
  opt.Real("grad_clip", &o.grad_clip, {0.0, 1e6});
  opt.RejectUnknownKeys();
  train.RejectUnknownKeys();

  SpecMapping data = root.Child("data", true);
  data.Enum("format", &spec->data.format,
            {{"text", DataFormat::kText}, {"tokens", DataFormat::kTokens}});
  data.StringList("paths", &spec->data.paths, data.present());
  data.StringList("exclude", &spec->data.exclude);
  data.Real("val_fraction", &spec->data.val_fraction, {0.0, 0.5});
  data.RejectUnknownKeys();

  SpecMapping ckpt = root.Child("checkpoint");
  ckpt.Int("interval_steps", &spec->checkpoint.interval_steps, kStepsOptional);
  ckpt.Int("keep", &spec->checkpoint.keep, kKeep);
  ckpt.Bool("async", &spec->checkpoint.async);
  ckpt.String("dir", &spec->checkpoint.dir);
  ckpt.Int("memory_interval_steps", &spec->checkpoint.memory_interval_steps, kStepsOptional);
  ckpt.Int("memory_replica_interval_steps", &spec->checkpoint.memory_replica_interval_steps,
           kStepsOptional);
  ckpt.RejectUnknownKeys();

  SpecMapping ft = root.Child("fault_tolerance");
  FaultToleranceSpec& f = spec->fault_tolerance;
  ft.Int("heartbeat_interval_ms", &f.heartbeat_interval_ms, kHeartbeatIntervalMs);
  ft.Int("heartbeat_timeout_ms", &f.heartbeat_timeout_ms, kTimeoutMs);
  ft.Int("progress_timeout_ms", &f.progress_timeout_ms, kTimeoutMs);
  ft.Int("max_restarts", &f.max_restarts, kRestarts);
  ft.Int("restart_backoff_ms", &f.restart_backoff_ms, kBackoffMs);
  ft.Int("restart_backoff_max_ms", &f.restart_backoff_max_ms, kBackoffMs);
  ft.Int("spares", &f.spares, kSpares);
  ft.Int("capacity_timeout_ms", &f.capacity_timeout_ms, kCapacityTimeoutMs);
  ft.Real("straggler_factor", &f.straggler_factor, kStragglerFactor);
  ft.Int("straggler_steps", &f.straggler_steps, kStragglerSteps);
  ft.Bool("evict_stragglers", &f.evict_stragglers);
  ft.Bool("preflight", &f.preflight);
  ft.Real("preflight_min_ratio", &f.preflight_min_ratio, kPreflightRatio);
  ft.RejectUnknownKeys();

  SpecMapping res = root.Child("resources");
  res.Enum("backend", &spec->resources.backend, {{"cpu", Backend::kCpu}, {"cuda", Backend::kCuda}});
  res.Int("workers", &spec->resources.workers, kParallelDegree);
  res.Int("devices_per_worker", &spec->resources.devices_per_worker, kDevicesPerWorker);
  res.Int("threads_per_trainer", &spec->resources.threads_per_trainer, kThreads);
  res.RejectUnknownKeys();

  root.RejectUnknownKeys();
}

std::string TooLargeMessage(std::uintmax_t bytes) {
  return "file is " + std::to_string(bytes) + " bytes; a job spec may be at most " +
         std::to_string(kMaxJobSpecBytes) + " bytes";
}

// Position (1-based) of byte offset `at` in `text`.
SourcePos PosOf(std::string_view text, std::size_t at) {
  SourcePos p{1, 1};
  for (std::size_t i = 0; i < at && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++p.line;
      p.column = 1;
    } else {
      ++p.column;
    }
  }
  return p;
}

// Offset of the first byte that is NUL or breaks UTF-8, or npos.
std::size_t FindBadByte(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return i;
    int extra = c < 0x80           ? 0
                : (c >> 5) == 0x6  ? 1
                : (c >> 4) == 0xE  ? 2
                : (c >> 3) == 0x1E ? 3
                                   : -1;
    if (extra < 0) return i;
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return i;
    }
    i += extra + 1;
  }
  return std::string_view::npos;
}

// Rejects what YAML parsers handle badly or what no job spec needs, before parsing: bytes
// that are not UTF-8, tabs in indentation, nesting deeper than the limits and a second YAML
// document (yaml-cpp's multi-document loop can spin forever on some inputs, so the loader
// parses exactly one document and finds document boundaries here). Sets *has_content when
// any line holds more than blanks, comments and document markers. Returns false on errors.
bool PrecheckText(std::string_view text, DiagnosticSink* sink, bool* has_content) {
  *has_content = false;
  std::size_t bad = FindBadByte(text);
  if (bad != std::string_view::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
    sink->Error(PosOf(text, bad), "",
                std::string("not a text file: byte ") + hex +
                    " is NUL or not UTF-8; a job spec is UTF-8 YAML");
    return false;
  }
  const std::string second_document =
      "a second YAML document starts here; a job spec is exactly one document (remove the "
      "extra '---' or '...')";
  bool ok = true;
  bool document_ended = false;       // a "..." marker was seen
  std::vector<std::size_t> indents;  // open block indentation levels
  int flow_depth = 0, max_flow = 0;
  int line = 1;
  for (std::size_t pos = 0; pos <= text.size(); ++line) {
    std::size_t eol = std::min(text.find('\n', pos), text.size());
    std::string_view l = text.substr(pos, eol - pos);
    pos = eol + 1;
    auto is_marker = [&](std::string_view m) {
      return l.substr(0, 3) == m && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    };
    const std::size_t first = l.find_first_not_of(" \t\r");
    const bool blank = first == std::string_view::npos || l[first] == '#';
    if (is_marker("---")) {
      if (*has_content || document_ended) {
        sink->Error({line, 1}, "", second_document);
        return false;
      }
      std::size_t rest = l.find_first_not_of(" \t\r", 3);
      if (rest != std::string_view::npos && l[rest] != '#') *has_content = true;  // "--- value"
      continue;
    }
    if (is_marker("...")) {
      document_ended = true;
      continue;
    }
    if (blank) continue;
    if (document_ended) {
      sink->Error({line, 1}, "", second_document);
      return false;
    }
    *has_content = true;
    std::size_t tab = l.substr(0, first).find('\t');
    if (tab != std::string_view::npos) {
      sink->Error({line, static_cast<int>(tab) + 1}, "",
                  "tab character in indentation; YAML indents with spaces only");
      ok = false;
    }
    while (!indents.empty() && indents.back() > first) indents.pop_back();
    if (indents.empty() || indents.back() < first) indents.push_back(first);
    if (static_cast<int>(indents.size()) > kMaxJobSpecIndentDepth) {
      sink->Error({line, static_cast<int>(first) + 1}, "",
                  "nesting deeper than " + std::to_string(kMaxJobSpecIndentDepth) +
                      " levels; a job spec needs at most a few");
      return false;
    }
    char quote = 0;
    for (std::size_t i = first; i < l.size(); ++i) {
      char c = l[i];
      if (quote) {
        if (c == quote) quote = 0;
        continue;
      }
      if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '#' && l[i - 1] == ' ') {
        break;
      } else if (c == '[' || c == '{') {
        max_flow = std::max(max_flow, ++flow_depth);
      } else if ((c == ']' || c == '}') && flow_depth > 0) {
        --flow_depth;
      }
      if (max_flow > kMaxJobSpecFlowDepth) {
        sink->Error({line, static_cast<int>(i) + 1}, "",
                    "brackets nested deeper than " + std::to_string(kMaxJobSpecFlowDepth) +
                        " levels; a job spec needs at most a few");
        return false;
      }
    }
  }
  return ok;
}

void Finish(LoadedJobSpec* out, DiagnosticSink& sink) {
  out->diagnostics = std::move(sink.diagnostics());
  out->error_count = sink.error_count();
  out->dropped_diagnostics = sink.dropped();
}

LoadedJobSpec LoadText(std::string_view text, DiagnosticSink& sink) {
  LoadedJobSpec out;
  if (text.size() > kMaxJobSpecBytes) {
    sink.Error({}, "", TooLargeMessage(text.size()));
    Finish(&out, sink);
    return out;
  }
  bool has_content = false;
  if (!PrecheckText(text, &sink, &has_content)) {
    Finish(&out, sink);
    return out;
  }
  if (const SpecExpansionCheck expansion = CheckSpecExpansion(text); !expansion.ok) {
    sink.Error({expansion.line, expansion.column}, "", expansion.message);
    Finish(&out, sink);
    return out;
  }
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    sink.Error(ToSourcePos(e.mark), "", "malformed YAML: " + e.msg);
  } catch (const std::exception& e) {
    sink.Error({}, "", std::string("malformed YAML: ") + e.what());
  }
  if (sink.error_count() == 0) {
    if (!doc.IsDefined() || doc.IsNull()) {
      if (has_content) {
        sink.Error({1, 1}, "", "malformed YAML: the document does not start with a key or value");
      } else {
        sink.Error({1, 1}, "",
                   "the file is empty; a job spec needs at least job, model, train and data");
      }
    } else {
      try {
        SpecMapping root(&doc, "", {1, 1}, &sink, &out.sources);
        if (root.present()) {
          ReadSpec(root, &out.spec, &sink);
          CheckJobSpecRules(out.spec, out.sources, &sink);
        }
      } catch (const std::exception& e) {
        // yaml-cpp may still throw on pathological nodes; never let it escape.
        sink.Error({}, "", std::string("malformed YAML: ") + e.what());
      }
    }
  }
  Finish(&out, sink);
  return out;
}

}  // namespace

std::string LoadedJobSpec::Report() const {
  std::string out;
  for (const auto& d : diagnostics) out += d.ToString() + "\n";
  if (dropped_diagnostics > 0) {
    out += std::to_string(dropped_diagnostics) + " more diagnostics not shown\n";
  }
  return out;
}

LoadedJobSpec LoadJobSpecText(std::string_view text, const std::string& display_name) {
  DiagnosticSink sink(display_name);
  return LoadText(text, sink);
}

LoadedJobSpec LoadJobSpecFile(const std::string& path) { return LoadJobSpecFile(path, ""); }

LoadedJobSpec LoadJobSpecFile(const std::string& path, const std::string& base_dir) {
  DiagnosticSink sink(path);
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    sink.Error({}, "", "cannot open: no such file");
  } else if (!fs::is_regular_file(status)) {
    sink.Error({}, "", "cannot read: not a regular file");
  } else if (auto size = fs::file_size(path, ec); !ec && size > kMaxJobSpecBytes) {
    sink.Error({}, "", TooLargeMessage(size));
  }
  if (sink.error_count() > 0) {
    LoadedJobSpec out;
    Finish(&out, sink);
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (!in.good() && !in.eof()) {
    sink.Error({}, "", "cannot read the file");
    LoadedJobSpec out;
    Finish(&out, sink);
    return out;
  }
  LoadedJobSpec out = LoadText(buf.str(), sink);
  if (!out.ok()) return out;

  // Relative data paths mean "next to the spec file", wherever moerun is started from.
  fs::path base =
      base_dir.empty() ? fs::absolute(fs::path(path)).parent_path() : fs::path(base_dir);
  for (std::size_t i = 0; i < out.spec.data.paths.size(); ++i) {
    fs::path p(out.spec.data.paths[i]);
    if (p.is_relative()) p = (base / p).lexically_normal();
    out.spec.data.paths[i] = p.string();
    if (!fs::exists(p, ec)) {
      std::string field = "data.paths[" + std::to_string(i) + "]";
      out.diagnostics.push_back({SpecDiagnostic::Severity::kWarning, path,
                                 out.sources.Locate("data.paths"), field,
                                 "'" + p.string() +
                                     "' does not exist on this machine; the trainers fail at start "
                                     "unless it exists on their hosts"});
    }
  }
  return out;
}

Result<JobSpec> LoadValidJobSpec(const std::string& path) {
  LoadedJobSpec loaded = LoadJobSpecFile(path);
  if (!loaded.ok()) return Status::InvalidArgument("invalid job spec:\n" + loaded.Report());
  return std::move(loaded.spec);
}

}  // namespace moerun
