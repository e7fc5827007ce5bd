// JobSpec: the typed form of a job's YAML (docs/architecture.md §3). Every field carries its
// default here, and only here; docs/job-spec.md documents the same values. Load and validate with
// spec_loader.h; a JobSpec that came
// from LoadJobSpec* without errors satisfies every rule in spec_rules.h.
//
// Integers are int64 so parameter and FLOP arithmetic on DeepSeek-V3-sized shapes cannot
// overflow within the validated ranges.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moerun {

enum class AttentionKind { kMha, kMla };
enum class ScoreFunc { kSigmoid, kSoftmax };
enum class PipelineSchedule { kGpipe, kOneFOneB, kDualPipe };
enum class Precision { kFp32, kBf16, kFp8 };
enum class DataFormat { kText, kTokens };
enum class Backend { kCpu, kCuda };

std::string_view ToString(AttentionKind v);
std::string_view ToString(ScoreFunc v);
std::string_view ToString(PipelineSchedule v);
std::string_view ToString(Precision v);
std::string_view ToString(DataFormat v);
std::string_view ToString(Backend v);

struct BalanceSpec {
  double bias_update_speed = 0.001;  // γ of the aux-loss-free bias update, per step
  double seq_aux_alpha = 0.0001;     // α of the sequence-wise balance loss; 0 disables it
  bool operator==(const BalanceSpec&) const = default;
};

struct MoeSpec {
  int64_t routed_experts = 0;  // required when the model has MoE layers
  int64_t shared_experts = 1;  // fused into one MLP of expert_hidden * shared_experts
  int64_t top_k = 0;           // required when the model has MoE layers
  int64_t expert_hidden = 0;   // required when the model has MoE layers
  ScoreFunc score_func = ScoreFunc::kSigmoid;
  double route_scale = 1.0;
  int64_t n_groups = 1;     // expert groups for group-limited routing; 1 disables it
  int64_t topk_groups = 1;  // groups kept per token
  BalanceSpec balance;
  bool operator==(const MoeSpec&) const = default;
};

// Multi-token prediction (DeepSeek-V3 §2.2): `depth` sequential modules on top of the main
// model, module k predicting the token k+1 positions ahead of each position from the previous
// depth's hidden state and the embedding of the token k positions ahead, through one
// transformer block and the shared output head. Training only.
struct MtpSpec {
  int64_t depth = 0;  // 0 disables; DeepSeek-V3 uses 1
  double loss_weight =
      0.3;  // λ: loss = main + λ/depth · Σ_k MTP loss k (DeepSeek-V3: 0.3, then 0.1)
  bool operator==(const MtpSpec&) const = default;
};

struct ModelSpec {
  int64_t vocab_size = 0;    // required
  int64_t seq_len = 0;       // required: tokens per training sequence
  int64_t d_model = 0;       // required
  int64_t n_layers = 0;      // required
  int64_t n_heads = 0;       // required
  int64_t dense_layers = 1;  // the first dense_layers layers use a dense SwiGLU MLP
  int64_t ffn_hidden = 0;    // dense MLP hidden size; required when dense_layers > 0
  AttentionKind attention = AttentionKind::kMha;
  // MLA dimensions; required when attention is mla, rejected otherwise. q_lora_rank 0
  // means queries are projected directly (no low-rank compression).
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  double rope_theta = 10000.0;
  double init_std = 0.02;
  bool has_moe_section = false;  // whether the YAML had model.moe
  MoeSpec moe;
  MtpSpec mtp;

  int64_t moe_layers() const { return n_layers - dense_layers; }
  // Whether layer `layer` has a dense MLP: the first dense_layers, and every layer (MTP
  // modules' blocks, numbered n_layers + k - 1, included) of a model without MoE layers.
  bool dense_layer(int64_t layer) const { return layer < dense_layers || moe_layers() == 0; }
  // MoE layers with the MTP modules' MoE blocks (those follow the main ones, in order).
  int64_t moe_layers_with_mtp() const { return moe_layers() > 0 ? moe_layers() + mtp.depth : 0; }
  // Per-head dimensions of the query/key dot product and of the values.
  int64_t qk_head_dim() const;
  int64_t v_head_dim_effective() const;
  bool operator==(const ModelSpec&) const = default;
};

