// The job lifecycle: slots, the FIFO queue, starting a generation, failing and fencing one,
// and the timers (dead daemons, the progress watchdog, start timeouts).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/curve_auth.h"
#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/scheduler/rank_placer.h"
#include "coordinator/scheduler/replica_partners.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {

// ---- lifecycle --------------------------------------------------------------------------

std::map<std::string, int64_t> Coordinator::FreeSlots() const {
  std::map<std::string, int64_t> free;
  for (const auto& w : workers_.All()) {
    if (w.alive && w.heard) free[w.id] = w.devices;
  }
  for (const auto& [id, job] : jobs_) {
    if (!Active(job)) continue;
    for (const auto& r : job.ranks) {
      auto it = free.find(r.worker);
      if (it != free.end()) --it->second;
    }
  }
  return free;
}

void Coordinator::Schedule() {
  const int64_t now = clock_->NowMs();
  // Called after every heartbeat: cheap when nothing waits for slots.
  const bool waiting = std::any_of(jobs_.begin(), jobs_.end(), [&](const auto& kv) {
    const JobRun& j = kv.second;
    return j.state.phase() == JobPhase::kQueued ||
           (j.state.phase() == JobPhase::kRecovering &&
            j.started_generation != j.state.generation() && now >= j.state.restart_not_before_ms());
  });
  if (!waiting) return;
  std::vector<JobRun*> order;
  for (auto& [id, job] : jobs_) order.push_back(&job);
  std::sort(order.begin(), order.end(),
            [](const JobRun* a, const JobRun* b) { return a->sequence < b->sequence; });
  // Restarts first: their jobs were already admitted. One whose last step is committed (a
  // reloaded coordinator may find such a job RECOVERING) has nothing left to restart for.
  for (JobRun* job : order) {
    if (job->state.phase() == JobPhase::kRecovering && LastStepCommitted(*job)) {
      SucceedJob(
          *job,
          "checkpoint step " + std::to_string(job->committed_step) + " (the last) is committed",
          false);
      continue;
    }
    if (job->state.phase() == JobPhase::kRecovering &&
        job->started_generation != job->state.generation() &&
        now >= job->state.restart_not_before_ms()) {
      StartGeneration(*job);
    }
  }
  // The queue is FIFO: a head that does not fit holds back the jobs behind it.
  for (JobRun* job : order) {
    if (job->state.phase() != JobPhase::kQueued) continue;
    if (!StartGeneration(*job)) break;
  }
}

