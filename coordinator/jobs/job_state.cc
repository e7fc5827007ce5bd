#include "coordinator/jobs/job_state.h"

#include <algorithm>

namespace moerun::coordinator {
namespace {

constexpr JobPhase kAllPhases[] = {JobPhase::kQueued,     JobPhase::kStarting,  JobPhase::kRunning,
                                   JobPhase::kRecovering, JobPhase::kSucceeded, JobPhase::kFailed,
                                   JobPhase::kCancelled,  JobPhase::kStopped};

bool ParsePhase(const std::string& s, JobPhase* out) {
  for (JobPhase p : kAllPhases) {
    if (ToString(p) == s) {
      *out = p;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string_view ToString(JobPhase p) {
  switch (p) {
    case JobPhase::kQueued:
      return "QUEUED";
    case JobPhase::kStarting:
      return "STARTING";
    case JobPhase::kRunning:
      return "RUNNING";
    case JobPhase::kRecovering:
      return "RECOVERING";
    case JobPhase::kSucceeded:
      return "SUCCEEDED";
    case JobPhase::kFailed:
      return "FAILED";
    case JobPhase::kCancelled:
      return "CANCELLED";
    case JobPhase::kStopped:
      return "STOPPED";
  }
  return "UNKNOWN";
}

bool IsTerminal(JobPhase p) {
  return p == JobPhase::kSucceeded || p == JobPhase::kFailed || p == JobPhase::kCancelled ||
         p == JobPhase::kStopped;
}

JobState::JobState(std::string job_id, RestartPolicy policy, int64_t now_ms)
    : job_id_(std::move(job_id)), policy_(policy) {
  events_.push_back({now_ms, JobPhase::kQueued, JobPhase::kQueued, 0, "submitted", -1, ""});
}

Status JobState::Move(JobPhase to, int64_t now_ms, std::string cause, int rank, std::string host) {
  events_.push_back({now_ms, phase_, to, generation_, std::move(cause), rank, std::move(host)});
  phase_ = to;
  return Status::OK();
}

Status JobState::Start(int64_t now_ms, std::string cause) {
  if (phase_ != JobPhase::kQueued) {
    return Status::FailedPrecondition("job " + job_id_ + ": cannot start from " +
                                      std::string(ToString(phase_)));
  }
  generation_ = 1;
  return Move(JobPhase::kStarting, now_ms, std::move(cause));
}

Status JobState::Running(int64_t now_ms, std::string cause) {
  if (phase_ != JobPhase::kStarting && phase_ != JobPhase::kRecovering) {
    return Status::FailedPrecondition("job " + job_id_ + ": cannot run from " +
                                      std::string(ToString(phase_)));
  }
  if (phase_ == JobPhase::kRecovering && now_ms < restart_not_before_ms_) {
    return Status::FailedPrecondition("job " + job_id_ + ": restart backoff lasts until " +
                                      std::to_string(restart_not_before_ms_) + " ms");
  }
  return Move(JobPhase::kRunning, now_ms, std::move(cause));
}

Status JobState::Fail(int64_t now_ms, std::string cause, int rank, std::string host,
                      bool non_retryable) {
  if (phase_ != JobPhase::kStarting && phase_ != JobPhase::kRunning &&
      phase_ != JobPhase::kRecovering) {
    return Status::FailedPrecondition("job " + job_id_ + ": a failure in " +
                                      std::string(ToString(phase_)) + " is not a transition");
  }
  if (non_retryable)
    return Move(JobPhase::kFailed, now_ms, cause + " (not retryable)", rank, std::move(host));
  if (restarts_ >= policy_.max_restarts) {
    return Move(JobPhase::kFailed, now_ms,
                cause + " (all " + std::to_string(policy_.max_restarts) + " restarts used)", rank,
                std::move(host));
  }
  ++restarts_;
  int64_t backoff = 0;
  if (trained_) {
    failures_in_a_row_ = 0;
  } else {
    ++failures_in_a_row_;
    backoff = policy_.backoff_ms;
    for (int64_t i = 1; i < failures_in_a_row_ && backoff < policy_.backoff_max_ms; ++i)
      backoff *= 2;
  }
  trained_ = false;
  restart_not_before_ms_ = now_ms + std::min(backoff, policy_.backoff_max_ms);
  Status s = Move(JobPhase::kRecovering, now_ms, std::move(cause), rank, std::move(host));
  ++generation_;  // the next start fences every trainer of the old generation
  return s;
}

Status JobState::Succeed(int64_t now_ms, std::string cause) {
  if (phase_ != JobPhase::kRunning) {
    return Status::FailedPrecondition("job " + job_id_ + ": cannot succeed from " +
                                      std::string(ToString(phase_)));
  }
  return Move(JobPhase::kSucceeded, now_ms, std::move(cause));
}

void JobState::Note(int64_t now_ms, std::string cause) {
  events_.push_back({now_ms, phase_, phase_, generation_, std::move(cause), -1, ""});
}

Status JobState::Cancel(int64_t now_ms, std::string cause) {
  if (IsTerminal(phase_)) {
    return Status::FailedPrecondition("job " + job_id_ + " already ended " +
                                      std::string(ToString(phase_)));
  }
  return Move(JobPhase::kCancelled, now_ms, std::move(cause));
}

Status JobState::Stop(int64_t now_ms, std::string cause) {
  if (IsTerminal(phase_)) {
    return Status::FailedPrecondition("job " + job_id_ + " already ended " +
                                      std::string(ToString(phase_)));
  }
  return Move(JobPhase::kStopped, now_ms, std::move(cause));
}

nlohmann::json JobState::ToJson() const {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : events_) {
    events.push_back({{"time_ms", e.time_ms},
                      {"from", ToString(e.from)},
                      {"to", ToString(e.to)},
                      {"generation", e.generation},
                      {"cause", e.cause},
                      {"rank", e.rank},
                      {"host", e.host}});
  }
  return {{"version", kJobStateFormatVersion},
          {"job_id", job_id_},
          {"phase", ToString(phase_)},
          {"generation", generation_},
          {"restarts", restarts_},
          {"failures_in_a_row", failures_in_a_row_},
          {"trained", trained_},
          {"restart_not_before_ms", restart_not_before_ms_},
          {"policy",
           {{"max_restarts", policy_.max_restarts},
            {"backoff_ms", policy_.backoff_ms},
            {"backoff_max_ms", policy_.backoff_max_ms}}},
          {"events", events}};
}

Result<JobState> JobState::FromJson(const nlohmann::json& j) {
  auto bad = [](const std::string& why) { return Status::Corruption("stored job state: " + why); };
  if (!j.is_object()) return bad("not an object");
  if (j.value("version", 0) != kJobStateFormatVersion) {
    return bad("format version " + std::to_string(j.value("version", 0)) + "; this build reads " +
               std::to_string(kJobStateFormatVersion));
  }
  try {
    const auto& p = j.at("policy");
    JobState s(j.at("job_id").get<std::string>(),
               {p.at("max_restarts").get<int64_t>(), p.at("backoff_ms").get<int64_t>(),
                p.at("backoff_max_ms").get<int64_t>()},
               0);
    if (!ParsePhase(j.at("phase").get<std::string>(), &s.phase_)) return bad("unknown phase");
    s.generation_ = j.at("generation").get<uint64_t>();
    s.restarts_ = j.at("restarts").get<int64_t>();
    // Absent in states stored before the backoff counted failures in a row: as if none.
    s.failures_in_a_row_ = j.value("failures_in_a_row", int64_t(0));
    s.trained_ = j.value("trained", false);
    s.restart_not_before_ms_ = j.at("restart_not_before_ms").get<int64_t>();
    s.events_.clear();
    for (const auto& e : j.at("events")) {
      JobEvent ev;
      ev.time_ms = e.at("time_ms").get<int64_t>();
      if (!ParsePhase(e.at("from").get<std::string>(), &ev.from) ||
          !ParsePhase(e.at("to").get<std::string>(), &ev.to)) {
        return bad("unknown phase in an event");
      }
      ev.generation = e.at("generation").get<uint64_t>();
      ev.cause = e.at("cause").get<std::string>();
      ev.rank = e.at("rank").get<int>();
      ev.host = e.at("host").get<std::string>();
      s.events_.push_back(std::move(ev));
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
}

}  // namespace moerun::coordinator
