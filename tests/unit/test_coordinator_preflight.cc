// Pre-flight judged by the coordinator (coordinator_preflight.cc): all well is one event; a
// slow daemon is named, stays without room and is left out when a spare has room; one bad
// link between good daemons is a bad pair, no daemon's fault.
#include <doctest/doctest.h>

#include "tests/unit/coordinator_harness.h"

namespace moerun::coordinator {
namespace {

void Preflight(Harness& h, const std::string& id, int rank, double gflops, json pairs) {
  h.c().Handle(Harness::Trainer(id, 1, rank),
               {MessageType::kPreflightReport,
                1,
                id,
                "t",
                {{"rank", rank}, {"gemm_gflops", gflops}, {"pairs", std::move(pairs)}}});
}

json Pair(int partner, double gbps, const std::string& error = "") {
  return json::array({{{"partner", partner}, {"gbps", gbps}, {"error", error}}});
}

// A world-2 job on daemons a and b (one slot each, plus `spare` when given), RUNNING.
std::string TwoDaemons(Harness& h, bool spare) {
  h.Beat("a", 1);
  h.Beat("b", 1);
  const std::string id = h.Submit("pf")["job_id"];
  if (spare) h.Beat("s", 1);
  h.Rendezvous(id, 1, 0);
  h.Rendezvous(id, 1, 1);
  REQUIRE(h.Job(id).state.phase() == JobPhase::kRunning);
  return id;
}

int RankOn(Harness& h, const std::string& id, const std::string& worker) {
  for (size_t r = 0; r < h.Job(id).ranks.size(); ++r)
    if (h.Job(id).ranks[r].worker == worker) return int(r);
  FAIL("no rank on " << worker);
  return -1;
}

TEST_CASE("pre-flight: well is one event; a slow daemon without room stays, named") {
  Harness h("preflight-well");
  const std::string id = TwoDaemons(h, false);
  Preflight(h, id, 0, 10.0, Pair(1, 1.0));
  CHECK(!h.Said(id, "pre-flight"));  // waits for every rank
  Preflight(h, id, 1, 9.0, Pair(0, 1.1));
  CHECK(h.Said(id,
               "pre-flight passed: GEMM 10.0 GFLOP/s best over 2 daemon(s), best link "
               "across daemons 1.00 GB/s"));

  Harness s("preflight-slow");
  const std::string job = TwoDaemons(s, false);
  const int on_b = RankOn(s, job, "b");
  Preflight(s, job, on_b, 2.0, Pair(1 - on_b, 1.0));
  Preflight(s, job, 1 - on_b, 10.0, Pair(on_b, 1.0));
  CHECK(s.Said(job,
               "pre-flight: worker b: GEMM 2.0 GFLOP/s, 0.20x the best daemon's 10.0; it "
               "stays: the other workers lack room for its ranks"));
  CHECK(s.Job(job).state.phase() == JobPhase::kRunning);
  CHECK(s.Job(job).state.restarts() == 0);
}

TEST_CASE("pre-flight: a slow daemon is left out when a spare has room") {
  Harness h("preflight-spare");
  const std::string id = TwoDaemons(h, true);
  const int on_b = RankOn(h, id, "b");
  Preflight(h, id, on_b, 10.0, Pair(1 - on_b, 1.0, "TimedOut: waited 5000 ms for rank"));
  Preflight(h, id, 1 - on_b, 10.0, Pair(on_b, 1.0));
  // One failed link between two ranks (world 2: both pairings are the same pair) blames no
  // daemon: reported, nothing moves.
  CHECK(h.Said(id, "pre-flight passed"));
  CHECK(h.Said(id, "is failing: TimedOut"));
  CHECK(h.Job(id).state.restarts() == 0);

  Harness g("preflight-gemm-spare");
  const std::string job = TwoDaemons(g, true);
  const int slow = RankOn(g, job, "b");
  Preflight(g, job, slow, 1.0, Pair(1 - slow, 1.0));
  Preflight(g, job, 1 - slow, 10.0, Pair(slow, 1.0));
  CHECK(g.Said(job, "restarting without it (fault_tolerance.preflight)"));
  CHECK(g.Job(job).avoided_workers.count("b") == 1);
  for (int i = 0; i < 40 && g.Job(job).started_generation < 2; ++i) {
    g.Advance(500);
    g.Beat("a", 1);
    g.Beat("s", 1);
    g.c().Tick();
  }
  REQUIRE(g.Job(job).started_generation == 2);
  for (const auto& r : g.Job(job).ranks) CHECK(r.worker != "b");
}

}  // namespace
}  // namespace moerun::coordinator