bool Coordinator::StartGeneration(JobRun& job) {
  PlacementRequest req;
  req.world = job.world();
  req.expert = job.spec.parallel.expert;
  req.free_slots = FreeSlots();
  for (const auto& w : job.avoided_workers) req.free_slots.erase(w);  // evicted stragglers
  if (job.placed()) {  // a restart: survivors keep their daemon (their slots are counted)
    for (const auto& r : job.ranks) {
      const WorkerInfo* w = workers_.Find(r.worker);
      req.pinned.push_back(
          w && w->alive && w->heard && !job.avoided_workers.count(r.worker) ? r.worker : "");
    }
  }
  auto placement = PlaceRanks(req);
  if (!placement) {
    NoteWaiting(job, req);
    return false;
  }
  job.waiting_since_ms = 0;
  job.waiting_for.clear();
  const int64_t now = clock_->NowMs();
  if (job.state.phase() == JobPhase::kQueued) {
    std::set<std::string> hosts(placement->begin(), placement->end());
    Status s = job.state.Start(now, "placed " + std::to_string(req.world) + " ranks on " +
                                        std::to_string(hosts.size()) + " worker(s)");
    if (!s.ok()) {
      spdlog::error("{}", s.message());
      return false;
    }
  }
  job.ranks.assign(placement->size(), RankRun{});
  for (size_t r = 0; r < placement->size(); ++r) job.ranks[r].worker = (*placement)[r];
  const CheckpointSpec& ckpt = job.spec.checkpoint;
  job.replica_to.clear();
  if (ckpt.memory_interval_steps > 0 && ckpt.memory_replica_interval_steps > 0)
    job.replica_to = ReplicaPartners(*placement);
  job.replica_fetch.clear();
  job.table.clear();
  job.nccl_unique_id.clear();
  job.shards_written.clear();
  auto committed = store_->CommittedSteps(job.state.job_id());
  job.restore_step = committed.ok() && !committed->empty() ? committed->back() : -1;
  ChooseMemoryRestore(job);
  if (job.state.generation() > 1 && job.restore_step >= 0) {
    // The steps after the checkpoint will be reported again: their old reports go, so curves
    // show the run that counts, and the progress and held-out loss step back with it.
    Status d = store_->DeleteMetricsAfter(job.state.job_id(), job.restore_step, job.expert_layers);
    if (!d.ok()) spdlog::error("job {}: {}", job.state.job_id(), d.message());
    auto last = store_->LastMetric(job.state.job_id());
    job.progress = last.ok() ? last.value() : nlohmann::json::object();
    if (job.held_out.value("step", int64_t(0)) > job.restore_step)
      job.held_out = nlohmann::json::object();
  }
  job.preflight.clear();
  job.preflight_judged = false;
  job.stragglers.emplace(job.spec.parallel.pipeline, job.spec.parallel.data,
                         job.spec.fault_tolerance.straggler_factor,
                         job.spec.fault_tolerance.straggler_steps);
  job.started_generation = job.state.generation();
  job.generation_started_ms = now;
  job.generation_started_timer_ms = timer_->NowMs();
  job.first_step_ms = 0;
  job.start_sent_ms.clear();
  Persist(job);
  std::set<std::string> workers(placement->begin(), placement->end());
  spdlog::info("job {} generation {}: starting {} ranks on {}", job.state.job_id(),
               job.state.generation(), placement->size(), fmt::join(workers, ", "));
  for (const auto& w : workers) SendStart(job, w);
  return true;
}

void Coordinator::ChooseMemoryRestore(JobRun& job) {
  job.restore_from_memory = false;
  const int64_t disk = std::max<int64_t>(job.restore_step, 0);
  if (job.memory_step <= disk) {
    job.memory_step = 0;  // the disk checkpoint is as new
    return;
  }
  // A rank's snapshot is on the host that ran it: usable only if it runs there again.
  std::string moved;
  for (size_t r = 0; r < job.ranks.size() && moved.empty(); ++r) {
    const std::string was = r < job.memory_workers.size() ? job.memory_workers[r] : "";
    if (job.ranks[r].worker != was) {
      moved = "rank " + std::to_string(r) + " moved from " + (was.empty() ? "?" : was) + " to " +
              job.ranks[r].worker;
    }
  }
  const std::string on_disk = StepOrStart(disk);
  if (!moved.empty() && RestoreFromReplicas(job, on_disk)) return;
  if (moved.empty()) {
    job.state.Note(clock_->NowMs(),
                   "restoring step " + std::to_string(job.memory_step) +
                       " from memory on the ranks' hosts (newest on disk: " + on_disk + ")");
    job.restore_step = job.memory_step;
    job.restore_from_memory = true;
    return;
  }
  job.lost_steps += job.memory_step - disk;
  job.state.Note(clock_->NowMs(), "memory snapshots of step " + std::to_string(job.memory_step) +
                                      " cannot be used (" + moved + "): restoring " + on_disk +
                                      " from disk (" + std::to_string(job.memory_step - disk) +
                                      " more steps to redo)");
  job.memory_step = 0;
}

