// The coordinator's loop logic: loading, sending, message dispatch, daemons and rank exits.
// Trainer messages are in coordinator_trainers.cc, the job lifecycle in
// coordinator_lifecycle.cc, client requests in coordinator_clients.cc.
#include "coordinator/service/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/scheduler/rank_placer.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {

Coordinator::Coordinator(CoordinatorStore* store, const Clock* wall, const Clock* timer,
                         CoordinatorSettings settings, Send send)
    : store_(store),
      clock_(wall),
      timer_(timer),
      settings_(std::move(settings)),
      send_(std::move(send)),
      workers_(timer, settings_.heartbeat_timeout_ms) {}

Result<std::unique_ptr<Coordinator>> Coordinator::Open(CoordinatorStore* store, const Clock* wall,
                                                       const Clock* timer,
                                                       CoordinatorSettings settings, Send send) {
  std::unique_ptr<Coordinator> c(
      new Coordinator(store, wall, timer, std::move(settings), std::move(send)));
  MOERUN_RETURN_IF_ERROR(c->Load());
  return c;
}

Status Coordinator::Load() {
  auto workers = store_->LoadDocuments("worker");
  if (!workers.ok()) return workers.status();
  for (const auto& [id, doc] : workers.value()) {
    auto w = WorkerInfo::FromJson(doc);
    if (!w.ok()) return w.status().WithContext("worker/" + id);
    workers_.Restore(w.value());
  }
  auto states = store_->LoadJobs();
  if (!states.ok()) return states.status();
  auto runs = store_->LoadDocuments("run");
  if (!runs.ok()) return runs.status();
  std::map<std::string, nlohmann::json> run_docs(runs->begin(), runs->end());
  const int64_t now = timer_->NowMs();
  for (auto& state : states.value()) {
    // A job this build cannot read is left in the store, untouched, and named in the log;
    // the others go on.
    const std::string id = state.job_id();
    auto yaml = store_->GetSpec(id);
    if (!yaml.ok()) {
      spdlog::error("job {} not loaded: {}", id, yaml.status().message());
      continue;
    }
    LoadedJobSpec loaded = LoadJobSpecText(yaml.value(), "spec/" + id);
    if (!loaded.ok()) {
      spdlog::error("job {} not loaded: its stored spec no longer validates:\n{}", id,
                    loaded.Report());
      continue;
    }
    auto doc = run_docs.find(id);
    JobRun job(std::move(state), loaded.spec, yaml.value());
    Status s = doc == run_docs.end() ? Status::Corruption("run/" + id + " is missing")
                                     : job.FromRecord(doc->second).WithContext("run/" + id);
    if (!s.ok()) {
      spdlog::error("job {} not loaded: {}", id, s.message());
      continue;
    }
    // Step reports are stored as metrics, not in the run record: the newest is the progress.
    auto last = store_->LastMetric(id);
    if (last.ok()) job.progress = std::move(last.value());
    for (const auto& l : job.progress.value("expert_layers", nlohmann::json::array()))
      if (l.is_string()) job.expert_layers.push_back(l.get<std::string>());
    job.last_progress_ms = now;
    job.generation_started_timer_ms = now;
    jobs_.emplace(id, std::move(job));
  }
  spdlog::info("coordinator state: {} jobs, {} workers reloaded", jobs_.size(),
               workers_.All().size());
  return Status::OK();
}

// ---- sending ----------------------------------------------------------------------------

bool Coordinator::SendTo(const std::string& peer, MessageType type, const std::string& job_id,
                         uint64_t generation, nlohmann::json body) {
  Envelope e{type, generation, job_id, "coordinator", std::move(body)};
  const bool ok = send_(peer, e);
  (ok ? counters_.sent : counters_.unroutable)++;
  return ok;
}

void Coordinator::Reply(const std::string& peer, nlohmann::json body) {
  SendTo(peer, MessageType::kReply, "", 0, std::move(body));
}

void Coordinator::ReplyError(const std::string& peer, const std::string& why, bool retryable) {
  nlohmann::json body = {{"error", why}};
  if (retryable) body["retryable"] = true;
  SendTo(peer, MessageType::kError, "", 0, std::move(body));
}

void Coordinator::Persist(JobRun& job, bool sync) {
  Status s = store_->PutJob(job.state);
  if (s.ok()) s = store_->PutDocument("run", job.state.job_id(), job.ToRecord(), sync);
  if (!s.ok()) spdlog::error("job {}: cannot store its state: {}", job.state.job_id(), s.message());
}

// ---- dispatch ---------------------------------------------------------------------------

