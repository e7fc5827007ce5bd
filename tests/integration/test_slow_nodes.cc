// Slow nodes in a job (docs/cluster.md). Stragglers: one trainer slowed on purpose
// (MOERUN_FAULT_SLOW, a sleep counted as compute) is named in `moerun status`, Prometheus
// (`moerun_rank_straggler`) and the events; with fault_tolerance.evict_stragglers its ranks
// move to a spare daemon and the job finishes there. Pre-flight: a daemon whose GEMM is slow
// before the first step is left out for the spare.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <regex>

#include "tests/integration/cluster.h"

namespace moerun::testing {
namespace {

// The small world-2 job with straggler detection after 5 slow steps.
std::string StragglerSpec(const Cluster& c, const std::string& name, bool evict) {
  const std::string path = c.dir() + "/" + name + ".yaml";
  std::ofstream(path) << WorldTwoSpecText(name)
                      << "fault_tolerance:\n  straggler_factor: 2.0\n  straggler_steps: 5\n"
                         "  restart_backoff_ms: 200\n  evict_stragglers: "
                      << (evict ? "true" : "false") << "\n";
  return path;
}

bool SaidInEvents(const Cluster& c, const std::string& job, const std::string& text) {
  Output ev = c.Cli("events " + job + " --json");
  return ev.exit_code == 0 && ev.out.find(text) != std::string::npos;
}

TEST_CASE("a slowed rank is named a straggler in status, Prometheus and the events") {
  setenv("MOERUN_FAULT_SLOW", "rank=1,ms=150", 1);  // inherited by daemons and trainers
  Cluster c("stragglers-seen");
  c.StartWorker("a", 1);
  c.StartWorker("b", 1);
  unsetenv("MOERUN_FAULT_SLOW");
  c.WaitForWorkers(2);
  const std::string job = c.Submit(StragglerSpec(c, "seen", false), "--steps 400");
  nlohmann::json detail;
  REQUIRE(WaitFor(
      [&] {
        detail = c.Job(job);
        return detail.contains("ranks") && detail["ranks"].size() == 2 &&
               detail["ranks"][1].value("straggler", false);
      },
      90));
  CHECK(!detail["ranks"][0].value("straggler", true));
  CHECK(detail["ranks"][1].value("compute_ratio", 0.0) > 2.0);
  const std::string worker = detail["ranks"][1].value("worker", "");
  CHECK(SaidInEvents(c, job, "rank 1 on worker " + worker));
  CHECK(SaidInEvents(c, job, "is a straggler"));
  Output status = c.Cli("status " + job);
  CHECK(status.out.find("STRAGGLER") != std::string::npos);
  // Prometheus: 1 for the straggler, 0 for its peer.
  std::string url;
  std::ifstream(c.coordinator_dir() + "/http_endpoint") >> url;
  httplib::Client http(url);
  auto metrics = http.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("moerun_rank_straggler{job=\"" + job + "\",rank=\"1\",worker=\"" +
                           worker + "\"} 1") != std::string::npos);
  CHECK(metrics->body.find("moerun_rank_straggler{job=\"" + job + "\",rank=\"0\"") !=
        std::string::npos);
  CHECK(c.Phase(job) == "RUNNING");  // named, not evicted
  CHECK(c.Cli("cancel " + job).exit_code == 0);
}

// A world-2 job on daemons a and b with a spare, rank 1 slowed by `fault` (MOERUN_FAULT_SLOW)
// in generation 1, run to its end. The job's final status; its events in *events.
nlohmann::json RunWithSpare(const std::string& name, const std::string& fault,
                            const std::function<std::string(const Cluster&)>& spec,
                            const std::string& steps, std::string* events) {
  setenv("MOERUN_FAULT_SLOW", fault.c_str(), 1);
  Cluster c(name);
  c.StartWorker("a", 1);
  c.StartWorker("b", 1);
  c.StartWorker("spare", 1);
  unsetenv("MOERUN_FAULT_SLOW");
  c.WaitForWorkers(3);
  const std::string job = c.Submit(spec(c), "--steps " + steps);
  REQUIRE(WaitFor(
      [&] {
        const std::string phase = c.Phase(job);
        return phase == "SUCCEEDED" || phase == "FAILED";
      },
      180));
  *events = c.Cli("events " + job + " --json").out;
  return c.Job(job);
}

// The worker an event names after `before` ("... worker b ..."); empty if none.
std::string WorkerNamed(const std::string& events, const std::string& before) {
  std::smatch m;
  return std::regex_search(events, m, std::regex(before + "worker ([A-Za-z0-9_-]+)")) ? m[1].str()
                                                                                      : "";
}

TEST_CASE("evict_stragglers: the straggler's rank moves to the spare and the job finishes") {
  std::string events;
  const nlohmann::json d = RunWithSpare(
      "stragglers-evicted", "rank=1,ms=150,generation=1",
      [](const Cluster& c) { return StragglerSpec(c, "evicted", true); }, "60", &events);
  CHECK(d["phase"] == "SUCCEEDED");
  CHECK(d["restarts"] == 1);
  const std::string slow = WorkerNamed(events, "rank 1 on ");
  REQUIRE_MESSAGE(!slow.empty(), events);
  for (const auto& r : d["ranks"]) CHECK(r["worker"] != slow);
  CHECK_MESSAGE(events.find("restarting without worker " + slow +
                            " (fault_tolerance.evict_stragglers)") != std::string::npos,
                events);
}

TEST_CASE("pre-flight: a daemon with a slow GEMM is left out for the spare before training") {
  std::string events;
  const nlohmann::json d = RunWithSpare(
      "preflight-spare", "rank=1,gemm_ms=60,generation=1",
      [](const Cluster& c) { return c.SmallSpec("preflight"); }, "30", &events);
  CHECK(d["phase"] == "SUCCEEDED");
  CHECK(d["restarts"] == 1);
  const std::string slow = WorkerNamed(events, "pre-flight: ");
  REQUIRE_MESSAGE(!slow.empty(), events);
  for (const auto& r : d["ranks"]) CHECK(r["worker"] != slow);
  CHECK(events.find("pre-flight: worker " + slow + ": GEMM") != std::string::npos);
  CHECK(events.find("restarting without it (fault_tolerance.preflight)") != std::string::npos);
}

}  // namespace
}  // namespace moerun::testing