bool Coordinator::RestoreFromReplicas(JobRun& job, const std::string& on_disk) {
  // Ranks that moved fetch the pinned step from the rank that keeps their copy, which must have
  // stayed on its host; the ranks that stayed read it from their own host.
  const int64_t disk = std::max<int64_t>(job.restore_step, 0);
  if (job.replica_step <= disk || job.replica_holders.size() != job.ranks.size() ||
      job.memory_workers.size() != job.ranks.size())
    return false;
  std::vector<int> fetch(job.ranks.size(), -1);
  std::vector<std::string> from;
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    if (job.ranks[r].worker == job.memory_workers[r]) continue;
    const int h = job.replica_holders[r];
    if (h < 0 || job.ranks[size_t(h)].worker != job.memory_workers[size_t(h)]) return false;
    fetch[r] = h;
    from.push_back("rank " + std::to_string(r) + " from its copy on " +
                   job.memory_workers[size_t(h)] + " (rank " + std::to_string(h) + ")");
  }
  const int64_t more = job.memory_step - job.replica_step;
  job.lost_steps += more;
  job.state.Note(clock_->NowMs(),
                 "restoring step " + std::to_string(job.replica_step) +
                     " from memory: " + fmt::format("{}", fmt::join(from, ", ")) +
                     ", the others on their hosts (newest on disk: " + on_disk +
                     (more > 0 ? "; " + std::to_string(more) +
                                     " more steps to redo than from the newest snapshot in memory"
                               : "") +
                     ")");
  job.restore_step = job.replica_step;
  job.restore_from_memory = true;
  job.replica_fetch = std::move(fetch);
  job.memory_step = 0;
  return true;
}

void Coordinator::NoteWaiting(JobRun& job, const PlacementRequest& req) {
  // Usable: free slots on live daemons, plus those this job's own surviving ranks hold (a
  // restart keeps them).
  int64_t usable = 0;
  for (const auto& [worker, slots] : req.free_slots) usable += std::max<int64_t>(0, slots);
  for (const auto& pinned : req.pinned) usable += pinned.empty() ? 0 : 1;
  std::string why =
      "waiting for " + std::to_string(req.world) + " slots, " + std::to_string(usable) + " usable";
  std::vector<std::string> down;
  for (const auto& w : workers_.All()) {
    if (!w.alive) down.push_back("worker " + w.id + " DEAD");
  }
  if (!down.empty()) why += ": " + fmt::format("{}", fmt::join(down, ", "));
  if (job.waiting_since_ms == 0) job.waiting_since_ms = timer_->NowMs();
  if (why == job.waiting_for) return;
  job.waiting_for = why;
  const int64_t limit = job.spec.fault_tolerance.capacity_timeout_ms;
  const bool restart = job.state.phase() == JobPhase::kRecovering;
  job.state.Note(clock_->NowMs(),
                 why + (restart && limit > 0 ? " (fails after " + std::to_string(limit) +
                                                   " ms: fault_tolerance.capacity_timeout_ms)"
                                             : ""));
  spdlog::warn("job {}: {}", job.state.job_id(), why);
  Persist(job, false);
}

void Coordinator::SendStart(JobRun& job, const std::string& worker_id) {
  nlohmann::json ranks = nlohmann::json::array();
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    if (job.ranks[r].worker == worker_id && !job.ranks[r].exited) ranks.push_back(r);
  }
  job.start_sent_ms[worker_id] = timer_->NowMs();
  if (settings_.data_plane_curve && job.data_plane_generation != job.state.generation()) {
    // A new generation, a new key: the old generation's trainers cannot reach the new one's.
    auto key = GenerateCurveKeyPair();
    if (key.ok()) {
      job.data_plane_public = key->public_key;
      job.data_plane_secret = key->secret_key;
      job.data_plane_generation = job.state.generation();
      Persist(job);
    } else {
      spdlog::error("job {}: no data-plane key ({}); its trainers use plain sockets",
                    job.state.job_id(), key.status().message());
    }
  }
  nlohmann::json body = {{"world", job.world()},
                         {"ranks", ranks},
                         {"spec_yaml", job.spec_yaml},
                         {"run_dir", job.run_dir},
                         {"spec_dir", job.spec_dir},
                         {"resume", job.resume || job.state.generation() > 1},
                         {"steps", job.steps_override},
                         {"restore_step", job.restore_step},
                         {"restore_from_memory", job.restore_from_memory},
                         {"replica_to", job.replica_to},
                         {"replica_fetch", job.replica_fetch},
                         {"data_plane_timeout_ms", job.spec.fault_tolerance.progress_timeout_ms}};
  if (settings_.data_plane_curve && job.data_plane_generation == job.state.generation()) {
    body["data_plane_public"] = job.data_plane_public;
    body["data_plane_secret"] = job.data_plane_secret;
  }
  SendTo(WorkerRoute(worker_id), MessageType::kStartTrainers, job.state.job_id(),
         job.state.generation(), std::move(body));
}

