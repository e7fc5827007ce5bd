// The coordinator's answers to clients (the CLI): submit, cancel, status, events, metrics
// and logs (forwarded to the daemon that holds them).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/limits.h"
#include "common/placement.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {
namespace {

nlohmann::json EventJson(const JobEvent& ev) {
  return {{"time_ms", ev.time_ms}, {"from", ToString(ev.from)},
          {"to", ToString(ev.to)}, {"generation", ev.generation},
          {"cause", ev.cause},     {"rank", ev.rank},
          {"host", ev.host}};
}

}  // namespace

void Coordinator::OnClientMessage(const std::string& peer, const Envelope& e) {
  switch (e.type) {
    case MessageType::kSubmitJob: {
      auto body = SubmitJobBody::FromJson(e.body);
      if (!body.ok()) {
        Refuse(peer, e, body.status());
        return;
      }
      Submit(peer, body.value());
      return;
    }
    case MessageType::kCancelJob:
      Cancel(peer, e.job_id);
      return;
    case MessageType::kRemoveWorker:
      RemoveWorker(peer, e.job_id);
      return;
    case MessageType::kStopJob: {
      auto body = StopJobBody::FromJson(e.body);
      if (!body.ok()) {
        Refuse(peer, e, body.status());
        return;
      }
      StopJob(peer, e.job_id, body->reason);
      return;
    }
    case MessageType::kQuery:
      Query(peer, e);
      return;
    default:
      ++counters_.invalid;
      ReplyError(peer, std::string("a client cannot send ") + std::string(ToString(e.type)));
  }
}

void Coordinator::Submit(const std::string& peer, const SubmitJobBody& body) {
  const std::string& yaml = body.spec_yaml;
  LoadedJobSpec loaded = LoadJobSpecText(yaml, body.source);
  if (!loaded.ok()) {
    ReplyError(peer, "the job spec is invalid:\n" + loaded.Report());
    return;
  }
  const int64_t steps = body.steps;
  if (steps < 0 || (steps > 0 && steps < loaded.spec.train.optimizer.warmup_steps)) {
    ReplyError(peer, "steps " + std::to_string(steps) +
                         " must be positive and at least train.optimizer.warmup_steps");
    return;
  }
  std::string run_dir = body.run_dir;
  if (!run_dir.empty()) {
    if (Status allowed = settings_.run_roots.Check("run_dir", run_dir); !allowed.ok()) {
      ReplyError(peer, allowed.message());
      return;
    }
  }
  if (!loaded.spec.checkpoint.dir.empty()) {
    if (Status allowed = settings_.run_roots.Check("checkpoint.dir", loaded.spec.checkpoint.dir);
        !allowed.ok()) {
      ReplyError(peer, "the job spec is refused: " + allowed.message());
      return;
    }
  }
  auto seq = store_->NextJobSequence();
  if (!seq.ok()) {
    ReplyError(peer, "the coordinator cannot store the job: " + seq.status().message(), true);
    return;
  }
  const std::string id = loaded.spec.name + "-" + std::to_string(seq.value());
  if (run_dir.empty()) run_dir = settings_.jobs_dir + "/" + id;
  const int64_t now = clock_->NowMs();
  const FaultToleranceSpec& ft = loaded.spec.fault_tolerance;
  JobRun job(JobState(id, {ft.max_restarts, ft.restart_backoff_ms, ft.restart_backoff_max_ms}, now),
             loaded.spec, yaml);
  job.sequence = seq.value();
  job.run_dir = run_dir;
  job.spec_dir = body.spec_dir;
  job.steps_override = steps;
  job.resume = body.resume;
  job.submitted_ms = now;
  Status s = store_->PutSpec(id, yaml);
  if (s.ok()) s = store_->PutJob(job.state);
  if (s.ok()) s = store_->PutDocument("run", id, job.ToRecord(), true);
  if (!s.ok()) {
    ReplyError(peer, "the coordinator cannot store the job: " + s.message(), true);
    return;
  }
  int64_t capacity = 0;
  for (const auto& w : workers_.All()) capacity += w.alive ? w.devices : 0;
  spdlog::info("job {} submitted: {} ranks, run dir {}", id, job.world(), run_dir);
  JobRun& stored = jobs_.emplace(id, std::move(job)).first->second;
  Schedule();
  nlohmann::json reply = {{"job_id", id},
                          {"phase", ToString(stored.state.phase())},
                          {"run_dir", run_dir},
                          {"world", stored.world()}};
  if (stored.state.phase() == JobPhase::kQueued) {
    reply["note"] = stored.world() > capacity
                        ? "queued: it needs " + std::to_string(stored.world()) +
                              " trainer slots and the live workers offer " +
                              std::to_string(capacity) + " in all"
                        : "queued behind earlier jobs until enough slots are free";
  }
  Reply(peer, reply);
}

