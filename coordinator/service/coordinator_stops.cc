// Stopping a job with a last checkpoint (docs/fault-tolerance.md, "Stopping with a
// checkpoint"): `moerun stop`, and Slurm's warning before a preemption or the time limit,
// which `moerun slurm` turns into one. Each trainer hears StopJob on its control channel; at
// the end of a step all ranks agree that a stop was asked (trainer.cc, OneStep), write that
// step's checkpoint and exit 130. Ranks that have not exited kStopCheckpointGraceMs later are
// killed. The shard reports commit the step as any other; once every
// rank has exited (and no report trails) the job is STOPPED, and a new submission with the
// same run dir continues from the step committed.
#include <spdlog/spdlog.h>

#include "common/timeouts.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {

void Coordinator::StopJob(const std::string& peer, const std::string& job_id,
                          const std::string& reason) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    ReplyError(peer, "no job " + job_id + " (see `moerun status`)");
    return;
  }
  JobRun& job = it->second;
  if (IsTerminal(job.state.phase())) {
    ReplyError(peer,
               "job " + job_id + " already ended " + std::string(ToString(job.state.phase())));
    return;
  }
  const std::string why = reason.empty() ? "asked by a client" : reason;
  if (job.stop_asked_ms > 0) {  // asked again (a retry): the stop under way answers
    Reply(peer, {{"job_id", job_id}, {"phase", ToString(job.state.phase())}, {"stopping", true}});
    return;
  }
  job.stop_reason = why;
  job.stop_committed_before = job.committed_step;
  if (job.state.phase() != JobPhase::kRunning) {
    // Nothing trains (queued, starting, waiting to restart): nothing newer to checkpoint.
    StopTrainers(job, UINT64_MAX, kCancelGraceMs);
    EndStop(job, "the job was " + std::string(ToString(job.state.phase())));
  } else {
    job.stop_asked_ms = timer_->NowMs();
    job.stop_exited_ms = 0;
    job.state.Note(clock_->NowMs(), "stopping (" + why +
                                        "): the trainers checkpoint the step they are in, then "
                                        "exit; the newest committed step is " +
                                        std::to_string(job.committed_step));
    spdlog::info("job {} stopping: {}", job_id, why);
    // Over each trainer's control channel, not a signal: a rank that hears it stops at the
    // end of its next step, and the others with it (the ranks agree on stopping every step).
    for (const auto& r : job.ranks)
      if (!r.peer.empty())
        SendTo(r.peer, MessageType::kStopJob, job_id, job.state.generation(), {{"reason", why}});
    Persist(job);
  }
  Reply(peer, {{"job_id", job_id},
               {"phase", ToString(job.state.phase())},
               {"stopping", job.stop_asked_ms > 0}});
}

bool Coordinator::CheckStop(JobRun& job) {
  if (job.stop_asked_ms <= 0 || !Active(job)) return false;
  const int64_t now = timer_->NowMs();
  if (LastStepCommitted(job)) {
    SucceedJob(job, "checkpoint step " + std::to_string(job.committed_step) +
                        " (the last) is committed while stopping (" + job.stop_reason + ")");
    return true;
  }
  int running = 0;
  for (const auto& r : job.ranks) running += r.exited ? 0 : 1;
  if (running == 0) {
    if (job.stop_exited_ms == 0) job.stop_exited_ms = now;
    // The shard reports come from the trainers, their exits from the daemons: the reports may
    // trail the exits by a moment. Until a step newer than the stop's start commits, wait.
    const bool committed = job.committed_step > job.stop_committed_before;
    if (!committed && now - job.stop_exited_ms < kStopShardWaitMs) return false;
    EndStop(job, "every rank exited");
    return true;
  }
  if (now - job.stop_asked_ms > kStopCheckpointGraceMs + kStopShardWaitMs) {
    EndStop(job, std::to_string(running) + " rank(s) had not exited " +
                     std::to_string(kStopCheckpointGraceMs + kStopShardWaitMs) +
                     " ms after the stop (they are killed)");
    return true;
  }
  return false;
}

void Coordinator::EndStop(JobRun& job, const std::string& why) {
  const int64_t committed = job.committed_step;
  std::string cause = "stopped (" + job.stop_reason + "): ";
  if (committed > job.stop_committed_before) {
    cause += "checkpoint step " + std::to_string(committed) + " committed";
  } else if (committed > 0) {
    cause += "no new checkpoint; the newest committed is step " + std::to_string(committed);
  } else {
    cause += "no checkpoint committed";
  }
  cause += "; " + why + ". Submit it again with the same run dir to continue";
  bool all_exited = true;
  for (const auto& r : job.ranks) all_exited = all_exited && r.exited;
  Status s = job.state.Stop(clock_->NowMs(), cause);
  if (!s.ok()) {
    spdlog::warn("{}", s.message());
    return;
  }
  job.stop_asked_ms = 0;
  spdlog::info("job {} STOPPED: {}", job.state.job_id(), cause);
  if (!all_exited) StopTrainers(job, UINT64_MAX, kFenceGraceMs);
  Persist(job);
  Schedule();
}

}  // namespace moerun::coordinator
