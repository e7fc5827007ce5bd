// The coordinator and the trainers: rendezvous, per-step reports, the two-phase checkpoint
// commit.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <set>

#include "common/exit_codes.h"
#include "common/limits.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/scheduler/rank_placer.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"
#include "coordinator/state/metric_retention.h"

namespace moerun::coordinator {

void Coordinator::OnTrainerMessage(const std::string& peer, const Envelope& e) {
  auto it = jobs_.find(e.job_id);
  if (it == jobs_.end()) {
    ++counters_.invalid;
    SendTo(peer, MessageType::kError, e.job_id, e.generation,
           {{"error", "job " + e.job_id + " is unknown to this coordinator"}, {"fatal", true}});
    return;
  }
  JobRun& job = it->second;
  // The body, typed, before anything else: a malformed one is refused by name. One of the
  // three is set, and `rank` is its sender's.
  std::optional<RendezvousBody> rendezvous;
  std::optional<StepReportBody> report;
  std::optional<ShardWrittenBody> shard;
  std::optional<PreflightReportBody> preflight;
  Status parsed;
  int rank = -1;
  auto take = [&](auto parsed_body, auto* into) {
    parsed = parsed_body.status();
    if (!parsed.ok()) return;
    rank = parsed_body->rank;
    *into = std::move(parsed_body.value());
  };
  switch (e.type) {
    case MessageType::kRendezvous:
      take(RendezvousBody::FromJson(e.body), &rendezvous);
      break;
    case MessageType::kStepReport:
      take(StepReportBody::FromJson(e.body), &report);
      break;
    case MessageType::kShardWritten:
      take(ShardWrittenBody::FromJson(e.body), &shard);
      break;
    case MessageType::kPreflightReport:
      take(PreflightReportBody::FromJson(e.body), &preflight);
      break;
    default:
      ++counters_.invalid;
      return;
  }
  if (!parsed.ok()) {
    Refuse(peer, e, parsed);
    return;
  }
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
  if (rendezvous) {
    OnRendezvous(peer, job, rank, rendezvous->endpoint, rendezvous->nccl_unique_id);
  } else if (report) {
    OnStepReport(job, *report);
  } else if (preflight) {
    OnPreflightReport(job, *preflight);
  } else {
    OnShardWritten(peer, job, *shard);
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
  job.last_progress_ms = timer_->NowMs();
  Status s = job.state.Running(
      now, "all " + std::to_string(job.ranks.size()) + " ranks met at the rendezvous");
  if (!s.ok()) spdlog::warn("{}", s.message());
  spdlog::info("job {} generation {} RUNNING on {} ranks", id, gen, job.ranks.size());
  Persist(job);
  for (const auto& r : job.ranks) SendTo(r.peer, MessageType::kRendezvous, id, gen, TableBody(job));
}

void Coordinator::OnShardWritten(const std::string& peer, JobRun& job,
                                 const ShardWrittenBody& body) {
  const int64_t step = body.step;
  const std::string& shard = body.shard;
  const int64_t bytes = body.bytes;
  const std::set<std::string> expected = ExpectedShards(job);
  // Trainers repeat their newest report with every step until a newer one or until they hear
  // a commit of it: a committed step's repeat is answered with the commit (the trainer missed
  // it: sent before this coordinator restarted, or before it knew the trainer's address).
  if (step <= job.committed_step) {
    auto kept = store_->CommittedSteps(job.state.job_id());
    if (kept.ok()) SendCommitted(job, {peer}, kept.value());
    return;
  }
  if (!expected.count(shard)) {
    ++counters_.stale;  // a shard this job does not have
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
               step, expected.size(), double(total) / (1 << 20), body.rank);
  // Retention: the newest checkpoint.keep committed steps.
  auto steps = store_->CommittedSteps(id);
  const size_t keep = size_t(std::max<int64_t>(1, job.spec.checkpoint.keep));
  std::vector<int64_t> kept;
  if (steps.ok()) {
    const size_t drop = steps->size() > keep ? steps->size() - keep : 0;
    for (size_t i = 0; i < drop; ++i) (void)store_->DeleteManifest(id, (*steps)[i]);
    kept.assign(steps->begin() + long(drop), steps->end());
  }
  Persist(job, false);
  // The writers may now delete what this commit supersedes (and nothing else: a shard's own
  // newer steps may be ones that never commit).
  std::vector<std::string> peers;
  for (const auto& r : job.ranks)
    if (!r.peer.empty()) peers.push_back(r.peer);
  SendCommitted(job, peers, kept);
}

void Coordinator::SendCommitted(const JobRun& job, const std::vector<std::string>& peers,
                                const std::vector<int64_t>& kept) {
  if (kept.empty() || peers.empty()) return;
  const std::string& id = job.state.job_id();
  const size_t n = std::min(kept.size(), size_t(kMaxCheckpointKeep));
  const nlohmann::json body = {{"steps", std::vector<int64_t>(kept.end() - long(n), kept.end())}};
  for (const auto& p : peers)
    SendTo(p, MessageType::kCheckpointCommitted, id, job.state.generation(), body);
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

void Coordinator::OnStepReport(JobRun& job, const StepReportBody& body) {
  const int rank = body.rank;
  const int64_t step = body.step;
  const int64_t now = clock_->NowMs();
  if (step < 1 || step > job.total_steps()) {
    ++counters_.invalid;  // would thin or misorder the stored history
    spdlog::warn("job {}: dropped a step report of rank {} for step {} (the job has {} steps)",
                 job.state.job_id(), rank, step, job.total_steps());
    return;
  }
  // Layer names become key segments (load/<job>/<layer>/<step>): StepReportBody admits only
  // [A-Za-z0-9._-]{1,16}.
  std::map<std::string, std::vector<int64_t>> load;
  if (rank == 0) load = body.expert_load;
  RankRun& rr = job.ranks[size_t(rank)];
  job.state.Trained();
  rr.step = step;
  rr.memory_oldest = body.memory_oldest;
  rr.memory_newest = body.memory_newest;
  rr.replica_oldest = body.replica_oldest;
  rr.replica_newest = body.replica_newest;
  rr.compute_s = body.compute_s;
  rr.data_wait_s = body.data_wait_s;
  rr.bubble_s = body.bubble_s;
  job.last_progress_ms = timer_->NowMs();
  if (!job.stragglers) {
    job.stragglers.emplace(job.spec.parallel.pipeline, job.spec.parallel.data,
                           job.spec.fault_tolerance.straggler_factor,
                           job.spec.fault_tolerance.straggler_steps);
  }
  if (auto change = job.stragglers->Observe(rank, body.compute_s)) {
    OnStragglerChange(job, *change);
    if (!Active(job) || job.state.phase() != JobPhase::kRunning) return;  // evicted: restarting
  }
  if (rank != 0) return;
  if (job.first_step_ms == 0 || step <= job.first_step) {
    job.first_step_ms = now;
    job.first_step = step;
  }
  // The scalars are the stored report; the load goes per layer beside it (coordinator_store.h).
  job.progress = body.scalars;
  job.progress["time_ms"] = now;
  job.expert_layers.clear();
  for (const auto& [layer, counts] : load) job.expert_layers.push_back(layer);
  job.progress["expert_layers"] = job.expert_layers;
  job.expert_load = std::move(load);
  Status s = store_->PutMetric(job.state.job_id(), step, job.progress, job.expert_load);
  if (!s.ok())
    spdlog::error("job {}: cannot store step {}: {}", job.state.job_id(), step, s.message());
  if (body.val_loss) {
    job.held_out = {{"step", step}, {"val_loss", *body.val_loss}};
    Persist(job, false);
  }
  if (step % kMetricThinEverySteps == 0) {
    auto thinned = store_->ThinMetrics(job.state.job_id(), step, job.expert_layers);
    if (!thinned.ok())
      spdlog::error("job {}: cannot thin old step reports: {}", job.state.job_id(),
                    thinned.status().message());
  }
}

}  // namespace moerun::coordinator