void Coordinator::Cancel(const std::string& peer, const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    ReplyError(peer, "no job " + job_id + " (see `moerun status`)");
    return;
  }
  JobRun& job = it->second;
  Status s = job.state.Cancel(clock_->NowMs(), "cancelled by a client");
  if (!s.ok()) {
    ReplyError(peer, s.message());
    return;
  }
  spdlog::info("job {} CANCELLED", job_id);
  StopTrainers(job, UINT64_MAX, kCancelGraceMs);
  Persist(job);
  Reply(peer, {{"job_id", job_id}, {"phase", ToString(job.state.phase())}});
  Schedule();
}

void Coordinator::RemoveWorker(const std::string& peer, const std::string& worker_id) {
  const WorkerInfo* w = workers_.Find(worker_id);
  if (w == nullptr) {
    ReplyError(peer, "no worker " + worker_id + " (see `moerun status`)");
    return;
  }
  if (w->alive) {
    ReplyError(peer, "worker " + worker_id + " is alive (heard from " +
                         std::to_string(workers_.HeartbeatAgeMs(worker_id)) +
                         " ms ago): stop its daemon first; a running daemon registers again with "
                         "its next heartbeat");
    return;
  }
  for (const auto& [job_id, job] : jobs_) {
    if (!Active(job)) continue;
    for (size_t r = 0; r < job.ranks.size(); ++r) {
      if (job.ranks[r].worker != worker_id) continue;
      ReplyError(peer, "worker " + worker_id + " holds rank " + std::to_string(r) + " of job " +
                           job_id + ", which waits for it: cancel the job or let it move first");
      return;
    }
  }
  ForgetWorker(worker_id, "removed by a client");
  Reply(peer, {{"removed", worker_id}});
}

void Coordinator::ForgetWorker(const std::string& worker_id, const std::string& why) {
  workers_.Remove(worker_id);
  Status s = store_->DeleteDocument("worker", worker_id);
  if (!s.ok()) spdlog::error("cannot delete worker {} from the store: {}", worker_id, s.message());
  spdlog::info("worker {} forgotten: {}", worker_id, why);
}

nlohmann::json Coordinator::JobSummary(const JobRun& job) const {
  const int64_t step = job.progress.value("step", int64_t(0));
  nlohmann::json j = {{"job_id", job.state.job_id()},
                      {"name", job.spec.name},
                      {"phase", ToString(job.state.phase())},
                      {"generation", job.state.generation()},
                      {"restarts", job.state.restarts()},
                      {"lost_steps", job.lost_steps},
                      {"committed_step", job.committed_step},
                      {"memory_step", job.MemoryCommitted()},
                      {"world", job.world()},
                      {"step", step},
                      {"total_steps", job.total_steps()},
                      {"submitted_ms", job.submitted_ms},
                      {"run_dir", job.run_dir}};
  for (const char* k : {"loss", "mtp_loss", "tokens_per_s", "step_time_s"}) {
    if (job.progress.contains(k)) j[k] = job.progress[k];
  }
  if (job.held_out.contains("val_loss")) {
    j["val_loss"] = job.held_out["val_loss"];
    j["val_step"] = job.held_out["step"];
  }
  // ETA from this generation's pace so far.
  const int64_t last_ms = job.progress.value("time_ms", int64_t(0));
  if (job.state.phase() == JobPhase::kRunning && job.first_step_ms > 0 && step > job.first_step) {
    const double ms_per_step = double(last_ms - job.first_step_ms) / double(step - job.first_step);
    j["eta_s"] = ms_per_step * double(job.total_steps() - step) / 1000.0;
  }
  if (!job.state.events().empty()) j["last_event"] = job.state.events().back().cause;
  if (job.stop_asked_ms > 0) j["stopping"] = job.stop_reason;
  if (job.waiting_since_ms > 0) {
    j["waiting_for"] = job.waiting_for;
    j["waiting_s"] = double(timer_->NowMs() - job.waiting_since_ms) / 1000.0;
  }
  std::set<std::string> workers;
  for (const auto& r : job.ranks) workers.insert(r.worker);
  j["workers"] = workers;
  return j;
}

