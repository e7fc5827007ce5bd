// Pre-flight (docs/cluster.md, "Pre-flight"): the first generation's ranks each report a GEMM
// speed and the links of their two pairings (worker/trainer/preflight.h). Once all have, the
// coordinator judges the daemons together, against the best of their kind, since what is slow
// depends on the machine: a daemon whose slowest rank's GEMM is below
// fault_tolerance.preflight_min_ratio x the best daemon's is slow; a link (a pair of ranks)
// that failed, or is below that ratio x the best link of its kind (within a host, or across
// hosts), is bad; a rank whose links to two different partners are both bad marks its daemon
// bad, while one bad link between otherwise good ranks is a bad pair, reported but no
// daemon's fault. Bad daemons are left out (a restart of the generation) when the other
// daemons have room for their ranks; otherwise they stay, and the event says so.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "coordinator/service/coordinator.h"
#include "coordinator/service/coordinator_internal.h"

namespace moerun::coordinator {
namespace {

struct Link {
  double gbps = -1;  // the slower side's figure; -1: not measured
  std::string error;
  bool cross = false;  // the two ranks are on different daemons
  bool bad = false;
};

std::string Fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

bool Coordinator::RoomElsewhere(const JobRun& job, const std::set<std::string>& leaving) const {
  int64_t moving = 0;
  for (const auto& r : job.ranks) moving += leaving.count(r.worker) ? 1 : 0;
  int64_t room = 0;
  for (const auto& [id, free] : FreeSlots())
    if (!leaving.count(id) && !job.avoided_workers.count(id)) room += free;
  return room >= moving;
}

void Coordinator::OnPreflightReport(JobRun& job, const PreflightReportBody& body) {
  if (job.preflight_judged) return;
  job.preflight[body.rank] = body;
  if (int64_t(job.preflight.size()) == job.world()) JudgePreflight(job);
}

void Coordinator::JudgePreflight(JobRun& job) {
  job.preflight_judged = true;
  const double ratio = job.spec.fault_tolerance.preflight_min_ratio;
  auto worker = [&](int rank) { return job.ranks[size_t(rank)].worker; };
  // GEMM: each daemon by its slowest rank.
  std::map<std::string, double> gemm;
  for (const auto& [rank, rep] : job.preflight) {
    auto [it, fresh] = gemm.emplace(worker(rank), rep.gemm_gflops);
    if (!fresh) it->second = std::min(it->second, rep.gemm_gflops);
  }
  double best_gemm = 0;
  for (const auto& [w, g] : gemm) best_gemm = std::max(best_gemm, g);
  std::map<std::string, std::string> bad;  // daemon -> why
  for (const auto& [w, g] : gemm) {
    if (g < ratio * best_gemm) {
      bad[w] = "GEMM " + Fixed(g, 1) + " GFLOP/s, " + Fixed(g / best_gemm, 2) +
               "x the best daemon's " + Fixed(best_gemm, 1);
    }
  }
  // Links, each pair once: both sides' reports, the slower figure, the first error.
  std::map<std::pair<int, int>, Link> links;
  for (const auto& [rank, rep] : job.preflight) {
    for (const auto& p : rep.pairs) {
      if (p.partner < 0 || p.partner >= int(job.ranks.size()) || p.partner == rank) continue;
      Link& l = links[{std::min(rank, p.partner), std::max(rank, p.partner)}];
      l.cross = worker(rank) != worker(p.partner);
      if (l.error.empty() && !p.error.empty()) l.error = p.error;
      l.gbps = l.gbps < 0 ? p.gbps : std::min(l.gbps, p.gbps);
    }
  }
  double best_link[2] = {0, 0};  // within a daemon, across daemons
  for (const auto& [ranks, l] : links)
    if (l.error.empty()) best_link[l.cross] = std::max(best_link[l.cross], l.gbps);
  std::map<int, std::vector<int>> bad_partners, partners;
  for (auto& [ranks, l] : links) {
    l.bad = !l.error.empty() || l.gbps < ratio * best_link[l.cross];
    for (auto [a, b] : {ranks, std::pair<int, int>{ranks.second, ranks.first}}) {
      partners[a].push_back(b);
      if (l.bad) bad_partners[a].push_back(b);
    }
  }
  for (const auto& [rank, list] : bad_partners) {
    if (list.size() < 2 || list.size() != partners[rank].size()) continue;  // one bad pair
    std::string& why = bad[worker(rank)];
    if (!why.empty()) why += ", ";
    why += "rank " + std::to_string(rank) + "'s links to ranks " + std::to_string(list[0]) +
           " and " + std::to_string(list[1]) + " both bad";
  }
  std::string pairs;  // bad pairs that are no daemon's fault
  for (const auto& [ranks, l] : links) {
    if (!l.bad || bad.count(worker(ranks.first)) || bad.count(worker(ranks.second))) continue;
    pairs += "; the link between ranks " + std::to_string(ranks.first) + " (" +
             worker(ranks.first) + ") and " + std::to_string(ranks.second) + " (" +
             worker(ranks.second) + ") is " +
             (l.error.empty()
                  ? Fixed(l.gbps, 2) + " GB/s against the best " + Fixed(best_link[l.cross], 2)
                  : "failing: " + l.error);
  }
  const int64_t now = clock_->NowMs();
  if (bad.empty()) {
    std::string range = "GEMM " + Fixed(best_gemm, 1) + " GFLOP/s best over " +
                        std::to_string(gemm.size()) + " daemon(s)";
    for (int cross : {0, 1})
      if (best_link[cross] > 0)
        range += std::string(", best link ") + (cross ? "across daemons " : "within a daemon ") +
                 Fixed(best_link[cross], 2) + " GB/s";
    spdlog::info("job {}: pre-flight passed: {}{}", job.state.job_id(), range, pairs);
    job.state.Note(now, "pre-flight passed: " + range + pairs);
    Persist(job, false);
    return;
  }
  std::string what = "pre-flight";
  std::set<std::string> leaving;
  for (const auto& [w, why] : bad) {
    what += ": worker " + w + ": " + why;
    leaving.insert(w);
  }
  what += pairs;
  spdlog::warn("job {}: {}", job.state.job_id(), what);
  if (!RoomElsewhere(job, leaving)) {
    job.state.Note(now, what + "; it stays: the other workers lack room for its ranks");
    Persist(job, false);
    return;
  }
  for (const auto& w : leaving) job.avoided_workers.insert(w);
  FailJob(job, what + "; restarting without it (fault_tolerance.preflight)", -1, "", false);
}

}  // namespace moerun::coordinator
