// A hang with every thread but one alive, on the default job under `moerun local`: rank 2's
// main thread stops at step 30 (MOERUN_FAULT_STALL) while its process, beat thread and
// sockets live on, so neither its daemon nor a heartbeat can tell. The progress watchdog or a
// peer's data-plane timeout ends the generation, the coordinator reads every rank's flight
// recorder through the daemons, and the job's events name rank 2 as the one that did not
// arrive and the collective the others wait in; the job then completes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/integration/local_run.h"
#include "tests/temp_path.h"

namespace moerun::testing {
namespace {

TEST_CASE("a hung rank is named from the flight recorders, and the job completes") {
  const std::string dir = FreshTempPath("hangs", "stall", true);
  // The default job with a 5 s progress timeout (also its data-plane timeout).
  const std::string spec =
      DefaultJobWith(dir, "progress_timeout_ms: 15000", "progress_timeout_ms: 5000 ");
  const std::string run = dir + "/run";
  setenv("MOERUN_FAULT_STALL", "rank=2,step=30,generation=1", 1);
  const pid_t local =
      SpawnLogged(MOERUN_BIN, {"local", spec, "--run-dir", run, "--steps", "80", "--no-progress"},
                  dir + "/local.log");
  unsetenv("MOERUN_FAULT_STALL");
  CHECK(WaitLocalExit(local, 240) == 0);
  const coordinator::JobState job = FinalJob(run);
  CHECK(job.phase() == coordinator::JobPhase::kSucceeded);
  CHECK(job.restarts() >= 1);
  std::string diagnosis;
  for (const auto& e : job.events())
    if (e.cause.rfind("flight recorders of generation 1: ", 0) == 0) diagnosis = e.cause;
  REQUIRE_MESSAGE(!diagnosis.empty(), "no flight-recorder event");
  CHECK(diagnosis.find("rank 2 did not arrive: ") != std::string::npos);
  CHECK(diagnosis.find(" wait in ") != std::string::npos);
  CHECK(diagnosis.find("rank 2 is not in the data plane (its last call, ") != std::string::npos);
}

}  // namespace
}  // namespace moerun::testing
