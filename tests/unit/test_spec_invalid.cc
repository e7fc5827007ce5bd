// Invalid job specs: each case mutates a valid base spec and asserts the diagnostic's field
// path, line and rule. Lines are found from the mutated text, so cases stay readable.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "common/spec_loader.h"

namespace {

const char* kBase = R"(job:
  name: t
model:
  vocab_size: 256
  seq_len: 32
  d_model: 64
  n_layers: 4
  n_heads: 4
  dense_layers: 1
  ffn_hidden: 128
  moe:
    routed_experts: 8
    top_k: 2
    expert_hidden: 32
parallel:
  pipeline: 2
  data: 2
  expert: 2
  micro_batches: 2
train:
  steps: 10
  global_batch: 8
  optimizer:
    lr: 0.001
data:
  paths: [/tmp]
resources:
  workers: 2
  devices_per_worker: 2
fault_tolerance:
  heartbeat_interval_ms: 100
  heartbeat_timeout_ms: 1000
)";

struct Case {
  const char* name;
  std::vector<std::pair<std::string, std::string>> edits;  // replace first occurrence
  const char* field;                                       // expected field path of the first error
  const char* contains;                                    // expected text in its message
  int line = -1;  // -1: the line where the first edit's replacement starts; 0: none
};

std::string Apply(const Case& c, int* line) {
  std::string text = kBase;
  *line = 0;
  for (std::size_t i = 0; i < c.edits.size(); ++i) {
    const auto& [from, to] = c.edits[i];
    auto at = text.find(from);
    REQUIRE_MESSAGE(at != std::string::npos, c.name, ": edit text not in base: ", from);
    text.replace(at, from.size(), to);
    if (i == 0) {
      *line = 1;
      for (std::size_t k = 0; k < at; ++k) *line += text[k] == '\n';
      // Point at the first non-blank line of the replacement.
      for (std::size_t k = at; k < at + to.size() && to[k - at] == '\n'; ++k) ++*line;
    }
  }
  return text;
}

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"unknown top-level key", {{"model:", "modle:"}}, "modle", "did you mean 'model'"},
      {"unknown nested key",
       {{"routed_experts: 8", "rout_experts: 8"}},
       "model.moe.rout_experts",
       "did you mean 'routed_experts'"},
      {"unknown key without a near match",
       {{"  n_heads: 4\n", "  n_heads: 4\n  colour: blue\n"}},
       "model.colour",
       "allowed here",
       9},
      {"duplicate key",
       {{"  d_model: 64\n", "  d_model: 64\n  d_model: 32\n"}},
       "model.d_model",
       "duplicate key",
       7},
      {"integer given text",
       {{"d_model: 64", "d_model: abc"}},
       "model.d_model",
       "expected an integer"},
      {"integer given quoted number",
       {{"d_model: 64", "d_model: \"64\""}},
       "model.d_model",
       "remove the quotes"},
      {"integer given fraction",
       {{"d_model: 64", "d_model: 64.5"}},
       "model.d_model",
       "expected an integer"},
      {"integer below range",
       {{"d_model: 64", "d_model: 0"}},
       "model.d_model",
       "must be between 1 and"},
      {"negative layers",
       {{"n_layers: 4", "n_layers: -1"}},
       "model.n_layers",
       "must be between 1 and"},
      {"integer overflow",
       {{"d_model: 64", "d_model: 99999999999999999999"}},
       "model.d_model",
       "out of range"},
      {"sign without digits",
       {{"d_model: 64", "d_model: +-64"}},
       "model.d_model",
       "expected an integer"},
      {"integer given a list", {{"d_model: 64", "d_model: [64]"}}, "model.d_model", "got a list"},
      {"integer given nothing", {{"d_model: 64", "d_model:"}}, "model.d_model", "got nothing"},
      {"heads do not divide d_model",
       {{"n_heads: 4", "n_heads: 3"}},
       "model.n_heads",
       "must divide model.d_model (64)"},
      {"odd head dimension", {{"n_heads: 4", "n_heads: 64"}}, "model.n_heads", "must be even"},
      {"top_k above experts",
       {{"top_k: 2", "top_k: 9"}},
       "model.moe.top_k",
       "at most model.moe.routed_experts (8)"},
      {"groups do not divide experts",
       {{"top_k: 2", "top_k: 2\n    n_groups: 3"}},
       "model.moe.n_groups",
       "must divide model.moe.routed_experts (8)",
       14},
      {"topk_groups above groups",
       {{"top_k: 2", "top_k: 2\n    topk_groups: 2"}},
       "model.moe.topk_groups",
       "at most model.moe.n_groups (1)",
       14},
      {"one expert per group",
       {{"top_k: 2", "top_k: 2\n    n_groups: 8"}},
       "model.moe.n_groups",
       "at least 2",
       14},
      {"top_k beyond kept groups",
       {{"top_k: 2", "top_k: 3\n    n_groups: 4\n    topk_groups: 1"}},
       "model.moe.top_k",
       "topk_groups x experts per group (1 x 2 = 2)"},
      {"misspelled enum",
       {{"top_k: 2", "top_k: 2\n    score_func: sigmod"}},
       "model.moe.score_func",
       "did you mean 'sigmoid'",
       14},
      {"zero route scale",
       {{"top_k: 2", "top_k: 2\n    route_scale: 0"}},
       "model.moe.route_scale",
       "greater than 0",
       14},
      {"expert does not divide data",
       {{"expert: 2", "expert: 3"}},
       "parallel.expert",
       "must divide parallel.data (2)"},
      {"expert does not divide experts",
       {{"expert: 2", "expert: 4"},
        {"data: 2", "data: 4"},
        {"routed_experts: 8", "routed_experts: 6"},
        {"workers: 2", "workers: 4"},
        {"global_batch: 8", "global_batch: 16"}},
       "parallel.expert",
       "must divide model.moe.routed_experts (6)"},
      {"more stages than layers",
       {{"pipeline: 2", "pipeline: 5"}},
       "parallel.pipeline",
       "at most model.n_layers (4)"},
      {"batch not divisible",
       {{"global_batch: 8", "global_batch: 6"}},
       "train.global_batch",
       "divisible by parallel.data x parallel.micro_batches (2 x 2 = 4)"},
      {"1f1b with too few micro-batches",
       {{"micro_batches: 2", "micro_batches: 1"}},
       "parallel.micro_batches",
       "at least parallel.pipeline (2)"},
      {"dualpipe with too few micro-batches",
       {{"micro_batches: 2", "micro_batches: 2\n  schedule: dualpipe"}},
       "parallel.micro_batches",
       "at least 2 x parallel.pipeline (4)"},
      {"unknown schedule",
       {{"micro_batches: 2", "micro_batches: 2\n  schedule: 2f2b"}},
       "parallel.schedule",
       "one of gpipe|1f1b|dualpipe",
       20},
      {"unknown precision",
       {{"global_batch: 8", "global_batch: 8\n  precision: fp16"}},
       "train.precision",
       "one of fp32|bf16|fp8",
       23},
      {"zero steps", {{"steps: 10", "steps: 0"}}, "train.steps", "must be between 1 and"},
      {"warmup beyond steps",
       {{"lr: 0.001", "lr: 0.001\n    warmup_steps: 20"}},
       "train.optimizer.warmup_steps",
       "at most train.steps (10)",
       25},
      {"min_lr above lr",
       {{"lr: 0.001", "lr: 0.001\n    min_lr: 0.01"}},
       "train.optimizer.min_lr",
       "at most train.optimizer.lr",
       25},
      {"beta2 of one",
       {{"lr: 0.001", "lr: 0.001\n    beta2: 1.0"}},
       "train.optimizer.beta2",
       "less than 1",
       25},
      {"nan learning rate", {{"lr: 0.001", "lr: nan"}}, "train.optimizer.lr", "finite number"},
      {"negative seed",
       {{"steps: 10", "steps: 10\n  seed: -1"}},
       "train.seed",
       "must be at least 0",
       22},
      {"paths as a scalar",
       {{"paths: [/tmp]", "paths: /tmp"}},
       "data.paths",
       "expected a list of strings"},
      {"paths missing",
       {{"  paths: [/tmp]\n", "  format: text\n"}},
       "data.paths",
       "required key is missing",
       25},
      {"empty path", {{"paths: [/tmp]", "paths: [\"\"]"}}, "data.paths[0]", "non-empty string"},
      {"val_fraction too large",
       {{"paths: [/tmp]", "paths: [/tmp]\n  val_fraction: 0.9"}},
       "data.val_fraction",
       "at most 0.5",
       27},
      {"text data needs byte vocabulary",
       {{"vocab_size: 256", "vocab_size: 100"}},
       "model.vocab_size",
       "at least 256 for data.format: text"},
      {"async not a bool",
       {{"\ndata:", "\ncheckpoint:\n  async: maybe\ndata:"}},
       "checkpoint.async",
       "expected true or false",
       26},
      {"keep zero",
       {{"\ndata:", "\ncheckpoint:\n  keep: 0\ndata:"}},
       "checkpoint.keep",
       "must be between 1 and",
       26},
      {"heartbeat timeout too short",
       {{"heartbeat_timeout_ms: 1000", "heartbeat_timeout_ms: 150"}},
       "fault_tolerance.heartbeat_timeout_ms",
       "at least 2 x heartbeat_interval_ms (200)"},
      {"backoff max below backoff",
       {{"heartbeat_timeout_ms: 1000", "heartbeat_timeout_ms: 1000\n  restart_backoff_max_ms: 10"}},
       "fault_tolerance.restart_backoff_max_ms",
       "at least restart_backoff_ms (1000)",
       33},
      {"workers do not match world",
       {{"workers: 2", "workers: 3"}},
       "resources.workers",
       "must equal the world size"},
      {"unknown backend",
       {{"workers: 2", "workers: 2\n  backend: tpu"}},
       "resources.backend",
       "one of cpu|cuda",
       29},
      {"bad job name", {{"name: t", "name: \"bad name!\""}}, "job.name", "letters, digits"},
      {"job section missing", {{"job:\n  name: t\n", ""}}, "job", "required key is missing", 1},
      {"mla key with mha",
       {{"n_heads: 4", "n_heads: 4\n  kv_lora_rank: 64"}},
       "model.kv_lora_rank",
       "only valid with model.attention: mla",
       9},
      {"mla without its dimensions",
       {{"n_heads: 4", "n_heads: 4\n  attention: mla"}},
       "model.kv_lora_rank",
       "required key is missing",
       3},
      {"mla with an odd rope dimension",
       {{"n_heads: 4",
         "n_heads: 4\n  attention: mla\n  kv_lora_rank: 32\n  qk_nope_head_dim: 16\n"
         "  qk_rope_head_dim: 15\n  v_head_dim: 16"}},
       "model.qk_rope_head_dim",
       "must be even (RoPE rotates pairs of dimensions), got 15",
       12},
      {"mtp depth not below seq_len",
       {{"    expert_hidden: 32\n", "    expert_hidden: 32\n  mtp:\n    depth: 16\n"},
        {"seq_len: 32", "seq_len: 16"}},
       "model.mtp.depth",
       "must be less than model.seq_len (16)",
       16},
      {"mtp that the pipeline cannot hold",
       {{"    expert_hidden: 32\n", "    expert_hidden: 32\n  mtp:\n    depth: 4\n"}},
       "parallel.pipeline",
       "2 stages cannot hold model.mtp.depth 4",
       18},
      {"mtp key misspelt",
       {{"    expert_hidden: 32\n", "    expert_hidden: 32\n  mtp:\n    depht: 1\n"}},
       "model.mtp.depht",
       "unknown key",
       16},
      {"mtp loss weight negative",
       {{"    expert_hidden: 32\n", "    expert_hidden: 32\n  mtp:\n    loss_weight: -0.5\n"}},
       "model.mtp.loss_weight",
       "",
       16},
      {"moe section missing",
       {{"  moe:\n    routed_experts: 8\n    top_k: 2\n    expert_hidden: 32\n", ""}},
       "model.moe",
       "required section is missing",
       3},
      {"moe section without moe layers",
       {{"dense_layers: 1", "dense_layers: 4"}, {"expert: 2", "expert: 1"}},
       "model.moe",
       "no MoE layers",
       11},
      {"dense layers beyond layers",
       {{"dense_layers: 1", "dense_layers: 5"}},
       "model.dense_layers",
       "at most model.n_layers (4)"},
      {"model is a list",
       {{"model:\n", "model: [1, 2]\nmodel_rest:\n"}},
       "model",
       "expected a mapping"},
      {"ffn_hidden missing",
       {{"  ffn_hidden: 128\n", ""}},
       "model.ffn_hidden",
       "required when model.dense_layers > 0",
       3},
      {"expert parallel without experts",
       {{"dense_layers: 1", "dense_layers: 4"},
        {"  moe:\n    routed_experts: 8\n    top_k: 2\n    expert_hidden: 32\n", ""}},
       "parallel.expert",
       "must be 1 for a model without MoE layers",
       14},
      {"tab indentation", {{"  d_model: 64", "\td_model: 64"}}, "", "tab character in indentation"},
      {"unclosed flow mapping", {{"paths: [/tmp]", "paths: [/tmp"}}, "", "malformed YAML", 0},
      {"two documents",
       {{"job:", "---\njob: {name: a}\n---\njob:"}},
       "",
       "a second YAML document starts here",
       3},
      {"section given a scalar",
       {{"  optimizer:\n    lr: 0.001\n", "  optimizer: fast\n"}},
       "train.optimizer",
       "expected a mapping of keys"},
  };
  return cases;
}

}  // namespace

