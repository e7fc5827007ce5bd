// TrainReporter: where one rank's run reports to (docs/observability.md): rank 0's
// <run dir>/metrics.jsonl (one JSON object per step), the coordinator when a daemon started
// the trainer (every step's metrics; every checkpoint shard once durable, for the two-phase
// commit), the log, and a progress bar when rank 0's stderr is a terminal.
// Not thread-safe, except ShardWritten (the checkpoint writer's thread).
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/comm/timed_communicator.h"
#include "worker/trainer/step_metrics.h"
#include "worker/trainer/step_result.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {

class TrainReporter {
 public:
  TrainReporter(const JobSpec& spec, const TrainOptions& opts, std::shared_ptr<spdlog::logger> log,
                bool tty);

  // Rank 0 starts metrics.jsonl: kept up to `step` when resuming (the steps after it are
  // trained again), else emptied. `first_step` is the first step this run trains.
  Status Open(int64_t step, int64_t first_step);
  // Writes, reports and logs a step's line (with val_loss when it has one).
  // Goes into the coordinator's copy of each step report: the oldest and newest memory
  // snapshot this rank holds (worker/checkpoint/memory_snapshots.h).
  void set_memory_held(std::pair<int64_t, int64_t> held) { memory_held_ = held; }
  // And the pinned steps it holds with a copy on another host (worker/trainer/snapshot_replicas.h).
  void set_replica_held(std::pair<int64_t, int64_t> held) { replica_held_ = held; }
  void Step(const nlohmann::json& line, int64_t total);
  // A checkpoint write finished (any thread): logged, and a durable shard queued for the
  // coordinator.
  void ShardWritten(const checkpoint::WriteReport& r, const std::string& shard);
  // Sends the queued shard reports (the training thread). Returns the first write that failed
  // for good (DataLoss: the shard's directory is not writable), which ends the rank (exit 3);
  // other write failures are logged and training goes on to the next checkpoint.
  Status ReportShards();
  // The committed steps the job keeps, when the coordinator said since the last call
  // (ControlChannel::PollCommitted); nullopt without a coordinator. The training thread.
  std::optional<std::vector<int64_t>> PollCommitted();
  // The coordinator asked the job to stop after a checkpoint (heard by PollCommitted).
  bool StopRequested() const;
  // Ends the progress bar's line.
  void Finish();

 private:
  std::pair<int64_t, int64_t> memory_held_{0, 0}, replica_held_{0, 0};
  const JobSpec& spec_;
  const TrainOptions& opts_;
  std::shared_ptr<spdlog::logger> log_;
  bool lead_, tty_;
  std::ofstream metrics_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 1;
  std::mutex shards_mu_;
  std::vector<nlohmann::json> shards_written_;  // guarded by shards_mu_
  Status write_failure_;                        // guarded by shards_mu_
};

}  // namespace moerun::trainer
