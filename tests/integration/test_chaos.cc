// Chaos on the default job (configs/tiny-cpu.yaml) under `moerun local`, with real processes
// killed for real: three trainers SIGKILLed, one daemon SIGKILLed, one trainer SIGSTOPped and
// the coordinator SIGKILLed, each once training has gone on for a while after the previous
// blow. The job must still complete, bitwise equal to an undisturbed run of the same job,
// and no committed checkpoint may turn out unreadable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "coordinator/state/coordinator_store.h"
#include "tests/integration/process.h"
#include "tests/temp_path.h"
#include "worker/trainer/trainer.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;

// The job of `spec` trained undisturbed (`moerun launch`, 4 processes) into dir/clean with
// `extra` flags must end with the same weights as `run`, at `step`.
void CheckDigestOfUndisturbed(const std::string& spec, const std::string& run,
                              const std::string& dir, const std::string& extra,
                              const std::string& step) {
  Output clean = RunMoerun("launch --nproc 4 " + spec + " --run-dir " + dir + "/clean " + extra +
                           " --no-progress");
  REQUIRE_MESSAGE(clean.exit_code == 0, clean.err);
  Output a = RunMoerun("checkpoint digest --run-dir " + run);
  Output b = RunMoerun("checkpoint digest --run-dir " + dir + "/clean");
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out.find("step " + step) != std::string::npos);
}

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
      for (pid_t t : Children(w)) out.push_back(t);
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
  for (const auto& e : job.events()) {
    MESSAGE(coordinator::ToString(e.to) << ": " << e.cause);
    CHECK(e.cause.find("unreadable") == std::string::npos);
  }
  auto steps = store.value()->CommittedSteps(job.job_id());
  REQUIRE(steps.ok());
  CHECK(!steps->empty());
  Output list = RunMoerun("checkpoint list --run-dir " + run);
  for (int64_t s : steps.value()) {
    CHECK_MESSAGE(list.out.find(std::to_string(s)) != std::string::npos, list.out);
  }
  CHECK(list.out.find("ok") != std::string::npos);
  CHECK(list.out.find("bad") == std::string::npos);
}

TEST_CASE("a frozen daemon and no spare: the job says what it waits for, resumes at SIGCONT") {
  const std::string dir = FreshTempPath("chaos", "frozen-daemon", true);
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml";
  const std::string run = dir + "/frozen", log = dir + "/local.log";
  const pid_t local = SpawnLogged(
      MOERUN_BIN, {"local", spec, "--run-dir", run, "--steps", "150", "--no-progress"}, log);
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 60; }, 120));
  const pid_t frozen = LocalDaemon(local, "local-1");
  REQUIRE(frozen > 0);
  kill(frozen, SIGSTOP);
  // Status says what the restart waits for, and keeps saying it.
  const std::string control = run + "/control";
  const std::string endpoint = ReadAll(control + "/coordinator/endpoint");
  const std::string env = "MOERUN_COORDINATOR=" + endpoint.substr(0, endpoint.find('\n')) +
                          " MOERUN_KEYS=" + control + "/keys ";
  std::string status;
  CHECK(WaitFor(
      [&] {
        status = ShellOutput(env + MOERUN_BIN + " status tiny-cpu-1 2>&1");
        return status.find("waiting    waiting for 4 slots, 2 usable: worker local-1 DEAD") !=
               std::string::npos;
      },
      30));
  MESSAGE(status);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(ShellOutput(env + MOERUN_BIN + " status tiny-cpu-1 2>&1").find("RECOVERING") !=
        std::string::npos);
  kill(frozen, SIGCONT);
  int status_code = 0;
  REQUIRE(WaitFor([&] { return waitpid(local, &status_code, WNOHANG) == local; }, 180));
  CHECK(WIFEXITED(status_code));
  CHECK(WEXITSTATUS(status_code) == 0);
  CheckDigestOfUndisturbed(spec, run, dir, "--steps 150", "150");
}

}  // namespace
}  // namespace moerun::testing
