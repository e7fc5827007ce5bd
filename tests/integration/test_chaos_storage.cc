// Storage faults on the default job under `moerun local`: a checkpoint table file deleted
// under a running job without memory snapshots (the restore falls back to the newest step
// every shard can read, and
// the job completes with an undisturbed run's weights), and a shard directory made
// unwritable (chattr +i: exit 3 with the path, the job FAILED after one attempt, not retried).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "tests/integration/local_run.h"
#include "tests/temp_path.h"
#include "worker/trainer/trainer.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;

const std::string kSpec = std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml";

TEST_CASE("a deleted checkpoint table file: the restore falls back and the job completes") {
  const std::string dir = FreshTempPath("chaos_storage", "deleted-sst", true);
  const std::string run = dir + "/run";
  // Without memory snapshots, which would restore the newer step and never read the disk.
  const std::string spec =
      DefaultJobWith(dir, "memory_interval_steps: 1 ", "memory_interval_steps: 0 ");
  const pid_t local =
      SpawnLogged(MOERUN_BIN, {"local", spec, "--run-dir", run, "--steps", "150", "--no-progress"},
                  dir + "/local.log");
  // Step 100 committed (checkpoints every 50 steps) and training past it.
  REQUIRE(WaitFor(
      [&] {
        return LocalCli(run, "status tiny-cpu-1").find("step 100 committed") != std::string::npos;
      },
      180));
  // Each checkpoint write ends with a flush, so the newest table file holds step 100.
  const std::string shard = run + "/checkpoints/stage-0/dp-0";
  fs::path newest;
  for (const auto& f : fs::directory_iterator(shard)) {
    if (f.path().extension() != ".sst") continue;
    if (newest.empty() || fs::last_write_time(f) > fs::last_write_time(newest)) newest = f.path();
  }
  REQUIRE(!newest.empty());
  MESSAGE("deleting " << newest.string());
  fs::remove(newest);
  const pid_t rank0 = LocalTrainer(local, 0);
  REQUIRE(rank0 > 0);
  kill(rank0, SIGKILL);
  CHECK(WaitLocalExit(local, 240) == 0);
  const coordinator::JobState job = FinalJob(run);
  CHECK(job.phase() == coordinator::JobPhase::kSucceeded);
  bool fell_back = false;
  for (const auto& e : job.events()) {
    fell_back = fell_back || (e.cause.find("step 100 is unreadable") != std::string::npos &&
                              e.cause.find("falling back to step 50") != std::string::npos);
  }
  CHECK(fell_back);
  // The lost steps were trained again, to the same bits.
  CheckDigestOfUndisturbed(spec, run, dir, "--steps 150", "150");
}

// chattr -i on scope exit, so that a failed check leaves nothing undeletable behind.
struct Immutable {
  std::string path;
  bool set = false;
  explicit Immutable(std::string p) : path(std::move(p)) {
    set = std::system(("chattr +i '" + path + "' 2>/dev/null").c_str()) == 0;
  }
  ~Immutable() {
    if (set) (void)std::system(("chattr -i '" + path + "'").c_str());
  }
};

TEST_CASE("an unwritable checkpoint directory: exit 3 with the path, one attempt") {
  const std::string dir = FreshTempPath("chaos_storage", "unwritable", true);
  const std::string run = dir + "/run";
  const pid_t local =
      SpawnLogged(MOERUN_BIN, {"local", kSpec, "--run-dir", run, "--steps", "150", "--no-progress"},
                  dir + "/local.log");
  REQUIRE(WaitFor([&] { return trainer::LastMetricsStep(run) >= 20; }, 180));
  const std::string shard = run + "/checkpoints/stage-1/dp-0";
  REQUIRE(WaitFor([&] { return fs::exists(shard); }, 60));
  Immutable frozen(shard);
  if (!frozen.set) {
    kill(local, SIGKILL);
    waitpid(local, nullptr, 0);
    MESSAGE("chattr +i is not available here (needs root and a file system that has it)");
    return;
  }
  CHECK(WaitLocalExit(local, 180) != 0);
  const coordinator::JobState job = FinalJob(run);
  CHECK(job.phase() == coordinator::JobPhase::kFailed);
  CHECK(job.restarts() == 0);  // not retried
  REQUIRE(!job.events().empty());
  const std::string cause = job.events().back().cause;
  CHECK(cause.find("exited with code 3") != std::string::npos);
  CHECK(cause.find(shard) != std::string::npos);
}

}  // namespace
}  // namespace moerun::testing