// Every body is read into its typed struct (common/message_bodies.h) before it is used; one
// that does not parse is refused by name and changes nothing.
void Coordinator::Handle(const std::string& peer, const Envelope& e) {
  ++counters_.received;
  if (peer.rfind(kWorkerPrefix, 0) == 0) {
    const std::string rest = peer.substr(sizeof(kWorkerPrefix) - 1);
    OnWorkerMessage(rest.substr(0, rest.find('#')), peer, e);
  } else if (peer.rfind(kTrainerPrefix, 0) == 0) {
    OnTrainerMessage(peer, e);
  } else {
    OnClientMessage(peer, e);
  }
}

void Coordinator::Refuse(const std::string& peer, const Envelope& e, const Status& why) {
  ++counters_.invalid;
  spdlog::warn("dropped {} from {}: {}", ToString(e.type), peer, why.message());
  const bool client = peer.rfind(kWorkerPrefix, 0) != 0 && peer.rfind(kTrainerPrefix, 0) != 0;
  if (client) ReplyError(peer, "malformed request: " + why.message());
}

void Coordinator::OnWorkerMessage(const std::string& worker_id, const std::string& route,
                                  const Envelope& e) {
  const std::string& peer = route;
  switch (e.type) {
    case MessageType::kRegister:
    case MessageType::kHeartbeat: {
      auto b = WorkerStatusBody::FromJson(e.body, ToString(e.type));
      if (!b.ok() || worker_id.empty()) {
        Refuse(peer, e, b.ok() ? Status::InvalidArgument("no worker id") : b.status());
        return;
      }
      OnWorkerStatus(worker_id, route, e, b.value());
      return;
    }
    case MessageType::kTrainerExited: {
      auto b = TrainerExitedBody::FromJson(e.body);
      if (!b.ok()) {
        Refuse(peer, e, b.status());
        return;
      }
      if (!workers_.Find(worker_id) || WorkerRoute(worker_id) != route) {
        ++counters_.invalid;  // it will register with its next heartbeat, exits included
        return;
      }
      nlohmann::json acked = nlohmann::json::array();
      ReconcileTrainers(worker_id, b->trainers, false, &acked);
      SendTo(peer, MessageType::kReply, "", 0, {{"acked", acked}});
      Schedule();
      return;
    }
    case MessageType::kReply:
    case MessageType::kError:
      OnForwardedReply(e);
      return;
    default:
      ++counters_.invalid;
  }
}

std::string Coordinator::WorkerRoute(const std::string& worker_id) const {
  const WorkerInfo* w = workers_.Find(worker_id);
  return w != nullptr && !w->route.empty() ? w->route : kWorkerPrefix + worker_id;
}

void Coordinator::OnWorkerStatus(const std::string& worker_id, const std::string& route,
                                 const Envelope& e, const WorkerStatusBody& b) {
  const WorkerInfo* before = workers_.Find(worker_id);
  // Two daemons with one id: the one registered first keeps it while it lives. (A daemon
  // relaunched on its own state dir has the same home, and takes over.)
  if (before != nullptr && before->alive && before->heard && !before->home.empty() &&
      !b.home.empty() && before->home != b.home) {
    ++counters_.invalid;
    const int64_t age = workers_.HeartbeatAgeMs(worker_id);
    const std::string why = "worker id " + worker_id + " is in use by the daemon at " +
                            before->home + " (pid " + std::to_string(before->pid) +
                            ", heard from " + std::to_string(age) + " ms ago); this one (" +
                            b.home + ", pid " + std::to_string(b.pid) +
                            ") needs another --id (or stop the other daemon first)";
    spdlog::warn("refused a daemon: {}", why);
    SendTo(route, MessageType::kError, "", 0, {{"error", why}, {"duplicate_id", true}});
    return;
  }
  if (b.rejected_trainers > 0) {
    ++counters_.invalid;
    spdlog::warn("worker {}: {} trainer entr{} left out: {}", worker_id, b.rejected_trainers,
                 b.rejected_trainers == 1 ? "y" : "ies", b.trainer_problem);
  }
  WorkerInfo w;
  w.id = worker_id;
  w.host = b.host;
  w.devices = b.devices;
  w.backend = b.backend;
  w.data_host = b.data_host;
  w.pid = b.pid;
  w.home = b.home;
  w.route = route;
  const bool known = before != nullptr;
  const int64_t old_pid = known ? before->pid : 0;
  if (workers_.Upsert(w)) {
    spdlog::info("worker {} {}: host {}, {} {} devices, data plane on {}", worker_id,
                 known ? "is back" : "registered", w.host, w.devices, w.backend, w.data_host);
    // Not synced: a daemon re-registers with every heartbeat anyway.
    Status s = store_->PutDocument("worker", worker_id, w.ToJson(), false);
    if (!s.ok()) spdlog::error("cannot store worker {}: {}", worker_id, s.message());
  }
  if (known && old_pid != w.pid) {
    // A new daemon process: the old one's trainers died with it (PR_SET_PDEATHSIG).
    FailJobsOn(worker_id, "worker " + worker_id + " restarted (pid " + std::to_string(old_pid) +
                              " -> " + std::to_string(w.pid) + "): its trainers are gone");
  }
  nlohmann::json acked = nlohmann::json::array();
  ReconcileTrainers(worker_id, b.trainers, true, &acked);
  // Memory snapshots of a job that is over (or unknown here) outlived it on a daemon that was
  // away when it ended: the stop that ends a job removes them.
  for (const std::string& job_id : b.memory_jobs) {
    auto it = jobs_.find(job_id);
    if (it != jobs_.end() && !IsTerminal(it->second.state.phase())) continue;
    SendTo(route, MessageType::kStopTrainers, job_id, 0,
           {{"below_generation", UINT64_MAX}, {"grace_ms", kFenceGraceMs}});
  }
  if (e.type == MessageType::kRegister) {
    SendTo(route, MessageType::kRegistered, "", 0,
           {{"heartbeat_interval_ms", settings_.heartbeat_interval_ms},
            {"heartbeat_timeout_ms", settings_.heartbeat_timeout_ms},
            {"acked", acked}});
  } else {
    SendTo(route, MessageType::kReply, "", 0, {{"seq", b.seq}, {"acked", acked}});
  }
  Schedule();
}

