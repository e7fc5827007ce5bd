// ControlChannel: a trainer's line to the coordinator (docs/architecture.md §6) when a worker
// daemon started it for a job generation. Its routing id is trainer:<job>:<generation>:<rank>.
//   Rendezvous  reports this rank's data-plane endpoint and waits for the generation's table
//               (asking again every kRendezvousRetryMs: the coordinator may restart meanwhile)
//   ReportStep  one step's metrics; never blocks, dropped while the coordinator is away
//   ReportShard a checkpoint shard is durable; never blocks. The newest shard report goes
//               again with every step report until a newer one replaces it or a commit of
//               its step is heard, so a report lost while the coordinator was away (or
//               restarting) still commits its step; the coordinator takes repeats as they
//               come (its commit is idempotent) and answers them with the commit.
//   PollCommitted  the committed steps the job keeps, when the coordinator said (after a
//               commit, or in answer to a repeated shard report), and whether it asked the
//               job to stop (StopJob); never blocks.
// Not thread-safe; one per trainer process.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"

namespace moerun::trainer {

struct ControlChannelOptions {
  std::string address;   // the coordinator, as the daemon connects to it
  std::string keys_dir;  // client keys (common/control_socket.h)
  std::string job_id;
  uint64_t generation = 0;
  int rank = 0;
};

class ControlChannel {
 public:
  static Result<std::unique_ptr<ControlChannel>> Connect(const ControlChannelOptions& opts);
  ~ControlChannel();

  // The table of every rank's endpoint. Fails when the coordinator says the generation is
  // over (Aborted) or nothing came within timeout_ms (TimedOut).
  Result<std::vector<std::string>> Rendezvous(const std::string& endpoint, int64_t timeout_ms);
  void ReportStep(const nlohmann::json& report);
  // The rank's pre-flight (worker/trainer/preflight.h); never blocks.
  void ReportPreflight(const nlohmann::json& result);
  // A checkpoint shard is durable: {step, shard, bytes} (the coordinator's two-phase commit).
  void ReportShard(const nlohmann::json& shard);
  // The newest CheckpointCommitted list that arrived since the last call (ascending steps), or
  // nullopt. Other messages are dropped (a repeated rendezvous table, a refusal of a report).
  std::optional<std::vector<int64_t>> PollCommitted();
  // The coordinator asked this job to stop after a checkpoint (StopJob), heard by a
  // PollCommitted call.
  bool stop_requested() const { return stop_requested_; }

 private:
  ControlChannel() = default;

  ControlChannelOptions opts_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> dealer_;
  nlohmann::json last_shard_;  // the newest ShardWritten body (null until one)
  bool stop_requested_ = false;
};

}  // namespace moerun::trainer
