// The coordinator's loop logic: loading, message dispatch, daemons and trainers, and the job
// lifecycle. Client requests (submit, cancel, queries) are in coordinator_clients.cc.
#include "coordinator/service/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/control_timeouts.h"
#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "coordinator/scheduler/rank_placer.h"

namespace moerun::coordinator {
namespace {

constexpr size_t kMaxNcclUniqueIdChars = 512;  // ncclUniqueId is 128 bytes: 256 in hex
constexpr char kWorkerPrefix[] = "worker:";
constexpr char kTrainerPrefix[] = "trainer:";

bool NonRetryableExit(int code) {
  return code == kExitInvalidConfig || code == kExitBadData || code == kExitUnsupported;
}

bool Active(const JobRun& j) {
  return !IsTerminal(j.state.phase()) && j.state.phase() != JobPhase::kQueued;
}

}  // namespace

Coordinator::Coordinator(CoordinatorStore* store, const Clock* clock, CoordinatorSettings settings,
                         Send send)
    : store_(store),
      clock_(clock),
      settings_(std::move(settings)),
      send_(std::move(send)),
      workers_(clock, settings_.heartbeat_timeout_ms) {}

Result<std::unique_ptr<Coordinator>> Coordinator::Open(CoordinatorStore* store, const Clock* clock,
                                                       CoordinatorSettings settings, Send send) {
  std::unique_ptr<Coordinator> c(
      new Coordinator(store, clock, std::move(settings), std::move(send)));
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
  const int64_t now = clock_->NowMs();
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
    job.last_progress_ms = now;
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

void Coordinator::ReplyError(const std::string& peer, const std::string& why) {
  SendTo(peer, MessageType::kError, "", 0, {{"error", why}});
}

void Coordinator::Persist(JobRun& job, bool sync) {
  Status s = store_->PutJob(job.state);
  if (s.ok()) s = store_->PutDocument("run", job.state.job_id(), job.ToRecord(), sync);
  if (!s.ok()) spdlog::error("job {}: cannot store its state: {}", job.state.job_id(), s.message());
}

// ---- dispatch ---------------------------------------------------------------------------

void Coordinator::Handle(const std::string& peer, const Envelope& e) {
  ++counters_.received;
  try {
    if (peer.rfind(kWorkerPrefix, 0) == 0) {
      OnWorkerMessage(peer.substr(sizeof(kWorkerPrefix) - 1), e);
    } else if (peer.rfind(kTrainerPrefix, 0) == 0) {
      OnTrainerMessage(peer, e);
    } else {
      OnClientMessage(peer, e);
    }
  } catch (const nlohmann::json::exception& ex) {
    // A field of the wrong type: the message is unusable, the coordinator is fine.
    ++counters_.invalid;
    spdlog::warn("dropped {} from {}: {}", ToString(e.type), peer, ex.what());
    const bool client = peer.rfind(kWorkerPrefix, 0) != 0 && peer.rfind(kTrainerPrefix, 0) != 0;
    if (client) ReplyError(peer, std::string("malformed request: ") + ex.what());
  }
}

void Coordinator::OnWorkerMessage(const std::string& worker_id, const Envelope& e) {
  const nlohmann::json& b = e.body;
  switch (e.type) {
    case MessageType::kRegister:
    case MessageType::kHeartbeat: {
      WorkerInfo w;
      w.id = worker_id;
      w.host = b.at("host").get<std::string>();
      w.devices = b.at("devices").get<int64_t>();
      w.backend = b.at("backend").get<std::string>();
      w.data_host = b.at("data_host").get<std::string>();
      w.pid = b.at("pid").get<int64_t>();
      if (worker_id.empty() || w.devices < 0 || w.devices > 4096) {
        ++counters_.invalid;
        return;
      }
      const WorkerInfo* before = workers_.Find(worker_id);
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
      ReconcileTrainers(worker_id, b.value("trainers", nlohmann::json::array()), true, &acked);
      if (e.type == MessageType::kRegister) {
        SendTo(kWorkerPrefix + worker_id, MessageType::kRegistered, "", 0,
               {{"heartbeat_interval_ms", settings_.heartbeat_interval_ms},
                {"heartbeat_timeout_ms", settings_.heartbeat_timeout_ms},
                {"acked", acked}});
      } else {
        SendTo(kWorkerPrefix + worker_id, MessageType::kReply, "", 0,
               {{"seq", b.value("seq", int64_t(0))}, {"acked", acked}});
      }
      Schedule();
      return;
    }
    case MessageType::kTrainerExited: {
      if (!workers_.Find(worker_id)) {
        ++counters_.invalid;  // it will register with its next heartbeat, exits included
        return;
      }
      nlohmann::json acked = nlohmann::json::array();
      ReconcileTrainers(worker_id, b.at("trainers"), false, &acked);
      SendTo(kWorkerPrefix + worker_id, MessageType::kReply, "", 0, {{"acked", acked}});
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

// A daemon's view of its trainers: start what is missing, record exits, fence the stale.
void Coordinator::ReconcileTrainers(const std::string& worker_id, const nlohmann::json& trainers,
                                    bool full_state, nlohmann::json* acked) {
  const int64_t now = clock_->NowMs();
  std::set<std::pair<std::string, int>> seen;  // (job, rank) of the current generation
  std::set<std::string> fence;                 // jobs with stale trainers on this daemon
  for (const auto& t : trainers) {
    const std::string job_id = t.at("job").get<std::string>();
    const uint64_t gen = t.at("generation").get<uint64_t>();
    const int rank = t.at("rank").get<int>();
    const bool running = t.at("running").get<bool>();
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
      if (!r.running || r.pid != t.value("pid", int64_t(0))) {
        r.running = true;
        r.pid = t.value("pid", int64_t(0));
      }
      continue;
    }
    acked->push_back({{"job", job_id}, {"generation", gen}, {"rank", rank}});
    if (!r.exited) {
      OnRankExit(job, rank, t.at("exit_code").get<int>(), t.at("signal").get<int>(),
                 t.value("text", std::string()));
    }
  }
  for (const auto& job_id : fence) {
    auto it = jobs_.find(job_id);
    const uint64_t below = it == jobs_.end() || IsTerminal(it->second.state.phase())
                               ? UINT64_MAX
                               : it->second.state.generation();
    SendTo(kWorkerPrefix + worker_id, MessageType::kStopTrainers, job_id, 0,
           {{"below_generation", below}, {"grace_ms", kFenceGraceMs}});
  }
  if (!full_state) return;  // a TrainerExited lists only the new exits
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
  if (exit_code == 0 && signal == 0) {
    Persist(job);
    FinishIfDone(job);
    return;
  }
  const WorkerInfo* w = workers_.Find(r.worker);
  std::string cause = "rank " + std::to_string(rank) + " " + r.exit_text;
  if (signal == 0 && exit_code == kExitBadCheckpoint && job.restore_step > 0) {
    // Never restore this step again: the next generation falls back to the one before it.
    const int64_t bad = job.restore_step;
    (void)store_->DeleteManifest(job.state.job_id(), bad);
    auto left = store_->CommittedSteps(job.state.job_id());
    const int64_t fallback = left.ok() && !left->empty() ? left->back() : 0;
    job.committed_step = fallback;
    job.lost_steps += bad - fallback;
    cause += ": checkpoint step " + std::to_string(bad) + " is unreadable; falling back to " +
             (fallback > 0 ? "step " + std::to_string(fallback) : "the start") + " (" +
             std::to_string(bad - fallback) + " more steps to redo)";
  }
  FailJob(job, cause, rank, w ? w->host : r.worker, signal == 0 && NonRetryableExit(exit_code));
}

void Coordinator::FinishIfDone(JobRun& job) {
  for (const auto& r : job.ranks) {
    if (!r.exited || r.exit_code != 0 || r.signal != 0) return;
  }
  const int64_t now = clock_->NowMs();
  if (job.state.phase() != JobPhase::kRunning) (void)job.state.Running(now, "every rank finished");
  Status s = job.state.Succeed(
      now, "every rank finished at step " + std::to_string(job.progress.value("step", int64_t(0))));
  if (!s.ok()) spdlog::warn("{}", s.message());
  spdlog::info("job {} SUCCEEDED", job.state.job_id());
  Persist(job);
  Schedule();
}

void Coordinator::OnTrainerMessage(const std::string& peer, const Envelope& e) {
  auto it = jobs_.find(e.job_id);
  if (it == jobs_.end()) {
    ++counters_.invalid;
    SendTo(peer, MessageType::kError, e.job_id, e.generation,
           {{"error", "job " + e.job_id + " is unknown to this coordinator"}, {"fatal", true}});
    return;
  }
  JobRun& job = it->second;
  const int rank = e.body.at("rank").get<int>();
  // The last shards of a run may arrive after its exits made the job SUCCEEDED.
  const bool late_shard =
      e.type == MessageType::kShardWritten && job.state.phase() == JobPhase::kSucceeded;
  if (e.generation != job.state.generation() || (!Active(job) && !late_shard) || rank < 0 ||
      rank >= int(job.ranks.size())) {
    ++counters_.stale;
    if (e.type == MessageType::kRendezvous) {
      SendTo(peer, MessageType::kError, e.job_id, e.generation,
             {{"error", "generation " + std::to_string(e.generation) + " of job " + e.job_id +
                            " is over (the job is " + std::string(ToString(job.state.phase())) +
                            ", generation " + std::to_string(job.state.generation()) + ")"},
              {"fatal", true}});
    }
    return;
  }
  switch (e.type) {
    case MessageType::kRendezvous:
      OnRendezvous(peer, job, rank, e.body.at("endpoint").get<std::string>(),
                   e.body.value("nccl_unique_id", std::string()));
      return;
    case MessageType::kStepReport:
      OnStepReport(job, rank, e.body);
      return;
    case MessageType::kShardWritten:
      OnShardWritten(job, rank, e.body);
      return;
    default:
      ++counters_.invalid;
  }
}

void Coordinator::OnRendezvous(const std::string& peer, JobRun& job, int rank,
                               const std::string& endpoint, const std::string& nccl_unique_id) {
  const std::string& id = job.state.job_id();
  const uint64_t gen = job.state.generation();
  if (!job.table.empty()) {  // a late or repeated ask (the coordinator may have restarted)
    SendTo(peer, MessageType::kRendezvous, id, gen, TableBody(job));
    return;
  }
  job.ranks[size_t(rank)].endpoint = endpoint;
  job.ranks[size_t(rank)].peer = peer;
  // CUDA jobs: rank 0 creates the NCCL communicator's unique id; everyone gets it with the
  // table (opaque here: 128 bytes, hex-encoded by the trainer).
  if (rank == 0) job.nccl_unique_id = nccl_unique_id.substr(0, kMaxNcclUniqueIdChars);
  for (const auto& r : job.ranks) {
    if (r.peer.empty()) return;
  }
  for (const auto& r : job.ranks) job.table.push_back(r.endpoint);
  const int64_t now = clock_->NowMs();
  job.last_progress_ms = now;
  Status s = job.state.Running(
      now, "all " + std::to_string(job.ranks.size()) + " ranks met at the rendezvous");
  if (!s.ok()) spdlog::warn("{}", s.message());
  spdlog::info("job {} generation {} RUNNING on {} ranks", id, gen, job.ranks.size());
  Persist(job);
  for (const auto& r : job.ranks) SendTo(r.peer, MessageType::kRendezvous, id, gen, TableBody(job));
}

void Coordinator::OnShardWritten(JobRun& job, int rank, const nlohmann::json& body) {
  const int64_t step = body.at("step").get<int64_t>();
  const std::string shard = body.at("shard").get<std::string>();
  const int64_t bytes = body.at("bytes").get<int64_t>();
  const std::set<std::string> expected = ExpectedShards(job);
  if (step <= job.committed_step || !expected.count(shard)) {
    ++counters_.stale;  // a repeat, or a shard this job does not have
    return;
  }
  auto& written = job.shards_written[step];
  written[shard] = bytes;
  if (written.size() < expected.size()) return;
  // Every shard of the step is durable: the commit point.
  nlohmann::json shards = nlohmann::json::array();
  int64_t total = 0;
  for (const auto& [name, n] : written) {
    shards.push_back({{"shard", name}, {"bytes", n}});
    total += n;
  }
  const nlohmann::json manifest = {
      {"version", 1},     {"step", step},   {"generation", job.state.generation()},
      {"shards", shards}, {"bytes", total}, {"time_ms", clock_->NowMs()}};
  const std::string& id = job.state.job_id();
  Status s = store_->CommitManifest(id, step, manifest);
  if (!s.ok()) {
    spdlog::error("job {}: cannot commit checkpoint step {}: {}", id, step, s.message());
    return;
  }
  job.committed_step = step;
  job.shards_written.erase(job.shards_written.begin(), job.shards_written.upper_bound(step));
  spdlog::info("job {}: checkpoint step {} committed ({} shards, {:.1f} MiB; rank {} last)", id,
               step, expected.size(), double(total) / (1 << 20), rank);
  // Retention: the newest checkpoint.keep committed steps.
  auto steps = store_->CommittedSteps(id);
  const int64_t keep = std::max<int64_t>(1, job.spec.checkpoint.keep);
  if (steps.ok()) {
    for (size_t i = 0; i + size_t(keep) < steps->size(); ++i)
      (void)store_->DeleteManifest(id, (*steps)[i]);
  }
  Persist(job, false);
}

std::set<std::string> Coordinator::ExpectedShards(const JobRun& job) const {
  // The ranks of each stage's first expert group write stage-S/dp-D (worker/trainer/topology.h).
  std::set<std::string> out;
  for (int64_t st = 0; st < job.spec.parallel.pipeline; ++st)
    for (int64_t d = 0; d < job.spec.parallel.expert; ++d)
      out.insert("stage-" + std::to_string(st) + "/dp-" + std::to_string(d));
  return out;
}

nlohmann::json Coordinator::TableBody(const JobRun& job) const {
  nlohmann::json body = {{"endpoints", job.table}};
  if (!job.nccl_unique_id.empty()) body["nccl_unique_id"] = job.nccl_unique_id;
  return body;
}

void Coordinator::OnStepReport(JobRun& job, int rank, const nlohmann::json& body) {
  const int64_t step = body.at("step").get<int64_t>();
  const int64_t now = clock_->NowMs();
  job.ranks[size_t(rank)].step = step;
  job.last_progress_ms = now;
  if (rank != 0) return;
  if (job.first_step_ms == 0 || step <= job.first_step) {
    job.first_step_ms = now;
    job.first_step = step;
  }
  job.progress = body;
  job.progress["time_ms"] = now;
  Status s = store_->PutMetric(job.state.job_id(), step, job.progress);
  if (!s.ok())
    spdlog::error("job {}: cannot store step {}: {}", job.state.job_id(), step, s.message());
  Persist(job, false);
}

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
  // Restarts first: their jobs were already admitted.
  for (JobRun* job : order) {
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
  if (job.placed()) {  // a restart: survivors keep their daemon (their slots are counted)
    for (const auto& r : job.ranks) {
      const WorkerInfo* w = workers_.Find(r.worker);
      req.pinned.push_back(w && w->alive && w->heard ? r.worker : "");
    }
  }
  auto placement = PlaceRanks(req);
  if (!placement) return false;
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
  job.table.clear();
  job.nccl_unique_id.clear();
  job.shards_written.clear();
  auto committed = store_->CommittedSteps(job.state.job_id());
  job.restore_step = committed.ok() && !committed->empty() ? committed->back() : -1;
  job.started_generation = job.state.generation();
  job.generation_started_ms = now;
  job.first_step_ms = 0;
  job.start_sent_ms.clear();
  Persist(job);
  std::set<std::string> workers(placement->begin(), placement->end());
  spdlog::info("job {} generation {}: starting {} ranks on {}", job.state.job_id(),
               job.state.generation(), placement->size(), fmt::join(workers, ", "));
  for (const auto& w : workers) SendStart(job, w);
  return true;
}

void Coordinator::SendStart(JobRun& job, const std::string& worker_id) {
  nlohmann::json ranks = nlohmann::json::array();
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    if (job.ranks[r].worker == worker_id && !job.ranks[r].exited) ranks.push_back(r);
  }
  job.start_sent_ms[worker_id] = clock_->NowMs();
  SendTo(kWorkerPrefix + worker_id, MessageType::kStartTrainers, job.state.job_id(),
         job.state.generation(),
         {{"world", job.world()},
          {"ranks", ranks},
          {"spec_yaml", job.spec_yaml},
          {"run_dir", job.run_dir},
          {"spec_dir", job.spec_dir},
          {"resume", job.resume || job.state.generation() > 1},
          {"steps", job.steps_override},
          {"restore_step", job.restore_step},
          {"data_plane_timeout_ms", job.spec.fault_tolerance.progress_timeout_ms}});
}

void Coordinator::StopTrainers(const JobRun& job, uint64_t below_generation, int64_t grace_ms) {
  std::set<std::string> workers;
  for (const auto& r : job.ranks) workers.insert(r.worker);
  for (const auto& w : workers) {
    SendTo(kWorkerPrefix + w, MessageType::kStopTrainers, job.state.job_id(), 0,
           {{"below_generation", below_generation}, {"grace_ms", grace_ms}});
  }
}

void Coordinator::FailJob(JobRun& job, const std::string& cause, int rank, const std::string& host,
                          bool non_retryable) {
  const int64_t now = clock_->NowMs();
  // Steps past the newest committed checkpoint are trained again by the next generation.
  // (This generation's reports only: steps an earlier failure already counted are not
  // counted again.)
  int64_t reached = 0;
  for (const auto& r : job.ranks) reached = std::max(reached, r.step);
  const int64_t lost = reached > 0 ? std::max<int64_t>(0, reached - job.committed_step) : 0;
  Status s = job.state.Fail(
      now, lost > 0 ? cause + " (" + std::to_string(lost) + " steps to redo)" : cause, rank, host,
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
  const int64_t now = clock_->NowMs();
  for (const auto& id : workers_.CheckDead()) {
    const WorkerInfo* w = workers_.Find(id);
    spdlog::warn("worker {} ({}) is dead: no heartbeat for {} ms", id, w ? w->host : id,
                 settings_.heartbeat_timeout_ms);
    FailJobsOn(id, "worker " + id + " sent no heartbeat for " +
                       std::to_string(settings_.heartbeat_timeout_ms) + " ms");
  }
  for (auto& [id, job] : jobs_) {
    if (!Active(job) || job.started_generation != job.state.generation()) continue;
    const int64_t progress_timeout = job.spec.fault_tolerance.progress_timeout_ms;
    if (job.state.phase() == JobPhase::kRunning && progress_timeout > 0 &&
        now - job.last_progress_ms > progress_timeout) {
      FailJob(job,
              "no rank finished a step for " + std::to_string(progress_timeout) +
                  " ms (a hung trainer or a stuck collective)",
              -1, "", false);
    } else if (job.table.empty() && now - job.generation_started_ms > kJobStartTimeoutMs) {
      int missing = 0;
      for (const auto& r : job.ranks) missing += r.peer.empty() ? 1 : 0;
      FailJob(job,
              std::to_string(missing) + " rank(s) did not reach the rendezvous within " +
                  std::to_string(kJobStartTimeoutMs) + " ms",
              -1, "", false);
    }
  }
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