// A daemon's view of its trainers: start what is missing, record exits, fence the stale.
void Coordinator::ReconcileTrainers(const std::string& worker_id,
                                    const std::vector<TrainerReport>& trainers, bool full_state,
                                    nlohmann::json* acked) {
  const int64_t now = timer_->NowMs();
  std::set<std::pair<std::string, int>> seen;  // (job, rank) of the current generation
  std::set<std::string> fence;                 // jobs with stale trainers on this daemon
  for (const TrainerReport& t : trainers) {
    const std::string& job_id = t.job;
    const uint64_t gen = t.generation;
    const int rank = t.rank;
    const bool running = t.running;
    auto it = jobs_.find(job_id);
    const bool current = it != jobs_.end() && Active(it->second) &&
                         gen == it->second.state.generation() && rank >= 0 &&
                         rank < int(it->second.ranks.size()) &&
                         it->second.ranks[size_t(rank)].worker == worker_id;
    if (!current) {
      if (running) {
        fence.insert(job_id);
      } else {
        acked->push_back({{"job", job_id}, {"generation", gen}, {"rank", rank}});
      }
      if (running || it == jobs_.end() || gen != it->second.state.generation()) ++counters_.stale;
      continue;
    }
    JobRun& job = it->second;
    RankRun& r = job.ranks[size_t(rank)];
    seen.insert({job_id, rank});
    if (running) {
      if (!r.running || r.pid != t.pid) {
        r.running = true;
        r.pid = t.pid;
      }
      continue;
    }
    acked->push_back({{"job", job_id}, {"generation", gen}, {"rank", rank}});
    if (!r.exited) {
      OnRankExit(job, rank, t.exit_code, t.signal, t.text);
    }
  }
  for (const auto& job_id : fence) {
    auto it = jobs_.find(job_id);
    const uint64_t below = it == jobs_.end() || IsTerminal(it->second.state.phase())
                               ? UINT64_MAX
                               : it->second.state.generation();
    SendTo(WorkerRoute(worker_id), MessageType::kStopTrainers, job_id, 0,
           {{"below_generation", below}, {"grace_ms", kFenceGraceMs}});
  }
  if (!full_state) return;  // a TrainerExited lists only the new exits
  int64_t running = 0;
  for (const TrainerReport& t : trainers) running += t.running ? 1 : 0;
  activity_[worker_id].trainers = running;
  // Ranks this daemon should run but does not report. Never seen running: the StartTrainers
  // may have been lost, so it goes again. Seen running before: the trainer vanished without
  // an exit report (its daemon lost track of it), a failure of the generation.
  for (auto& [id, job] : jobs_) {
    if (!Active(job) || job.started_generation != job.state.generation()) continue;
    bool missing = false;
    int vanished = -1;
    for (size_t r = 0; r < job.ranks.size(); ++r) {
      const RankRun& rr = job.ranks[r];
      if (rr.worker != worker_id || rr.exited || seen.count({id, int(r)})) continue;
      if (rr.running) {
        vanished = int(r);
      } else {
        missing = true;
      }
    }
    if (vanished >= 0) {
      const WorkerInfo* w = workers_.Find(worker_id);
      FailJob(job,
              "rank " + std::to_string(vanished) + " is no longer running on worker " + worker_id,
              vanished, w ? w->host : worker_id, false);
      continue;
    }
    auto sent = job.start_sent_ms.find(worker_id);
    const int64_t last = sent == job.start_sent_ms.end() ? 0 : sent->second;
    if (missing && now - last > kStartTrainersResendMs) SendStart(job, worker_id);
  }
}

