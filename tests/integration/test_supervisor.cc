// The daemon's trainer supervision with real child processes: exit codes and signals are
// reported, a trainer that ignores SIGTERM is killed after the grace period, fencing stops
// only the old generation, and a frozen (SIGSTOPped) trainer is killed after the frozen
// timeout while one that runs again in time is left alone. Beat files: the daemon beats into
// each, a trainer whose beat went stale is killed as hung, and a trainer whose daemon stopped
// beating fences itself (worker/trainer/daemon_watch.h). Warm standbys: a launch of their
// program takes one (same process, the role's command line, log and exit), others start cold,
// and a standby that dies unused is no trainer exit.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/exit_codes.h"
#include "common/process_tree.h"
#include "tests/temp_path.h"
#include "worker/daemon/trainer_supervisor.h"
#include "worker/trainer/daemon_watch.h"

using moerun::worker::TrainerExit;
using moerun::worker::TrainerLaunch;
using moerun::worker::TrainerSupervisor;
using Clock = std::chrono::steady_clock;

namespace {

TrainerLaunch Shell(const std::string& job, uint64_t gen, int rank, const std::string& script) {
  return {job, gen, rank, {"/bin/sh", "-c", script}, "", ""};
}

void PollUntil(TrainerSupervisor& s, const std::function<bool()>& done) {
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!done() && Clock::now() < end) {
    s.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

TEST_CASE("exit codes and signals are reported with the rank") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "exit 3")).ok());
  REQUIRE(s.Start(Shell("j", 1, 1, "kill -9 $$")).ok());
  REQUIRE(s.Start(Shell("j", 1, 2, "exit 0")).ok());
  PollUntil(s, [&] { return exits.size() == 3; });
  REQUIRE(exits.size() == 3);
  for (const auto& e : exits) {
    if (e.rank == 0) CHECK(e.Describe() == "exited with code 3");
    if (e.rank == 1) CHECK(e.Describe() == "killed by signal 9 (Killed)");
    if (e.rank == 2) CHECK(e.exit_code == 0);
  }
  CHECK(s.Running() == 0);
}

TEST_CASE("a trainer that ignores SIGTERM is killed after the grace period") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "trap '' TERM; while true; do sleep 0.05; done")).ok());
  REQUIRE(s.Start(Shell("j", 1, 1, "sleep 100")).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the trap install
  const auto t0 = Clock::now();
  s.StopJob("j", 300);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  CHECK(s.Running() == 0);
  CHECK(secs >= 0.3);
  CHECK(secs < 3.0);
  REQUIRE(exits.size() == 2);
  for (const auto& e : exits) CHECK(e.signal == (e.rank == 0 ? SIGKILL : SIGTERM));
}

TEST_CASE("fencing stops the old generation only") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "sleep 100")).ok());
  REQUIRE(s.Start(Shell("j", 2, 0, "sleep 100")).ok());
  REQUIRE(s.Start(Shell("k", 1, 0, "sleep 100")).ok());
  s.StopOlderThan("j", 2, 1000);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].job_id == "j");
  CHECK(exits[0].generation == 1);
  CHECK(s.Running() == 2);
}

TEST_CASE("a trainer frozen past the frozen timeout is killed, and its exit says why") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  s.set_frozen_timeout_ms(300);
  auto frozen = s.Start(Shell("j", 1, 0, "sleep 100"));
  auto thawed = s.Start(Shell("j", 1, 1, "sleep 100"));
  REQUIRE(frozen.ok());
  REQUIRE(thawed.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(frozen.value(), SIGSTOP);
  kill(thawed.value(), SIGSTOP);
  const auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) {  // 100 ms of polls: frozen, but not for long enough yet
    s.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(thawed.value(), SIGCONT);
  CHECK(exits.empty());
  PollUntil(s, [&] { return !exits.empty(); });
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].rank == 0);
  CHECK(exits[0].signal == SIGKILL);
  CHECK(exits[0].Describe().find("frozen (stopped, state T) for ") == 0);
  CHECK(exits[0].Describe().find("killed by its daemon") != std::string::npos);
  CHECK(secs >= 0.3);
  CHECK(s.Running() == 1);  // the one that ran again in time
}

TEST_CASE("beat files: the daemon beats, a stale trainer beat is a hung trainer") {
  const std::string dir = moerun::testing::FreshTempPath("supervisor", "beats", true);
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  s.set_frozen_timeout_ms(300);
  TrainerLaunch quiet = Shell("j", 1, 0, "sleep 100");  // never beats: not judged by beats
  quiet.beat_path = dir + "/quiet";
  TrainerLaunch hung = Shell("j", 1, 1, "sleep 100");
  hung.beat_path = dir + "/hung";
  REQUIRE(s.Start(quiet).ok());
  REQUIRE(s.Start(hung).ok());
  auto beat = moerun::BeatFile::Open(hung.beat_path);
  REQUIRE(beat.ok());
  const int64_t before = beat.value()->daemon_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s.Poll();
  CHECK(beat.value()->daemon_ms() > before);  // the daemon's side beats with every poll
  beat.value()->BeatTrainer(moerun::BeatFile::NowMs() - 1000);  // its last beat, long ago
  PollUntil(s, [&] { return !exits.empty(); });
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].rank == 1);
  CHECK(exits[0].Describe().find("hung (no beat for ") == 0);
  CHECK(s.Running() == 1);
  beat.value().reset();
  s.StopJob("j", 100);
  CHECK_FALSE(std::filesystem::exists(hung.beat_path));  // removed with the trainer
}