void Coordinator::StopTrainers(const JobRun& job, uint64_t below_generation, int64_t grace_ms) {
  std::set<std::string> workers;
  for (const auto& r : job.ranks) workers.insert(r.worker);
  for (const auto& w : workers) {
    SendTo(WorkerRoute(w), MessageType::kStopTrainers, job.state.job_id(), 0,
           {{"below_generation", below_generation}, {"grace_ms", grace_ms}});
  }
}

void Coordinator::FailJob(JobRun& job, const std::string& cause, int rank, const std::string& host,
                          bool non_retryable) {
  if (LastStepCommitted(job)) {  // the run is durable: a failure after it changes nothing
    SucceedJob(job, "checkpoint step " + std::to_string(job.committed_step) +
                        " (the last) is committed; after it: " + cause);
    return;
  }
  if (job.stop_asked_ms > 0) {  // stopping: no restart, the stop ends with what is committed
    EndStop(job, cause);
    return;
  }
  const int64_t now = clock_->NowMs();
  // Steps past the newest committed checkpoint are trained again by the next generation.
  // (This generation's reports only: steps an earlier failure already counted are not
  // counted again.)
  int64_t reached = 0;
  for (const auto& r : job.ranks) reached = std::max(reached, r.step);
  // Memory snapshots every rank holds, newer than the disk commit, are what the next
  // generation restores if its ranks stay on their hosts (ChooseMemoryRestore).
  if (const int64_t in_memory = job.MemoryCommitted(); in_memory > job.committed_step) {
    job.memory_step = in_memory;
    job.memory_workers.clear();
    for (const auto& r : job.ranks) job.memory_workers.push_back(r.worker);
    // And the pinned steps copied to another host, for ranks that cannot stay on theirs.
    const int64_t replicated = job.ReplicaCommitted();
    job.replica_step = replicated > job.committed_step ? replicated : 0;
    job.replica_holders = ReplicaHolders(job.replica_to);
  }
  const bool memory = job.memory_step > job.committed_step;
  const int64_t restart_at = memory ? job.memory_step : job.committed_step;
  const int64_t lost = reached > 0 ? std::max<int64_t>(0, reached - restart_at) : 0;
  const std::string redo = std::to_string(lost) + " steps to redo" +
                           (memory ? ", from memory step " + std::to_string(job.memory_step) : "");
  Status s = job.state.Fail(now, lost > 0 || memory ? cause + " (" + redo + ")" : cause, rank, host,
                            non_retryable);
  if (!s.ok()) {
    spdlog::warn("{}", s.message());
    return;
  }
  if (!IsTerminal(job.state.phase())) job.lost_steps += lost;
  spdlog::warn("job {} {}: {}", job.state.job_id(), ToString(job.state.phase()), cause);
  // Fence the generation that failed: its trainers stop before any new one starts.
  StopTrainers(job, IsTerminal(job.state.phase()) ? UINT64_MAX : job.state.generation(),
               kFenceGraceMs);
  for (auto& r : job.ranks) {
    const std::string worker = r.worker;
    r = RankRun{};
    r.worker = worker;  // kept: a restart reuses the survivors' daemons
  }
  job.table.clear();
  Persist(job);
  Schedule();
}

