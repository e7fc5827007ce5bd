// Stragglers (docs/cluster.md, "Stragglers"): what the coordinator does when its
// StragglerDetector names a rank, or clears one: an event (status, the dashboard and
// Prometheus read the detector), and with fault_tolerance.evict_stragglers a restart of the
// generation from its newest checkpoint that leaves the straggler's daemon out, when the other
// daemons have room for its ranks; otherwise the rank stays, and the event says why.
#include <spdlog/spdlog.h>

#include <cstdio>

#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {

void Coordinator::OnStragglerChange(JobRun& job, const StragglerChange& change) {
  const RankRun& r = job.ranks[size_t(change.rank)];
  const WorkerInfo* w = workers_.Find(r.worker);
  const std::string host = w ? w->host : r.worker;
  const auto& ft = job.spec.fault_tolerance;
  char what[256];
  if (!change.straggler) {
    std::snprintf(what, sizeof what,
                  "rank %d on worker %s is no longer a straggler: compute %.3f s a step, %.2fx "
                  "its peers' median (%.3f s)",
                  change.rank, r.worker.c_str(), change.compute_s,
                  change.compute_s / change.peers_median_s, change.peers_median_s);
    spdlog::info("job {}: {}", job.state.job_id(), what);
    job.state.Note(clock_->NowMs(), what);
    Persist(job, false);
    return;
  }
  std::snprintf(what, sizeof what,
                "rank %d on worker %s (%s) is a straggler: compute %.3f s a step, %.2fx its "
                "peers' median (%.3f s), above %.2fx for %lld steps in a row",
                change.rank, r.worker.c_str(), host.c_str(), change.compute_s,
                change.compute_s / change.peers_median_s, change.peers_median_s,
                ft.straggler_factor, (long long)ft.straggler_steps);
  spdlog::warn("job {}: {}", job.state.job_id(), what);
  if (!ft.evict_stragglers) {
    job.state.Note(clock_->NowMs(), what);
    Persist(job, false);
    return;
  }
  // Room for its daemon's ranks elsewhere (this job's own ranks there keep their slots).
  if (!RoomElsewhere(job, {r.worker})) {
    job.state.Note(clock_->NowMs(),
                   std::string(what) +
                       "; it stays (fault_tolerance.evict_stragglers: the other workers lack "
                       "room for its ranks)");
    Persist(job, false);
    return;
  }
  job.avoided_workers.insert(r.worker);
  FailJob(job,
          std::string(what) + "; restarting without worker " + r.worker +
              " (fault_tolerance.evict_stragglers)",
          change.rank, host, false);
}

}  // namespace moerun::coordinator