struct ParallelSpec {
  int64_t pipeline = 1;
  int64_t data = 1;
  int64_t expert = 1;  // expert-parallel ranks per expert group; divides data
  int64_t micro_batches = 1;
  PipelineSchedule schedule = PipelineSchedule::kOneFOneB;

  int64_t world_size() const { return pipeline * data; }
  bool operator==(const ParallelSpec&) const = default;
};

struct OptimizerSpec {
  double lr = 3e-4;     // peak learning rate, reached after warmup_steps
  double min_lr = 0.0;  // end of the cosine decay
  int64_t warmup_steps = 0;
  double weight_decay = 0.1;  // decoupled, on matrices only
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // global L2 norm; 0 disables clipping
  bool operator==(const OptimizerSpec&) const = default;
};

struct TrainSpec {
  int64_t steps = 0;         // required
  int64_t global_batch = 0;  // required: sequences per optimizer step, over all replicas
  Precision precision = Precision::kFp32;
  uint64_t seed = 1234;
  int64_t eval_interval = 100;  // steps between held-out evaluations; 0 disables
  OptimizerSpec optimizer;
  bool operator==(const TrainSpec&) const = default;
};

struct DataSpec {
  DataFormat format = DataFormat::kText;
  std::vector<std::string> paths;    // required: files or directories
  std::vector<std::string> exclude;  // glob patterns matched against file names
  double val_fraction = 0.01;        // share of the data held out for evaluation
  bool operator==(const DataSpec&) const = default;
};

struct CheckpointSpec {
  int64_t interval_steps = 100;  // 0 disables checkpoints
  int64_t keep = 3;              // committed steps retained
  bool async = true;             // write from a host copy on a background thread
  std::string dir;               // empty: <run dir>/checkpoints
  // Every this many steps each rank of a daemon-started job also snapshots its state into
  // memory on its host (tmpfs); 0 disables (worker/checkpoint/memory_snapshots.h).
  int64_t memory_interval_steps = 1;
  // Every this many steps each rank also keeps that step's snapshot aside (pinned) and sends a
  // copy to a rank on another host, from which it restores if its own host is lost; 0 disables.
  // Needs memory_interval_steps > 0 and ranks on two or more hosts.
  int64_t memory_replica_interval_steps = 20;
  bool operator==(const CheckpointSpec&) const = default;
};

struct FaultToleranceSpec {
  int64_t heartbeat_interval_ms = 1000;
  int64_t heartbeat_timeout_ms = 5000;
  int64_t progress_timeout_ms = 60000;  // no step finished for this long: the job is hung
  int64_t max_restarts = 10;
  int64_t restart_backoff_ms = 1000;
  int64_t restart_backoff_max_ms = 30000;
  int64_t spares = 0;  // idle daemons held in reserve to replace failed ones
  // A restart that finds no room (too few live slots) waits this long, then fails the job with
  // what it waited for; 0 waits for ever. Jobs still QUEUED wait their turn without a limit.
  int64_t capacity_timeout_ms = 600000;
  // Stragglers (docs/cluster.md): a rank whose compute time per step is more than
  // straggler_factor x the median of its stage's other ranks (else of all other ranks) for
  // straggler_steps steps in a row is named a straggler; 0 steps turns detection off.
  // evict_stragglers: restart the job without that rank's daemon when a spare has room.
  double straggler_factor = 1.5;
  int64_t straggler_steps = 20;
  bool evict_stragglers = false;
  // Pre-flight (docs/cluster.md): the first generation's ranks time a GEMM and exchanges with
  // two partners before training; a daemon whose GEMM or links are below preflight_min_ratio
  // x the best is reported, and left out when other daemons have room.
  bool preflight = true;
  double preflight_min_ratio = 0.25;
  bool operator==(const FaultToleranceSpec&) const = default;
};

struct ResourcesSpec {
  Backend backend = Backend::kCpu;
  int64_t workers = 1;  // daemons (hosts) the job runs on, spares not included
  int64_t devices_per_worker = 1;
  int64_t threads_per_trainer = 1;
  bool operator==(const ResourcesSpec&) const = default;
};

struct JobSpec {
  std::string name;  // required: [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters
  ModelSpec model;
  ParallelSpec parallel;
  TrainSpec train;
  DataSpec data;
  CheckpointSpec checkpoint;
  FaultToleranceSpec fault_tolerance;
  ResourcesSpec resources;
  bool operator==(const JobSpec&) const = default;
};

}  // namespace moerun
