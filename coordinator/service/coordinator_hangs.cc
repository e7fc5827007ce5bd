// The coordinator's part in finding hangs (docs/fault-tolerance.md, "Hangs"): when the
// progress watchdog fires or a rank's data plane timed out, the daemons of that generation
// are asked for their trainers' flight recorders (worker/comm/flight_recorder.h), and the
// answers become one event: which rank did not arrive, and in which collective the others
// wait (coordinator/jobs/hang_diagnosis.h).
#include <spdlog/spdlog.h>

#include "common/timeouts.h"
#include "coordinator/jobs/hang_diagnosis.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {

void Coordinator::CollectFlightRecords(const JobRun& job) {
  const std::string key =
      "flight/" + job.state.job_id() + "/" + std::to_string(job.state.generation());
  if (flights_.count(key)) return;  // already asked
  FlightCollection c;
  c.job_id = job.state.job_id();
  c.generation = job.state.generation();
  c.world = int(job.ranks.size());
  c.deadline_ms = timer_->NowMs() + kFlightCollectTimeoutMs;
  for (const RankRun& r : job.ranks) {
    if (r.worker.empty() || c.pending.count(r.worker)) continue;
    const WorkerInfo* w = workers_.Find(r.worker);
    if (!w || !w->alive) {
      c.problems.push_back("worker " + r.worker + " is dead");
      continue;
    }
    if (SendTo(WorkerRoute(r.worker), MessageType::kQuery, c.job_id, c.generation,
               {{"what", "flight"}, {"request_id", key + "/" + r.worker}})) {
      c.pending.insert(r.worker);
    } else {
      c.problems.push_back("worker " + r.worker + " is not reachable");
    }
  }
  flights_[key] = std::move(c);
  FinishFlightCollections(true);  // nothing to wait for when no daemon could be asked
}

void Coordinator::OnFlightReply(const Envelope& e, const std::string& request_id) {
  const size_t slash = request_id.rfind('/');
  auto it = flights_.find(request_id.substr(0, slash));
  if (slash == std::string::npos || it == flights_.end()) {
    ++counters_.stale;
    return;
  }
  FlightCollection& c = it->second;
  const std::string worker = request_id.substr(slash + 1);
  if (!c.pending.erase(worker)) return;  // a repeat
  if (e.type == MessageType::kError) {
    c.problems.push_back("worker " + worker + ": " + e.body.value("error", "?"));
  } else if (e.body.contains("ranks") && e.body["ranks"].is_object()) {
    for (const auto& [rank, entries] : e.body["ranks"].items()) c.ranks[rank] = entries;
    if (e.body.contains("problems") && e.body["problems"].is_array()) {
      for (const auto& p : e.body["problems"])
        if (p.is_string()) c.problems.push_back(p.get<std::string>());
    }
  }
  FinishFlightCollections(true);
}

void Coordinator::FinishFlightCollections(bool only_complete) {
  const int64_t now = timer_->NowMs();
  for (auto it = flights_.begin(); it != flights_.end();) {
    FlightCollection& c = it->second;
    if (!c.pending.empty() && (only_complete || now < c.deadline_ms)) {
      ++it;
      continue;
    }
    for (const auto& w : c.pending) c.problems.push_back("worker " + w + " did not answer");
    std::string line = "flight recorders of generation " + std::to_string(c.generation) + ": " +
                       DiagnoseHang(c.ranks, c.world);
    if (!c.problems.empty()) {
      line += " (";
      for (size_t i = 0; i < c.problems.size(); ++i) line += (i ? "; " : "") + c.problems[i];
      line += ")";
    }
    spdlog::warn("job {}: {}", c.job_id, line);
    auto job = jobs_.find(c.job_id);
    if (job != jobs_.end()) {
      job->second.state.Note(clock_->NowMs(), line);
      Persist(job->second, false);
    }
    it = flights_.erase(it);
  }
}

}  // namespace moerun::coordinator