void Coordinator::OnRankExit(JobRun& job, int rank, int exit_code, int signal,
                             const std::string& text) {
  RankRun& r = job.ranks[size_t(rank)];
  r.exited = true;
  r.running = false;
  r.exit_code = exit_code;
  r.signal = signal;
  r.exit_text = text.empty() ? (signal ? "killed by signal " + std::to_string(signal)
                                       : "exited with code " + std::to_string(exit_code))
                             : text;
  spdlog::info("job {} generation {} rank {} on {}: {}", job.state.job_id(), job.state.generation(),
               rank, r.worker, r.exit_text);
  if (job.stop_asked_ms > 0) {  // asked to exit: whatever its code, the stop decides
    if (!CheckStop(job)) Persist(job);
    return;
  }
  if (exit_code == 0 && signal == 0) {
    Persist(job);
    FinishIfDone(job);
    return;
  }
  ++activity_[r.worker].trainer_failures;
  const WorkerInfo* w = workers_.Find(r.worker);
  std::string cause = "rank " + std::to_string(rank) + " " + r.exit_text;
  if (signal == 0 && exit_code == kExitBadCheckpoint &&
      (job.restore_from_memory || job.restore_step > 0)) {
    // The step restored cannot be read. A memory snapshot: the next generation restores the
    // newest step on disk. A disk step: never restored again; the next falls back to the one
    // before it.
    const int64_t bad = job.restore_step;
    const bool memory = job.restore_from_memory;
    if (!memory) (void)store_->DeleteManifest(job.state.job_id(), bad);
    auto left = store_->CommittedSteps(job.state.job_id());
    const int64_t fallback = left.ok() && !left->empty() ? left->back() : 0;
    cause += memory ? ": the memory snapshot of step " + std::to_string(bad) + " is unusable"
                    : ": checkpoint step " + std::to_string(bad) + " is unreadable";
    cause += "; falling back to " + StepOrStart(fallback) + (memory ? " on disk" : "") + " (" +
             std::to_string(bad - fallback) + " more steps to redo)";
    job.lost_steps += bad - fallback;
    if (memory) {
      job.memory_step = 0;
      job.replica_step = 0;
      job.restore_from_memory = false;
    } else {
      job.committed_step = fallback;
    }
  }
  // A rank whose data plane timed out waited for a peer: the flight recorders say which.
  // ("TimedOut: step 31: expert dispatch: data plane: waited 5004 ms for rank 2 ...")
  if (r.exit_text.find("TimedOut") != std::string::npos &&
      r.exit_text.find("data plane: waited") != std::string::npos && !job.table.empty())
    CollectFlightRecords(job);
  bool non_retryable = signal == 0 && IsNonRetryableExit(exit_code);
  if (signal == 0 && exit_code == kExitBadCheckpoint && job.restore_step <= 0) {
    // The trainers chose among the steps on disk themselves and still could not read one: no
    // restart can do better.
    cause += " (no readable committed checkpoint is left to fall back to)";
    non_retryable = true;
  }
  FailJob(job, cause, rank, w ? w->host : r.worker, non_retryable);
}

void Coordinator::FinishIfDone(JobRun& job) {
  for (const auto& r : job.ranks) {
    if (!r.exited || r.exit_code != 0 || r.signal != 0) return;
  }
  SucceedJob(
      job, "every rank finished at step " + std::to_string(job.progress.value("step", int64_t(0))));
}

bool Coordinator::LastStepCommitted(const JobRun& job) const {
  return job.total_steps() > 0 && job.committed_step >= job.total_steps();
}

void Coordinator::SucceedJob(JobRun& job, const std::string& cause, bool schedule) {
  if (IsTerminal(job.state.phase())) return;
  const int64_t now = clock_->NowMs();
  if (job.state.phase() != JobPhase::kRunning) (void)job.state.Running(now, cause);
  Status s = job.state.Succeed(now, cause);
  if (!s.ok()) {
    spdlog::warn("{}", s.message());
    return;
  }
  spdlog::info("job {} SUCCEEDED: {}", job.state.job_id(), cause);
  // Trainers still running (their exits not reported: a stopped daemon) have nothing left
  // to do that counts.
  bool all_exited = true;
  for (const auto& r : job.ranks) all_exited = all_exited && r.exited;
  if (!all_exited) StopTrainers(job, UINT64_MAX, kFenceGraceMs);
  Persist(job);
  if (schedule) Schedule();
}

}  // namespace moerun::coordinator
