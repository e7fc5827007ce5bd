// Chaos on the default job (configs/tiny-cpu.yaml) under `moerun local`, with real processes
// killed for real: three trainers SIGKILLed, one daemon SIGKILLed, one trainer SIGSTOPped and
// the coordinator SIGKILLed, each once training has gone on for a while after the previous
// blow. The job must still complete, bitwise equal to an undisturbed run of the same job,
// and no committed checkpoint may turn out unreadable. Then one fault at a time: a daemon
// frozen with no spare (the job says what it waits for; frozen for good, `moerun local`
// relaunches it), a daemon frozen with a spare (its ranks move there and restore from their
// copies in memory on another host), and a coordinator
// outage shorter than the heartbeat timeout (no trainer stops).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "tests/integration/local_run.h"
#include "tests/temp_path.h"
#include "worker/trainer/trainer.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;

TEST_CASE(
    "the default job survives killed trainers, a daemon, a frozen trainer and the coordinator") {
  const std::string dir = FreshTempPath("chaos", "default", true);
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml";
  const std::string run = dir + "/chaos";

  const pid_t local = SpawnMoerun({"local", spec, "--run-dir", run, "--no-progress"});
  std::mt19937 rng(20261129);
  auto pick = [&](const std::vector<pid_t>& v) { return v[rng() % v.size()]; };
  auto trainers = [&] {
    std::vector<pid_t> out;
    for (pid_t w : ChildrenRunning(local, "moerun-worker"))
      for (pid_t t : TrainersOf(w)) out.push_back(t);
    return out;
  };
  int64_t mark = 0;
  // Waits until training has gone 40 steps past the last blow (and all 4 trainers exist), so
  // the blows land on both sides of checkpoints (every 50 steps).
  auto training_again = [&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      REQUIRE_MESSAGE(waitpid(local, &status, WNOHANG) == 0, "moerun local ended early");
      const int64_t step = trainer::LastMetricsStep(run);
      if (step >= mark + 40 && trainers().size() == 4) {
        mark = step;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("training did not go on");
  };
  const std::vector<std::string> blows = {"kill trainer", "kill trainer",     "kill daemon",
                                          "stop trainer", "kill coordinator", "kill trainer"};
  for (const auto& blow : blows) {
    training_again();
    pid_t victim = -1;
    if (blow == "kill daemon") {
      victim = pick(ChildrenRunning(local, "moerun-worker"));
      kill(victim, SIGKILL);
    } else if (blow == "kill coordinator") {
      victim = pick(ChildrenRunning(local, "moerun-coordinator"));
      kill(victim, SIGKILL);
    } else {
      victim = pick(trainers());
      kill(victim, blow == "stop trainer" ? SIGSTOP : SIGKILL);
    }
    MESSAGE(blow << " (pid " << victim << ") at step " << mark);
  }
  int status = 0;
  REQUIRE(waitpid(local, &status, 0) == local);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  CheckDigestOfUndisturbed(spec, run, dir, "", "300");

  // The coordinator's record: every blow was a restart, none of them read a bad checkpoint,
  // and the committed manifests it kept are all readable.
  auto store = coordinator::CoordinatorStore::Open(run + "/control/coordinator/db");
  REQUIRE(store.ok());
  auto jobs = store.value()->LoadJobs();
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 1);
  const auto& job = jobs->front();
  CHECK(job.phase() == coordinator::JobPhase::kSucceeded);
  CHECK(job.restarts() >= int64_t(blows.size()) - 1);  // the coordinator's death is not one
  int from_memory = 0;  // restarts that restored the ranks' memory snapshots
  for (const auto& e : job.events()) {
    MESSAGE(coordinator::ToString(e.to) << ": " << e.cause);
    CHECK(e.cause.find("unreadable") == std::string::npos);
    from_memory += e.cause.find("from memory on the ranks' hosts") != std::string::npos;
  }
  CHECK(from_memory >= 1);
  auto steps = store.value()->CommittedSteps(job.job_id());
  REQUIRE(steps.ok());
  CHECK(!steps->empty());
  Output list = RunMoerun("checkpoint list --run-dir " + run);
  for (int64_t s : steps.value()) {
    CHECK_MESSAGE(list.out.find(std::to_string(s)) != std::string::npos, list.out);
  }
  CHECK(list.out.find("ok") != std::string::npos);
  CHECK(list.out.find("bad") == std::string::npos);
  // The shards hold exactly the committed steps the coordinator kept: retention follows the
  // commits (CheckpointCommitted), the last one included.
  CHECK_MESSAGE(std::count(list.out.begin(), list.out.end(), '\n') == 1 + long(steps->size()),
                list.out);
}

