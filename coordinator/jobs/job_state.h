// JobState: the life of one job on the coordinator (docs/architecture.md §6, §8), as a state
// machine that records every transition as an event (time, cause, and when known the rank and
// host).
//
//   QUEUED -> STARTING -> RUNNING -> SUCCEEDED
//                 |          |  ^
//                 |          v  |
//                 |      RECOVERING        (each entry bumps the generation)
//                 v          v
//   FAILED, CANCELLED from any state that is not terminal.
//
// Transitions not on the diagram are refused with a Status naming both states; terminal
// states accept nothing. Restarts are bounded by max_restarts. A generation that trained a step
// restarts at once (a fault, not a crash loop); the k-th failure in a row of generations that
// trained nothing waits min(backoff_ms · 2^(k-1), backoff_max_ms). Time comes from the caller's
// clock.
// Serializes to versioned JSON so the coordinator can store it and reload it after a
// restart. Not thread-safe: the coordinator owns it on one thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace moerun::coordinator {

// STOPPED: ended on request after a last checkpoint (`moerun stop`, a Slurm preemption); a
// new submission with the same run dir continues from it.
enum class JobPhase {
  kQueued,
  kStarting,
  kRunning,
  kRecovering,
  kSucceeded,
  kFailed,
  kCancelled,
  kStopped
};
std::string_view ToString(JobPhase p);
bool IsTerminal(JobPhase p);

struct JobEvent {
  int64_t time_ms = 0;
  JobPhase from = JobPhase::kQueued, to = JobPhase::kQueued;
  uint64_t generation = 0;
  std::string cause;  // what happened, for people: "rank 3 exited with signal 9"
  int rank = -1;      // -1 when not about one rank
  std::string host;   // empty when not about one host
};

struct RestartPolicy {
  int64_t max_restarts = 10;
  int64_t backoff_ms = 1000;
  int64_t backoff_max_ms = 30000;
};

inline constexpr int kJobStateFormatVersion = 1;

class JobState {
 public:
  JobState(std::string job_id, RestartPolicy policy, int64_t now_ms);

  const std::string& job_id() const { return job_id_; }
  JobPhase phase() const { return phase_; }
  uint64_t generation() const { return generation_; }
  int64_t restarts() const { return restarts_; }
  const std::vector<JobEvent>& events() const { return events_; }
  // When RECOVERING: the time the next start may begin (after the backoff).
  int64_t restart_not_before_ms() const { return restart_not_before_ms_; }

  Status Start(int64_t now_ms, std::string cause);    // QUEUED -> STARTING
  Status Running(int64_t now_ms, std::string cause);  // STARTING|RECOVERING -> RUNNING
  // RUNNING|STARTING -> RECOVERING, or -> FAILED when restarts are used up or the failure
  // can never succeed on a retry (non_retryable: bad config, unreadable data).
  Status Fail(int64_t now_ms, std::string cause, int rank = -1, std::string host = "",
              bool non_retryable = false);
  Status Succeed(int64_t now_ms, std::string cause);  // RUNNING -> SUCCEEDED
  Status Cancel(int64_t now_ms, std::string cause);   // any non-terminal -> CANCELLED
  Status Stop(int64_t now_ms, std::string cause);     // any non-terminal -> STOPPED
  // An event without a transition (from == to): what the job is waiting for, and the like.
  void Note(int64_t now_ms, std::string cause);
  // The current generation completed a step: its failure restarts at once, and the backoff's
  // count of failures in a row starts over.
  void Trained() { trained_ = true; }

  nlohmann::json ToJson() const;
  static Result<JobState> FromJson(const nlohmann::json& j);

 private:
  Status Move(JobPhase to, int64_t now_ms, std::string cause, int rank = -1, std::string host = "");

  std::string job_id_;
  RestartPolicy policy_;
  JobPhase phase_ = JobPhase::kQueued;
  uint64_t generation_ = 0;
  int64_t restarts_ = 0;
  int64_t failures_in_a_row_ = 0;  // of generations that trained no step
  bool trained_ = false;           // the current generation completed a step
  int64_t restart_not_before_ms_ = 0;
  std::vector<JobEvent> events_;
};

}  // namespace moerun::coordinator
