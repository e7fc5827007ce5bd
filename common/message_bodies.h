// Typed bodies of the control-plane messages the coordinator and the worker daemons receive
// (docs/architecture.md §6), one struct per message, each read by FromJson. A body that lacks a
// required field, or holds one of the wrong type or out of range, is refused with InvalidArgument
// naming the message and the field ("Heartbeat: 'devices' must be an integer, not a string");
// nothing throws. Fields a reader does not know are ignored, so newer senders may add some.
// Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace moerun {

// Reads fields of one JSON body, keeping the first problem; every read after it returns the
// fallback. Not thread-safe.
class BodyReader {
 public:
  BodyReader(const nlohmann::json& body, std::string_view message);

  std::string String(const char* key);  // required
  std::string String(const char* key, std::string fallback);
  int64_t Int(const char* key, int64_t min, int64_t max);  // required, in [min, max]
  int64_t Int(const char* key, int64_t fallback, int64_t min, int64_t max);
  uint64_t Uint(const char* key);  // required
  double Number(const char* key, double fallback);
  bool Bool(const char* key);  // required
  bool Bool(const char* key, bool fallback);
  // A JSON array (required, or empty when absent and not required).
  const nlohmann::json& Array(const char* key, bool required);

  // InvalidArgument naming the message and the field, or OK.
  const Status& status() const { return status_; }
  // The body read, or the first problem.
  template <typename T>
  Result<T> Finish(T body) const {
    if (!status_.ok()) return status_;
    return body;
  }
  // Records a problem found by the caller (the first one stays).
  void Fail(const std::string& key, const std::string& what);

 private:
  const nlohmann::json* Field(const char* key, bool required);
  void WrongType(const char* key, const char* want, const nlohmann::json& got);
  // The field when present and of the kind `is` accepts; else `fallback`, with a problem
  // recorded when it is required or of another kind (named `want` in the message).
  template <typename T>
  T Typed(const char* key, bool required, T fallback, const char* want,
          bool (nlohmann::json::*is)() const noexcept);
  int64_t Integer(const char* key, bool required, int64_t fallback, int64_t min, int64_t max);

  const nlohmann::json& body_;
  std::string message_;
  Status status_;
};

// One trainer as a daemon reports it (Heartbeat, TrainerExited).
struct TrainerReport {
  std::string job;
  uint64_t generation = 0;
  int rank = 0;
  bool running = false;
  int64_t pid = 0;
  int exit_code = 0, signal = 0;  // when not running
  std::string text;               // the trainer's own last words, when not running
};

// Register and Heartbeat: the daemon's host and its trainers.
struct WorkerStatusBody {
  std::string host, backend, data_host;
  // Where the daemon keeps its state ("host:state dir"): a daemon relaunched on it is the same
  // daemon; another one with the same id is a duplicate (absent from older daemons: "").
  std::string home;
  int64_t devices = 0, pid = 0, seq = 0;
  std::vector<TrainerReport> trainers;
  // Jobs whose memory snapshots the daemon's host holds (absent from older daemons).
  std::vector<std::string> memory_jobs;
  // Trainer entries left out because they did not parse, and the first one's problem.
  int rejected_trainers = 0;
  std::string trainer_problem;
  static Result<WorkerStatusBody> FromJson(const nlohmann::json& body, std::string_view message);
};

// TrainerExited: the exits a daemon saw since its last report.
struct TrainerExitedBody {
  std::vector<TrainerReport> trainers;
  static Result<TrainerExitedBody> FromJson(const nlohmann::json& body);
};

// Rendezvous, StepReport and ShardWritten all carry the sender's rank.
struct RendezvousBody {
  int rank = 0;
  std::string endpoint, nccl_unique_id;
  static Result<RendezvousBody> FromJson(const nlohmann::json& body);
};

struct ShardWrittenBody {
  int rank = 0;
  int64_t step = 0, bytes = 0;
  std::string shard;
  static Result<ShardWrittenBody> FromJson(const nlohmann::json& body);
};

// PreflightReport (worker/trainer/preflight.h): a rank's GEMM speed and its pairings, at most
// two, each with its partner, GB/s and the error that ended it (empty: none; at most
// kMaxPreflightErrorChars).
inline constexpr size_t kMaxPreflightErrorChars = 512;
struct PreflightReportBody {
  struct Pair {
    int partner = -1;
    double gbps = 0;
    std::string error;
  };
  int rank = 0;
  double gemm_gflops = 0;
  std::vector<Pair> pairs;
  static Result<PreflightReportBody> FromJson(const nlohmann::json& body);
};