TEST_CASE("every invalid-spec case reports its field, line and rule") {
  REQUIRE(Cases().size() >= 40);
  for (const Case& c : Cases()) {
    const std::string name = c.name;
    CAPTURE(name);
    int line = 0;
    std::string text = Apply(c, &line);
    if (c.line >= 0) line = c.line;
    moerun::LoadedJobSpec loaded = moerun::LoadJobSpecText(text, "case.yaml");
    REQUIRE_FALSE(loaded.ok());
    REQUIRE(!loaded.diagnostics.empty());
    const moerun::SpecDiagnostic* hit = nullptr;
    for (const auto& d : loaded.diagnostics) {
      if (d.field == c.field && d.message.find(c.contains) != std::string::npos) hit = &d;
    }
    INFO("diagnostics:\n", loaded.Report());
    REQUIRE(hit != nullptr);
    if (line > 0) CHECK(hit->pos.line == line);
    CHECK(hit->file == "case.yaml");
    CHECK(hit->ToString().rfind("case.yaml:", 0) == 0);
  }
}

TEST_CASE("the base spec of the invalid cases is itself valid") {
  moerun::LoadedJobSpec loaded = moerun::LoadJobSpecText(kBase, "base.yaml");
  INFO(loaded.Report());
  CHECK(loaded.ok());
  CHECK(loaded.diagnostics.empty());
}

TEST_CASE("all errors of a file are reported at once, without cascades") {
  std::string text = kBase;
  text.replace(text.find("d_model: 64"), 11, "d_model: abc");  // type error
  text.replace(text.find("top_k: 2"), 8, "top_k: 9");          // rule error
  text.replace(text.find("steps: 10"), 9, "stepz: 10");        // unknown + missing
  moerun::LoadedJobSpec loaded = moerun::LoadJobSpecText(text, "many.yaml");
  std::vector<std::string> fields;
  for (const auto& d : loaded.diagnostics) fields.push_back(d.field);
  INFO(loaded.Report());
  CHECK(loaded.error_count == 4);
  CHECK(std::count(fields.begin(), fields.end(), "model.d_model") == 1);
  CHECK(std::count(fields.begin(), fields.end(), "model.moe.top_k") == 1);
  CHECK(std::count(fields.begin(), fields.end(), "train.stepz") == 1);
  CHECK(std::count(fields.begin(), fields.end(), "train.steps") == 1);
  // n_heads vs d_model is not checked again once d_model itself is wrong.
  CHECK(std::count(fields.begin(), fields.end(), "model.n_heads") == 0);
}