TEST_CASE(
    "a frozen daemon and no spare: the job says what it waits for, resumes at SIGCONT; "
    "moerun local relaunches a daemon that stays frozen") {
  const std::string dir = FreshTempPath("chaos", "frozen-daemon", true);
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml";
  const std::string run = dir + "/frozen", log = dir + "/local.log";
  // 10 s before `moerun local` relaunches a daemon counted dead: room to see the wait and
  // SIGCONT it first.
  const pid_t local = SpawnLogged(MOERUN_BIN,
                                  {"local", spec, "--run-dir", run, "--steps", "200",
                                   "--no-progress", "--relaunch-dead-after-ms", "10000"},
                                  log);
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 60; }, 120));
  const pid_t frozen = LocalDaemon(local, "local-1");
  REQUIRE(frozen > 0);
  kill(frozen, SIGSTOP);
  // Status says what the restart waits for, and keeps saying it.
  const std::string control = run + "/control";
  std::string status;
  CHECK(WaitFor(
      [&] {
        status = LocalCli(run, "status tiny-cpu-1");
        return status.find("waiting    waiting for 4 slots, 2 usable: worker local-1 DEAD") !=
               std::string::npos;
      },
      30));
  MESSAGE(status);
  // Well within --relaunch-dead-after-ms (10 s), after which `moerun local` would relaunch it.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(LocalCli(run, "status tiny-cpu-1").find("RECOVERING") != std::string::npos);
  kill(frozen, SIGCONT);
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 120; }, 120));
  // Frozen for good this time: `moerun local` kills it and starts another in its place.
  const pid_t stuck = LocalDaemon(local, "local-0");
  REQUIRE(stuck > 0);
  kill(stuck, SIGSTOP);
  CHECK(WaitLocalExit(local, 180) == 0);
  CHECK(ReadAll(log).find("worker local-0 (pid " + std::to_string(stuck) +
                          ") runs but the coordinator has counted it dead") != std::string::npos);
  // Each frozen daemon's trainers fenced themselves (nothing else could stop them).
  std::string trainer_logs;
  for (const auto& f : fs::recursive_directory_iterator(control))
    if (f.path().extension() == ".log") trainer_logs += ReadAll(f.path().string());
  for (pid_t daemon : {frozen, stuck}) {
    CHECK(trainer_logs.find("fenced: its daemon (pid " + std::to_string(daemon) + ")") !=
          std::string::npos);
  }
  CheckDigestOfUndisturbed(spec, run, dir, "--steps 200", "200");
}

TEST_CASE(
    "a frozen daemon with a spare: its ranks move to the spare and restore from their copies in "
    "memory on another host") {
  const std::string dir = FreshTempPath("chaos", "frozen-spare", true);
  // The default job with one spare daemon, committing to disk at step 100 only: the newest
  // step a restart before it can have is a pinned one in memory.
  const std::string spec = DefaultJobWith(dir, "spares: 0 ", "spares: 1 ");
  {
    std::string yaml = ReadAll(spec);
    const std::string every50 = "  interval_steps: 50 ";
    REQUIRE(yaml.find(every50) != std::string::npos);
    yaml.replace(yaml.find(every50), every50.size(), "  interval_steps: 100 ");
    std::ofstream(spec) << yaml;
  }
  const std::string run = dir + "/spare", log = dir + "/local.log";
  const pid_t local = SpawnLogged(
      MOERUN_BIN, {"local", spec, "--run-dir", run, "--steps", "120", "--no-progress"}, log);
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 40; }, 120));
  // Two of the three daemons run ranks (which two is up to the placement); the third is the
  // spare. One that runs ranks freezes.
  std::string busy, idle;
  for (int i = 0; i < 3; ++i) {
    const std::string id = "local-" + std::to_string(i);
    const pid_t d = LocalDaemon(local, id);
    REQUIRE(d > 0);
    (TrainersOf(d).empty() ? idle : busy) = id;
  }
  REQUIRE(!busy.empty());
  REQUIRE(!idle.empty());
  const pid_t frozen = LocalDaemon(local, busy);
  kill(frozen, SIGSTOP);
  CHECK(WaitLocalExit(local, 180) == 0);
  // The spare ran ranks; the frozen daemon was blamed.
  CHECK(fs::exists(run + "/control/worker-" + idle.substr(6) + "/logs/tiny-cpu-1"));
  bool blamed = false, from_copies = false;
  const coordinator::JobState job = FinalJob(run);
  for (const auto& e : job.events()) {
    blamed = blamed || e.cause.find("worker " + busy + " sent no heartbeat") != std::string::npos;
    // "restoring step 60 from memory: rank 2 from its copy on local-0 (rank 0), ..."
    from_copies = from_copies || (e.cause.find(" from its copy on ") != std::string::npos &&
                                  e.cause.find("the others on their hosts") != std::string::npos);
  }
  CHECK(blamed);
  CHECK(from_copies);
  CheckDigestOfUndisturbed(spec, run, dir, "--steps 120", "120");
}

TEST_CASE("a coordinator outage shorter than the heartbeat timeout costs nothing") {
  const std::string dir = FreshTempPath("chaos", "coordinator-outage", true);
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml";
  const std::string run = dir + "/outage", log = dir + "/local.log";
  const pid_t local = SpawnLogged(
      MOERUN_BIN, {"local", spec, "--run-dir", run, "--steps", "100", "--no-progress"}, log);
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 30; }, 120));
  // `moerun local` held still so that it relaunches the coordinator only when told: 1.8 s
  // without one, against the default job's 2 s heartbeat timeout. With the relaunch, the
  // coordinator's start and the reconnection, the daemons hear nothing for over 2 s; their
  // leases must wait while the address refuses connections.
  kill(local, SIGSTOP);
  const std::vector<pid_t> coordinator = ChildrenRunning(local, "moerun-coordinator");
  REQUIRE(coordinator.size() == 1);
  kill(coordinator[0], SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1800));
  kill(local, SIGCONT);
  CHECK(WaitLocalExit(local, 180) == 0);
  // No trainer stopped: no restart, no lease expired on either daemon.
  CHECK(FinalJob(run).restarts() == 0);
  for (const char* worker : {"worker-0", "worker-1"}) {
    const std::string daemon_log = ReadAll(run + "/control/" + worker + "/worker.log");
    CHECK(daemon_log.find("the coordinator answers again") != std::string::npos);
    CHECK_MESSAGE(daemon_log.find("lease") == std::string::npos, daemon_log);
  }
  CheckDigestOfUndisturbed(spec, run, dir, "--steps 100", "100");
}

}  // namespace
}  // namespace moerun::testing