void Coordinator::FailJobsOn(const std::string& worker_id, const std::string& cause) {
  const WorkerInfo* w = workers_.Find(worker_id);
  const std::string host = w ? w->host : worker_id;
  for (auto& [job_id, job] : jobs_) {
    if (!Active(job) || job.started_generation != job.state.generation()) continue;
    const bool hit = std::any_of(job.ranks.begin(), job.ranks.end(),
                                 [&](const RankRun& r) { return r.worker == worker_id; });
    if (hit) FailJob(job, cause, -1, host, false);
  }
}

void Coordinator::Tick() {
  const int64_t now = timer_->NowMs();  // every deadline here is a failure decision
  for (const auto& id : workers_.CheckDead()) {
    const WorkerInfo* w = workers_.Find(id);
    spdlog::warn("worker {} ({}) is dead: no heartbeat for {} ms", id, w ? w->host : id,
                 settings_.heartbeat_timeout_ms);
    FailJobsOn(id, "worker " + id + " sent no heartbeat for " +
                       std::to_string(settings_.heartbeat_timeout_ms) + " ms");
  }
  // A daemon dead for long is forgotten (moerun status stops listing it), unless a job still
  // waits for it.
  if (settings_.forget_dead_workers_ms > 0) {
    for (const auto& id : workers_.DeadFor(settings_.forget_dead_workers_ms)) {
      bool held = false;
      for (const auto& [job_id, job] : jobs_) {
        if (!Active(job)) continue;
        for (const auto& r : job.ranks) held = held || r.worker == id;
      }
      if (!held) {
        ForgetWorker(id, "dead for " + std::to_string(settings_.forget_dead_workers_ms) +
                             " ms (--forget-dead-workers-after-ms)");
      }
    }
  }
  for (auto& [id, job] : jobs_) {
    const int64_t limit = job.spec.fault_tolerance.capacity_timeout_ms;
    if (job.state.phase() == JobPhase::kRecovering && job.waiting_since_ms > 0 && limit > 0 &&
        now - job.waiting_since_ms > limit) {
      const std::string why = job.waiting_for;
      job.waiting_since_ms = 0;
      FailJob(job,
              "no room to restart for " + std::to_string(limit) +
                  " ms (fault_tolerance.capacity_timeout_ms): " + why,
              -1, "", true);
    }
  }
  for (auto& [id, job] : jobs_) {
    if (!Active(job) || job.started_generation != job.state.generation()) continue;
    const int64_t progress_timeout = job.spec.fault_tolerance.progress_timeout_ms;
    if (job.state.phase() == JobPhase::kRunning && progress_timeout > 0 && job.stop_asked_ms == 0 &&
        now - job.last_progress_ms > progress_timeout) {
      CollectFlightRecords(job);
      FailJob(job,
              "no rank finished a step for " + std::to_string(progress_timeout) +
                  " ms (a hung trainer or a stuck collective)",
              -1, "", false);
    } else if (job.table.empty() && now - job.generation_started_timer_ms > kJobStartTimeoutMs) {
      int missing = 0;
      for (const auto& r : job.ranks) missing += r.peer.empty() ? 1 : 0;
      FailJob(job,
              std::to_string(missing) + " rank(s) did not reach the rendezvous within " +
                  std::to_string(kJobStartTimeoutMs) + " ms",
              -1, "", false);
    }
  }
  for (auto& [id, job] : jobs_) (void)CheckStop(job);
  FinishFlightCollections(false);
  for (auto it = forwarded_.begin(); it != forwarded_.end();) {
    if (now > it->second.deadline_ms) {
      ReplyError(it->second.client, "the worker holding that log did not answer within " +
                                        std::to_string(kForwardedRequestTimeoutMs) + " ms");
      it = forwarded_.erase(it);
    } else {
      ++it;
    }
  }
  Schedule();
}

}  // namespace moerun::coordinator