TEST_CASE("beat files: a trainer whose daemon stopped beating fences itself") {
  const std::string dir = moerun::testing::FreshTempPath("supervisor", "fence", true);
  const std::string path = dir + "/beat";
  auto daemon_side = moerun::BeatFile::Create(path, moerun::BeatFile::NowMs(), getpid());
  REQUIRE(daemon_side.ok());
  auto missing = moerun::trainer::DaemonWatch::Start(dir + "/none", 200);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().find(dir + "/none") != std::string::npos);
  std::fflush(nullptr);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the trainer: watches, beats, and would sleep far past the lease
    auto watch = moerun::trainer::DaemonWatch::Start(path, 200);
    if (!watch.ok()) _exit(99);
    std::this_thread::sleep_for(std::chrono::seconds(30));
    _exit(0);
  }
  // The daemon beats for a while (the trainer lives on), then stops (frozen).
  for (int i = 0; i < 30; ++i) {
    daemon_side.value()->BeatDaemon(moerun::BeatFile::NowMs());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int status = 0;
  CHECK(waitpid(child, &status, WNOHANG) == 0);
  CHECK(daemon_side.value()->trainer_ms() > 0);  // the trainer's side beats too
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == moerun::kExitFailure);
}

namespace {

// The standbys of this process waiting for a role.
std::vector<pid_t> WaitingStandbys() {
  std::vector<pid_t> out;
  for (pid_t c : moerun::Children(getpid())) {
    const auto args = moerun::Arguments(c);
    if (args.size() > 1 && args[1] == "standby") out.push_back(c);
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("a warm standby becomes the trainer: its process, the role's command line and log") {
  const std::string dir = moerun::testing::FreshTempPath("supervisor", "standby", true);
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.StartStandby(MOERUN_BIN, dir + "/standby.log").ok());
  REQUIRE(s.StartStandby(MOERUN_BIN, dir + "/standby.log").ok());
  CHECK(s.Standbys() == 2);
  CHECK(s.Running() == 0);
  PollUntil(s, [&] { return WaitingStandbys().size() == 2; });  // exec'd
  REQUIRE(WaitingStandbys().size() == 2);

  // A role that ends at once: its output in the role's log, its exit as the rank's.
  bool warm = false;
  auto version = s.Start({"j", 1, 7, {MOERUN_BIN, "version"}, dir + "/rank-7.log", ""}, &warm);
  REQUIRE(version.ok());
  CHECK(warm);
  CHECK(s.Standbys() == 1);
  PollUntil(s, [&] { return !exits.empty(); });
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].rank == 7);
  CHECK(exits[0].pid == version.value());
  CHECK(exits[0].exit_code == 0);
  CHECK(ReadFile(dir + "/rank-7.log").find("moerun") != std::string::npos);

  // A role that trains: /proc shows the trainer's command line, and tools find it as one.
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml";
  const std::string run = dir + "/run";
  auto train =
      s.Start({"j",
               1,
               0,
               {MOERUN_BIN, "train", spec, "--run-dir", run, "--steps", "100000", "--no-progress"},
               dir + "/rank-0.log",
               ""},
              &warm);
  REQUIRE(train.ok());
  CHECK(warm);
  CHECK(s.Standbys() == 0);
  // Its start is counted from the role, not from the standby's exec.
  PollUntil(s,
            [&] { return ReadFile(run + "/train.log").find("started in") != std::string::npos; });
  CHECK(WaitingStandbys().empty());
  CHECK(moerun::HasFlag(train.value(), "--run-dir", run));
  const auto trainers = moerun::TrainersOf(getpid());
  CHECK(std::find(trainers.begin(), trainers.end(), train.value()) != trainers.end());
  CHECK(ReadFile(run + "/train.log").find("(warm process ") != std::string::npos);
  s.StopJob("j", 2000);
  REQUIRE(exits.size() == 2);
  CHECK(exits[1].rank == 0);

  // No standby left: a launch starts cold.
  auto cold = s.Start({"j", 2, 1, {MOERUN_BIN, "version"}, dir + "/rank-1.log", ""}, &warm);
  REQUIRE(cold.ok());
  CHECK_FALSE(warm);
  PollUntil(s, [&] { return exits.size() == 3; });
  CHECK(exits.size() == 3);
}

TEST_CASE("standbys: another program starts cold, one that dies unused is no trainer exit") {
  const std::string dir = moerun::testing::FreshTempPath("supervisor", "standby-other", true);
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.StartStandby(MOERUN_BIN, dir + "/standby.log").ok());
  bool warm = true;
  REQUIRE(s.Start(Shell("j", 1, 0, "exit 4"), &warm).ok());
  CHECK_FALSE(warm);  // /bin/sh is not the standby's program
  CHECK(s.Standbys() == 1);
  PollUntil(s, [&] { return !exits.empty(); });
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].exit_code == 4);

  PollUntil(s, [&] { return WaitingStandbys().size() == 1; });
  const auto waiting = WaitingStandbys();
  REQUIRE(waiting.size() == 1);
  kill(waiting[0], SIGKILL);
  PollUntil(s, [&] { return s.Standbys() == 0; });
  CHECK(s.Standbys() == 0);
  CHECK(exits.size() == 1);  // the standby's end is nobody's trainer exit

  // A standby whose role's log cannot be opened says so in the standby log and exits 3.
  REQUIRE(s.StartStandby(MOERUN_BIN, dir + "/standby.log").ok());
  REQUIRE(s.Start({"j", 1, 3, {MOERUN_BIN, "version"}, dir + "/no/such/dir/rank-3.log", ""}, &warm)
              .ok());
  CHECK(warm);
  PollUntil(s, [&] { return exits.size() == 2; });
  REQUIRE(exits.size() == 2);
  CHECK(exits[1].exit_code == moerun::kExitBadData);
  CHECK(ReadFile(dir + "/standby.log").find("no/such/dir/rank-3.log") != std::string::npos);
}