nlohmann::json Coordinator::JobDetail(const JobRun& job) const {
  nlohmann::json j = JobSummary(job);
  Placement layout(job.spec);
  nlohmann::json ranks = nlohmann::json::array();
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    const RankRun& rr = job.ranks[r];
    const RankPlacement p = layout.Rank(int64_t(r));
    const WorkerInfo* w = workers_.Find(rr.worker);
    std::string state = rr.exited              ? rr.exit_text
                        : rr.running           ? (job.table.empty() ? "at rendezvous" : "running")
                        : job.waiting_since_ms ? "waiting for slots"
                        : job.state.phase() == JobPhase::kRunning ||
                                job.state.phase() == JobPhase::kStarting ||
                                job.state.phase() == JobPhase::kRecovering
                            ? "starting"
                            : "-";
    ranks.push_back({{"rank", r},
                     {"stage", p.stage},
                     {"data_index", p.data_index},
                     {"expert_group", p.expert_group},
                     {"worker", rr.worker},
                     {"host", w ? w->host : ""},
                     {"pid", rr.pid},
                     {"state", state},
                     {"step", rr.step},
                     {"compute_s", rr.compute_s},
                     {"data_wait_s", rr.data_wait_s},
                     {"bubble_s", rr.bubble_s},
                     // Compute time over its peers' median, and whether that has made it a
                     // straggler (coordinator/jobs/straggler_detector.h).
                     {"compute_ratio", job.stragglers ? job.stragglers->Ratio(int(r)) : 0.0},
                     {"straggler", job.stragglers && job.stragglers->IsStraggler(int(r))}});
  }
  j["ranks"] = ranks;
  return j;
}

nlohmann::json Coordinator::WorkerTable() const {
  std::map<std::string, int64_t> used;
  for (const auto& [id, job] : jobs_) {
    if (IsTerminal(job.state.phase()) || job.state.phase() == JobPhase::kQueued) continue;
    for (const auto& r : job.ranks) ++used[r.worker];
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& w : workers_.All()) {
    const int64_t age = workers_.HeartbeatAgeMs(w.id);
    // late: silent past half its timeout (and at least two heartbeats), not yet dead — the
    // first sign of a sick host, without flapping on one slow heartbeat.
    const int64_t late_ms = std::max(kLateHeartbeatIntervals * settings_.heartbeat_interval_ms,
                                     settings_.heartbeat_timeout_ms / 2);
    const char* health = !w.alive ? "dead" : age > late_ms ? "late" : "ok";
    auto a = activity_.find(w.id);
    out.push_back({{"worker", w.id},
                   {"host", w.host},
                   {"pid", w.pid},
                   {"backend", w.backend},
                   {"devices", w.devices},
                   {"used", used[w.id]},
                   {"alive", w.alive},
                   {"health", health},
                   {"heartbeat_age_ms", age},
                   {"trainers", a == activity_.end() || !w.alive ? 0 : a->second.trainers},
                   {"trainer_failures", a == activity_.end() ? 0 : a->second.trainer_failures}});
  }
  return out;
}

nlohmann::json Coordinator::StatusReply() const {
  nlohmann::json jobs = nlohmann::json::array();
  std::vector<const JobRun*> order;
  for (const auto& [id, job] : jobs_) order.push_back(&job);
  std::sort(order.begin(), order.end(),
            [](const JobRun* a, const JobRun* b) { return a->sequence < b->sequence; });
  for (const JobRun* job : order) jobs.push_back(JobSummary(*job));
  return {{"jobs", jobs},
          {"workers", WorkerTable()},
          {"counters",
           {{"received", counters_.received},
            {"malformed", counters_.malformed},
            {"invalid", counters_.invalid},
            {"stale", counters_.stale},
            {"sent", counters_.sent},
            {"unroutable", counters_.unroutable},
            {"auth_denied", counters_.auth_denied}}}};
}

// The newest step in full, for the Prometheus exposition: scalars, the load of every layer,
// every rank's split.
nlohmann::json Coordinator::LiveReply(const JobRun& job) const {
  nlohmann::json live = job.progress;
  live["expert_load"] = job.expert_load;
  nlohmann::json ranks = nlohmann::json::array();
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    const RankRun& x = job.ranks[r];
    ranks.push_back({{"rank", r},
                     {"worker", x.worker},
                     {"step", x.step},
                     {"compute_s", x.compute_s},
                     {"data_wait_s", x.data_wait_s},
                     {"bubble_s", x.bubble_s},
                     {"straggler", job.stragglers && job.stragglers->IsStraggler(int(r))}});
  }
  live["ranks"] = std::move(ranks);
  return live;
}

void Coordinator::Query(const std::string& peer, const Envelope& e) {
  auto q = QueryBody::FromJson(e.body);
  if (!q.ok()) {
    Refuse(peer, e, q.status());
    return;
  }
  if (q->what == "status") {
    Reply(peer, StatusReply());
    return;
  }
  if (q->what == "log") {
    ForwardLogRequest(peer, q.value());
    return;
  }
  auto it = jobs_.find(e.job_id);
  if (it == jobs_.end()) {
    ReplyError(peer, "no job " + e.job_id + " (see `moerun status`)");
    return;
  }
  QueryJob(peer, it->second, q.value());
}