// CheckpointCommitted: the committed steps the job keeps, ascending, at most kMaxCheckpointKeep
// (coordinator -> writer ranks, after each commit and in answer to a repeated ShardWritten).
struct CheckpointCommittedBody {
  std::vector<int64_t> steps;
  static Result<CheckpointCommittedBody> FromJson(const nlohmann::json& body);
};

struct StepReportBody {
  int rank = 0;
  int64_t step = 0;
  double compute_s = 0, data_wait_s = 0, bubble_s = 0;
  std::optional<double> val_loss;
  // The oldest and newest memory snapshot the rank holds on its host (0, 0: none).
  int64_t memory_oldest = 0, memory_newest = 0;
  // The oldest and newest pinned snapshot it holds with a copy on its partner's host.
  int64_t replica_oldest = 0, replica_newest = 0;
  // Tokens per expert by MoE layer name (rank 0's report only), names [A-Za-z0-9._-]{1,16}.
  std::map<std::string, std::vector<int64_t>> expert_load;
  nlohmann::json scalars;  // the report as sent, without expert_load: what is stored
  static Result<StepReportBody> FromJson(const nlohmann::json& body);
};

// SubmitJob from the CLI or the HTTP API.
struct SubmitJobBody {
  std::string spec_yaml, source, run_dir, spec_dir;
  int64_t steps = 0;
  bool resume = false;
  static Result<SubmitJobBody> FromJson(const nlohmann::json& body);
};

// StopJob from the CLI or the HTTP API: why, for the events (at most kMaxStopReasonChars).
inline constexpr size_t kMaxStopReasonChars = 256;
struct StopJobBody {
  std::string reason;
  static Result<StopJobBody> FromJson(const nlohmann::json& body);
};

// Query: status, job, events, metrics, expert_load, live, log.
struct QueryBody {
  std::string what;
  int64_t since_step = 0;
  int64_t limit = 0;  // absent: as many as the coordinator gives (its maximum)
  std::string layer;  // expert_load
  // log: whose log, from where, how much.
  std::string job;
  int rank = 0;
  int64_t offset = 0, max_bytes = 0;
  static Result<QueryBody> FromJson(const nlohmann::json& body);
};

// ---- received by a worker daemon -------------------------------------------------------------

// A trainer whose exit the coordinator has recorded (Registered and Reply carry them).
struct TrainerAck {
  std::string job;
  uint64_t generation = 0;
  int rank = 0;
};

// Registered (heartbeat settings and acks) and the Reply to a heartbeat or an exit report
// (acks only; the settings keep their last values).
struct DaemonReplyBody {
  int64_t heartbeat_interval_ms = 0;  // 0: not in this message
  int64_t heartbeat_timeout_ms = 0;   // the lease; 0: none
  std::vector<TrainerAck> acked;
  static Result<DaemonReplyBody> FromJson(const nlohmann::json& body, std::string_view message);
};

// StartTrainers: the ranks of one job generation this daemon runs, and how.
struct StartTrainersBody {
  std::vector<int> ranks;
  std::string spec_yaml, run_dir, spec_dir;
  int64_t world = 0;
  bool resume = false;
  int64_t restore_step = -1;          // > 0: restore exactly this committed step
  int64_t data_plane_timeout_ms = 0;  // 0: the trainer's default
  int64_t steps = 0;                  // > 0: replaces train.steps
  bool restore_from_memory = false;   // restore_step is in the ranks' memory snapshots
  // Per rank of the job (empty: none): the rank that keeps its pinned snapshots' copies
  // (replica_to), and the rank it fetches restore_step from (replica_fetch); -1: none.
  std::vector<int> replica_to, replica_fetch;
  // The generation's data-plane CURVE key pair (Z85; empty: plain sockets). Secret: only the
  // coordinator's encrypted control plane carries it, and the daemon hands it to its trainers
  // in a 0600 file.
  std::string data_plane_public, data_plane_secret;
  static Result<StartTrainersBody> FromJson(const nlohmann::json& body);
};

// StopTrainers: a job's trainers of generations below `below_generation` stop.
struct StopTrainersBody {
  uint64_t below_generation = 0;
  int64_t grace_ms = -1;  // -1: the daemon's full grace
  static Result<StopTrainersBody> FromJson(const nlohmann::json& body);
};

// A Query the coordinator forwards to a daemon: a chunk of one rank's log.
struct LogRequestBody {
  std::string request_id;
  int rank = 0;
  int64_t offset = 0;
  int64_t max_bytes = -1;  // -1: as much as a chunk holds
  static Result<LogRequestBody> FromJson(const nlohmann::json& body);
};

}  // namespace moerun