void Coordinator::QueryJob(const std::string& peer, const JobRun& job, const QueryBody& q) {
  const std::string& id = job.state.job_id();
  const size_t limit = size_t(std::min<int64_t>(int64_t(kMaxMetricsPerQuery), q.limit));
  if (q.what == "job") {
    Reply(peer, JobDetail(job));
  } else if (q.what == "events") {
    nlohmann::json events = nlohmann::json::array();
    for (const auto& ev : job.state.events()) events.push_back(EventJson(ev));
    Reply(peer, {{"job_id", id}, {"events", events}});
  } else if (q.what == "metrics") {
    auto m = store_->Metrics(id, q.since_step, limit);
    if (!m.ok()) {
      ReplyError(peer, m.status().message());
      return;
    }
    Reply(peer, {{"job_id", id}, {"metrics", m.value()}});
  } else if (q.what == "expert_load") {
    QueryExpertLoad(peer, job, q);
  } else if (q.what == "live") {
    Reply(peer, LiveReply(job));
  } else {
    ++counters_.invalid;
    ReplyError(peer, "unknown query '" + q.what +
                         "' (status, job, events, metrics, expert_load, live, log)");
  }
}

// One layer's tokens per expert over steps (the heat map); without a layer, the layers.
void Coordinator::QueryExpertLoad(const std::string& peer, const JobRun& job, const QueryBody& q) {
  const std::string& id = job.state.job_id();
  nlohmann::json reply = {{"job_id", id}, {"layers", job.expert_layers}};
  if (!q.layer.empty()) {
    if (std::find(job.expert_layers.begin(), job.expert_layers.end(), q.layer) ==
        job.expert_layers.end()) {
      ReplyError(peer, "job " + id + " has no MoE layer '" + q.layer +
                           "' (its layers: " + nlohmann::json(job.expert_layers).dump() + ")");
      return;
    }
    const size_t limit = size_t(std::min<int64_t>(int64_t(kMaxMetricsPerQuery), q.limit));
    auto series = store_->ExpertLoad(id, q.layer, q.since_step, limit);
    if (!series.ok()) {
      ReplyError(peer, series.status().message());
      return;
    }
    reply["layer"] = q.layer;
    reply["steps"] = series->steps;
    reply["load"] = series->load;
  }
  Reply(peer, reply);
}

void Coordinator::ForwardLogRequest(const std::string& peer, const QueryBody& q) {
  const std::string& job_id = q.job;
  const int rank = q.rank;
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    ReplyError(peer, "no job " + job_id + " (see `moerun status`)");
    return;
  }
  const JobRun& job = it->second;
  if (!job.placed()) {
    ReplyError(peer, "job " + job_id + " has not started yet: no logs");
    return;
  }
  if (rank < 0 || rank >= int(job.ranks.size())) {
    ReplyError(peer, "job " + job_id + " has ranks 0.." + std::to_string(job.ranks.size() - 1));
    return;
  }
  const std::string& worker = job.ranks[size_t(rank)].worker;
  const WorkerInfo* w = workers_.Find(worker);
  if (!w || !w->alive) {
    ReplyError(peer, "rank " + std::to_string(rank) + "'s worker " + worker +
                         " is not connected; its log stays on that host");
    return;
  }
  const std::string request_id = "log-" + std::to_string(next_request_++);
  forwarded_[request_id] = {peer, timer_->NowMs() + kForwardedRequestTimeoutMs};
  nlohmann::json fwd = {{"what", "log"},
                        {"request_id", request_id},
                        {"rank", rank},
                        {"offset", q.offset},
                        {"max_bytes", std::min<int64_t>(q.max_bytes, int64_t(kLogChunkBytes))}};
  if (!SendTo(WorkerRoute(worker), MessageType::kQuery, job_id, 0, fwd)) {
    forwarded_.erase(request_id);
    ReplyError(peer, "worker " + worker + " is not reachable right now");
  }
}

void Coordinator::OnForwardedReply(const Envelope& e) {
  BodyReader r(e.body, ToString(e.type));
  const std::string request_id = r.String("request_id", "");
  if (request_id.rfind("flight/", 0) == 0) {
    OnFlightReply(e, request_id);
    return;
  }
  auto it = forwarded_.find(request_id);
  if (it == forwarded_.end()) {
    ++counters_.stale;  // answered after its deadline
    return;
  }
  nlohmann::json body = e.body;
  body.erase("request_id");
  SendTo(it->second.client, e.type, e.job_id, 0, body);
  forwarded_.erase(it);
}

}  // namespace moerun::coordinator
